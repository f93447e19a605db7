# Sourced by scripts/demo.sh, scripts/fork-demo.sh and bench/run.sh (run
# from the repository root): a smolvmd on private temp dirs inside a private
# network namespace, and a teardown that removes everything it made — also
# the VMs a failed run left behind — so no guest ever touches this machine's
# network and nothing outlives the script.
#
#   private_daemon_init PREFIX     temp dir /tmp/PREFIX-XXXXXX ($work, short:
#                                  VM socket paths live below it), namespace
#                                  $netns, $SMOLVMD_SOCKET, the guest kernel
#   private_daemon_start ARGS...   smolvmd in $netns with extra ARGS; waits
#                                  until it answers ($daemon_pid)
#   private_daemon_on_stop         define it to add teardown steps
# The EXIT trap is set by private_daemon_init. Binaries come from
# $SMOLVM_BUILD_DIR (default build/), kept in $build_dir.

private_daemon_init() {
  build_dir="${SMOLVM_BUILD_DIR:-build}"
  kernel_dir="$PWD/build/guest-kernel"
  "$build_dir/lib/smolvm-fetch-kernel" "$kernel_dir"
  work=$(mktemp -d "/tmp/$1-XXXXXX")
  netns="$1-${work: -6}"
  daemon_pid=""
  export SMOLVMD_SOCKET="$work/smolvmd.sock"
  trap private_daemon_stop EXIT
  ip netns add "$netns"
  # Loopback up, so that a forward to 127.0.0.1 can be tried in there.
  ip -n "$netns" link set lo up
}

private_daemon_start() {
  # nsenter, not `ip netns exec`: that remounts /sys and hides the cgroups.
  nsenter --net="/run/netns/$netns" -- "$build_dir"/daemon/smolvmd --state-dir "$work/state" --run-dir "$work/run" \
    --guest-kernel-dir "$kernel_dir" --cgroup-parent "$netns" \
    --image-build-netns "/proc/$$/ns/net" --package-cache-dir "$(realpath -m "$build_dir")/debian-cache" \
    "$@" >>"$work/smolvmd.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 1 150); do
    "$build_dir"/client/smolvmctl vm list >/dev/null 2>&1 && return 0
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "smolvmd did not come up; its log:" >&2
  cat "$work/smolvmd.log" >&2
  return 1
}

# Ends the daemon and every VM it started (VMs outlive their daemon by
# design; these are ours, found by our dir), and removes their cgroups.
private_daemon_kill() {
  if [ -n "$daemon_pid" ]; then
    kill -TERM "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
    daemon_pid=""
  fi
  for pid in $(pgrep -f "qemu-system.*$work/"); do kill -9 "$pid" 2>/dev/null; done
  for _ in $(seq 1 50); do pgrep -f "qemu-system.*$work/" >/dev/null || break; sleep 0.1; done
  for group in /sys/fs/cgroup/*/"$netns" /sys/fs/cgroup/"$netns"; do
    [ -d "$group" ] || continue
    for vm in "$group"/*/; do [ -d "$vm" ] && rmdir "$vm" 2>/dev/null; done
    rmdir "$group" 2>/dev/null
  done
}

private_daemon_stop() {
  set +e  # Clean up everything, whatever fails.
  private_daemon_kill
  if declare -F private_daemon_on_stop >/dev/null; then private_daemon_on_stop; fi
  ip netns del "$netns" 2>/dev/null
  rm -rf "$work"
}
