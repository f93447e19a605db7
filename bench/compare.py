#!/usr/bin/env python3
"""compare.py: the daemon's figures beside their bare-QEMU baselines.

Reads the JSON lines of bench/perf_bench (daemon.*) and bench/bare_qemu.py
(bare.*) from the files given, pairs each daemon figure with the baseline
measured in the same run (PAIRS below: the same operation done by hand on a
bare QEMU, or for relative targets another daemon figure), and prints a
Markdown table: p50/p99 of both, the ratio of the p50s, and the issue's
target where there is one (met / missed by how much). Figures without a
partner are listed after the table.

Usage: bench/compare.py RESULTS.jsonl [MORE.jsonl ...] > table.md
"""
import json
import re
import sys

# (daemon figure regex, baseline name template, target ratio or None, what).
# Templates use the regex's groups.
PAIRS = [
    (r"daemon\.restore\.(\d+)\.clone\.running", "bare.restore.{0}.running", 1.3,
     "clone restore -> RUNNING"),
    (r"daemon\.restore\.(\d+)\.clone\.first_exec", "bare.restore.{0}.running", 1.5,
     "clone restore -> first Exec"),
    (r"daemon\.restore\.(\d+)\.own\.running", "bare.restore.{0}.running", None,
     "own-identity restore -> RUNNING"),
    (r"daemon\.restore\.(\d+)\.own\.first_exec", "bare.restore.{0}.running", None,
     "own-identity restore -> first Exec"),
    (r"daemon\.restore\.(\d+)\.gen2\.running", "daemon.restore.{0}.clone.running", 1.3,
     "generation-2 restore vs generation 1"),
    (r"daemon\.snapshot\.(\d+)\.dirty(\d+)", "bare.snapshot.{0}.dirty{1}", None,
     "CreateSnapshot, D MiB dirtied"),
    (r"daemon\.snapshot\.(\d+)\.dirty(\d+)\.size_mib", "bare.snapshot.{0}.dirty{1}.size_mib",
     None, "snapshot size"),
    (r"daemon\.cold\.running", "bare.boot.256", None, "cold CreateVm(start) -> RUNNING"),
    (r"daemon\.cold\.first_exec", "bare.boot.256", None, "cold CreateVm(start) -> first Exec"),
    (r"daemon\.fork\.(\d+)", "bare.fork.{0}", None, "ForkSnapshot N -> all RUNNING"),
    (r"daemon\.fork\.(\d+)\.pss_mib", "bare.fork.{0}.pss_mib", None, "PSS per clone"),
    (r"daemon\.exec\.true", "daemon.exec.ping", None, "Exec round trip vs channel ping"),
    (r"daemon\.pool\.claim", "bare.restore.256.cont", None,
     "pool ClaimVm vs bare `cont` of a loaded clone"),
    (r"daemon\.pool\.claim\.first_exec", "bare.restore.256.running", None,
     "pool claim -> first Exec vs bare restore -> running"),
]
# Relative targets within the daemon's own figures.
SELF_TARGETS = [
    ("daemon.fork.10", "daemon.fork.1", 3.0, "10-clone fork vs one clone"),
    # The same ratio for bare QEMU: what two cores allow at all.
    ("bare.fork.10", "bare.fork.1", None, "bare: 10 restores at once vs one"),
    # "Flat": one VM's change with 1,000 VMs within 1.5x of with one
    # (bench/firewall_bench, run by bench/run.sh perf).
    ("firewall.1000.incremental.add", "firewall.1.incremental.add", 1.5,
     "firewall: add one VM, 1,000 VMs vs 1"),
    ("firewall.1000.incremental.update", "firewall.1.incremental.update", 1.5,
     "firewall: change one VM's policy, 1,000 VMs vs 1"),
    ("firewall.1000.incremental.remove", "firewall.1.incremental.remove", 1.5,
     "firewall: remove one VM, 1,000 VMs vs 1"),
    ("firewall.1000.full.libnftables", "firewall.1000.incremental.update", None,
     "firewall: the whole ruleset at 1,000 VMs vs one VM's change"),
]
# Absolute targets: (regex, field, limit, unit). The listing target is one
# ListSnapshots call with 10,000+ snapshots present (the default page); the
# full listing through every page is reported beside it.
ABSOLUTE = [
    (r"daemon\.list\.snapshots\.\d+\.page", "p99", 50.0, "ms"),
    (r"daemon\.pool\.claim", "p50", 10.0, "ms"),
    (r"daemon\.pool\.claim", "p99", 25.0, "ms"),
]


def load(paths):
    results = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "name" in r and "p50" in r:
                    results[r["name"]] = r
    return results


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "ms" and v >= 1000:
        return f"{v / 1000:.2f} s"
    return f"{v:.1f} {unit}" if unit != "count" else f"{v:g}"


def verdict(ratio, target):
    if target is None or ratio is None:
        return ""
    if ratio <= target:
        return f"≤ {target}×: met"
    return f"≤ {target}×: missed by {ratio / target:.2f}×"


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    results = load(argv[1:])
    used = set()
    rows = []
    for name in sorted(results):
        r = results[name]
        for pattern, base_tmpl, target, what in PAIRS:
            m = re.fullmatch(pattern, name)
            if not m:
                continue
            base_name = base_tmpl.format(*m.groups())
            base = results.get(base_name)
            ratio = r["p50"] / base["p50"] if base and base["p50"] else None
            rows.append((what, name, r, base_name, base, ratio, target))
            used.add(name)
            if base:
                used.add(base_name)
            break
    for name, base_name, target, what in SELF_TARGETS:
        r, base = results.get(name), results.get(base_name)
        if r and base and base["p50"]:
            rows.append((what, name, r, base_name, base, r["p50"] / base["p50"], target))
            used.update((name, base_name))

    print("| operation | figure | p50 | p99 | n | baseline | p50 | p99 | ratio (p50) | target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for what, name, r, base_name, base, ratio, target in rows:
        unit = r.get("unit", "ms")
        print(f"| {what} | `{name}` | {fmt(r['p50'], unit)} | {fmt(r['p99'], unit)} | {r['n']} | "
              f"`{base_name}` | {fmt(base['p50'], unit) if base else 'not measured'} | "
              f"{fmt(base['p99'], unit) if base else '—'} | "
              f"{f'{ratio:.2f}×' if ratio else '—'} | {verdict(ratio, target)} |")
    for pattern, field, limit, unit in ABSOLUTE:
        for name in sorted(results):
            if re.fullmatch(pattern, name):
                v = results[name][field]
                used.add(name)
                state = "met" if v <= limit else f"missed by {v / limit:.2f}×"
                print(f"| absolute target | `{name}` {field} | {fmt(v, unit)} | | "
                      f"{results[name]['n']} | < {limit:g} {unit} | | | | {state} |")
    rest = [n for n in sorted(results) if n not in used]
    if rest:
        print("\nOther figures:\n")
        for n in rest:
            r = results[n]
            unit = r.get("unit", "ms")
            print(f"- `{n}`: p50 {fmt(r['p50'], unit)}, p99 {fmt(r['p99'], unit)} (n={r['n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
