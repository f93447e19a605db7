"""The event journal (EventService.WatchEvents).

``SmolVMManager.events()`` returns an :class:`EventStream`, an iterator of
:class:`Event`: what happened to the caller's VMs, snapshots and images
(an admin's: everyone's), oldest first. Remember the last ``event_id``
handled and pass it as `after_event_id` to resume, also after a daemon
restart::

    with SmolVMManager() as sdk:
        for e in sdk.events(after_event_id=last, follow=True):
            print(e.event_id, e.kind, e.vm_id, e.state)
            last = e.event_id
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Optional, Union

from smolvm._streams import CancellableStream, stream_timeout
from smolvm.connection import Connection
from smolvm.errors import InvalidArgumentError
from smolvm.fs import _ProtoEnum, from_unix_ns
from smolvm.types import VmStatus
from smolvm.v1 import event_service_pb2

__all__ = ["Event", "EventKind", "EventStream"]


class EventKind(_ProtoEnum):
    """What happened (smolvm.v1.EventKind); compares equal to its value."""

    UNSPECIFIED = "unspecified"            #: A kind newer than the SDK.
    VM_CREATED = "vm_created"
    VM_RUNNING = "vm_running"
    VM_PAUSED = "vm_paused"
    VM_STOPPED = "vm_stopped"
    VM_ERROR = "vm_error"                  #: detail: the reason.
    VM_DELETED = "vm_deleted"
    VM_RESTORED = "vm_restored"            #: From snapshot_id, or claimed from a pool.
    VM_FORKED = "vm_forked"                #: detail lists the children.
    SNAPSHOT_CREATED = "snapshot_created"
    SNAPSHOT_DELETED = "snapshot_deleted"
    LIFETIME_ACTION = "lifetime_action"
    IMAGE_BUILT = "image_built"            #: detail: the digest.

    @classmethod
    def from_proto(cls, value: int) -> "EventKind":
        """The kind of a ``smolvm.v1.EventKind`` number."""
        names = event_service_pb2.EventKind
        name = names.Name(value) if value in names.values() else ""
        return cls.__members__.get(name, cls.UNSPECIFIED)

    @classmethod
    def coerce(cls, value: Union["EventKind", str, int]) -> int:
        """`value` as a ``smolvm.v1.EventKind`` number: an EventKind, its
        value or name in any case ("vm_created") or a number; anything else
        is INVALID_ARGUMENT."""
        if isinstance(value, str):
            kind = cls.__members__.get(str(value).upper())
            if kind is not None and kind is not cls.UNSPECIFIED:
                return event_service_pb2.EventKind.Value(kind.name)
        elif isinstance(value, int) and not isinstance(value, bool):
            if value in event_service_pb2.EventKind.values() and value != 0:
                return value
        known = ", ".join(k.value for k in cls if k is not cls.UNSPECIFIED)
        raise InvalidArgumentError(message=f"event kind {value!r}: want one of {known}")


@dataclass
class Event:
    """One event (smolvm.v1.Event)."""

    event_id: int                          #: Only grows; resume after it.
    time: datetime                         #: UTC, to the millisecond.
    kind: EventKind
    owner: str                             #: The tenant of the object.
    vm_id: str = ""
    snapshot_id: str = ""
    state: Optional[VmStatus] = None       #: The VM's state after it; None if none.
    detail: str = ""

    @classmethod
    def from_proto(cls, msg: event_service_pb2.Event) -> "Event":
        state = VmStatus.from_proto(msg.state)
        return cls(event_id=msg.event_id,
                   time=from_unix_ns(msg.time.seconds * 1_000_000_000 + msg.time.nanos),
                   kind=EventKind.from_proto(msg.kind), owner=msg.owner, vm_id=msg.vm_id,
                   snapshot_id=msg.snapshot_id,
                   state=None if state is VmStatus.UNSPECIFIED else state,
                   detail=msg.detail)


def watch_events_request(after_event_id: int = 0, follow: bool = False, vm_id: str = "",
                         snapshot_id: str = "",
                         kinds: Optional[Iterable[Union[EventKind, str, int]]] = None
                         ) -> event_service_pb2.WatchEventsRequest:
    """The WatchEventsRequest of SmolVMManager.events()."""
    if isinstance(after_event_id, bool) or not isinstance(after_event_id, int) \
            or after_event_id < 0:
        raise InvalidArgumentError(
            message=f"after_event_id {after_event_id!r}: want an event id >= 0")
    request = event_service_pb2.WatchEventsRequest(after_event_id=after_event_id,
                                                   follow=follow)
    request.filter.vm_id = vm_id
    request.filter.snapshot_id = snapshot_id
    if isinstance(kinds, (str, EventKind)):
        kinds = [kinds]
    request.filter.kinds.extend(EventKind.coerce(k) for k in (kinds or []))
    return request


class EventStream(CancellableStream):
    """A running WatchEvents call: an iterator of :class:`Event` and a
    context manager that cancels on exit. Ends without raising after the
    kept events (without follow), after :meth:`close` / :meth:`cancel` and
    once `timeout` has passed; other ends raise their SmolVMError
    (OutOfRangeError: the events after `after_event_id` were dropped by the
    daemon's retention; read from 0 and list the VMs again)."""

    def __init__(self, conn: Connection, request: event_service_pb2.WatchEventsRequest,
                 timeout: Optional[float] = None) -> None:
        conn.check()
        deadline = stream_timeout(timeout, "watch events")
        super().__init__(conn, conn.event.WatchEvents(request, timeout=deadline,
                                                      metadata=conn.metadata()), deadline)

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        msg = self._read()
        if msg is None:
            raise StopIteration
        return Event.from_proto(msg)

    def __repr__(self) -> str:
        return f"EventStream(closed={self.closed})"
