"""The streaming RPCs behind SmolVM.run/exec and the file transfers.

Exec (server streaming), UploadFile (client streaming) and DownloadFile
(server streaming), as client/smolvm_exec.cc and client/smolvm_files.cc make
them: one RPC each, whose deadline covers the whole command or transfer.
(ExecStream, bidirectional, is smolvm/exec_session.py; it shares the
ExecRequest, deadline and result code here.)
"""

import os
import stat
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Union

import grpc

from smolvm.connection import ClosesOnExit, Connection
from smolvm.errors import DataLossError, InternalError, InvalidArgumentError
from smolvm.types import CommandResult
from smolvm.v1 import vm_service_pb2

#: Called with ("stdout" | "stderr", bytes) for each chunk of output.
OutputCallback = Callable[[str, bytes], None]

# Data per UploadFile message.
CHUNK_SIZE = 1 << 20
# What the RPC deadline allows beyond a command's own limit, for the guest to
# kill it and the result to travel back.
EXEC_DEADLINE_SLACK = 60.0
_MAX_TIMEOUT_MS = (1 << 32) - 1


def timeout_ms(timeout: Optional[float], what: str = "exec") -> int:
    """A run's timeout in seconds as ExecRequest.timeout_ms (0 = no limit),
    rounded up to whole milliseconds (also WaitProcessRequest.timeout_ms;
    `what` names the call in errors)."""
    if timeout is None or timeout == 0 or timeout == float("inf"):
        return 0
    if timeout < 0:
        raise InvalidArgumentError(message=f"{what}: negative timeout {timeout} s")
    ms = -(-int(timeout * 1_000_000) // 1000)  # Ceiling, via microseconds.
    if ms > _MAX_TIMEOUT_MS:
        raise InvalidArgumentError(
            message=f"{what}: timeout {timeout} s is longer than the maximum of 2^32-1 ms")
    return ms


def exec_deadline(client_timeout: Optional[float], command_timeout: Optional[float]
                  ) -> Optional[float]:
    """The RPC deadline of an Exec: none when either is unlimited, else
    max(client timeout, command timeout + 60 s), so that a long command is
    never cut off by the client."""
    def unlimited(t: Optional[float]) -> bool:
        return t is None or t <= 0 or t == float("inf")
    if unlimited(command_timeout) or unlimited(client_timeout):
        return None
    assert client_timeout is not None and command_timeout is not None
    return max(client_timeout, command_timeout + EXEC_DEADLINE_SLACK)


def exec_request(vm_id: str, cmd: Union[str, List[str]], env: Optional[Dict[str, str]],
                 cwd: str, stdin: Union[str, bytes, None], timeout: Optional[float],
                 user: str = "") -> vm_service_pb2.ExecRequest:
    """The ExecRequest of a command: a string runs with /bin/sh -c, a list is
    an argv (argv[0] looked up in the guest's PATH), as guest `user` ("" =
    root)."""
    request = vm_service_pb2.ExecRequest(vm_id=vm_id, cwd=cwd, timeout_ms=timeout_ms(timeout),
                                         user=user)
    if isinstance(cmd, str):
        request.command = cmd
    else:
        argv = list(cmd)
        if not argv:
            raise InvalidArgumentError(message="exec: empty argv")
        request.argv.extend(argv)
    if env:
        request.env.update(env)
    if stdin is not None:
        request.stdin = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        request.has_stdin = True
    return request


def run_exec(conn: Connection, request: vm_service_pb2.ExecRequest,
             command_timeout: Optional[float],
             on_output: Optional[OutputCallback]) -> CommandResult:
    """Makes one Exec call. Output is buffered into the result unless
    `on_output` is given, which then sees every chunk as it arrives."""
    conn.check()
    out: List[bytes] = []
    err: List[bytes] = []
    exit_result: Optional[vm_service_pb2.ExecResult] = None
    call = conn.vm.Exec(request, metadata=conn.metadata(),
                        timeout=exec_deadline(conn.options.timeout, command_timeout))
    try:
        for response in call:
            kind = response.WhichOneof("event")
            if exit_result is not None:
                call.cancel()
                raise InternalError(message=(
                    f"exec in vm {request.vm_id}: the daemon sent more after the exit"))
            if kind in ("stdout", "stderr"):
                data = getattr(response, kind)
                if on_output is not None:
                    on_output(kind, data)
                else:
                    (out if kind == "stdout" else err).append(data)
            elif kind == "exit":
                exit_result = response.exit
    except grpc.RpcError as e:
        raise conn.convert(e) from None
    if exit_result is None:
        raise InternalError(message=(
            f"exec in vm {request.vm_id}: the daemon ended the stream without an exit"))
    return command_result(exit_result, b"".join(out), b"".join(err))


def command_result(exit_result: vm_service_pb2.ExecResult, stdout: bytes,
                   stderr: bytes) -> CommandResult:
    """The CommandResult of a command that ended as `exit_result` (an
    ExecResponse's exit) having written `stdout` and `stderr`."""
    return CommandResult(exit_code=exit_result.exit_code, signal=exit_result.signal,
                         timed_out=exit_result.timed_out,
                         stdout=stdout.decode("utf-8", errors="replace"),
                         stderr=stderr.decode("utf-8", errors="replace"),
                         stdout_bytes=stdout, stderr_bytes=stderr)


class _SourceFailed(Exception):
    """Raised inside the request iterator to make gRPC cancel the upload."""


def upload(conn: Connection, header: vm_service_pb2.UploadFileHeader,
           source: BinaryIO) -> int:
    """Makes one UploadFile call: the header, then `source` in 1 MiB chunks.
    A read error cancels the call (the guest never commits a partial file)
    and is raised as it is. Returns the bytes written."""
    conn.check()
    what = f"upload to vm {header.vm_id}:{header.path}"
    sent = 0
    source_error: List[OSError] = []

    def requests() -> Iterator[vm_service_pb2.UploadFileRequest]:
        nonlocal sent
        yield vm_service_pb2.UploadFileRequest(header=header)
        while True:
            try:
                chunk = source.read(CHUNK_SIZE)
            except OSError as e:
                source_error.append(e)
                raise _SourceFailed() from e  # gRPC cancels the call.
            if not chunk:
                return
            sent += len(chunk)
            yield vm_service_pb2.UploadFileRequest(data=chunk)

    try:
        response = conn.vm.UploadFile(requests(), timeout=conn.deadline(),
                                      metadata=conn.metadata())
    except grpc.RpcError as e:
        if source_error:
            raise source_error[0] from None
        raise conn.convert(e) from None
    if response.bytes_written != sent:
        raise DataLossError(message=(
            f"{what}: sent {sent} bytes but the daemon wrote {response.bytes_written}"))
    return sent


def download(conn: Connection, vm_id: str, guest_path: str,
             sink: Callable[[bytes], None], user: str = "") -> int:
    """Makes one DownloadFile call, reading as guest `user` ("" = root),
    passing each chunk to `sink` (whose exception cancels the call and is
    raised). Checks that the stream ended with eof after exactly
    total_bytes. Returns the file's permission bits."""
    conn.check()
    what = f"download from vm {vm_id}:{guest_path}"
    request = vm_service_pb2.DownloadFileRequest(vm_id=vm_id, path=guest_path, user=user)
    call = conn.vm.DownloadFile(request, timeout=conn.deadline(), metadata=conn.metadata())
    received = 0
    eof = False
    mode = total = 0
    try:
        for response in call:
            if eof:
                call.cancel()
                raise InternalError(message=f"{what}: the daemon sent more after eof")
            if response.data:
                received += len(response.data)
                try:
                    sink(response.data)
                except BaseException:
                    call.cancel()
                    raise
            if response.eof:
                eof, mode, total = True, response.mode, response.total_bytes
    except grpc.RpcError as e:
        raise conn.convert(e) from None
    if not eof:
        raise DataLossError(message=f"{what}: the stream ended before eof")
    if received != total:
        raise DataLossError(message=f"{what}: received {received} bytes of {total}")
    return mode


def download_to_file(conn: Connection, vm_id: str, guest_path: str, local_path: str,
                     user: str = "") -> None:
    """Downloads (as guest `user`) into a temporary file next to
    `local_path`, renamed over it once complete: `local_path` is either
    untouched or whole. It gets the guest file's permission bits (0644 if
    the daemon reports none)."""
    parent, name = os.path.split(os.path.abspath(local_path))
    if not name or local_path.endswith("/"):
        raise InvalidArgumentError(message=f"download to {local_path}: not a file name")
    fd, temp_path = tempfile.mkstemp(dir=parent, prefix=f".smolvm-download-{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            mode = download(conn, vm_id, guest_path, f.write, user)
            f.flush()
            os.fchmod(f.fileno(), (mode & 0o777) if mode else 0o644)
            os.fsync(f.fileno())
        os.replace(temp_path, local_path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise


def check_regular_file(path: str) -> None:
    """Raises unless `path` is a regular file (InvalidArgumentError, or the
    OSError of a missing or unreadable one)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(message=f"upload {path}: not a regular file")


__all__ = ["OutputCallback", "CHUNK_SIZE", "timeout_ms", "exec_deadline", "exec_request",
           "run_exec", "command_result", "upload", "download", "download_to_file",
           "check_regular_file"]


def stream_timeout(timeout: Optional[float], what: str) -> Optional[float]:
    """`timeout` (seconds) as a stream's gRPC deadline: None, 0 or inf =
    none; negative is INVALID_ARGUMENT naming `what`."""
    if timeout is None or timeout == 0 or timeout == float("inf"):
        return None
    if timeout < 0:
        raise InvalidArgumentError(message=f"{what}: negative timeout {timeout} s")
    return float(timeout)


class CancellableStream(ClosesOnExit):
    """The shared core of a long-lived server stream a client may cancel
    from any thread (DirWatch, ProcessConnection): ``cancel()`` / ``close()``
    and ``_read()``, which returns the next message, or None once the stream
    is over by the client's doing (cancelled, or its `timeout` expired) or
    ended by the daemon, and raises any other end as its SmolVMError."""

    def __init__(self, conn: Connection, call: "grpc.Future", timeout: Optional[float]) -> None:
        self._conn = conn
        self._call = call
        self._timeout = timeout
        self._lock = threading.Lock()
        self._cancelled = False
        self._ended = False
        self._daemon_ended = False  # The daemon closed the stream cleanly.

    @property
    def closed(self) -> bool:
        """True once close() / cancel() was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Ends the call; an iteration blocked in another thread ends.
        Thread-safe, idempotent."""
        with self._lock:
            self._cancelled = True
        self._call.cancel()

    def close(self) -> None:
        """Same as :meth:`cancel`."""
        self.cancel()

    def _end(self) -> None:
        """The stream is over (its last message was read)."""
        self._ended = True
        self._call.cancel()  # Nothing more to read.

    def _read(self) -> Optional[Any]:
        if self._ended:
            return None
        with self._lock:
            if self._cancelled:
                self._ended = True
                return None
        try:
            return next(self._call)
        except StopIteration:
            self._ended = True
            self._daemon_ended = True
            return None
        except grpc.RpcError as e:
            self._ended = True
            with self._lock:
                ours = self._cancelled
            code = getattr(e, "code", None)
            expired = (self._timeout is not None and callable(code)
                       and code() is grpc.StatusCode.DEADLINE_EXCEEDED)
            if ours or expired:
                return None
            raise self._conn.convert(e) from None
