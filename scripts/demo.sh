#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine as root: installs and
# builds, starts smolvmd on a private state dir, and runs the SmolVM seed's
# three flows as the compiled examples print them (with timings):
#   1. SmolVM().start(); vm.snapshot("my-checkpoint"); vm.close()
#   2. SmolVMManager().list_snapshots()
#   3. SmolVM.from_snapshot("my-checkpoint", resume_vm=True) → vm_id, status
# Then stops the daemon and removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh

# The guest kernel comes from Debian's archive once and is reused.
kernel_dir="$PWD/build/guest-kernel"
guest/fetch-kernel.sh "$kernel_dir"

# Short: Unix socket paths of VMs live under it (108-byte limit).
work=$(mktemp -d /tmp/svdemo-XXXXXX)
export SMOLVMD_SOCKET="$work/smolvmd.sock"
# The daemon runs in a private network namespace without an uplink: its
# bridge, TAPs and nft tables live and die there, and no guest reaches this
# machine's network (scripts/fork-demo.sh shows NAT to a fake internet).
netns="svdemo-${work: -6}"
ip netns add "$netns"
daemon_pid=""
cleanup() {
  set +e  # Clean up everything, whatever fails.
  if [ -n "$daemon_pid" ]; then
    build/client/smolvmctl vm list --json 2>/dev/null | grep -o '"vm_id": *"[^"]*"' | sort -u |
      sed 's/.*"\([^"]*\)"$/\1/' | while read -r id; do build/client/smolvmctl vm delete "$id" || true; done
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  ip netns del "$netns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns exec "$netns" build/daemon/smolvmd --state-dir "$work/state" --run-dir "$work/run" \
  --guest-kernel-dir "$kernel_dir" --uplink none >"$work/smolvmd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 100); do
  build/client/smolvmctl vm list >/dev/null 2>&1 && break
  sleep 0.2
done
echo "== smolvmd is up (pid $daemon_pid, log $work/smolvmd.log)"
sed -n '1,3p' "$work/smolvmd.log"

echo; echo "== 1. create + start, snapshot(\"my-checkpoint\"), close()"
build/examples/create_and_snapshot my-checkpoint
echo; echo "== 2. list_snapshots()"
build/examples/list_snapshots
echo; echo "== 3. from_snapshot(\"my-checkpoint\", resume_vm=true)"
build/examples/restore_snapshot my-checkpoint
echo; echo "== smolvmctl view"
build/client/smolvmctl snapshot list
echo; echo "== daemon log"
cat "$work/smolvmd.log"
