"""SmolVM.exec_session() (ExecStream) against an in-process fake smolvmd.

The fake VmService of test_sdk_fake_daemon.py, with an ExecStream that
checks the first request is `start`, echoes stdin as stdout, answers a
resize with the new size, exits 0 on close_stdin (after "eof" on stderr)
and with the signal on a signal, records every request, and records whether
the client then ended its request stream (as it must) or cancelled the call.
The real daemon is tests/e2e_flows.py (exec_sessions).
"""

import gc
import os
import signal
import tempfile
import threading
import time
import unittest
from concurrent import futures
from typing import Any, Dict, Iterator, List, Optional

import grpc

from smolvm import (CancelledError, ClientOptions, CommandResult, DeadlineExceededError,
                    ExecSession, FailedPreconditionError, InvalidArgumentError, NotFoundError,
                    ProcessOutput, SmolVM)
from smolvm.v1 import vm_service_pb2, vm_service_pb2_grpc

from test_sdk_fake_daemon import FakeVmService

pb = vm_service_pb2
MIB = 1 << 20


class FakeExecStreamVmService(FakeVmService):
    """FakeVmService plus ExecStream (see the module docstring). Argv
    ["/no/such"] fails the start with NOT_FOUND."""

    def __init__(self) -> None:
        super().__init__()
        self.stream_requests: List[pb.ExecStreamRequest] = []
        self.after_exit: List[pb.ExecStreamRequest] = []  # Sent after the exit.
        self.stream_metadata: Dict[str, str] = {}
        self.stream_time_left: Optional[float] = None
        self.half_closed = threading.Event()  # The client ended its requests.
        self.cancelled = threading.Event()    # The client cancelled the call.

    def ExecStream(self, request_iterator: Any, context: Any
                   ) -> Iterator[pb.ExecResponse]:
        self.stream_metadata = dict(context.invocation_metadata())
        self.stream_time_left = context.time_remaining()
        finished = threading.Event()  # The handler came to its normal end.

        def ended() -> None:  # Run by grpc when the call ends, for any reason.
            if not finished.is_set():
                self.cancelled.set()

        context.add_callback(ended)
        first = next(request_iterator)
        self.stream_requests.append(first)
        if first.WhichOneof("event") != "start":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request is not start")
        if list(first.start.exec.argv) == ["/no/such"]:
            context.abort(grpc.StatusCode.NOT_FOUND, "exec /no/such: no such file")
        # A cancel ends the request iterator (with an RpcError or, racing
        # with it, as a half-close would) and fails the next send, after
        # which grpc never resumes this generator: `finished` stays unset.
        exited = False
        try:
            for request in request_iterator:
                if exited:
                    self.after_exit.append(request)
                    continue
                self.stream_requests.append(request)
                kind = request.WhichOneof("event")
                if kind == "stdin":
                    yield pb.ExecResponse(stdout=request.stdin)
                elif kind == "resize":
                    size = request.resize
                    yield pb.ExecResponse(stdout=f"{size.rows} {size.cols}\n".encode())
                elif kind == "close_stdin":
                    yield pb.ExecResponse(stderr=b"eof\n")
                    yield pb.ExecResponse(exit=pb.ExecResult(exit_code=0))
                    exited = True
                elif kind == "signal":
                    yield pb.ExecResponse(exit=pb.ExecResult(signal=request.signal))
                    exited = True
        except grpc.RpcError:
            return  # Cancelled.
        if not exited:  # Ending the request stream closes stdin.
            yield pb.ExecResponse(exit=pb.ExecResult(exit_code=0))
            finished.set()
            return
        finished.set()
        self.half_closed.set()


def start_request(**exec_fields: Any) -> pb.ExecStreamRequest:
    return pb.ExecStreamRequest(start=pb.ExecStreamStart(
        exec=pb.ExecRequest(vm_id="gen-1", **exec_fields)))


class ExecSessionTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "smolvmd.sock")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.vms = FakeExecStreamVmService()
        vm_service_pb2_grpc.add_VmServiceServicer_to_server(self.vms, self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()
        self.options = ClientOptions(socket_path=self.socket, timeout=30, act_as_tenant="ci")
        self.vm = SmolVM(options=self.options).start()

    def tearDown(self) -> None:
        self.server.stop(None)
        self.dir.cleanup()

    def kinds(self) -> List[Optional[str]]:
        return [r.WhichOneof("event") for r in self.vms.stream_requests]

    def test_stdin_is_chunked_echoed_and_closed_then_the_stream_ends(self) -> None:
        data = os.urandom(2 * MIB + MIB // 2 + 1)
        with self.vm.exec_session(["cat"], env={"A": "1"}, cwd="/srv", user="alice") as s:
            self.assertIsInstance(s, ExecSession)
            s.write_stdin(data)
            s.write_stdin("é\n")  # str: UTF-8.
            s.write_stdin(b"")    # Nothing sent.
            self.assertFalse(s.stdin_closed)
            s.close_stdin()
            s.close_stdin()       # Idempotent.
            self.assertTrue(s.stdin_closed)
            result = s.wait(timeout=10)
        self.assertIsInstance(result, CommandResult)
        self.assertEqual((result.exit_code, result.signal, result.timed_out, result.ok),
                         (0, 0, False, True))
        self.assertEqual(result.stdout_bytes, data + "é\n".encode())
        self.assertEqual((result.stderr, result.stderr_bytes), ("eof\n", b"eof\n"))
        self.assertIs(s.exit, result)
        self.assertIs(s.wait(), result)  # Again: the same result.
        self.assertTrue(s.exited)

        # Start first, the stdin in 1 MiB messages, one close.
        self.assertEqual(self.vms.stream_requests[0], start_request(
            argv=["cat"], env={"A": "1"}, cwd="/srv", user="alice"))
        self.assertEqual(self.kinds(), ["start", "stdin", "stdin", "stdin", "stdin",
                                        "close_stdin"])
        self.assertEqual([len(r.stdin) for r in self.vms.stream_requests[1:5]],
                         [MIB, MIB, MIB // 2 + 1, 3])
        self.assertEqual(self.vms.stream_metadata.get("x-smolvm-tenant"), "ci")
        # After the exit the client ended its request stream (the daemon did
        # not have to end the call), without cancelling and sending nothing more.
        self.assertTrue(self.vms.half_closed.wait(5))
        self.assertFalse(self.vms.cancelled.is_set())
        self.assertEqual(self.vms.after_exit, [])

        with self.assertRaises(FailedPreconditionError) as ctx:
            s.write_stdin("late")
        self.assertIn("stdin is closed", ctx.exception.message)

    def test_tty_start_resize_and_iteration(self) -> None:
        s = self.vm.exec_session("sh", tty=True, rows=24, cols=80, term="vt100", timeout=5)
        s.write_stdin(bytearray(b"hi"))
        s.resize(40, 120)
        s.close_stdin()
        outputs = list(s)
        self.assertEqual(outputs, [ProcessOutput("stdout", b"hi"),
                                   ProcessOutput("stdout", b"40 120\n"),
                                   ProcessOutput("stderr", b"eof\n")])
        self.assertEqual(outputs[1].text, "40 120\n")
        # The exit was reached by the iteration: a result without output.
        self.assertEqual(s.exit, CommandResult(exit_code=0))
        self.assertIs(s.wait(), s.exit)
        self.assertEqual(list(s), [])
        self.assertIsNone(s.next_output())
        s.close()

        start = pb.ExecStreamRequest(start=pb.ExecStreamStart(
            exec=pb.ExecRequest(vm_id="gen-1", command="sh", timeout_ms=5000), tty=True,
            size=pb.TerminalSize(rows=24, cols=80), term="vt100"))
        self.assertEqual(self.vms.stream_requests[0], start)
        self.assertEqual(self.kinds(), ["start", "stdin", "resize", "close_stdin"])
        self.assertEqual(self.vms.stream_requests[2].resize, pb.TerminalSize(rows=40, cols=120))
        # The deadline is the command's timeout + 60 s (the call timeout is
        # 30 s; gRPC rounds deadlines up to the second).
        assert self.vms.stream_time_left is not None
        self.assertGreater(self.vms.stream_time_left, 60)
        self.assertLess(self.vms.stream_time_left, 66)
        self.assertTrue(self.vms.half_closed.wait(5))

        # Without rows/cols no size is sent (the daemon's 24 x 80); without
        # a timeout there is no deadline.
        with self.vm.exec_session(["sh"], tty=True) as s2:
            s2.close_stdin()
            s2.wait(timeout=10)
        self.assertFalse(self.vms.stream_requests[-2].start.HasField("size"))
        self.assertEqual(self.vms.stream_requests[-2].start.exec.argv, ["sh"])
        self.assertTrue(self.vms.stream_time_left is None or self.vms.stream_time_left > 1e6,
                        self.vms.stream_time_left)

    def test_signal_ends_the_command_and_the_writers_then_refuse(self) -> None:
        with self.vm.exec_session(["sleep", "100"]) as s:
            s.send_signal(signal.SIGINT)
            result = s.wait(timeout=10)
            self.assertEqual((result.signal, result.exit_code, result.ok), (2, 0, False))
            self.assertEqual((result.stdout, result.stderr), ("", ""))
            self.assertTrue(self.vms.half_closed.wait(5))
            for call in (lambda: s.write_stdin("x"), lambda: s.send_signal(9)):
                with self.assertRaises(FailedPreconditionError) as ctx:
                    call()
                self.assertIn("the command has exited", ctx.exception.message)
            s.close_stdin()  # Does nothing.
        self.assertEqual(self.kinds(), ["start", "signal"])
        self.assertEqual(self.vms.stream_requests[1].signal, 2)
        self.assertFalse(self.vms.cancelled.is_set())
        self.assertEqual(self.vms.after_exit, [])

    def test_wait_timeout_keeps_the_session_and_its_output(self) -> None:
        with self.vm.exec_session(["cat"]) as s:
            s.write_stdin("early ")
            with self.assertRaises(DeadlineExceededError):
                s.wait(timeout=0.3)
            self.assertIsNone(s.exit)
            with self.assertRaises(DeadlineExceededError):
                s.next_output(timeout=0.1)  # "early " was collected by wait().
            s.write_stdin("late")
            self.assertEqual(s.next_output(timeout=5), ProcessOutput("stdout", b"late"))
            s.close_stdin()
            result = s.wait(timeout=5)
        self.assertEqual((result.stdout, result.stderr, result.ok), ("early ", "eof\n", True))

    def test_cancel_kills_the_command(self) -> None:
        # Leaving the block before the exit cancels the call.
        with self.vm.exec_session(["cat"]) as s:
            s.write_stdin("x")
            self.assertEqual(next(s), ProcessOutput("stdout", b"x"))
        self.assertTrue(s.closed)
        self.assertTrue(self.vms.cancelled.wait(5))
        self.assertFalse(self.vms.half_closed.is_set())
        self.assertEqual(list(s), [])  # Ends without raising.
        self.assertIsNone(s.exit)
        with self.assertRaises(CancelledError):
            s.wait()
        with self.assertRaises(FailedPreconditionError) as ctx:
            s.write_stdin("y")
        self.assertIn("cancelled", ctx.exception.message)
        s.close_stdin()  # Does nothing.
        s.cancel()       # Idempotent.

        # From another thread while the iteration is blocked.
        self.vms.cancelled.clear()
        other = self.vm.exec_session(["cat"])
        other.write_stdin("a")
        threading.Timer(0.2, other.cancel).start()
        start = time.monotonic()
        self.assertEqual(list(other), [ProcessOutput("stdout", b"a")])
        self.assertLess(time.monotonic() - start, 5)
        self.assertTrue(self.vms.cancelled.wait(5))

        # Dropping the session cancels it too.
        self.vms.cancelled.clear()
        dropped = self.vm.exec_session(["cat"])
        dropped.write_stdin("b")
        self.assertEqual(next(dropped).data, b"b")
        del dropped
        gc.collect()
        self.assertTrue(self.vms.cancelled.wait(5))

    def test_start_errors_are_raised_by_the_reads_and_the_writers(self) -> None:
        s = self.vm.exec_session(["/no/such"])
        with self.assertRaises(NotFoundError) as ctx:
            s.wait(timeout=10)
        self.assertEqual(ctx.exception.message, "exec /no/such: no such file")
        self.assertIs(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(NotFoundError):
            s.wait()  # Every time.
        with self.assertRaises(NotFoundError):
            next(s)   # The iteration raises it once...
        self.assertEqual(list(s), [])  # ...then ends.
        with self.assertRaises(NotFoundError):
            s.write_stdin("x")
        with self.assertRaises(NotFoundError):
            s.send_signal(15)
        s.close()

    def test_bad_arguments_send_nothing(self) -> None:
        never_started = SmolVM(options=self.options)
        with self.assertRaises(FailedPreconditionError):
            never_started.exec_session(["cat"])
        for call in (lambda: self.vm.exec_session([]),
                     lambda: self.vm.exec_session(["sh"], tty=True, rows=-1),
                     lambda: self.vm.exec_session(["sh"], tty=True, cols=1001),
                     lambda: self.vm.exec_session(["sh"], timeout=-1)):
            with self.assertRaises(InvalidArgumentError):
                call()
        self.assertEqual(self.vms.stream_requests, [])

        with self.vm.exec_session(["cat"]) as s:
            for call in (lambda: s.send_signal(0), lambda: s.send_signal(65),
                         lambda: s.send_signal("INT"),  # type: ignore[arg-type]
                         lambda: s.send_signal(True),
                         lambda: s.write_stdin(5),  # type: ignore[arg-type]
                         lambda: s.resize(-1, 80), lambda: s.resize(24, 1001),
                         lambda: s.wait(timeout=-1), lambda: s.next_output(timeout=-1)):
                with self.assertRaises(InvalidArgumentError):
                    call()
            with self.assertRaises(FailedPreconditionError):
                s.resize(24, 80)  # No tty.
            s.close_stdin()
            self.assertTrue(s.wait(timeout=10).ok)
        self.assertEqual(self.kinds(), ["start", "close_stdin"])


if __name__ == "__main__":
    unittest.main()
