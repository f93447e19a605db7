"""The guest file system (smolvm.v1.FilesystemService): types and DirWatch.

``SmolVM.stat_path()``, ``list_dir()``, ``make_dir()``, ``remove_path()``,
``rename_path()`` and ``watch_dir()`` (smolvm/vm.py) make one RPC each, as
the C++ client's methods of the same names (client/smolvm.h, "Guest file
system"); this module has what they return: :class:`FileEntry` (a
``smolvm.v1.FileEntry``, its ``mtime`` a timezone-aware UTC ``datetime``),
:class:`ListDirResult`, :class:`WatchEvent` and :class:`DirWatch`, the
running watch that ``watch_dir()`` returns::

    with vm.watch_dir("/srv/data", recursive=True, timeout=60) as watch:
        for event in watch:              # WatchEvent, in the guest's order
            print(event.type, event.path)
            if event.type is WatchEventType.OVERFLOW:
                ...                      # changes were lost: re-list
"""

import enum
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator, List, Optional

import grpc

from smolvm._streams import CancellableStream, stream_timeout
from smolvm.connection import Connection
from smolvm.errors import DeadlineExceededError, InternalError
from smolvm.v1 import filesystem_service_pb2

__all__ = ["FileType", "FileEntry", "ListDirResult", "WatchEventType", "WatchEvent",
           "DirWatch", "from_unix_ns"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_unix_ns(ns: int) -> datetime:
    """Nanoseconds since the Unix epoch as a timezone-aware UTC datetime
    (to the microsecond; 0 is the epoch itself)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


class _ProtoEnum(str, enum.Enum):
    """A str enum that reads like its value ("file") in an f-string."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class FileType(_ProtoEnum):
    """What a path is (smolvm.v1.FileType); compares equal to its value."""

    FILE = "file"              #: A regular file.
    DIRECTORY = "directory"
    SYMLINK = "symlink"        #: Never followed; see FileEntry.symlink_target.
    OTHER = "other"            #: A device, fifo or socket.

    @classmethod
    def from_proto(cls, value: int) -> "FileType":
        """The type of a ``smolvm.v1.FileType`` number; OTHER for
        UNSPECIFIED or a number newer than the SDK."""
        return _FILE_TYPES.get(value, cls.OTHER)


_FILE_TYPES = {filesystem_service_pb2.FILE_TYPE_FILE: FileType.FILE,
               filesystem_service_pb2.FILE_TYPE_DIRECTORY: FileType.DIRECTORY,
               filesystem_service_pb2.FILE_TYPE_SYMLINK: FileType.SYMLINK,
               filesystem_service_pb2.FILE_TYPE_OTHER: FileType.OTHER}


@dataclass
class FileEntry:
    """One path in the guest, as lstat sees it (smolvm.v1.FileEntry)."""

    path: str                  #: Absolute, in the guest.
    name: str                  #: The last component.
    type: FileType
    size: int = 0              #: Bytes.
    mode: int = 0              #: Permission bits (07777).
    uid: int = 0
    gid: int = 0
    mtime: datetime = _EPOCH   #: Last modification, UTC.
    symlink_target: str = ""   #: SYMLINK only.

    @property
    def is_dir(self) -> bool:
        return self.type is FileType.DIRECTORY

    @classmethod
    def from_proto(cls, msg: filesystem_service_pb2.FileEntry) -> "FileEntry":
        return cls(path=msg.path, name=msg.name, type=FileType.from_proto(msg.type),
                   size=msg.size, mode=msg.mode, uid=msg.uid, gid=msg.gid,
                   mtime=from_unix_ns(msg.mtime_unix_ns), symlink_target=msg.symlink_target)


@dataclass
class ListDirResult:
    """What ``SmolVM.list_dir()`` found: the entries breadth-first, each
    directory's sorted by name. `truncated`: the daemon's limit (10,000
    entries or ~768 KiB) was reached and `entries` is a prefix."""

    entries: List[FileEntry] = field(default_factory=list)
    truncated: bool = False

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def from_proto(cls, msg: filesystem_service_pb2.ListDirResponse) -> "ListDirResult":
        return cls(entries=[FileEntry.from_proto(e) for e in msg.entries],
                   truncated=msg.truncated)


class WatchEventType(_ProtoEnum):
    """What changed (smolvm.v1.WatchEventType); compares equal to its value."""

    CREATE = "create"          #: Made, or moved into the watched tree.
    MODIFY = "modify"          #: A file written and closed.
    DELETE = "delete"          #: Removed, or moved out of the watched tree.
    RENAME = "rename"          #: old_path -> path.
    CHMOD = "chmod"            #: Metadata: mode, owner, times.
    OVERFLOW = "overflow"      #: Changes were lost (a queue overflowed).

    @classmethod
    def from_proto(cls, value: int) -> Optional["WatchEventType"]:
        """The type of a ``smolvm.v1.WatchEventType`` number; None for
        WATCHING (the watch is in place: not a change), UNSPECIFIED or a
        number newer than the SDK."""
        return _WATCH_EVENT_TYPES.get(value)


_WATCH_EVENT_TYPES = {
    filesystem_service_pb2.WATCH_EVENT_TYPE_CREATE: WatchEventType.CREATE,
    filesystem_service_pb2.WATCH_EVENT_TYPE_MODIFY: WatchEventType.MODIFY,
    filesystem_service_pb2.WATCH_EVENT_TYPE_DELETE: WatchEventType.DELETE,
    filesystem_service_pb2.WATCH_EVENT_TYPE_RENAME: WatchEventType.RENAME,
    filesystem_service_pb2.WATCH_EVENT_TYPE_CHMOD: WatchEventType.CHMOD,
    filesystem_service_pb2.WATCH_EVENT_TYPE_OVERFLOW: WatchEventType.OVERFLOW,
}


@dataclass
class WatchEvent:
    """One change under a watched directory (smolvm.v1.WatchDirEvent)."""

    type: WatchEventType
    path: str                  #: Absolute, in the guest ("" for OVERFLOW).
    old_path: str = ""         #: RENAME: where it was.
    is_dir: bool = False       #: The path is a directory.

    @classmethod
    def from_proto(cls, msg: filesystem_service_pb2.WatchDirEvent) -> Optional["WatchEvent"]:
        """The change `msg` reports; None when it reports none (WATCHING,
        or a type newer than the SDK)."""
        kind = WatchEventType.from_proto(msg.type)
        if kind is None:
            return None
        return cls(type=kind, path=msg.path, old_path=msg.old_path, is_dir=msg.is_dir)


class DirWatch(CancellableStream):
    """A running WatchDir call (``SmolVM.watch_dir()``): an iterator of
    :class:`WatchEvent` and a context manager that closes it on exit.

    It exists once the watch is in place in the guest (the daemon's first
    WATCHING event has arrived), so every change after ``watch_dir()``
    returned is reported. Iterating blocks until the next change and ends,
    without raising, after :meth:`close` / :meth:`cancel` (from any thread,
    also while another thread is blocked in the iteration), once
    `timeout` has passed, or when the daemon ends the stream; any other end
    (the VM stopped, the daemon lost, a guest error) raises its SmolVMError.
    Changes are bounded: when a queue overflows they are dropped and one
    OVERFLOW event says so. Dropping the object also cancels the watch.
    """

    def __init__(self, conn: Connection, request: filesystem_service_pb2.WatchDirRequest,
                 timeout: Optional[float] = None) -> None:
        """Starts the watch of `request` and waits (up to the connection's
        per-call timeout) until it is in place. `timeout`: seconds after
        which the watch ends (None or 0 = never)."""
        conn.check()
        self.vm_id: str = request.vm_id
        self.path: str = request.path
        self._what = f"watch dir in vm {request.vm_id}:{request.path}"
        deadline = stream_timeout(timeout, "watch dir")
        super().__init__(conn, conn.filesystem.WatchDir(request, timeout=deadline,
                                                        metadata=conn.metadata()), deadline)
        self._wait_until_watching(conn.deadline())

    def _wait_until_watching(self, setup_timeout: Optional[float]) -> None:
        """Reads the first event, which must be WATCHING; cancels the call
        and raises DeadlineExceededError if it takes `setup_timeout` s."""
        timed_out = threading.Event()
        answered = threading.Event()
        guard = threading.Lock()  # Orders expire() against the answer.

        def expire() -> None:
            with guard:
                if answered.is_set():
                    return
                timed_out.set()
            self._call.cancel()

        timer = None
        if setup_timeout is not None:
            timer = threading.Timer(setup_timeout, expire)
            timer.daemon = True
            timer.start()
        too_late = DeadlineExceededError(
            message=f"{self._what}: the watch was not in place after {setup_timeout} s")
        try:
            first = next(self._call)
            with guard:
                answered.set()
                if timed_out.is_set():  # Answered just as expire() cancelled.
                    raise too_late
        except StopIteration:
            raise InternalError(message=(
                f"{self._what}: the daemon ended the watch before it was in place")) from None
        except grpc.RpcError as e:
            if timed_out.is_set():
                raise too_late from None
            raise self._conn.convert(e) from None
        finally:
            if timer is not None:
                timer.cancel()
        if first.type != filesystem_service_pb2.WATCH_EVENT_TYPE_WATCHING:
            self.cancel()
            names = filesystem_service_pb2.WatchEventType
            kind = names.Name(first.type) if first.type in names.values() else str(first.type)
            raise InternalError(message=f"{self._what}: the daemon sent {kind} before WATCHING")

    def __iter__(self) -> "DirWatch":
        return self

    def __next__(self) -> WatchEvent:
        while True:
            msg = self._read()
            if msg is None:
                raise StopIteration
            event = WatchEvent.from_proto(msg)
            if event is not None:
                return event

    def __repr__(self) -> str:
        return f"DirWatch(vm_id={self.vm_id!r}, path={self.path!r}, closed={self.closed})"
