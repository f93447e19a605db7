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
  firewall)
    # One VM's firewall change with 1 and 1,000 VMs: the per-VM transaction
    # against the whole ruleset (libnftables, and a spawned `nft -f`). Needs
    # no daemon: it works in a throwaway network namespace of its own.
    "$build_dir"/bench/firewall_bench "$@"
    ;;
  perf)
    # The performance tables (issue 11): every daemon figure (perf_bench,
    # through the public client) beside its physical baseline measured in
    # the same run (bare_qemu.py: the same operation on a bare QEMU with the
    # daemon's recipe, QMP driven by hand). Both use 1 vCPU, the minimal
    # image, and RAM files on the same filesystem as the daemon's run dir.
    # Results: $SMOLVM_BENCH_OUT/perf-<time>.{daemon,bare,firewall}.jsonl and .md.
    # perf_bench's arguments follow (e.g. `bench/run.sh perf --reps 5`);
    # SMOLVM_BARE_ARGS adds bare_qemu.py's.
    out_dir="${SMOLVM_BENCH_OUT:-$build_dir/bench-results}"
    mkdir -p "$out_dir"
    out="$out_dir/perf-$(date -u +%Y%m%dT%H%M%SZ)"
    echo "writing $out.{daemon,bare}.jsonl and $out.md" >&2
    "$build_dir"/bench/perf_bench all --seed-snapshots 10000 --state-db "$work/state/smolvmd.db" \
      "$@" >"$out.daemon.jsonl"
    # The firewall's per-VM change (about a minute; the same JSON lines, own file).
    "$build_dir"/bench/firewall_bench --reps 20 >"$out.firewall.jsonl"
    digest=$("$build_dir"/client/smolvmctl --json image get minimal |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"].split(":",1)[1])')
    mkdir -p "$work/bare-run" "$work/bare-state"
    # shellcheck disable=SC2086
    python3 bench/bare_qemu.py all --image-dir "$work/state/images/sha256-$digest" --vcpus 1 \
      --ram-dir "$work/bare-run" --work-dir "$work/bare-state" --dirty-chunk-kib 2048 \
      ${SMOLVM_BARE_ARGS:-} >"$out.bare.jsonl"
    python3 bench/compare.py "$out.daemon.jsonl" "$out.bare.jsonl" "$out.firewall.jsonl" >"$out.md"
    cat "$out.md"
    ;;
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
  *) echo "usage: bench/run.sh restore|exec|firewall|load|confinement|perf [ARGS]" >&2; exit 2 ;;
esac
