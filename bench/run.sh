#!/usr/bin/env bash
# Runs the benchmarks against a private smolvmd (temp state/run dirs), then
# stops it and removes everything. Build first (scripts/build.sh); another
# build directory than build/ is named by SMOLVM_BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# A private network namespace without uplink: nothing touches the host's network.
. scripts/private-daemon.sh
private_daemon_init svb
private_daemon_start --uplink none --default-image minimal
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
  load)
    # Concurrent clients mixing reads, Exec and VM/snapshot churn; the
    # daemon's RSS and fds compared after warmup and at the end. The report
    # (text and JSON) goes to $SMOLVM_BENCH_OUT (default $build_dir/bench-results).
    # For a leak check, run it as `MALLOC_ARENA_MAX=1 bench/run.sh load
    # --rss-tolerance-mib 4`: the daemon inherits the variable, and glibc's
    # per-thread arenas no longer hide small leaks (bench/load/load_options.h).
    out_dir="${SMOLVM_BENCH_OUT:-$build_dir/bench-results}"
    mkdir -p "$out_dir"
    out="$out_dir/load-$(date -u +%Y%m%dT%H%M%SZ)"
    echo "writing $out.txt and $out.json" >&2
    # Not piped into tee: Ctrl-C would end tee and then the load with
    # SIGPIPE, while it still cleans up.
    status=0
    "$build_dir"/bench/load/smolvm_load --daemon-pid "$daemon_pid" --json "$out.json" "$@" \
      >"$out.txt" || status=$?
    cat "$out.txt"
    exit "$status"
    ;;
  confinement)
    # The same restore benchmark with confined VMMs (the default), then with
    # --vmm-confinement=off (root QEMU, no jail, seccomp or cgroup), on fresh
    # state each time.
    echo "== confined (per-VM uid, namespaces, seccomp, cgroup)"
    "$build_dir"/bench/restore_bench "$@"
    private_daemon_kill
    rm -rf "$work/state" "$work/run"
    private_daemon_start --uplink none --vmm-confinement=off --default-image minimal
    echo "== unconfined (--vmm-confinement=off)"
    "$build_dir"/bench/restore_bench "$@"
    ;;
  *) echo "usage: bench/run.sh restore|exec|load|confinement [ARGS]" >&2; exit 2 ;;
esac
