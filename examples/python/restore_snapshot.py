#!/usr/bin/python3
"""restore_snapshot: the SmolVM SDK's third flow, in Python.

    vm = SmolVM.from_snapshot("my-checkpoint", resume_vm=True)
    vm.vm_id; vm.status; vm.close()

Restores a VM from a snapshot into the snapshot's own VM identity (run
create_and_snapshot.py first; it deletes its VM, so the identity is free),
prints it, and deletes it again. Prints each step and its wall-clock time.

Usage: restore_snapshot.py [SNAPSHOT_ID]   (default "my-checkpoint")
"""

import sys
import time

from smolvm import SmolVM, SmolVMError


def ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000


def main() -> int:
    snapshot_id = sys.argv[1] if len(sys.argv) > 1 else "my-checkpoint"
    begin = time.monotonic()
    print(f'SmolVM.from_snapshot("{snapshot_id}", resume_vm=True): restoring...', flush=True)
    t = time.monotonic()
    try:
        vm = SmolVM.from_snapshot(snapshot_id, resume_vm=True)
    except SmolVMError as e:
        print(f"restore_snapshot: SmolVM.from_snapshot(): {e}", file=sys.stderr)
        return 1
    print(f"  restored in {ms_since(t):.1f} ms\n"
          f"  vm_id:  {vm.vm_id}\n"
          f"  status: {vm.status}", flush=True)

    print("vm.close(): deleting the restored VM...", flush=True)
    t = time.monotonic()
    try:
        vm.close()
    except SmolVMError as e:
        print(f"restore_snapshot: vm.close(): {e}", file=sys.stderr)
        return 1
    print(f"  closed in {ms_since(t):.1f} ms")
    print(f"total {ms_since(begin):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
