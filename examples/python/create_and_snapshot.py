#!/usr/bin/python3
"""create_and_snapshot: the SmolVM SDK's first flow, in Python.

    vm = SmolVM(); vm.start(); vm.snapshot("my-checkpoint"); vm.close()

Boots a VM from the daemon's default image, checkpoints it, and deletes the
VM (the snapshot is kept; see restore_snapshot.py). Prints each step and its
wall-clock time.

Usage: create_and_snapshot.py [SNAPSHOT_ID]   (default "my-checkpoint")
The daemon is $SMOLVMD_ENDPOINT / $SMOLVMD_SOCKET, else
/run/smolvmd/smolvmd.sock. Needs the smolvm package (sdk/python).
"""

import sys
import time

from smolvm import SmolVM, SmolVMError


def ms_since(start: float) -> float:
    return (time.monotonic() - start) * 1000


def main() -> int:
    snapshot_id = sys.argv[1] if len(sys.argv) > 1 else "my-checkpoint"
    begin = time.monotonic()
    vm = SmolVM()  # Default image and shape; the daemon picks the id.
    try:
        print("vm.start(): creating and booting a VM...", flush=True)
        t = time.monotonic()
        vm.start()
        ip = vm.info.network.guest_ip or "none"
        print(f"  vm {vm.vm_id} is {vm.status} (ip {ip}) in {ms_since(t):.1f} ms", flush=True)

        print(f'vm.snapshot("{snapshot_id}"): checkpointing...', flush=True)
        t = time.monotonic()
        snap = vm.snapshot(snapshot_id=snapshot_id)
        print(f"  snapshot {snap.snapshot_id} of vm {snap.vm_id} in {ms_since(t):.1f} ms\n"
              f"    snapshot_path: {snap.snapshot_path}\n"
              f"    mem_file_path: {snap.mem_file_path}\n"
              f"    disk_path:     {snap.disk_path}\n"
              f"    created_at:    {snap.created_at.isoformat()}\n"
              f"    size_bytes:    {snap.size_bytes}", flush=True)

        print("vm.close(): deleting the VM (the snapshot is kept)...", flush=True)
        t = time.monotonic()
        vm.close()
        print(f"  closed in {ms_since(t):.1f} ms")
    except SmolVMError as e:
        print(f"create_and_snapshot: {e}", file=sys.stderr)
        try:
            vm.close()  # Don't leave the VM behind.
        except SmolVMError as close_error:
            print(f"create_and_snapshot: vm.close(): {close_error}", file=sys.stderr)
        return 1
    print(f"total {ms_since(begin):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
