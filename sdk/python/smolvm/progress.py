"""Progress of long calls (smolvm.v1.OperationService).

CreateVm, StartVm, CreateSnapshot, RestoreSnapshot, ForkSnapshot and ForkVm
take an optional operation id; while such a call runs, the daemon reports its stages
under that id. The SDK's long methods take ``on_progress``: a callable that
sees an :class:`OperationProgress` for each update, the last one with
``finished`` set, on a thread of the SDK's (not the caller's)::

    vm.snapshot("big", on_progress=lambda p: print(p.stage, p.fraction))

Progress is best effort: a watch that fails only ends the updates, never the
call being watched.
"""

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional, TypeVar

import grpc

from smolvm.connection import Connection
from smolvm.types import to_datetime
from smolvm.v1 import operation_service_pb2

__all__ = ["OperationProgress", "ProgressCallback", "new_operation_id", "call_with_progress"]

T = TypeVar("T")

# How long the watch may take to deliver the last update once the call has
# returned (the daemon sends updates at most every 100 ms).
_FINAL_UPDATE_WAIT = 1.0


@dataclass
class OperationProgress:
    """One update of a long call (smolvm.v1.Operation)."""

    operation_id: str
    kind: str                 #: "CreateVm", "StartVm", "CreateSnapshot", ...
    target: str               #: The VM or snapshot it acts on.
    stage: str                #: What it is doing, e.g. "copying guest memory".
    done: int = 0             #: Units of the stage done ...
    total: int = 0            #: ... of this many (0 = not measurable).
    unit: str = ""            #: "bytes", "clones", "members" or "".
    stage_number: int = 0
    finished: bool = False
    code: int = 0             #: google.rpc.Code of the call, once finished.
    error_message: str = ""
    started_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    @property
    def fraction(self) -> Optional[float]:
        """done / total in [0, 1], or None when the stage is not measurable."""
        return min(self.done, self.total) / self.total if self.total else None

    @classmethod
    def from_proto(cls, msg: operation_service_pb2.Operation) -> "OperationProgress":
        return cls(operation_id=msg.operation_id, kind=msg.kind, target=msg.target,
                   stage=msg.stage, done=msg.done, total=msg.total, unit=msg.unit,
                   stage_number=msg.stage_number, finished=msg.finished, code=msg.code,
                   error_message=msg.error_message, started_at=to_datetime(msg.started_at),
                   updated_at=to_datetime(msg.updated_at))


ProgressCallback = Callable[[OperationProgress], None]


def new_operation_id() -> str:
    """A fresh operation id: "op-" and 32 random hex digits."""
    return "op-" + uuid.uuid4().hex


def call_with_progress(conn: Connection, method: Callable[..., T], request: Any,
                       on_progress: Optional[ProgressCallback]) -> T:
    """``conn.call(method, request)``; with `on_progress`, the request gets a
    fresh operation_id and the operation's updates go to `on_progress`
    while the call runs."""
    if on_progress is None:
        return conn.call(method, request)
    conn.check()
    request.operation_id = new_operation_id()
    stream = conn.operation.WatchOperation(
        operation_service_pb2.WatchOperationRequest(operation_id=request.operation_id),
        metadata=conn.metadata())

    def watch() -> None:
        try:
            for update in stream:
                on_progress(OperationProgress.from_proto(update))
                if update.finished:
                    return
        except grpc.RpcError:
            pass  # Cancelled below, or the watch failed: the call goes on.

    watcher = threading.Thread(target=watch, name="smolvm-progress", daemon=True)
    watcher.start()
    try:
        return conn.call(method, request)
    finally:
        watcher.join(_FINAL_UPDATE_WAIT)
        if watcher.is_alive():
            stream.cancel()
            watcher.join()
