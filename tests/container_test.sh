#!/usr/bin/env bash
# The container image (docker/Dockerfile, target prebuilt) runs smolvmd, and
# the seed's flows work against it from the host over the mounted socket.
#
#   1. a Debian 12 base with the runtime packages: mmdebstrap | docker import
#      (tests/container_base.sh; cached in BUILD_DIR/container-cache);
#   2. a dockerd of the test's own (data root, exec root, pidfile, socket and
#      cgroup parent under names of its own) inside a network namespace the
#      test creates: Docker's docker0 bridge, its iptables rules and FORWARD
#      DROP policy stay in there and never touch the host's namespace;
#   3. `docker build --target prebuilt` from `DESTDIR=... cmake --install
#      BUILD_DIR` with the fetched guest kernel baked in;
#   4. the container as docker/Dockerfile's header says to run it (TCG here),
#      the run dir mounted from the host (the API socket), the state dir a
#      named volume;
#   5. with the host's smolvmctl: create+start a VM, exec, snapshot
#      "my-checkpoint", list, delete the VM, restore it from the snapshot,
#      exec again (it sees what the first exec wrote); a second container on
#      the same volume still has the snapshot; delete everything; each step's
#      exit code and output checked; `docker stop` ends smolvmd with 0.
# Everything it made (containers, dockerd and its containerd, mounts, the
# namespace, cgroups, temp dirs) is removed on every exit path; the cached
# base tarball is kept.
# Usage: container_test.sh SOURCE_DIR BUILD_DIR  (as root; kernel from
# $SMOLVM_TEST_KERNEL_DIR, else BUILD_DIR/guest-kernel)
set -euo pipefail
src="$(realpath "$1")"
build="$(realpath "$2")"
# Debian's docker.io client, whatever else is in PATH (a newer CLI may sit in
# /usr/local/bin); it only ever talks to this test's dockerd.
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
# shellcheck source=tests/container_base.sh
. "$src/tests/container_base.sh"

log() { echo "container_test: [$((SECONDS))s] $*"; }
fail() { echo "container_test: FAIL: $*" >&2; exit 1; }

smolvm_test_preflight container_test "$build" "$DOCKER" "$DOCKERD" mmdebstrap zstd ip nsenter flock
ctl_bin="$build/client/smolvmctl"
[ -x "$ctl_bin" ] || fail "no $ctl_bin: build first"
ns="smolvm-ctr-$run_id"
cgroup_parent="smolvm-ctr-$run_id"
tmp="$(mktemp -d /tmp/smolvm-ctr.XXXXXX)"
chmod 0755 "$tmp"
dockerd_pid=""
image="smolvmd-test:$run_id"
volume="smolvmd-state-$run_id"
# Host paths dockerd and containerd create outside their roots (the trust
# key, the plugin spec dir, containerd's shim socket dir): removed afterwards
# when this test created them.
host_leftovers=()
for p in /etc/docker/key.json /run/docker /run/containerd; do
  [ -e "$p" ] || host_leftovers+=("$p")
done

cleanup() {
  local rc=$?
  set +e
  # Once: a second signal must not cut the cleanup short.
  trap - EXIT
  trap '' INT TERM
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    # Containers first (their VMs die with them), then dockerd, which stops
    # its containerd and unmounts its layers.
    local ids
    ids="$(timeout 30 "$DOCKER" -H "unix://$tmp/docker.sock" ps -aq 2>/dev/null)"
    # shellcheck disable=SC2086 # one id per word
    [ -n "$ids" ] && timeout 60 "$DOCKER" -H "unix://$tmp/docker.sock" rm -f $ids >/dev/null 2>&1
    kill -TERM "$dockerd_pid"
    for _ in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$dockerd_pid" 2>/dev/null && { echo "container_test: dockerd did not stop; SIGKILL" >&2; kill -KILL "$dockerd_pid"; }
    wait "$dockerd_pid" 2>/dev/null
  fi
  # A killed dockerd leaves its containerd (by its pidfile) and mounts.
  local cpid
  cpid="$(cat "$tmp/exec/containerd/containerd.pid" 2>/dev/null)"
  if [ -n "$cpid" ] && [ "$(readlink "/proc/$cpid/exe" 2>/dev/null)" = /usr/bin/containerd ]; then
    kill -TERM "$cpid"; sleep 2; kill -KILL "$cpid" 2>/dev/null
  fi
  awk -v t="$tmp/" 'index($5, t) == 1 {print $5}' /proc/self/mountinfo | sort -r \
    | while read -r m; do umount -l "$m"; done
  ip netns del "$ns" 2>/dev/null
  # dockerd's cgroup parent (relative to the test's own group) in every
  # hierarchy: empty once the containers are gone; removed deepest first
  # with rmdir, never recursively.
  find /sys/fs/cgroup -maxdepth 6 -type d -name "$cgroup_parent" -prune 2>/dev/null \
    | while read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
  for p in "${host_leftovers[@]}"; do
    case "$p" in
      /etc/docker/key.json) rm -f "$p" ;;
      *) find "$p" -depth -type d -empty -delete 2>/dev/null ;;
    esac
  done
  rm -rf --one-file-system "$tmp"
  if [ "$rc" -ne 0 ]; then echo "container_test: failed (rc $rc) after ${SECONDS}s" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dump_logs() {
  echo "--- dockerd log (tail)" >&2; tail -30 "$tmp/dockerd.log" >&2
  local c
  for c in $(docker ps -aq 2>/dev/null); do
    echo "--- container $c log (tail)" >&2; docker logs --tail 60 "$c" >&2 2>&1
  done
}
docker() { "$DOCKER" -H "unix://$tmp/docker.sock" "$@"; }
export DOCKER_CONFIG="$tmp/docker-config" DOCKER_BUILDKIT=0

# 1. The base image's root filesystem.
base_tar="$(smolvm_base_tarball "$src" "$build")" || fail "could not build the base tarball"
log "base tarball $base_tar ($(du -m "$base_tar" | cut -f1) MB)"

# 2. dockerd in a namespace of its own.
host_forward="$(iptables -S FORWARD 2>/dev/null | head -1)"
ip netns add "$ns"
ip -n "$ns" link set lo up
mkdir -p "$tmp/data" "$tmp/exec" "$DOCKER_CONFIG"
# nsenter execs dockerd in place: $! is dockerd. (Not `ip netns exec`,
# which remounts /sys.)
nsenter --net="/run/netns/$ns" -- "$DOCKERD" \
  --data-root "$tmp/data" --exec-root "$tmp/exec" --pidfile "$tmp/dockerd.pid" \
  -H "unix://$tmp/docker.sock" --cgroup-parent "$cgroup_parent" --log-level warn \
  >"$tmp/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 120); do
  docker version >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || { dump_logs; fail "dockerd exited"; }
  sleep 0.5
done
docker version >/dev/null || { dump_logs; fail "dockerd did not answer in 60 s"; }
# The host's namespace is untouched: no docker0, FORWARD policy unchanged;
# Docker's bridge and FORWARD DROP are in the test's namespace.
ip link show docker0 >/dev/null 2>&1 && fail "docker0 appeared in the host's namespace"
[ "$(iptables -S FORWARD 2>/dev/null | head -1)" = "$host_forward" ] \
  || fail "the host's FORWARD policy changed: $(iptables -S FORWARD | head -1), was $host_forward"
ip -n "$ns" link show docker0 >/dev/null || fail "no docker0 in $ns"
nsenter --net="/run/netns/$ns" -- iptables -S FORWARD | grep -qx -- '-P FORWARD DROP' \
  || fail "no FORWARD DROP in $ns (is this dockerd's namespace?)"
log "dockerd $dockerd_pid in netns $ns"

zstd -dc "$base_tar" | docker import - "smolvm-test-base:$run_id" >/dev/null
log "base imported"

# 3. The prebuilt image: a scratch context with the Dockerfile's inputs and
# the staged install (plus the guest kernel).
ctx="$tmp/context"
mkdir -p "$ctx/docker"
cp "$src/docker/Dockerfile" "$src/docker/runtime-packages.txt" "$src/docker/entrypoint.sh" "$ctx/docker/"
stage="$ctx/build/docker-stage"
if ! out="$(DESTDIR="$stage" cmake --install "$build" --prefix /usr/local --strip 2>&1)"; then
  fail "cmake --install: $out"
fi
cp -a "$kernel" "$stage/usr/local/share/smolvmd/kernel"
if ! out="$(docker build -f "$ctx/docker/Dockerfile" --target prebuilt \
    --build-arg "BASE=smolvm-test-base:$run_id" -t "$image" "$ctx" 2>&1)"; then
  echo "$out" >&2
  fail "docker build --target prebuilt"
fi
# The legacy builder stops at the target: nothing of the build stage ran.
if grep -qE 'install-deps|cmake -S' <<<"$out"; then fail "the prebuilt build ran the compile stage"; fi
grep -q '^prebuilt: no install tree' <<<"$out" && fail "the prebuilt stage found no install tree"
grep -q '^installing:' <<<"$out" && fail "runtime-base installed packages the base already has: $(grep '^installing:' <<<"$out")"
log "image $image built"

# 4. The container, as the Dockerfile's header runs it.
run="$tmp/run"
mkdir -p "$run"
sock="$run/smolvmd.sock"
start_container() {  # NAME
  local devices=(--device /dev/net/tun)
  [ -e /dev/kvm ] && devices+=(--device /dev/kvm)
  docker run -d --name "$1" "${devices[@]}" \
    --cap-add NET_ADMIN --cap-add SYS_ADMIN --security-opt seccomp=unconfined \
    -v "$volume:/var/lib/smolvmd" -v "$run:/run/smolvmd" \
    "$image" --accelerator tcg --default-image minimal --dns none >/dev/null
  for _ in $(seq 120); do
    "$ctl_bin" --socket "$sock" vm list >/dev/null 2>&1 && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || { dump_logs; fail "container $1 exited"; }
    sleep 0.5
  done
  dump_logs
  fail "smolvmd in $1 did not answer on $sock in 60 s"
}
stop_container() {  # NAME: SIGTERM, smolvmd drains and exits 0
  docker stop -t 60 "$1" >/dev/null
  local code
  code="$(docker inspect -f '{{.State.ExitCode}}' "$1")"
  [ "$code" = 0 ] || { dump_logs; fail "container $1 exited with $code after docker stop"; }
  # The daemon's log: its warnings shown, anything critical fails the test.
  docker logs "$1" >"$tmp/$1.log" 2>&1
  grep -E ' (warning|error|critical) ' "$tmp/$1.log" | sed "s/^/  $1: /" || :
  if grep -q ' critical ' "$tmp/$1.log"; then fail "smolvmd in $1 logged a critical error"; fi
  grep -q 'docker-entrypoint:' "$tmp/$1.log" && fail "the entrypoint could not prepare the container: $(grep 'docker-entrypoint:' "$tmp/$1.log")"
  docker rm "$1" >/dev/null
}
start_container smolvmd-a
log "container smolvmd-a serving on $sock (from the host)"
# The socket is root:<the image's smolvm group> 0660.
[ "$(stat -c %a "$sock")" = 660 ] || fail "socket mode $(stat -c %a "$sock"), want 660"

# 5. The seed's flows, from the host. check WANT_RC DESC CMD...: runs it,
# fails unless it exits WANT_RC; its output is in $out.
check() {
  local want="$1" desc="$2"
  shift 2
  local rc=0
  out="$("$@" 2>&1)" || rc=$?
  if [ "$rc" != "$want" ]; then
    dump_logs
    fail "$desc: exit $rc (want $want): $*"$'\n'"$out"
  fi
}
ctl() { "$ctl_bin" --socket "$sock" "$@"; }
status_of() { ctl --json vm get "$1" | sed -n 's/.*"status": *"\([A-Z_]*\)".*/\1/p' | head -1; }

check 0 "create+start box1" ctl vm create --id box1 --vcpus 1 --memory-mib 256
[ "$(status_of box1)" = RUNNING ] || fail "box1 is $(status_of box1) after create, want RUNNING"
check 0 "exec in box1" ctl vm exec box1 -- sh -c 'echo hello-from-box1; echo kept-by-snapshot > /root/marker'
grep -qx hello-from-box1 <<<"$out" || fail "exec printed: $out"
check 3 "exec's own exit code" ctl vm exec box1 -- sh -c 'exit 3'
log "box1 running, exec ok"
check 0 "snapshot create" ctl snapshot create box1 --id my-checkpoint
check 0 "snapshot list" ctl --json snapshot list
grep -q '"my-checkpoint"' <<<"$out" || fail "snapshot list lacks my-checkpoint: $out"
grep -q '"box1"' <<<"$out" || fail "snapshot list lacks box1's snapshot: $out"
check 0 "delete box1" ctl vm delete box1
check 3 "get deleted box1" ctl vm get box1
check 0 "restore my-checkpoint" ctl snapshot restore my-checkpoint
[ "$(status_of box1)" = RUNNING ] || fail "restored box1 is $(status_of box1), want RUNNING"
check 0 "exec in the restored box1" ctl vm exec box1 -- cat /root/marker
grep -qx kept-by-snapshot <<<"$out" || fail "restored box1's /root/marker: $out"
log "snapshot, list, restore, exec ok"

# The state dir is a volume: a new container has the snapshot.
stop_container smolvmd-a
start_container smolvmd-b
check 0 "snapshot list after a new container" ctl --json snapshot list
grep -q '"my-checkpoint"' <<<"$out" || fail "the snapshot did not outlive the container: $out"
# box1's QEMU ended with the first container: the new daemon says so.
[ "$(status_of box1)" = ERROR ] || fail "box1 is $(status_of box1) in the new container, want ERROR (its VMM is gone)"
check 0 "smolvmctl inside the container" docker exec smolvmd-b smolvmctl vm list -q
[ "$out" = box1 ] || fail "docker exec smolvmd-b smolvmctl vm list -q: $out"
check 0 "delete box1" ctl vm delete box1
check 0 "delete my-checkpoint" ctl snapshot delete my-checkpoint
check 0 "vm list" ctl vm list -q
[ -z "$out" ] || fail "VMs left: $out"
check 0 "snapshot list" ctl --json snapshot list
grep -q '"my-checkpoint"' <<<"$out" && fail "my-checkpoint still listed: $out"
stop_container smolvmd-b
log "ok: a second container on the volume, everything deleted, docker stop exits 0"
