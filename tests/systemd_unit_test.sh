#!/usr/bin/env bash
# systemd/smolvmd.service under a real systemd: a Debian 12 root filesystem
# (the cached base of tests/container_base.sh, which has systemd) with
# smolvmd installed into it by `DESTDIR=<rootfs> cmake --install BUILD_DIR`
# (the unit rendered for /usr/local), booted with `systemd-nspawn -b` in a
# private network namespace. Inside, through nsenter into the container:
#   - `systemctl start smolvmd` returns 0 once READY=1 came: the socket
#     answers right away and the journal has "serving on" before "Started";
#   - `systemctl show` says active/running, StatusText "serving on unix:...",
#     WatchdogUSec=1min, NotifyAccess=main, Type=notify;
#   - `journalctl -u smolvmd -o cat` has the daemon's lines with no timestamp
#     of their own, and journald took their priority from them;
#   - with WatchdogSec=3s (a runtime drop-in) the daemon's pings keep it
#     running with no restart;
#   - `systemctl stop smolvmd` ends with Result=success and status 0.
# The machine is powered off and everything is removed on every exit path
# (the cached base tarball is kept). No VM is booted in there: see README
# "Running under systemd" for why this host cannot give one its cgroups.
# Usage: systemd_unit_test.sh SOURCE_DIR BUILD_DIR  (as root; guest kernel
# from $SMOLVM_TEST_KERNEL_DIR, else BUILD_DIR/guest-kernel)
set -euo pipefail
src="$(realpath "$1")"
build="$(realpath "$2")"
# shellcheck source=tests/container_base.sh
. "$src/tests/container_base.sh"

log() { echo "systemd_unit_test: [$((SECONDS))s] $*"; }
fail() { echo "systemd_unit_test: FAIL: $*" >&2; exit 1; }

smolvm_test_preflight systemd_unit_test "$build" systemd-nspawn mmdebstrap zstd nsenter unshare \
  flock cmake
machine="smolvm-unit-$run_id"
cg="smolvm-unit-$run_id"
tmp="$(mktemp -d /tmp/smolvm-unit.XXXXXX)"
rootfs="$tmp/rootfs"
launcher_pid=""
nspawn_pid=""
init_pid=""
# systemd-nspawn keeps lock and propagation dirs there; removed afterwards
# when this test created it.
host_leftovers=()
[ -e /run/systemd/nspawn ] || host_leftovers+=(/run/systemd/nspawn)

# The cgroup hierarchies systemd-nspawn places the container in: name=systemd
# (v1) and cgroup2. On these machines (PID 1 is not systemd; v1 controllers)
# both are mounted at /sys/fs/cgroup/{systemd,unified}; where one is missing
# the launcher mounts it in its private mount namespace. The container gets a
# cgroup2 tree of its own (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1): nspawn mounts
# v1 controllers read-only, where smolvmd could not make its VMs' groups.
own_cgroup() {  # the test's own path in the hierarchy of /proc/self/cgroup's field 2 = $1
  awk -F: -v want="$1" '$2 == want {print $3}' /proc/self/cgroup | sed 's:/*$::'
}
cgroup_dirs=()
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
  cgroup_dirs+=("/sys/fs/cgroup$(own_cgroup "")/$cg")
else
  cgroup_dirs+=("/sys/fs/cgroup/systemd$(own_cgroup name=systemd)/$cg"
                "/sys/fs/cgroup/unified$(own_cgroup "")/$cg")
fi

cleanup() {
  local rc=$?
  set +e
  # Once: a second signal must not cut the cleanup short.
  trap - EXIT
  trap '' INT TERM
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    [ -n "$init_pid" ] && timeout 10 nsenter -t "$init_pid" -a -- systemctl poweroff --no-block >/dev/null 2>&1
    for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    # SIGTERM asks nspawn to shut the container down. Failing that, SIGKILL
    # of the container's init ends its PID namespace (every process in it),
    # and nspawn with it; killing nspawn alone would orphan the container.
    kill -0 "$nspawn_pid" 2>/dev/null && kill -TERM "$nspawn_pid"
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$nspawn_pid" 2>/dev/null; then
      echo "systemd_unit_test: the container did not stop; SIGKILL to its init" >&2
      [ -n "$init_pid" ] && kill -KILL "$init_pid"
      for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$nspawn_pid" 2>/dev/null && kill -KILL "$nspawn_pid"
    fi
  fi
  if [ -n "$launcher_pid" ]; then
    for _ in $(seq 50); do kill -0 "$launcher_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$launcher_pid" 2>/dev/null && kill -KILL "$launcher_pid"
    wait "$launcher_pid" 2>/dev/null
  fi
  # The launcher removes its cgroups itself; these are for a killed one.
  local d
  for d in "${cgroup_dirs[@]}"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount -l "$m"; done
  rm -rf "/run/systemd/nspawn/propagate/$machine" 2>/dev/null
  # nspawn's lock on the root directory, left behind when it was killed.
  [ -d "$rootfs" ] && rm -f "/run/systemd/nspawn/locks/inode-$(stat -c %d:%i "$rootfs")"
  for p in "${host_leftovers[@]}"; do find "$p" -depth -type d -empty -delete 2>/dev/null; done
  rm -rf --one-file-system "$tmp"
  if [ "$rc" -ne 0 ]; then echo "systemd_unit_test: failed (rc $rc) after ${SECONDS}s" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The root filesystem: the cached base, smolvmd installed into it, a
# configuration that boots the busybox image on TCG, and the guest kernel in
# the state dir (so the first image build needs no network).
base_tar="$(smolvm_base_tarball "$src" "$build")" || fail "could not build the base tarball"
mkdir "$rootfs"
zstd -dc "$base_tar" | tar -C "$rootfs" -x
if ! out="$(DESTDIR="$rootfs" cmake --install "$build" --prefix /usr/local 2>&1)"; then
  fail "cmake --install: $out"
fi
unit="$rootfs/usr/local/lib/systemd/system/smolvmd.service"
[ -f "$unit" ] || fail "cmake --install put no unit at /usr/local/lib/systemd/system"
mkdir -p "$rootfs/etc/smolvmd" "$rootfs/var/lib/smolvmd"
printf '[daemon]\naccelerator = "tcg"\ndefault_image = "minimal"\n' >"$rootfs/etc/smolvmd/smolvmd.toml"
cp -a "$kernel" "$rootfs/var/lib/smolvmd/kernel"
log "rootfs ready ($(du -sm "$rootfs" | cut -f1) MB)"

# Boot. The launcher runs in a private mount namespace: it mounts missing
# hierarchies there, moves itself into the test's cgroups (nspawn
# --keep-unit splits the group it is in into supervisor/ and payload/), runs
# nspawn, then removes the groups.
launcher() {
  set -eu
  local d made=()
  if [ "$(stat -f -c %T /sys/fs/cgroup)" != cgroup2fs ]; then
    if ! grep -q ' /sys/fs/cgroup/systemd .* cgroup .*name=systemd' /proc/self/mountinfo; then
      [ -d /sys/fs/cgroup/systemd ] || made+=(/sys/fs/cgroup/systemd)
      mkdir -p /sys/fs/cgroup/systemd
      mount -t cgroup -o none,name=systemd smolvm-unit /sys/fs/cgroup/systemd
    fi
    if ! grep -q ' /sys/fs/cgroup/unified .* cgroup2 ' /proc/self/mountinfo; then
      [ -d /sys/fs/cgroup/unified ] || made+=(/sys/fs/cgroup/unified)
      mkdir -p /sys/fs/cgroup/unified
      mount -t cgroup2 smolvm-unit /sys/fs/cgroup/unified
    fi
  fi
  for d in "${cgroup_dirs[@]}"; do
    mkdir -p "$d"
    echo "$BASHPID" >"$d/cgroup.procs"
  done
  local rc=0
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet -D "$rootfs" -M "$machine" -b \
    --register=no --keep-unit --private-network --console=read-only </dev/null || rc=$?
  # Out of the groups (back to the root), then remove them deepest first.
  for d in "${cgroup_dirs[@]}"; do
    echo "$BASHPID" >"${d%/"$cg"}/cgroup.procs" 2>/dev/null || :
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || :
  done
  # Mount points this launcher made on the shared /sys/fs/cgroup tmpfs (the
  # mounts themselves end with this mount namespace).
  for d in "${made[@]}"; do umount "$d" 2>/dev/null || :; rmdir "$d" 2>/dev/null || :; done
  return "$rc"
}
export -f launcher
export rootfs machine cg
export cgroup_dirs_list="${cgroup_dirs[*]}"
# shellcheck disable=SC2016 # expanded by the inner bash
unshare -m --propagation private -- bash -c 'cgroup_dirs=($cgroup_dirs_list); launcher' \
  >"$tmp/console.log" 2>&1 &
launcher_pid=$!
for _ in $(seq 100); do
  nspawn_pid="$(pgrep -P "$launcher_pid" -x systemd-nspawn || :)"
  [ -n "$nspawn_pid" ] && init_pid="$(pgrep -P "$nspawn_pid" || :)"
  [ -n "$init_pid" ] && break
  kill -0 "$launcher_pid" 2>/dev/null || { cat "$tmp/console.log" >&2; fail "systemd-nspawn exited"; }
  sleep 0.2
done
[ -n "$init_pid" ] || { cat "$tmp/console.log" >&2; fail "no container init after 20 s"; }
inside() { nsenter -t "$init_pid" -a -- "$@"; }
# systemctl answers once systemd has its private socket; then it waits for
# the boot to finish.
state=""
for _ in $(seq 300); do
  state="$(timeout 120 nsenter -t "$init_pid" -a -- systemctl is-system-running --wait 2>&1 || :)"
  case "$state" in *"Failed to connect"*|*"No such file"*|"") sleep 0.2 ;; *) break ;; esac
done
case "$state" in
  running) ;;
  degraded) echo "systemd_unit_test: failed units: $(inside systemctl --failed --plain --no-legend)" ;;
  *) tail -40 "$tmp/console.log" >&2; fail "the container's systemd did not come up: $state" ;;
esac
[ "$(inside cat /proc/1/comm)" = systemd ] || fail "PID 1 in the container is not systemd"
log "booted $machine (systemd $(inside systemctl --version | awk 'NR==1{print $2}'), $state)"

# check WANT_RC DESC CMD...: fails unless it exits WANT_RC; output in $out.
check() {
  local want="$1" desc="$2"
  shift 2
  local rc=0
  out="$("$@" 2>&1)" || rc=$?
  if [ "$rc" != "$want" ]; then
    inside journalctl -u smolvmd -o cat --no-pager 2>&1 | tail -30 >&2
    fail "$desc: exit $rc (want $want): $*"$'\n'"$out"
  fi
}
prop() { inside systemctl show smolvmd -p "$1" --value; }
want_prop() {  # NAME VALUE
  local got
  got="$(prop "$1")"
  [ "$got" = "$2" ] || fail "$1=$got, want $2"
}

check 0 "systemctl start smolvmd" inside timeout 120 systemctl start smolvmd
# Started means READY=1 came: the socket answers now, and "serving on"
# (logged just before READY=1) precedes systemd's "Started".
check 0 "smolvmctl right after start" inside /usr/local/bin/smolvmctl vm list
journal="$(inside journalctl -u smolvmd -o cat --no-pager)"
serving_line="$(grep -n 'smolvmd serving on unix:/run/smolvmd/smolvmd.sock' <<<"$journal" | head -1 | cut -d: -f1)"
started_line="$(grep -n '^Started smolvmd.service' <<<"$journal" | head -1 | cut -d: -f1)"
[ -n "$serving_line" ] || fail "no \"serving on\" in the journal:"$'\n'"$journal"
if [ -z "$started_line" ] || [ "$serving_line" -gt "$started_line" ]; then
  fail "\"Started\" before the daemon served:"$'\n'"$journal"
fi
want_prop Type notify
want_prop ActiveState active
want_prop SubState running
want_prop StatusText "serving on unix:/run/smolvmd/smolvmd.sock"
want_prop WatchdogUSec 1min
want_prop NotifyAccess main
main_pid="$(prop MainPID)"
[ "$(inside cat "/proc/$main_pid/comm")" = smolvmd ] || fail "MainPID $main_pid is not smolvmd"
log "started: active/running, \"$(prop StatusText)\", watchdog $(prop WatchdogUSec)"

# The journal: the daemon's lines carry no timestamp of their own (journald
# stamps them), and their priority came from the "<N>" prefix.
daemon_lines="$(grep -E '^(trace|debug|info|warning|error|critical) ' <<<"$journal" || :)"
[ -n "$daemon_lines" ] || fail "no daemon lines in the journal:"$'\n'"$journal"
if grep -qE '(^|[ \[])[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}' <<<"$daemon_lines"; then
  fail "daemon lines with a timestamp of their own:"$'\n'"$(grep -E '[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:' <<<"$daemon_lines")"
fi
if grep -qE '^(error|critical) ' <<<"$daemon_lines"; then
  fail "the daemon logged errors:"$'\n'"$(grep -E '^(error|critical) ' <<<"$daemon_lines")"
fi
prio="$(inside journalctl -u smolvmd -o verbose --no-pager \
  | grep -B30 'MESSAGE=info smolvmd serving on' | grep -o 'PRIORITY=[0-9]' | tail -1)"
[ "$prio" = PRIORITY=6 ] || fail "the \"serving on\" entry has $prio, want PRIORITY=6 (info)"
check 0 "journalctl -p warning" inside journalctl -u smolvmd -p warning -o cat --no-pager
log "journal: $(wc -l <<<"$daemon_lines") daemon lines, no own timestamps, priorities from the daemon"

# The watchdog, shortened by a runtime drop-in: WATCHDOG=1 every 1.5 s keeps
# it running (a missed ping would be SIGABRT and a restart).
inside mkdir -p /run/systemd/system/smolvmd.service.d
inside sh -c 'printf "[Service]\nWatchdogSec=3s\n" >/run/systemd/system/smolvmd.service.d/watchdog.conf'
check 0 "daemon-reload" inside systemctl daemon-reload
check 0 "systemctl restart smolvmd" inside timeout 120 systemctl restart smolvmd
want_prop WatchdogUSec 3s
first="$(prop WatchdogTimestampMonotonic)"
sleep 8
want_prop ActiveState active
want_prop NRestarts 0
last="$(prop WatchdogTimestampMonotonic)"
[ "$last" -gt "$first" ] || fail "no watchdog ping in 8 s (WatchdogTimestampMonotonic $first -> $last)"
log "watchdog: pinged within WatchdogSec=3s for 8 s, no restart"
inside rm -r /run/systemd/system/smolvmd.service.d
check 0 "daemon-reload" inside systemctl daemon-reload

# Stop: SIGTERM, STOPPING=1, the daemon drains and exits 0.
check 0 "systemctl stop smolvmd" inside timeout 60 systemctl stop smolvmd
want_prop ActiveState inactive
want_prop Result success
want_prop ExecMainStatus 0
inside journalctl -u smolvmd -o cat --no-pager | grep -q '^info smolvmd stopped' \
  || fail "no \"smolvmd stopped\" in the journal"
log "stopped: Result=success, status 0"

check 0 "poweroff" inside systemctl poweroff --no-block
for _ in $(seq 300); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
kill -0 "$nspawn_pid" 2>/dev/null && fail "the container did not power off in 60 s"
wait "$launcher_pid" || fail "systemd-nspawn exited with $?"
launcher_pid=""
log "ok: powered off"
