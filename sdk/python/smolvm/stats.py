"""What a VM uses (VmService.GetVmStats and WatchVmStats).

``SmolVM.stats()`` returns a :class:`VmStats`; ``SmolVM.watch_stats()`` a
:class:`StatsWatch`, an iterator of them, one every `interval` seconds::

    with vm.watch_stats(interval=5, timeout=60) as watch:
        for s in watch:
            print(s.cpu_time_ns, s.vmm_rss_bytes, s.guest_tx_bytes)
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from smolvm._streams import CancellableStream, stream_timeout
from smolvm.connection import Connection
from smolvm.fs import from_unix_ns
from smolvm.v1 import vm_service_pb2

__all__ = ["VmStats", "StatsWatch"]


@dataclass
class VmStats:
    """One report (smolvm.v1.VmStats): the VMM process's CPU time and
    memory, the disk file's blocks, the guest's traffic (its TAP) and, for a
    RUNNING VM whose agent answered, the guest's own memory view."""

    vm_id: str
    taken_at: datetime                  #: UTC.
    uptime_ms: int = 0
    cpu_time_ns: int = 0
    vmm_rss_bytes: int = 0
    vmm_pss_bytes: int = 0
    disk_allocated_bytes: int = 0
    guest_tx_bytes: int = 0
    guest_tx_packets: int = 0
    guest_rx_bytes: int = 0
    guest_rx_packets: int = 0
    guest_memory_known: bool = False
    guest_memory_total_bytes: int = 0
    guest_memory_available_bytes: int = 0

    @classmethod
    def from_proto(cls, msg: vm_service_pb2.VmStats) -> "VmStats":
        taken = msg.taken_at.seconds * 1_000_000_000 + msg.taken_at.nanos
        return cls(vm_id=msg.vm_id, taken_at=from_unix_ns(taken), uptime_ms=msg.uptime_ms,
                   cpu_time_ns=msg.cpu_time_ns, vmm_rss_bytes=msg.vmm_rss_bytes,
                   vmm_pss_bytes=msg.vmm_pss_bytes,
                   disk_allocated_bytes=msg.disk_allocated_bytes,
                   guest_tx_bytes=msg.guest_tx_bytes, guest_tx_packets=msg.guest_tx_packets,
                   guest_rx_bytes=msg.guest_rx_bytes, guest_rx_packets=msg.guest_rx_packets,
                   guest_memory_known=msg.guest_memory_known,
                   guest_memory_total_bytes=msg.guest_memory_total_bytes,
                   guest_memory_available_bytes=msg.guest_memory_available_bytes)


class StatsWatch(CancellableStream):
    """A running WatchVmStats call: an iterator of :class:`VmStats` and a
    context manager that cancels on exit. Ends without raising when the VM
    stops, after :meth:`close` / :meth:`cancel` and once `timeout` has
    passed; other ends raise their SmolVMError."""

    def __init__(self, conn: Connection, request: vm_service_pb2.WatchVmStatsRequest,
                 timeout: Optional[float] = None) -> None:
        conn.check()
        self.vm_id: str = request.vm_id
        deadline = stream_timeout(timeout, "watch stats")
        super().__init__(conn, conn.vm.WatchVmStats(request, timeout=deadline,
                                                    metadata=conn.metadata()), deadline)

    def __iter__(self) -> "StatsWatch":
        return self

    def __next__(self) -> VmStats:
        msg = self._read()
        if msg is None:
            raise StopIteration
        return VmStats.from_proto(msg)

    def __repr__(self) -> str:
        return f"StatsWatch(vm_id={self.vm_id!r}, closed={self.closed})"
