#!/usr/bin/env bash
# Runs the benchmarks against a private smolvmd (temp state/run dirs), then
# stops it and removes everything. Build first (scripts/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
kernel_dir="$PWD/build/guest-kernel"
guest/fetch-kernel.sh "$kernel_dir"
work=$(mktemp -d /tmp/svb-XXXXXX)
export SMOLVMD_SOCKET="$work/s.sock"
# A private network namespace without uplink: nothing touches the host's network.
netns="svb-${work: -6}"
ip netns add "$netns"
ip netns exec "$netns" build/daemon/smolvmd --state-dir "$work/st" --run-dir "$work/r" \
  --guest-kernel-dir "$kernel_dir" --uplink none >"$work/smolvmd.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; ip netns del "$netns"; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do build/client/smolvmctl vm list >/dev/null 2>&1 && break; sleep 0.2; done
bench="${1:-restore}"
shift || true
case "$bench" in
  restore) build/bench/restore_bench "$@" ;;
  exec) build/bench/exec_bench "$@" ;;
  *) echo "usage: bench/run.sh restore|exec [ARGS]" >&2; exit 2 ;;
esac
