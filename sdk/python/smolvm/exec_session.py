"""Interactive commands in the guest (VmService.ExecStream).

``SmolVM.exec_session()`` (smolvm/vm.py) starts a command whose stdin is
streamed, which can be signalled and, on a pseudo-terminal (``tty=True``),
resized while it runs; this module has the :class:`ExecSession` it returns,
the Python side of the C++ client's ``ExecSession`` (client/smolvm.h)::

    with vm.exec_session(["sh"], tty=True, rows=24, cols=80) as s:
        s.write_stdin("stty size; exit 3\\n")
        for out in s:                    # ProcessOutput; with a tty all stdout
            print(out.text, end="")      # "24 80"
    print(s.exit.exit_code)              # 3 (a CommandResult)

    with vm.exec_session(["cat"]) as s:
        s.write_stdin(data)              # split into 1 MiB messages
        s.close_stdin()
        result = s.wait(timeout=60)      # CommandResult, like run()'s

The call is one bidirectional stream: the first request starts the command
(an ExecRequest built as for run()/exec(), plus tty, size and TERM); stdin,
close_stdin, signals and resizes follow in the order they are made; the
responses are Exec's (output as it is produced, then exactly one exit). Once
the exit has arrived the SDK ends its side of the stream (so the daemon ends
the call); cancelling the call kills the command's process group.
"""

import collections
import threading
import time
from typing import Any, Deque, List, Optional, Tuple, Union

import grpc

from smolvm._streams import CHUNK_SIZE, command_result, exec_deadline, stream_timeout
from smolvm.connection import ClosesOnExit, Connection
from smolvm.errors import (CancelledError, DeadlineExceededError, FailedPreconditionError,
                           InternalError, InvalidArgumentError, SmolVMError)
from smolvm.process import ProcessOutput
from smolvm.types import CommandResult
from smolvm.v1 import vm_service_pb2

__all__ = ["ExecSession", "MAX_TERMINAL_SIZE", "MAX_SIGNAL"]

#: The largest rows / cols of a terminal (TerminalSize).
MAX_TERMINAL_SIZE = 1000
#: Signals are 1 to MAX_SIGNAL (ExecStreamRequest.signal).
MAX_SIGNAL = 64
# Stdin queued in the SDK beyond which write_stdin() blocks (the daemon
# itself holds back while 1 MiB sent to the guest is not yet taken).
_MAX_QUEUED_STDIN = 4 * CHUNK_SIZE
# Output read from the daemon but not yet by the caller beyond which the
# SDK stops reading (and the daemon, then the command, are held back).
_MAX_BUFFERED_OUTPUT = 16 << 20


class _TimedOut(Exception):
    """_Outputs.get() found nothing within its timeout."""


class _Exit:
    """Marks the exit among the outputs (after all of the command's output)."""


_EXIT = _Exit()


class _Requests:
    """The request stream of one call: an iterator that gRPC's sending thread
    consumes, fed from any thread by :meth:`put`. It yields the start
    request, then what is put, in order, and ends (the call half-closes)
    once :meth:`finish` is called; what is still queued then is dropped."""

    def __init__(self, first: vm_service_pb2.ExecStreamRequest) -> None:
        self._cond = threading.Condition()
        self._items: Deque[Tuple[vm_service_pb2.ExecStreamRequest, int]] = (
            collections.deque([(first, 0)]))
        self._stdin_bytes = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._finished

    def put(self, request: vm_service_pb2.ExecStreamRequest, stdin_bytes: int = 0) -> bool:
        """Queues `request`; returns False (dropping it) once finished.
        Stdin (`stdin_bytes` > 0) waits while _MAX_QUEUED_STDIN is queued."""
        with self._cond:
            while (stdin_bytes and self._stdin_bytes >= _MAX_QUEUED_STDIN
                   and not self._finished):
                self._cond.wait()
            if self._finished:
                return False
            self._items.append((request, stdin_bytes))
            self._stdin_bytes += stdin_bytes
            self._cond.notify_all()
            return True

    def finish(self) -> None:
        """Ends the stream. Thread-safe, idempotent."""
        with self._cond:
            self._finished = True
            self._items.clear()
            self._stdin_bytes = 0
            self._cond.notify_all()

    def __iter__(self) -> "_Requests":
        return self

    def __next__(self) -> vm_service_pb2.ExecStreamRequest:
        with self._cond:
            while not self._items and not self._finished:
                self._cond.wait()
            if self._finished:
                raise StopIteration
            request, stdin_bytes = self._items.popleft()
            self._stdin_bytes -= stdin_bytes
            self._cond.notify_all()
            return request


class _Outputs:
    """What the reader thread received, for the caller: ProcessOutput
    chunks, then _EXIT. Holds up to _MAX_BUFFERED_OUTPUT bytes (put() waits
    beyond); after drop() it is empty and put() discards."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: Deque[Tuple[Any, int]] = collections.deque()
        self._bytes = 0
        self._closed = False    # Nothing more will be put.
        self._dropping = False

    def put(self, item: Any, size: int) -> None:
        with self._cond:
            while self._bytes >= _MAX_BUFFERED_OUTPUT and not self._dropping:
                self._cond.wait()
            if self._dropping:
                return
            self._items.append((item, size))
            self._bytes += size
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drop(self) -> None:
        with self._cond:
            self._dropping = True
            self._items.clear()
            self._bytes = 0
            self._cond.notify_all()

    def get(self, timeout: Optional[float]) -> Any:
        """The next item; None once closed (or dropped) and empty. Raises
        _TimedOut when nothing arrives within `timeout` s (None = no limit)."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed and not self._dropping:
                if end is None:
                    self._cond.wait()
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    raise _TimedOut()
                self._cond.wait(left)
            if not self._items:
                return None
            item, size = self._items.popleft()
            self._bytes -= size
            self._cond.notify_all()
            return item


class _Pump:
    """One ExecStream call: its request stream, and a thread that reads its
    responses into `outputs` as they come, so that the exit ends the
    request stream at once, whoever is reading. It holds no reference to
    the ExecSession: dropping the session cancels the call."""

    def __init__(self, conn: Connection, start: vm_service_pb2.ExecStreamStart,
                 deadline: Optional[float], what: str) -> None:
        self.conn = conn
        self.what = what
        self.lock = threading.Lock()
        self.requests = _Requests(vm_service_pb2.ExecStreamRequest(start=start))
        self.outputs = _Outputs()
        self.exit: Optional[vm_service_pb2.ExecResult] = None  # Once it arrived.
        self.error: Optional[SmolVMError] = None  # How the call failed.
        self.cancelled = False  # By cancel(), before the exit.
        self.done = False       # The call is over (reader finished).
        self.call = conn.vm.ExecStream(self.requests, timeout=deadline,
                                       metadata=conn.metadata())
        # Writers blocked on a full queue wake when the call ends, even if
        # the reader is held back by unread output.
        if not self.call.add_callback(self.requests.finish):
            self.requests.finish()
        self.thread = threading.Thread(target=self._read, name="smolvm-exec-session",
                                       daemon=True)
        self.thread.start()

    def _read(self) -> None:
        error: Optional[SmolVMError] = None
        try:
            for response in self.call:
                if self.exit is not None:
                    continue  # Nothing follows the exit; wait for the end.
                kind = response.WhichOneof("event")
                if kind in ("stdout", "stderr"):
                    data = getattr(response, kind)
                    self.outputs.put(ProcessOutput(stream=kind, data=data), len(data))
                elif kind == "exit":
                    with self.lock:
                        self.exit = response.exit
                    self.requests.finish()  # Half-close: the daemon ends the call.
                    self.outputs.put(_EXIT, 0)
                elif kind == "failing":
                    # The call ends with an error (its status, next): half-close
                    # so the daemon can send it at once.
                    self.requests.finish()
                # No event (newer than the SDK): skipped.
        except grpc.RpcError as e:
            with self.lock:
                ours = self.cancelled or self.exit is not None
            if not ours:
                error = self.conn.convert(e)
        else:
            with self.lock:
                lost = self.exit is None and not self.cancelled
            if lost:
                error = InternalError(
                    message=f"{self.what}: the daemon ended the stream without the exit")
        finally:
            with self.lock:
                if self.error is None:
                    self.error = error
                self.done = True
            self.requests.finish()
            self.outputs.close()

    def cancel(self) -> None:
        """Cancels the call unless the exit arrived (then it ends by itself)
        and stops buffering output. Thread-safe, idempotent."""
        with self.lock:
            live = self.exit is None and not self.done
            if live:
                self.cancelled = True
        if live:
            # First: ending the requests of a live call would half-close it
            # (to the daemon: end of stdin) before the cancel.
            self.call.cancel()
        self.requests.finish()
        self.outputs.drop()


def _check_size(value: Any, name: str, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or \
            not 0 <= value <= MAX_TERMINAL_SIZE:
        raise InvalidArgumentError(message=(
            f"{what}: {name} {value!r} is not a number in 0-{MAX_TERMINAL_SIZE}"))
    return int(value)


class ExecSession(ClosesOnExit):
    """A running interactive command (``SmolVM.exec_session()``; the
    ExecStream RPC): its stdin, signals and terminal size are sent with the
    methods below, its output is read by iterating (or :meth:`next_output`)
    and :meth:`wait` returns how it ended. A context manager: leaving the
    ``with`` block before the command has exited cancels it (and kills the
    command); so do :meth:`cancel` / :meth:`close` and dropping the object.

    Iterating yields :class:`~smolvm.process.ProcessOutput` chunks
    (``stream`` "stdout" or "stderr"; with a tty everything is stdout) in
    the command's order, blocking until there is output, and ends when the
    exit is reached: :attr:`exit` is then the :class:`CommandResult`
    (exit_code, signal, timed_out, ok). It also ends, without raising, after
    :meth:`cancel` (from any thread, also while another thread is blocked
    in it). Any other end raises its SmolVMError, once: as the command
    starts with the call and the daemon sends no acknowledgement, errors of
    the start (NotFoundError for no such program, PermissionDeniedError,
    InvalidArgumentError for an unknown user, FailedPreconditionError for a
    VM not RUNNING...) are raised by the iteration, :meth:`wait` and the
    writers, not by ``exec_session()``.

    The writers (:meth:`write_stdin`, :meth:`close_stdin`,
    :meth:`send_signal`, :meth:`resize`) may be called from any thread,
    also while another one reads; reads (iteration, :meth:`next_output`,
    :meth:`wait`) belong to one thread at a time. Once the session is over
    (the exit arrived, cancelled, or the call failed), the writers raise:
    the call's SmolVMError if it failed, else FailedPreconditionError;
    close_stdin() then does nothing.

    Output is read from the daemon as it comes and kept until read, up to
    16 MiB; beyond that the command is held back, as by a full pipe. A
    command that writes much while it is fed much needs its output read
    (in another thread) while :meth:`write_stdin` runs.
    """

    def __init__(self, conn: Connection, request: vm_service_pb2.ExecRequest, *,
                 tty: bool = False, rows: int = 0, cols: int = 0, term: str = "",
                 command_timeout: Optional[float] = None) -> None:
        """Starts the call running `request` (an ExecRequest without stdin:
        SmolVM.exec_session() builds it as run() does), on a pseudo-terminal
        of `rows` x `cols` with TERM `term` when `tty`. `command_timeout` is
        the request's timeout in seconds, for the call's deadline."""
        conn.check()
        self.vm_id: str = request.vm_id
        #: Whether the command runs on a pseudo-terminal.
        self.tty: bool = bool(tty)
        #: How the command ended, once reached by the iteration or wait();
        #: its stdout/stderr are what wait() collected (empty when all
        #: output was read by iterating).
        self.exit: Optional[CommandResult] = None
        self._what = f"exec session in vm {request.vm_id}"
        start = vm_service_pb2.ExecStreamStart(exec=request, tty=self.tty, term=term)
        rows = _check_size(rows, "rows", f"start {self._what}")
        cols = _check_size(cols, "cols", f"start {self._what}")
        if rows or cols:
            start.size.rows, start.size.cols = rows, cols
        self._stdin_lock = threading.Lock()  # Orders stdin writes and their close.
        self._stdin_closed = False
        self._closed = False
        self._error_raised = False  # The iteration raised the call's error.
        self._out: List[bytes] = []  # Output wait() collected.
        self._err: List[bytes] = []
        self._pump = _Pump(conn, start, exec_deadline(conn.options.timeout, command_timeout),
                           self._what)

    # --- State ---------------------------------------------------------------

    @property
    def exited(self) -> bool:
        """True once the command's exit has arrived (possibly before the
        output ahead of it was read; :attr:`exit` is set when it is)."""
        return self._pump.exit is not None

    @property
    def closed(self) -> bool:
        """True once close() / cancel() was called."""
        return self._closed

    @property
    def stdin_closed(self) -> bool:
        """True once close_stdin() was called."""
        return self._stdin_closed

    def __repr__(self) -> str:
        return (f"ExecSession(vm_id={self.vm_id!r}, tty={self.tty}, closed={self._closed}, "
                f"exit={self.exit!r})")

    # --- Writers ---------------------------------------------------------------

    def write_stdin(self, data: Union[bytes, bytearray, memoryview, str]) -> None:
        """Sends `data` (str is UTF-8 encoded) to the command's stdin, in
        messages of at most 1 MiB; with a tty it is typed into the
        terminal. Blocks while the daemon holds back (the command is not
        reading). FailedPreconditionError after close_stdin() and once the
        session is over."""
        if isinstance(data, str):
            data = data.encode()
        elif isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
        else:
            raise InvalidArgumentError(message=(
                f"write stdin to {self._what}: {type(data).__name__} is not bytes or str"))
        with self._stdin_lock:
            if self._stdin_closed:
                raise FailedPreconditionError(
                    message=f"write stdin to {self._what}: stdin is closed")
            self._check_open("write stdin to")
            view = memoryview(data)
            for offset in range(0, len(data), CHUNK_SIZE):
                chunk = bytes(view[offset:offset + CHUNK_SIZE])
                if not self._pump.requests.put(vm_service_pb2.ExecStreamRequest(stdin=chunk),
                                               len(chunk)):
                    raise self._over_error("write stdin to")

    def close_stdin(self) -> None:
        """Ends the command's stdin after what was written (with a tty:
        sends the terminal's end-of-file, ^D, once). Idempotent; does
        nothing once the session is over."""
        with self._stdin_lock:
            if self._stdin_closed or self._closed or self._pump.requests.finished:
                return
            self._stdin_closed = True
            self._pump.requests.put(vm_service_pb2.ExecStreamRequest(close_stdin=True))

    def send_signal(self, sig: int) -> None:
        """Sends signal `sig` (1-64, e.g. ``signal.SIGINT``) to the command's
        process group; with a tty to the terminal's foreground process group
        (as ^C does for SIGINT)."""
        if not isinstance(sig, int) or isinstance(sig, bool) or not 1 <= sig <= MAX_SIGNAL:
            raise InvalidArgumentError(message=(
                f"signal {self._what}: {sig!r} is not a signal number in 1-{MAX_SIGNAL}"))
        self._send("signal", vm_service_pb2.ExecStreamRequest(signal=int(sig)))

    def resize(self, rows: int, cols: int) -> None:
        """Sets the terminal's size (0-1000 each; 0 and 0 = 24 x 80): its
        foreground process group gets SIGWINCH. Only with a tty
        (FailedPreconditionError otherwise)."""
        what = f"resize the terminal of {self._what}"
        rows = _check_size(rows, "rows", what)
        cols = _check_size(cols, "cols", what)
        if not self.tty:
            raise FailedPreconditionError(message=f"{what}: the session has no tty")
        self._send("resize the terminal of", vm_service_pb2.ExecStreamRequest(
            resize=vm_service_pb2.TerminalSize(rows=rows, cols=cols)))

    def _send(self, operation: str, request: vm_service_pb2.ExecStreamRequest) -> None:
        self._check_open(operation)
        if not self._pump.requests.put(request):
            raise self._over_error(operation)

    def _check_open(self, operation: str) -> None:
        if self._closed or self._pump.requests.finished:
            raise self._over_error(operation)

    def _over_error(self, operation: str) -> SmolVMError:
        """Why the writers can no longer send: the call's error, or a
        FailedPreconditionError saying how the session ended."""
        pump = self._pump
        with pump.lock:
            error, exited = pump.error, pump.exit is not None
        if error is not None:
            return type(error)(error.code, error.message)
        if exited:
            why = "the command has exited"
        elif self._closed:
            why = "the session was cancelled"
        else:
            why = "the call has ended"
        return FailedPreconditionError(message=f"{operation} {self._what}: {why}")

    # --- Readers ---------------------------------------------------------------

    def __iter__(self) -> "ExecSession":
        return self

    def __next__(self) -> ProcessOutput:
        out = self.next_output()
        if out is None:
            raise StopIteration
        return out

    def next_output(self, timeout: Optional[float] = None) -> Optional[ProcessOutput]:
        """The next chunk of output, waiting for it up to `timeout` seconds
        (None or 0 = no limit; DeadlineExceededError after it, nothing is
        lost and the command goes on). None once there is no more: the exit
        was reached (:attr:`exit` is set) or the session was cancelled. The
        call's error is raised once, as by the iteration."""
        limit = stream_timeout(timeout, f"read output of {self._what}")
        while self.exit is None:
            item = self._get(limit, "no output")
            if isinstance(item, ProcessOutput):
                return item
            if item is _EXIT:
                self._set_exit()
                return None
            # Over without the exit.
            error = self._pump.error
            if error is not None and not self._closed and not self._error_raised:
                self._error_raised = True
                raise type(error)(error.code, error.message)
            return None
        return None

    def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Waits for the command to exit, collecting the output not read by
        iterating, and returns how it ended: a :class:`CommandResult` as
        run() returns (exit_code, signal, timed_out, ok, stdout, stderr), also
        kept as :attr:`exit`. `timeout`: seconds (None or 0 = no limit),
        after which DeadlineExceededError is raised while the command goes
        on (what was collected is kept for the next wait()). Raises the
        call's error if it failed, CancelledError if the session was
        cancelled before the exit. This does not close stdin: a command
        reading it (cat, sh) goes on until close_stdin() or its own end."""
        limit = stream_timeout(timeout, f"wait for {self._what}")
        end = None if limit is None else time.monotonic() + limit
        while self.exit is None:
            left = None if end is None else max(0.0, end - time.monotonic())
            item = self._get(left, f"not exited after {timeout} s")
            if isinstance(item, ProcessOutput):
                (self._out if item.stream == "stdout" else self._err).append(item.data)
            elif item is _EXIT or self._pump.exit is not None:
                self._set_exit()  # (Also when closed after the exit arrived.)
            elif self._pump.error is not None:
                error = self._pump.error
                raise type(error)(error.code, error.message)
            else:
                raise CancelledError(
                    message=f"{self._what}: the session was cancelled before the exit")
        assert self.exit is not None
        return self.exit

    def _get(self, limit: Optional[float], why: str) -> Any:
        try:
            return self._pump.outputs.get(limit)
        except _TimedOut:
            raise DeadlineExceededError(message=f"{self._what}: {why}") from None

    def _set_exit(self) -> None:
        exit_result = self._pump.exit
        assert exit_result is not None
        self.exit = command_result(exit_result, b"".join(self._out), b"".join(self._err))
        self._out, self._err = [], []

    # --- Ending ------------------------------------------------------------------

    def cancel(self) -> None:
        """Ends the session: before the exit this cancels the call, which
        kills the command's process group; an iteration blocked in another
        thread ends. Output not yet read is dropped. Thread-safe,
        idempotent; after the exit it only releases the session."""
        self._closed = True
        self._pump.cancel()

    def close(self) -> None:
        """Same as :meth:`cancel` (what leaving a ``with`` block does)."""
        self.cancel()

    def __del__(self) -> None:
        pump = getattr(self, "_pump", None)
        if pump is not None:
            try:
                pump.cancel()
            except Exception:  # pylint: disable=broad-except
                pass  # Interpreter shutdown.
