#!/usr/bin/env bash
# The main job, end to end on a fresh Debian 12 machine as root: installs and
# builds, starts smolvmd on a private state dir, and runs the SmolVM seed's
# three flows as the compiled examples print them (with timings), after
# booting the default image (Debian with Python, built by the daemon on first
# use from Debian's archive) and running a Python line in it:
#   0. SmolVM().start(); vm.run("python3 -c 'print(6 * 7)'"); vm.close()
#   1. SmolVM().start(); vm.snapshot("my-checkpoint"); vm.close()
#   2. SmolVMManager().list_snapshots()
#   3. SmolVM.from_snapshot("my-checkpoint", resume_vm=True) → vm_id, status
# Then stops the daemon and removes everything it made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh

# The daemon runs in a private network namespace without an uplink: its
# bridge, TAPs and nft tables live and die there, and no guest reaches this
# machine's network (scripts/fork-demo.sh shows NAT to a fake internet).
. scripts/private-daemon.sh
private_daemon_init svdemo
private_daemon_start --uplink none
echo "== smolvmd is up (pid $daemon_pid, log $work/smolvmd.log)"
sed -n '1,3p' "$work/smolvmd.log"

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
echo; echo "== 0. the default image (debian-python): boot, run a Python line, close()"
t=$(date +%s%N)
build/examples/run_command "python3 -c 'import platform; print(6 * 7, platform.python_version())'"
echo "  (run_command took $(ms "$t") ms, including the image build on first use)"
build/client/smolvmctl image list
t=$(date +%s%N)
build/examples/run_command "python3 -c 'print(6 * 7)'"
echo "  (again, image cached: $(ms "$t") ms)"

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
