"""The guest's serial console (VmService.StreamConsole).

``SmolVM.console()`` (smolvm/vm.py) returns a :class:`ConsoleStream`, as the
C++ client's ``SmolVM::console()``: an iterator of ``bytes`` chunks, first
the requested tail of what the daemon keeps, then (with ``follow``) what
the guest writes, until the VM stops::

    with vm.console(follow=True, tail_bytes=4096, timeout=60) as console:
        for chunk in console:
            print(chunk.decode(errors="replace"), end="")
"""

from typing import Optional

from smolvm._streams import CancellableStream, stream_timeout
from smolvm.connection import Connection
from smolvm.v1 import vm_service_pb2

__all__ = ["ConsoleStream"]


class ConsoleStream(CancellableStream):
    """A running StreamConsole call: an iterator of ``bytes`` and a context
    manager that cancels on exit. The iteration ends without raising when
    the tail was sent (without follow), when the VM stopped, after
    :meth:`close` / :meth:`cancel` (from any thread) and once `timeout` has
    passed; other ends raise their SmolVMError (FailedPreconditionError for
    a VM that never ran; a stopped VM gives its last run's console)."""

    def __init__(self, conn: Connection, request: vm_service_pb2.StreamConsoleRequest,
                 timeout: Optional[float] = None) -> None:
        conn.check()
        self.vm_id: str = request.vm_id
        deadline = stream_timeout(timeout, "stream console")
        super().__init__(conn, conn.vm.StreamConsole(request, timeout=deadline,
                                                     metadata=conn.metadata()), deadline)

    def __iter__(self) -> "ConsoleStream":
        return self

    def __next__(self) -> bytes:
        msg = self._read()
        if msg is None:
            raise StopIteration
        return bytes(msg.data)

    def __repr__(self) -> str:
        return f"ConsoleStream(vm_id={self.vm_id!r}, closed={self.closed})"
