#!/usr/bin/env bash
# Runs the benchmarks against a private smolvmd (temp state/run dirs), then
# stops it and removes everything. Build first (scripts/build.sh); another
# build directory than build/ is named by SMOLVM_BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# A private network namespace without uplink: nothing touches the host's network.
. scripts/private-daemon.sh
private_daemon_init svb
private_daemon_start --uplink none
bench="${1:-restore}"
shift || true
case "$bench" in
  restore)
    "$build_dir"/bench/restore_bench "$@"
    # The daemon's own account of each snapshot (checksum time included).
    echo
    grep -o 'snapshot [^ ]*: created from .*' "$work/smolvmd.log" || true
    ;;
  exec) "$build_dir"/bench/exec_bench "$@" ;;
  *) echo "usage: bench/run.sh restore|exec [ARGS]" >&2; exit 2 ;;
esac
