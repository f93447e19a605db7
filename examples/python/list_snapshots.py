#!/usr/bin/python3
"""list_snapshots: the SmolVM SDK's second flow, in Python.

    SmolVMManager().list_snapshots()

Prints every snapshot the daemon knows, with all SnapshotInfo fields, and
the wall-clock time of the call. The daemon is $SMOLVMD_ENDPOINT /
$SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.
"""

import sys
import time

from smolvm import SmolVMError, SmolVMManager


def main() -> int:
    print("SmolVMManager().list_snapshots(): listing snapshots...", flush=True)
    t = time.monotonic()
    try:
        with SmolVMManager() as sdk:
            snapshots = sdk.list_snapshots()
    except SmolVMError as e:
        print(f"list_snapshots: {e}", file=sys.stderr)
        return 1
    print(f"  {len(snapshots)} snapshot(s) in {(time.monotonic() - t) * 1000:.1f} ms")
    for s in snapshots:
        print(f"\nsnapshot_id:    {s.snapshot_id}\n"
              f"vm_id:          {s.vm_id}\n"
              f"snapshot_path:  {s.snapshot_path}\n"
              f"mem_file_path:  {s.mem_file_path}\n"
              f"disk_path:      {s.disk_path}\n"
              f"vm_config:      {s.vm_config}\n"
              f"network_config: {s.network_config}\n"
              f"created_at:     {s.created_at.isoformat()}\n"
              f"restored:       {s.restored}\n"
              f"restored_vm_id: {s.restored_vm_id}\n"
              f"size_bytes:     {s.size_bytes}\n"
              f"accelerator:    {s.accelerator}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
