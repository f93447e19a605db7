"""Background processes in the guest (smolvm.v1.ProcessService).

``SmolVM.start_process()``, ``list_processes()``, ``signal_process()``,
``connect_process()`` and ``wait_process()`` (smolvm/vm.py) make one RPC
each, as the C++ client's methods of the same names (client/smolvm.h,
"Background processes"); this module has what they return:
:class:`ProcessInfo` (a ``smolvm.v1.ProcessInfo``, its times timezone-aware
UTC ``datetime`` values), :class:`ProcessOutput` and
:class:`ProcessConnection`, the attached output stream that
``connect_process()`` returns::

    proc = vm.start_process("./server --port 8080", cwd="/srv")
    with vm.connect_process(proc.pid, tail_bytes=4096) as conn:
        for out in conn:                 # ProcessOutput, in the guest's order
            print(out.stream, out.text, end="")
    print(conn.exit)                     # ProcessInfo once it exited, else None

A process belongs to the guest: it runs whether or not a client is
attached, and outlives the client that started it and a daemon restart.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import List, Optional

from smolvm._streams import CancellableStream, stream_timeout
from smolvm.connection import Connection
from smolvm.errors import InternalError
from smolvm.fs import from_unix_ns
from smolvm.v1 import process_service_pb2

__all__ = ["ProcessInfo", "ProcessOutput", "ProcessConnection"]

_EPOCH = from_unix_ns(0)


@dataclass
class ProcessInfo:
    """One tracked background process (smolvm.v1.ProcessInfo)."""

    pid: int                   #: The guest's pid; also its process group.
    argv: List[str] = field(default_factory=list)
    user: str = ""             #: As requested ("" = root).
    cwd: str = ""
    running: bool = False
    exit_code: int = 0         #: Once exited, when `signal` is 0.
    signal: int = 0            #: The signal that ended it, or 0.
    started_at: datetime = _EPOCH          #: UTC.
    ended_at: Optional[datetime] = None    #: UTC; None while running.
    output_bytes: int = 0      #: stdout + stderr written so far.

    @property
    def ok(self) -> bool:
        """True once it has exited by itself with status 0."""
        return not self.running and self.signal == 0 and self.exit_code == 0

    @classmethod
    def from_proto(cls, msg: process_service_pb2.ProcessInfo) -> "ProcessInfo":
        return cls(pid=msg.pid, argv=list(msg.argv), user=msg.user, cwd=msg.cwd,
                   running=msg.running, exit_code=msg.exit_code, signal=msg.signal,
                   started_at=from_unix_ns(msg.started_at_unix_ns),
                   ended_at=from_unix_ns(msg.ended_at_unix_ns) if msg.ended_at_unix_ns else None,
                   output_bytes=msg.output_bytes)


@dataclass
class ProcessOutput:
    """One chunk of a process's output (a ConnectProcessResponse's stdout or
    stderr). `skipped_bytes`: output lost just before this chunk because
    this client fell more than the guest's buffer (256 KiB) behind."""

    stream: str                #: "stdout" or "stderr".
    data: bytes
    skipped_bytes: int = 0

    @property
    def text(self) -> str:
        """`data` decoded as UTF-8 (invalid bytes replaced; a character
        split across chunks is replaced too)."""
        return self.data.decode("utf-8", errors="replace")


class ProcessConnection(CancellableStream):
    """A running ConnectProcess call (``SmolVM.connect_process()``): an
    iterator of :class:`ProcessOutput` and a context manager that detaches
    on exit.

    Iterating yields first the requested tail of earlier output, then what
    the process writes, blocking until it writes, and ends when the process
    has exited: :attr:`exit` is then its final :class:`ProcessInfo`. It also
    ends, without raising and with :attr:`exit` None, after :meth:`close` /
    :meth:`cancel` (from any thread, also while another thread is blocked in
    the iteration) and once `timeout` has passed. Any other end raises its
    SmolVMError (NotFoundError for a pid that is not tracked, the VM
    stopped, the daemon lost...); as the call starts lazily, such an error
    is raised by the first iteration. Detaching never touches the process.
    Dropping the object also detaches.
    """

    def __init__(self, conn: Connection, request: process_service_pb2.ConnectProcessRequest,
                 timeout: Optional[float] = None) -> None:
        """Starts the call of `request`. `timeout`: seconds after which the
        connection ends (None or 0 = never; the call has no other
        deadline)."""
        conn.check()
        self.vm_id: str = request.vm_id
        self.pid: int = request.pid
        #: The process as it exited; None until then, and if detached before.
        self.exit: Optional[ProcessInfo] = None
        #: Output lost so far because this client fell behind (bytes).
        self.skipped_bytes = 0
        self._what = f"connect to process {request.pid} in vm {request.vm_id}"
        deadline = stream_timeout(timeout, "connect process")
        super().__init__(conn, conn.process.ConnectProcess(request, timeout=deadline,
                                                           metadata=conn.metadata()), deadline)

    @property
    def exited(self) -> bool:
        """True once the process's exit has arrived (see :attr:`exit`)."""
        return self.exit is not None

    def __iter__(self) -> "ProcessConnection":
        return self

    def __next__(self) -> ProcessOutput:
        while True:
            msg = self._read()
            if msg is None:
                if self._daemon_ended and self.exit is None:
                    self._daemon_ended = False  # Raised once.
                    raise InternalError(message=(
                        f"{self._what}: the daemon ended the stream without the exit"))
                raise StopIteration
            self.skipped_bytes += msg.skipped_bytes
            kind = msg.WhichOneof("event")
            if kind in ("stdout", "stderr"):
                return ProcessOutput(stream=kind, data=getattr(msg, kind),
                                     skipped_bytes=msg.skipped_bytes)
            if kind == "exit":
                self.exit = ProcessInfo.from_proto(msg.exit)
                self._end()
                raise StopIteration
            # No event (newer than the SDK): skipped.

    def __repr__(self) -> str:
        return (f"ProcessConnection(vm_id={self.vm_id!r}, pid={self.pid}, "
                f"closed={self.closed}, exit={self.exit!r})")
