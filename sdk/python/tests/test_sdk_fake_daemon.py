"""SmolVM and SmolVMManager against an in-process fake smolvmd.

A grpc server on a temporary Unix socket implements the RPCs the SDK makes,
records the requests and answers like the daemon; the real daemon with real
guests is tests/e2e/python_sdk_test.cc. This checks the client side: which
RPC each method makes with which fields, paging, streams, errors.
"""

import os
import signal
import tempfile
import threading
import time
import unittest
from concurrent import futures
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List

import grpc

from smolvm import (AlreadyExistsError, Event, EventKind, OutOfRangeError, ClientOptions, DeadlineExceededError, DirWatch,
                    FailedPreconditionError, FileEntry, FileType, ForkVmResult,
                    InvalidArgumentError, ListDirResult, NotFoundError, OperationProgress,
                    PermissionDeniedError, ProcessConnection, ProcessInfo, ProcessOutput,
                    SmolVM, SmolVMManager, VMConfig, VmStatus, WatchEvent, WatchEventType,
                    EgressPolicy)
from smolvm.v1 import (event_service_pb2, event_service_pb2_grpc,
                       filesystem_service_pb2, filesystem_service_pb2_grpc,
                       operation_service_pb2, operation_service_pb2_grpc,
                       process_service_pb2, process_service_pb2_grpc, snapshot_service_pb2,
                       snapshot_service_pb2_grpc, types_pb2, vm_service_pb2,
                       vm_service_pb2_grpc)

fs_pb2 = filesystem_service_pb2
proc_pb2 = process_service_pb2


class FakeVmService(vm_service_pb2_grpc.VmServiceServicer):
    def __init__(self) -> None:
        self.requests: List[Any] = []
        self.files: Dict[str, bytes] = {}
        self.vms = [f"vm-{i:04d}" for i in range(2500)]

    def CreateVm(self, request: Any, context: Any) -> types_pb2.Vm:
        self.requests.append(request)
        self.metadata = dict(context.invocation_metadata())
        return types_pb2.Vm(vm_id=request.config.vm_id or "gen-1", status=types_pb2.RUNNING,
                            config=request.config)

    def DeleteVm(self, request: Any, context: Any) -> vm_service_pb2.DeleteVmResponse:
        self.requests.append(request)
        if request.vm_id == "gone":
            context.abort(grpc.StatusCode.NOT_FOUND, "vm gone: not found")
        return vm_service_pb2.DeleteVmResponse()

    def GetVm(self, request: Any, context: Any) -> types_pb2.Vm:
        if request.vm_id not in ("gone", "box"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"vm {request.vm_id}: not found")
        return types_pb2.Vm(vm_id=request.vm_id, status=types_pb2.PAUSED)

    def UpdateNetworkPolicy(self, request: Any, context: Any) -> types_pb2.Vm:
        self.requests.append(request)
        return types_pb2.Vm(vm_id=request.vm_id, status=types_pb2.RUNNING,
                            network=types_pb2.NetworkConfig(egress=request.egress))

    def ListVms(self, request: Any, context: Any) -> vm_service_pb2.ListVmsResponse:
        self.requests.append(request)
        start = int(request.page_token or 0)
        end = start + request.page_size
        return vm_service_pb2.ListVmsResponse(
            vms=[types_pb2.Vm(vm_id=v) for v in self.vms[start:end]],
            next_page_token=str(end) if end < len(self.vms) else "")

    def GetVmStats(self, request: Any, context: Any) -> vm_service_pb2.VmStats:
        self.requests.append(request)
        return vm_service_pb2.VmStats(vm_id=request.vm_id, cpu_time_ns=7, guest_memory_known=True,
                                      guest_memory_total_bytes=1 << 30)

    def WatchVmStats(self, request: Any, context: Any) -> Iterator[vm_service_pb2.VmStats]:
        self.requests.append(request)
        for n in range(3):
            yield vm_service_pb2.VmStats(vm_id=request.vm_id, cpu_time_ns=n)

    def StreamConsole(self, request: Any, context: Any) -> Iterator[vm_service_pb2.ConsoleChunk]:
        self.requests.append(request)
        if request.vm_id == "gone":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "vm stopped is STOPPED: its console is kept only while it runs")
        yield vm_service_pb2.ConsoleChunk(data=b"boot ")
        yield vm_service_pb2.ConsoleChunk(data=b"done\n")

    def Exec(self, request: Any, context: Any) -> Iterator[vm_service_pb2.ExecResponse]:
        self.requests.append(request)
        # Start errors as the daemon maps the guest's errno.
        if list(request.argv) == ["/no/such"]:
            context.abort(grpc.StatusCode.NOT_FOUND, "exec /no/such: no such file")
        if list(request.argv) == ["/etc/passwd"]:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "exec /etc/passwd: not executable")
        if request.user == "nosuchuser":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "exec: unknown user nosuchuser")
        yield vm_service_pb2.ExecResponse(stdout=b"out1 ")
        yield vm_service_pb2.ExecResponse(stderr=b"err\xff")
        yield vm_service_pb2.ExecResponse(stdout=b"out2\n")
        yield vm_service_pb2.ExecResponse(exit=vm_service_pb2.ExecResult(exit_code=3))

    def UploadFile(self, request_iterator: Any, context: Any) -> vm_service_pb2.UploadFileResponse:
        header = next(request_iterator).header
        data = b"".join(r.data for r in request_iterator)
        self.files[header.path] = data
        self.requests.append(header)
        return vm_service_pb2.UploadFileResponse(bytes_written=len(data))

    def DownloadFile(self, request: Any, context: Any
                     ) -> Iterator[vm_service_pb2.DownloadFileResponse]:
        self.requests.append(request)
        if request.path not in self.files:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.path}: not found")
        data = self.files[request.path]
        for i in range(0, len(data), 1000):
            yield vm_service_pb2.DownloadFileResponse(data=data[i:i + 1000])
        yield vm_service_pb2.DownloadFileResponse(eof=True, mode=0o600, total_bytes=len(data))

    def ForkVm(self, request: Any, context: Any) -> vm_service_pb2.ForkVmResponse:
        """Children <prefix>-1..count; the second fails as out of quota."""
        self.requests.append(request)
        if request.vm_id != "gen-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"vm {request.vm_id}: not found")
        snapshot_id = request.snapshot_id or f"{request.vm_id}-fork-1700000000000"
        prefix = request.vm_id_prefix or snapshot_id
        status = types_pb2.PAUSED if request.paused else types_pb2.RUNNING
        results = []
        for n in range(1, request.count + 1):
            child = f"{prefix}-{n}"
            if n == 2:
                results.append(snapshot_service_pb2.ForkResult(
                    vm_id=child, error_code=8, error_message="quota"))
                continue
            results.append(snapshot_service_pb2.ForkResult(vm_id=child, vm=types_pb2.Vm(
                vm_id=child, status=status, config=types_pb2.VMConfig(labels=request.labels))))
        return vm_service_pb2.ForkVmResponse(snapshot_id=snapshot_id, results=results)


class FakeSnapshotService(snapshot_service_pb2_grpc.SnapshotServiceServicer):
    def __init__(self) -> None:
        self.requests: List[Any] = []

    def CreateSnapshot(self, request: Any, context: Any) -> types_pb2.SnapshotInfo:
        self.requests.append(request)
        info = types_pb2.SnapshotInfo(snapshot_id=request.snapshot_id, vm_id=request.vm_id,
                                      snapshot_path="/s/vmstate.bin", labels=request.labels)
        info.created_at.GetCurrentTime()
        return info

    def ListSnapshots(self, request: Any, context: Any
                      ) -> snapshot_service_pb2.ListSnapshotsResponse:
        self.requests.append(request)
        return snapshot_service_pb2.ListSnapshotsResponse(snapshots=[
            types_pb2.SnapshotInfo(snapshot_id="ckpt", vm_id="gen-1", labels={"team": "ci"})])

    def RestoreSnapshot(self, request: Any, context: Any) -> types_pb2.Vm:
        self.requests.append(request)
        if request.snapshot_id != "ckpt":
            context.abort(grpc.StatusCode.NOT_FOUND, f"snapshot {request.snapshot_id}: not found")
        return types_pb2.Vm(vm_id=request.vm_id or "box", status=types_pb2.RUNNING,
                            config=types_pb2.VMConfig(memory_mib=256))

    def ForkSnapshot(self, request: Any, context: Any) -> snapshot_service_pb2.ForkSnapshotResponse:
        self.requests.append(request)
        return snapshot_service_pb2.ForkSnapshotResponse(results=[
            snapshot_service_pb2.ForkResult(vm_id="c-1", vm=types_pb2.Vm(vm_id="c-1")),
            snapshot_service_pb2.ForkResult(vm_id="c-2", error_code=8, error_message="quota"),
            snapshot_service_pb2.ForkResult(vm_id="c-3")])


class FakeOperationService(operation_service_pb2_grpc.OperationServiceServicer):
    """Streams a fixed fork: 1 then 3 of 3 clones, then the end."""

    def __init__(self) -> None:
        self.watched: List[str] = []
        self.kind = "ForkSnapshot"

    def WatchOperation(self, request: Any, context: Any
                       ) -> Iterator[operation_service_pb2.Operation]:
        self.watched.append(request.operation_id)
        for done, finished in ((1, False), (3, False), (3, True)):
            yield operation_service_pb2.Operation(
                operation_id=request.operation_id, kind=self.kind, target="ckpt",
                stage="restoring clones", done=done, total=3, unit="clones", stage_number=1,
                finished=finished)

    def GetOperation(self, request: Any, context: Any) -> operation_service_pb2.Operation:
        context.abort(grpc.StatusCode.NOT_FOUND, f"no operation \"{request.operation_id}\"")


def fake_entry(path: str, kind: int = fs_pb2.FILE_TYPE_FILE) -> fs_pb2.FileEntry:
    return fs_pb2.FileEntry(path=path, name=path.rsplit("/", 1)[-1], type=kind, size=5,
                            mode=0o640, uid=1000, gid=100,
                            mtime_unix_ns=1_700_000_000_123_456_789)


# What the fake's WatchDir sends after WATCHING: changes, plus a second
# WATCHING and an UNSPECIFIED event, which the SDK skips.
WATCH_EVENTS = [
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_CREATE, path="/srv/a"),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_WATCHING),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_MODIFY, path="/srv/a"),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_UNSPECIFIED, path="/srv/?"),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_RENAME, path="/srv/b", old_path="/srv/a"),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_CREATE, path="/srv/d", is_dir=True),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_CHMOD, path="/srv/d", is_dir=True),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_DELETE, path="/srv/b"),
    fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_OVERFLOW),
]
EXPECTED_EVENTS = [
    WatchEvent(WatchEventType.CREATE, "/srv/a"),
    WatchEvent(WatchEventType.MODIFY, "/srv/a"),
    WatchEvent(WatchEventType.RENAME, "/srv/b", old_path="/srv/a"),
    WatchEvent(WatchEventType.CREATE, "/srv/d", is_dir=True),
    WatchEvent(WatchEventType.CHMOD, "/srv/d", is_dir=True),
    WatchEvent(WatchEventType.DELETE, "/srv/b"),
    WatchEvent(WatchEventType.OVERFLOW, ""),
]


class FakeFilesystemService(filesystem_service_pb2_grpc.FilesystemServiceServicer):
    """Answers like the daemon; "/missing" is NOT_FOUND everywhere."""

    def __init__(self) -> None:
        self.requests: List[Any] = []
        self.metadata: Dict[str, str] = {}
        # WatchDir sends WATCH_EVENTS once `go` is set, then waits for the
        # client to cancel; `watch_ended` is set when a WatchDir call ends.
        self.go = threading.Event()
        self.watch_ended = threading.Event()

    def _record(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        self.metadata = dict(context.invocation_metadata())
        if request.path == "/missing":
            context.abort(grpc.StatusCode.NOT_FOUND, f"{request.path}: no such file or directory")

    def StatPath(self, request: Any, context: Any) -> fs_pb2.StatPathResponse:
        self._record(request, context)
        if request.path == "/link":
            entry = fake_entry("/link", fs_pb2.FILE_TYPE_SYMLINK)
            entry.symlink_target = "/etc/hosts"
            return fs_pb2.StatPathResponse(entry=entry)
        return fs_pb2.StatPathResponse(entry=fake_entry(request.path))

    def ListDir(self, request: Any, context: Any) -> fs_pb2.ListDirResponse:
        self._record(request, context)
        entries = [fake_entry(f"{request.path}/a", fs_pb2.FILE_TYPE_DIRECTORY),
                   fake_entry(f"{request.path}/b")]
        if request.depth > 1:
            entries.append(fake_entry(f"{request.path}/a/c", fs_pb2.FILE_TYPE_OTHER))
        return fs_pb2.ListDirResponse(entries=entries, truncated=request.depth > 2)

    def MakeDir(self, request: Any, context: Any) -> fs_pb2.MakeDirResponse:
        self._record(request, context)
        exists = request.path == "/exists"
        if exists and not request.parents:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{request.path}: file exists")
        return fs_pb2.MakeDirResponse(entry=fake_entry(request.path, fs_pb2.FILE_TYPE_DIRECTORY),
                                      created=not exists)

    def RemovePath(self, request: Any, context: Any) -> fs_pb2.RemovePathResponse:
        self._record(request, context)
        if request.path == "/full" and not request.recursive:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{request.path}: directory not empty")
        return fs_pb2.RemovePathResponse()

    def RenamePath(self, request: Any, context: Any) -> fs_pb2.RenamePathResponse:
        self._record(request, context)
        if request.new_path == "/exists" and not request.overwrite:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{request.new_path}: file exists")
        return fs_pb2.RenamePathResponse(entry=fake_entry(request.new_path))

    def WatchDir(self, request: Any, context: Any) -> Iterator[fs_pb2.WatchDirEvent]:
        self._record(request, context)
        cancelled = threading.Event()

        def ended() -> None:  # Run by grpc when the call ends (cancelled).
            cancelled.set()
            self.watch_ended.set()

        context.add_callback(ended)
        if request.path == "/slow":  # Never in place.
            cancelled.wait(10)
            return
        yield fs_pb2.WatchDirEvent(type=fs_pb2.WATCH_EVENT_TYPE_WATCHING)
        if request.path == "/vm-stops":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "vm gen-1 is not running")
        if not self.go.wait(10):
            return
        yield from WATCH_EVENTS
        cancelled.wait(10)


# 2023-11-14 22:13:20.123456 UTC and one second later.
STARTED_NS = 1_700_000_000_123_456_789
ENDED_NS = STARTED_NS + 1_000_000_000
STARTED = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)
ENDED = datetime(2023, 11, 14, 22, 13, 21, 123456, tzinfo=timezone.utc)


def fake_process(pid: int, running: bool = True, **fields: Any) -> proc_pb2.ProcessInfo:
    info = proc_pb2.ProcessInfo(pid=pid, argv=["/bin/sh", "-c", "serve"], running=running,
                                started_at_unix_ns=STARTED_NS, output_bytes=12)
    if not running:
        info.ended_at_unix_ns = ENDED_NS
    for name, value in fields.items():
        setattr(info, name, value)
    return info


class FakeProcessService(process_service_pb2_grpc.ProcessServiceServicer):
    """Answers like the daemon. Pid 42 runs, 7 has exited with 0, 404 is not
    tracked (NOT_FOUND everywhere); ConnectProcess of 42 sends a tail, output
    and the exit (signal 15), of 43 one chunk and then waits to be
    cancelled; WaitProcess of 99 with a timeout is DEADLINE_EXCEEDED."""

    def __init__(self) -> None:
        self.requests: List[Any] = []
        self.metadata: Dict[str, str] = {}
        # The time left (s) before the deadline of the last WaitProcess
        # call (None: no deadline).
        self.wait_time_left: Any = None
        self.connect_ended = threading.Event()  # Set when a ConnectProcess ends.

    def _record(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        self.metadata = dict(context.invocation_metadata())
        if getattr(request, "pid", 0) == 404:
            context.abort(grpc.StatusCode.NOT_FOUND, "process 404: not found")

    def StartProcess(self, request: Any, context: Any) -> proc_pb2.ProcessInfo:
        self._record(request, context)
        if list(request.argv) == ["/no/such"]:
            context.abort(grpc.StatusCode.NOT_FOUND, "start /no/such: no such file")
        argv = list(request.argv) or ["/bin/sh", "-c", request.command]
        return proc_pb2.ProcessInfo(pid=42, argv=argv, user=request.user,
                                    cwd=request.cwd or "/root", running=True,
                                    started_at_unix_ns=STARTED_NS)

    def ListProcesses(self, request: Any, context: Any) -> proc_pb2.ListProcessesResponse:
        self._record(request, context)
        return proc_pb2.ListProcessesResponse(processes=[
            fake_process(7, running=False), fake_process(42)])

    def SignalProcess(self, request: Any, context: Any) -> proc_pb2.ProcessInfo:
        self._record(request, context)
        return fake_process(request.pid)

    def ConnectProcess(self, request: Any, context: Any
                       ) -> Iterator[proc_pb2.ConnectProcessResponse]:
        self._record(request, context)
        cancelled = threading.Event()

        def ended() -> None:  # Run by grpc when the call ends.
            cancelled.set()
            self.connect_ended.set()

        context.add_callback(ended)
        if request.tail_bytes:
            yield proc_pb2.ConnectProcessResponse(stdout=b"tick0\n")
        if request.pid == 43:
            yield proc_pb2.ConnectProcessResponse(stdout=b"tick1\n")
            cancelled.wait(10)
            return
        yield proc_pb2.ConnectProcessResponse(stderr=b"warn\n", skipped_bytes=10)
        yield proc_pb2.ConnectProcessResponse()  # No event: skipped.
        yield proc_pb2.ConnectProcessResponse(stdout=b"tick1\n")
        yield proc_pb2.ConnectProcessResponse(exit=fake_process(request.pid, running=False,
                                                                signal=15))

    def WaitProcess(self, request: Any, context: Any) -> proc_pb2.ProcessInfo:
        self._record(request, context)
        self.wait_time_left = context.time_remaining()
        if request.pid == 99 and request.timeout_ms:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"process 99 still running after {request.timeout_ms} ms")
        return fake_process(request.pid, running=False, exit_code=3)


class FakeEventService(event_service_pb2_grpc.EventServiceServicer):
    """Three events after any id; OUT_OF_RANGE after id 1 (pruned)."""

    def __init__(self) -> None:
        self.requests: List[Any] = []

    def WatchEvents(self, request: Any, context: Any) -> Iterator[event_service_pb2.Event]:
        self.requests.append(request)
        if request.after_event_id == 1:
            context.abort(grpc.StatusCode.OUT_OF_RANGE,
                          "events after 1 up to 5 were dropped by the journal's retention")
        first = request.after_event_id + 1
        yield event_service_pb2.Event(event_id=first, kind=event_service_pb2.VM_CREATED,
                                      owner="ci", vm_id="box", state=types_pb2.CREATED)
        yield event_service_pb2.Event(event_id=first + 1, kind=event_service_pb2.SNAPSHOT_CREATED,
                                      owner="ci", vm_id="box", snapshot_id="s")
        yield event_service_pb2.Event(event_id=first + 2, kind=event_service_pb2.VM_ERROR,
                                      owner="ci", vm_id="box", state=types_pb2.ERROR,
                                      detail="the VMM died")
        if request.follow:
            while context.is_active():
                time.sleep(0.05)


class FakeDaemonTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "smolvmd.sock")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.vms = FakeVmService()
        self.snapshots = FakeSnapshotService()
        vm_service_pb2_grpc.add_VmServiceServicer_to_server(self.vms, self.server)
        snapshot_service_pb2_grpc.add_SnapshotServiceServicer_to_server(self.snapshots,
                                                                         self.server)
        self.operations = FakeOperationService()
        operation_service_pb2_grpc.add_OperationServiceServicer_to_server(self.operations,
                                                                           self.server)
        self.fs = FakeFilesystemService()
        filesystem_service_pb2_grpc.add_FilesystemServiceServicer_to_server(self.fs,
                                                                             self.server)
        self.procs = FakeProcessService()
        process_service_pb2_grpc.add_ProcessServiceServicer_to_server(self.procs, self.server)
        self.events = FakeEventService()
        event_service_pb2_grpc.add_EventServiceServicer_to_server(self.events, self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()
        self.options = ClientOptions(socket_path=self.socket, timeout=30,
                                     act_as_tenant="ci")

    def tearDown(self) -> None:
        self.server.stop(None)
        self.dir.cleanup()

    def test_vm_lifecycle_run_files_and_close(self) -> None:
        vm = SmolVM({"memory_mib": 256}, options=self.options)
        with self.assertRaises(FailedPreconditionError):
            vm.run("true")
        self.assertIs(vm.start(), vm)
        create = self.vms.requests[0]
        self.assertTrue(create.start)
        self.assertEqual(create.config.memory_mib, 256)
        self.assertEqual(self.vms.metadata.get("x-smolvm-tenant"), "ci")
        self.assertEqual((vm.vm_id, f"{vm.status}"), ("gen-1", "running"))

        result = vm.run("echo hi", timeout=1.5, env={"A": "b"}, cwd="/tmp", stdin="in")
        request = self.vms.requests[-1]
        self.assertEqual((request.command, request.cwd, request.timeout_ms), ("echo hi", "/tmp", 1500))
        self.assertEqual((request.stdin, request.has_stdin, dict(request.env)),
                         (b"in", True, {"A": "b"}))
        self.assertEqual((result.exit_code, result.stdout, result.output), (3, "out1 out2\n", "out1 out2"))
        self.assertEqual(result.stderr, "err\ufffd")
        self.assertEqual(result.stderr_bytes, b"err\xff")
        self.assertFalse(result.ok)

        chunks: List[Any] = []
        streamed = vm.exec(["echo", "a b"], on_output=lambda s, d: chunks.append((s, d)))
        self.assertEqual(list(self.vms.requests[-1].argv), ["echo", "a b"])
        self.assertEqual(self.vms.requests[-1].has_stdin, False)
        self.assertEqual(chunks[0], ("stdout", b"out1 "))
        self.assertEqual((streamed.stdout, streamed.exit_code), ("", 3))
        with self.assertRaises(NotFoundError) as ctx:
            vm.exec(["/no/such"])
        self.assertEqual(ctx.exception.message, "exec /no/such: no such file")

        payload = os.urandom(2_500_000)  # Three upload chunks.
        local = os.path.join(self.dir.name, "in.bin")
        with open(local, "wb") as f:
            f.write(payload)
        vm.upload_file(local, "/root/in.bin", mode=0o600)
        self.assertEqual(self.vms.files["/root/in.bin"], payload)
        self.assertTrue(self.vms.requests[-1].make_parents)
        vm.upload_bytes("text", "/root/t.txt")
        self.assertEqual(vm.download_bytes("/root/t.txt"), b"text")
        out = os.path.join(self.dir.name, "out.bin")
        vm.download_file("/root/in.bin", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), payload)
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)
        with self.assertRaises(NotFoundError):
            vm.download_file("/missing", os.path.join(self.dir.name, "never"))
        self.assertEqual(sorted(os.listdir(self.dir.name)), ["in.bin", "out.bin", "smolvmd.sock"])
        with self.assertRaises(FileNotFoundError):
            vm.upload_file(os.path.join(self.dir.name, "nope"), "/x")

        snap = vm.snapshot(snapshot_id="ckpt")
        self.assertEqual((snap.snapshot_id, snap.vm_id), ("ckpt", "gen-1"))
        self.assertEqual(vm.status, VmStatus.PAUSED)
        self.assertIsNone(snap.restored_vm_id)
        vm.close()
        self.assertEqual(self.vms.requests[-1], vm_service_pb2.DeleteVmRequest(vm_id="gen-1"))
        self.assertEqual(vm.status, VmStatus.UNSPECIFIED)
        vm.close()  # Idempotent: nothing sent.
        self.assertIsInstance(self.vms.requests[-1], vm_service_pb2.DeleteVmRequest)
        with self.assertRaises(FailedPreconditionError):
            vm.run("true")

    def test_context_manager_starts_and_closes(self) -> None:
        with SmolVM(options=self.options) as vm:
            self.assertEqual(vm.status, VmStatus.RUNNING)
        self.assertEqual(self.vms.requests[-1].vm_id, "gen-1")
        never_started = SmolVM(options=self.options)
        never_started.close()  # Sends nothing.
        self.assertEqual(len(self.vms.requests), 2)

    def test_stats(self) -> None:
        vm = SmolVM.attach("box", options=self.options)
        s = vm.stats()
        self.assertEqual((s.vm_id, s.cpu_time_ns, s.guest_memory_known,
                          s.guest_memory_total_bytes), ("box", 7, True, 1 << 30))
        with vm.watch_stats(interval=2) as watch:
            self.assertEqual([r.cpu_time_ns for r in watch], [0, 1, 2])
        self.assertEqual(self.vms.requests[-1].interval_ms, 2000)

    def test_events(self) -> None:
        with SmolVMManager(self.options) as sdk:
            events = list(sdk.events(after_event_id=10, vm_id="box",
                                     kinds=["vm_created", EventKind.VM_ERROR, 6]))
            request = self.events.requests[-1]
            self.assertEqual((request.after_event_id, request.follow, request.filter.vm_id),
                             (10, False, "box"))
            self.assertEqual(list(request.filter.kinds), [event_service_pb2.VM_CREATED,
                                                          event_service_pb2.VM_ERROR,
                                                          event_service_pb2.VM_DELETED])
            self.assertEqual([(e.event_id, e.kind, e.state) for e in events],
                             [(11, "vm_created", VmStatus.CREATED),
                              (12, EventKind.SNAPSHOT_CREATED, None),
                              (13, "vm_error", "error")])
            self.assertIsInstance(events[0], Event)
            self.assertEqual((events[2].detail, events[1].snapshot_id, events[0].owner),
                             ("the VMM died", "s", "ci"))
            self.assertEqual(events[0].time.tzinfo, timezone.utc)
            self.assertEqual(f"{events[1].kind}", "snapshot_created")
            # A follow goes on until closed (from another thread too).
            stream = sdk.events(after_event_id=0, follow=True)
            self.assertEqual(next(stream).event_id, 1)
            threading.Timer(0.2, stream.close).start()
            self.assertEqual(len(list(stream)), 2)
            with self.assertRaises(OutOfRangeError):
                list(sdk.events(after_event_id=1))
            for bad in ({"kinds": ["nonsense"]}, {"after_event_id": -1},
                        {"kinds": [0]}):
                with self.assertRaises(InvalidArgumentError):
                    sdk.events(**bad)

    def test_console(self) -> None:
        vm = SmolVM.attach("box", options=self.options)
        with vm.console(follow=True, tail_bytes=0) as console:
            self.assertEqual(b"".join(console), b"boot done\n")
        request = self.vms.requests[-1]
        self.assertEqual((request.vm_id, request.follow, request.tail_bytes), ("box", True, 0))
        self.assertTrue(request.HasField("tail_bytes"))
        self.assertEqual(b"".join(vm.console()), b"boot done\n")
        self.assertFalse(self.vms.requests[-1].HasField("tail_bytes"), "None = all that is kept")
        with self.assertRaises(FailedPreconditionError):
            list(SmolVM.attach("gone", options=self.options).console())

    def test_update_network_policy(self) -> None:
        vm = SmolVM.attach("box", options=self.options)
        vm.update_network_policy(EgressPolicy("open", deny_cidrs=["10.0.0.0/8"]))
        self.assertEqual(self.vms.requests[-1], vm_service_pb2.UpdateNetworkPolicyRequest(
            vm_id="box", egress=types_pb2.EgressPolicy(
                mode=types_pb2.EgressPolicy.EGRESS_OPEN, deny_cidrs=["10.0.0.0/8"])))
        self.assertEqual(vm.info.network.egress.deny_cidrs, ["10.0.0.0/8"])
        with self.assertRaises(InvalidArgumentError):
            vm.update_network_policy(EgressPolicy("sometimes"))
        vm.update_network_policy(EgressPolicy("restricted", allow_domains=["*.pypi.org"],
                                              deny_domains=["evil.pypi.org"]))
        self.assertEqual(self.vms.requests[-1].egress, types_pb2.EgressPolicy(
            mode=types_pb2.EgressPolicy.EGRESS_RESTRICTED, allow_domains=["*.pypi.org"],
            deny_domains=["evil.pypi.org"]))
        self.assertEqual(vm.info.network.egress.allow_domains, ["*.pypi.org"])
        self.assertEqual(vm.info.network.egress.deny_domains, ["evil.pypi.org"])

    def test_close_of_a_vm_already_gone(self) -> None:
        vm = SmolVM.attach("gone", options=self.options)
        vm.close()  # NOT_FOUND counts as closed.
        self.assertEqual(vm.status, VmStatus.UNSPECIFIED)

    def test_from_snapshot_and_errors(self) -> None:
        vm = SmolVM.from_snapshot("ckpt", resume_vm=True, vm_id="clone", options=self.options)
        self.assertEqual(self.snapshots.requests[-1],
                         snapshot_service_pb2.RestoreSnapshotRequest(
                             snapshot_id="ckpt", resume_vm=True, vm_id="clone"))
        self.assertEqual((vm.vm_id, vm.status, vm.config.memory_mib), ("clone", "running", 256))
        with self.assertRaises(NotFoundError) as ctx:
            SmolVM.from_snapshot("nope", options=self.options)
        self.assertIs(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(ctx.exception.message, "snapshot nope: not found")

    def test_manager_pages_and_forks(self) -> None:
        with SmolVMManager(self.options) as sdk:
            vms = sdk.list_vms()
            self.assertEqual([v.vm_id for v in vms], self.vms.vms)  # Three pages.
            outcomes = sdk.fork_snapshot("ckpt", 3)
            self.assertEqual([o.vm_id for o in outcomes], ["c-1", "c-2", "c-3"])
            self.assertTrue(outcomes[0].ok)
            self.assertEqual(outcomes[0].vm.vm_id, "c-1")  # type: ignore[union-attr]
            self.assertEqual(outcomes[1].error.code, grpc.StatusCode.RESOURCE_EXHAUSTED)  # type: ignore[union-attr]
            self.assertEqual(outcomes[1].error.message, "quota")  # type: ignore[union-attr]
            self.assertEqual(outcomes[2].error.code, grpc.StatusCode.INTERNAL)  # type: ignore[union-attr]
            with self.assertRaises(NotFoundError):
                sdk.get_vm("nope")

    def test_progress_of_a_fork(self) -> None:
        seen: List[OperationProgress] = []
        with SmolVMManager(self.options) as sdk:
            outcomes = sdk.fork_snapshot("ckpt", 3, on_progress=seen.append)
            self.assertEqual(len(outcomes), 3)
            # Without a callback no operation id is sent.
            sdk.fork_snapshot("ckpt", 3)
            self.assertEqual(self.snapshots.requests[-1].operation_id, "")
            with self.assertRaises(NotFoundError):
                sdk.get_operation("op-x")
        sent = self.snapshots.requests[-2].operation_id
        self.assertRegex(sent, r"^op-[0-9a-f]{32}$")
        self.assertEqual(self.operations.watched, [sent])
        self.assertEqual([(p.done, p.finished) for p in seen], [(1, False), (3, False), (3, True)])
        self.assertEqual(seen[0].fraction, 1 / 3)
        self.assertEqual((seen[-1].kind, seen[-1].unit, seen[-1].operation_id),
                         ("ForkSnapshot", "clones", sent))

    def test_user_is_forwarded_on_exec_and_files(self) -> None:
        vm = SmolVM(options=self.options).start()
        vm.run("id -un", user="alice")
        self.assertEqual(self.vms.requests[-1].user, "alice")
        vm.exec(["id", "-u"], user="1000", on_output=lambda s, d: None)
        self.assertEqual((list(self.vms.requests[-1].argv), self.vms.requests[-1].user),
                         (["id", "-u"], "1000"))
        vm.run("id")
        self.assertEqual(self.vms.requests[-1].user, "")  # "" = root.

        local = os.path.join(self.dir.name, "in.txt")
        with open(local, "w") as f:
            f.write("data")
        vm.upload_file(local, "/home/alice/in.txt", user="alice")
        self.assertEqual((self.vms.requests[-1].path, self.vms.requests[-1].user),
                         ("/home/alice/in.txt", "alice"))
        vm.upload_bytes(b"b", "/home/alice/b.txt", 0o600, user="alice")
        self.assertEqual((self.vms.requests[-1].mode, self.vms.requests[-1].user),
                         (0o600, "alice"))
        self.assertEqual(vm.download_bytes("/home/alice/b.txt", user="alice"), b"b")
        self.assertEqual(self.vms.requests[-1],
                         vm_service_pb2.DownloadFileRequest(vm_id="gen-1",
                                                            path="/home/alice/b.txt",
                                                            user="alice"))
        vm.download_file("/home/alice/in.txt", os.path.join(self.dir.name, "out.txt"),
                         user="bob")
        self.assertEqual(self.vms.requests[-1].user, "bob")
        vm.download_bytes("/home/alice/b.txt")
        self.assertEqual(self.vms.requests[-1].user, "")

    def test_exec_start_errors_carry_their_code(self) -> None:
        vm = SmolVM(options=self.options).start()
        with self.assertRaises(NotFoundError) as ctx:
            vm.run(["/no/such"])
        self.assertIs(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(ctx.exception.message, "exec /no/such: no such file")
        with self.assertRaises(PermissionDeniedError):
            vm.exec(["/etc/passwd"])
        with self.assertRaises(InvalidArgumentError) as ctx2:
            vm.run("true", user="nosuchuser")
        self.assertIn("nosuchuser", ctx2.exception.message)

    def test_labels_round_trip_on_create_and_snapshot(self) -> None:
        vm = SmolVM(VMConfig(labels={"team": "ci", "example.com/task": "t-1"}),
                    options=self.options).start()
        self.assertEqual(dict(self.vms.requests[-1].config.labels),
                         {"team": "ci", "example.com/task": "t-1"})
        self.assertEqual(vm.info.config.labels, {"team": "ci", "example.com/task": "t-1"})
        with SmolVM({"labels": {"a": "b"}}, options=self.options) as other:
            self.assertEqual(other.info.config.labels, {"a": "b"})

        snap = vm.snapshot("ckpt", labels={"stage": "warm"})
        self.assertEqual(dict(self.snapshots.requests[-1].labels), {"stage": "warm"})
        self.assertEqual(snap.labels, {"stage": "warm"})
        self.assertEqual(vm.snapshot("ckpt2").labels, {})
        self.assertEqual(dict(self.snapshots.requests[-1].labels), {})
        with self.assertRaises(InvalidArgumentError):
            vm.snapshot("ckpt3", labels={"n": 1})  # type: ignore[dict-item]

    def test_list_filters_are_sent(self) -> None:
        with SmolVMManager(self.options) as sdk:
            sdk.list_vms()
            unfiltered = self.vms.requests[-1]
            self.assertEqual((dict(unfiltered.labels), list(unfiltered.statuses), unfiltered.image),
                             ({}, [], ""))
            vms = sdk.list_vms(labels={"team": "ci"},
                               statuses=[VmStatus.RUNNING, "paused", "STOPPED", types_pb2.ERROR],
                               image="minimal")
            self.assertEqual(len(vms), len(self.vms.vms))  # Pagination as before.
            pages = [r for r in self.vms.requests if isinstance(r, vm_service_pb2.ListVmsRequest)]
            self.assertEqual(len(pages), 6)
            for page in pages[3:]:  # The filters stay the same across pages.
                self.assertEqual(dict(page.labels), {"team": "ci"})
                self.assertEqual(list(page.statuses), [types_pb2.RUNNING, types_pb2.PAUSED,
                                                       types_pb2.STOPPED, types_pb2.ERROR])
                self.assertEqual(page.image, "minimal")
            self.assertEqual([p.page_token for p in pages[3:]], ["", "1000", "2000"])
            sdk.list_vms(statuses="running")  # One status alone.
            self.assertEqual(list(self.vms.requests[-1].statuses), [types_pb2.RUNNING])
            with self.assertRaises(InvalidArgumentError) as ctx:
                sdk.list_vms(statuses=["sleeping"])
            self.assertIn("running", ctx.exception.message)  # Lists the known ones.

            snaps = sdk.list_snapshots(labels={"team": "ci"}, image="sha256:abc")
            self.assertEqual([(s.snapshot_id, s.labels) for s in snaps],
                             [("ckpt", {"team": "ci"})])
            self.assertEqual(self.snapshots.requests[-1],
                             snapshot_service_pb2.ListSnapshotsRequest(
                                 page_size=1000, labels={"team": "ci"}, image="sha256:abc"))
            sdk.list_snapshots("gen-1")
            self.assertEqual(self.snapshots.requests[-1],
                             snapshot_service_pb2.ListSnapshotsRequest(page_size=1000,
                                                                       vm_id="gen-1"))

    def test_fork_vm(self) -> None:
        vm = SmolVM(options=self.options)
        with self.assertRaises(FailedPreconditionError):
            vm.fork()
        vm.start()
        result = vm.fork(3, snapshot_id="snap-a", vm_id_prefix="kid", paused=True,
                         labels={"job": "j1"})
        self.assertEqual(self.vms.requests[-1], vm_service_pb2.ForkVmRequest(
            vm_id="gen-1", count=3, snapshot_id="snap-a", vm_id_prefix="kid", paused=True,
            labels={"job": "j1"}))
        self.assertIsInstance(result, ForkVmResult)
        self.assertEqual(result.snapshot_id, "snap-a")
        self.assertEqual([c.vm_id for c in result.children], ["kid-1", "kid-2", "kid-3"])
        self.assertTrue(result.children[0].ok)
        self.assertEqual(result.children[0].vm.status, VmStatus.PAUSED)  # type: ignore[union-attr]
        self.assertEqual(result.children[0].vm.config.labels, {"job": "j1"})  # type: ignore[union-attr]
        self.assertFalse(result.children[1].ok)
        self.assertIsNone(result.children[1].vm)
        self.assertEqual(result.children[1].error.code, grpc.StatusCode.RESOURCE_EXHAUSTED)  # type: ignore[union-attr]
        self.assertEqual(result.children[1].error.message, "quota")  # type: ignore[union-attr]
        self.assertEqual(vm.status, VmStatus.RUNNING)  # The source keeps its state.

        # Defaults: one RUNNING child named after the generated snapshot;
        # progress watched under a fresh operation id.
        seen: List[OperationProgress] = []
        self.operations.kind = "ForkVm"
        result = vm.fork(on_progress=seen.append)
        request = self.vms.requests[-1]
        self.assertEqual((request.count, request.snapshot_id, request.vm_id_prefix,
                          request.paused, dict(request.labels)), (1, "", "", False, {}))
        self.assertRegex(request.operation_id, r"^op-[0-9a-f]{32}$")
        self.assertEqual(self.operations.watched, [request.operation_id])
        self.assertEqual((seen[-1].kind, seen[-1].finished), ("ForkVm", True))
        self.assertEqual(result.snapshot_id, "gen-1-fork-1700000000000")
        self.assertEqual([(c.vm_id, c.vm.status) for c in result.children],  # type: ignore[union-attr]
                         [("gen-1-fork-1700000000000-1", VmStatus.RUNNING)])
        vm.fork()
        self.assertEqual(self.vms.requests[-1].operation_id, "")  # No callback, no id.

        gone = SmolVM.attach("box", options=self.options)
        with self.assertRaises(NotFoundError):
            gone.fork()


    def test_filesystem_calls_send_requests_and_convert_replies(self) -> None:
        vm = SmolVM(options=self.options).start()
        mtime = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc)

        entry = vm.stat_path("/etc/hosts")
        self.assertEqual(self.fs.requests[-1],
                         fs_pb2.StatPathRequest(vm_id="gen-1", path="/etc/hosts"))
        self.assertEqual(self.fs.metadata.get("x-smolvm-tenant"), "ci")
        self.assertEqual(entry, FileEntry(path="/etc/hosts", name="hosts", type=FileType.FILE,
                                          size=5, mode=0o640, uid=1000, gid=100, mtime=mtime))
        link = vm.stat_path("/link", user="alice")
        self.assertEqual(self.fs.requests[-1].user, "alice")
        self.assertEqual((link.type, link.symlink_target, link.is_dir),
                         (FileType.SYMLINK, "/etc/hosts", False))

        listed = vm.list_dir("/srv")
        self.assertEqual(self.fs.requests[-1],
                         fs_pb2.ListDirRequest(vm_id="gen-1", path="/srv", depth=1))
        self.assertIsInstance(listed, ListDirResult)
        self.assertEqual([(e.path, e.type) for e in listed],
                         [("/srv/a", FileType.DIRECTORY), ("/srv/b", FileType.FILE)])
        self.assertFalse(listed.truncated)
        deep = vm.list_dir("/srv", 3, user="1000")
        self.assertEqual(self.fs.requests[-1],
                         fs_pb2.ListDirRequest(vm_id="gen-1", path="/srv", depth=3, user="1000"))
        self.assertEqual((len(deep), deep.entries[2].type, deep.truncated),
                         (3, FileType.OTHER, True))
        vm.list_dir()  # "" = the user's home.
        self.assertEqual(self.fs.requests[-1], fs_pb2.ListDirRequest(vm_id="gen-1", depth=1))

        self.assertTrue(vm.make_dir("/srv/new"))
        self.assertEqual(self.fs.requests[-1], fs_pb2.MakeDirRequest(vm_id="gen-1",
                                                                     path="/srv/new"))
        self.assertFalse(vm.make_dir("/exists", parents=True, mode=0o700, user="alice"))
        self.assertEqual(self.fs.requests[-1], fs_pb2.MakeDirRequest(
            vm_id="gen-1", path="/exists", parents=True, mode=0o700, user="alice"))
        with self.assertRaises(AlreadyExistsError):
            vm.make_dir("/exists")

        self.assertIsNone(vm.remove_path("/srv/b"))
        self.assertEqual(self.fs.requests[-1], fs_pb2.RemovePathRequest(vm_id="gen-1",
                                                                        path="/srv/b"))
        with self.assertRaises(FailedPreconditionError) as ctx:
            vm.remove_path("/full")
        self.assertEqual(ctx.exception.message, "/full: directory not empty")
        vm.remove_path("/full", recursive=True, user="bob")
        self.assertEqual(self.fs.requests[-1], fs_pb2.RemovePathRequest(
            vm_id="gen-1", path="/full", recursive=True, user="bob"))

        moved = vm.rename_path("/srv/a", "/srv/z")
        self.assertEqual(self.fs.requests[-1], fs_pb2.RenamePathRequest(
            vm_id="gen-1", path="/srv/a", new_path="/srv/z"))
        self.assertEqual((moved.path, moved.name, moved.mtime), ("/srv/z", "z", mtime))
        with self.assertRaises(AlreadyExistsError):
            vm.rename_path("/srv/a", "/exists")
        vm.rename_path("/srv/a", "/exists", overwrite=True, user="alice")
        self.assertEqual(self.fs.requests[-1], fs_pb2.RenamePathRequest(
            vm_id="gen-1", path="/srv/a", new_path="/exists", overwrite=True, user="alice"))

    def test_filesystem_errors(self) -> None:
        never_started = SmolVM(options=self.options)
        for call in (lambda: never_started.stat_path("/"), lambda: never_started.list_dir(),
                     lambda: never_started.make_dir("/d"),
                     lambda: never_started.remove_path("/d"),
                     lambda: never_started.rename_path("/a", "/b"),
                     lambda: never_started.watch_dir("/")):
            with self.assertRaises(FailedPreconditionError):
                call()
        self.assertEqual(self.fs.requests, [])  # Nothing sent.

        vm = SmolVM(options=self.options).start()
        for call in (lambda: vm.stat_path("/missing"), lambda: vm.list_dir("/missing"),
                     lambda: vm.make_dir("/missing"), lambda: vm.remove_path("/missing"),
                     lambda: vm.rename_path("/missing", "/x"),
                     lambda: vm.watch_dir("/missing")):
            with self.assertRaises(NotFoundError) as ctx:
                call()
            self.assertIs(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assertEqual(ctx.exception.message, "/missing: no such file or directory")
        sent = len(self.fs.requests)
        with self.assertRaises(InvalidArgumentError):
            vm.list_dir("/srv", depth=-1)
        with self.assertRaises(InvalidArgumentError):
            vm.make_dir("/d", mode="0755")  # type: ignore[arg-type]
        with self.assertRaises(InvalidArgumentError):
            vm.watch_dir("/srv", timeout=-1)
        self.assertEqual(len(self.fs.requests), sent)

    def test_watch_dir_yields_events_and_close_ends_it(self) -> None:
        vm = SmolVM(options=self.options).start()
        watch = vm.watch_dir("/srv", recursive=True, user="alice")
        self.assertIsInstance(watch, DirWatch)
        self.assertEqual(self.fs.requests[-1], fs_pb2.WatchDirRequest(
            vm_id="gen-1", path="/srv", recursive=True, user="alice"))
        # It returned on WATCHING, before any change was sent.
        self.assertFalse(self.fs.go.is_set())
        self.fs.go.set()
        events = [next(watch) for _ in EXPECTED_EVENTS]
        self.assertEqual(events, EXPECTED_EVENTS)
        self.assertEqual(f"{events[2].type}", "rename")
        self.assertFalse(watch.closed)
        self.assertFalse(self.fs.watch_ended.is_set())
        watch.close()
        self.assertTrue(watch.closed)
        self.assertEqual(list(watch), [])  # Ends without raising.
        self.assertTrue(self.fs.watch_ended.wait(5))  # The call was cancelled.
        watch.close()  # Idempotent.

    def test_watch_dir_context_manager_and_cancel_from_another_thread(self) -> None:
        vm = SmolVM(options=self.options).start()
        self.fs.go.set()
        with vm.watch_dir("/srv") as watch:
            seen: List[WatchEvent] = []
            for event in watch:
                seen.append(event)
                if len(seen) == len(EXPECTED_EVENTS):
                    # The next iteration blocks until the other thread cancels.
                    threading.Timer(0.2, watch.cancel).start()
        self.assertEqual(seen, EXPECTED_EVENTS)
        self.assertTrue(watch.closed)
        self.assertTrue(self.fs.watch_ended.wait(5))

        with vm.watch_dir("/srv") as other:
            next(other)
        self.assertTrue(other.closed)  # Closed on leaving the block.

    def test_watch_dir_timeout_ends_iteration(self) -> None:
        vm = SmolVM(options=self.options).start()
        self.fs.go.set()
        start = time.monotonic()
        with vm.watch_dir("/srv", timeout=0.5) as watch:
            self.assertEqual(list(watch), EXPECTED_EVENTS)  # Ends at the timeout.
        self.assertGreaterEqual(time.monotonic() - start, 0.4)

    def test_watch_dir_failures(self) -> None:
        vm = SmolVM(options=self.options).start()
        watch = vm.watch_dir("/vm-stops")
        with self.assertRaises(FailedPreconditionError) as ctx:
            next(watch)  # The end of the VM is an error, not the end of iteration.
        self.assertEqual(ctx.exception.message, "vm gen-1 is not running")
        self.assertEqual(list(watch), [])

        impatient = SmolVM.attach("box", options=ClientOptions(socket_path=self.socket,
                                                              timeout=0.3))
        with self.assertRaises(DeadlineExceededError) as ctx2:
            impatient.watch_dir("/slow")  # No WATCHING within the call timeout.
        self.assertIn("/slow", ctx2.exception.message)

    def test_process_calls_send_requests_and_convert_replies(self) -> None:
        vm = SmolVM(options=self.options).start()

        started = vm.start_process("while :; do date; sleep 1; done")
        self.assertEqual(self.procs.requests[-1], proc_pb2.StartProcessRequest(
            vm_id="gen-1", command="while :; do date; sleep 1; done"))
        self.assertEqual(self.procs.metadata.get("x-smolvm-tenant"), "ci")
        self.assertEqual(started, ProcessInfo(
            pid=42, argv=["/bin/sh", "-c", "while :; do date; sleep 1; done"], cwd="/root",
            running=True, started_at=STARTED))
        self.assertIsNone(started.ended_at)
        self.assertFalse(started.ok)  # Still running.
        vm.start_process(["python3", "-m", "http.server"], env={"PORT": "8000"}, cwd="/srv",
                         user="alice")
        self.assertEqual(self.procs.requests[-1], proc_pb2.StartProcessRequest(
            vm_id="gen-1", argv=["python3", "-m", "http.server"], env={"PORT": "8000"},
            cwd="/srv", user="alice"))

        listed = vm.list_processes()
        self.assertEqual(self.procs.requests[-1], proc_pb2.ListProcessesRequest(vm_id="gen-1"))
        self.assertEqual([(p.pid, p.running, p.ok) for p in listed],
                         [(7, False, True), (42, True, False)])
        self.assertEqual((listed[0].started_at, listed[0].ended_at, listed[0].output_bytes),
                         (STARTED, ENDED, 12))
        self.assertIsNone(listed[1].ended_at)

        signalled = vm.signal_process(42)
        self.assertEqual(self.procs.requests[-1], proc_pb2.SignalProcessRequest(
            vm_id="gen-1", pid=42, signal=15))
        self.assertEqual((signalled.pid, signalled.running), (42, True))
        vm.signal_process(42, signal.SIGKILL, group=True)
        self.assertEqual(self.procs.requests[-1], proc_pb2.SignalProcessRequest(
            vm_id="gen-1", pid=42, signal=9, group=True))
        vm.signal_process(42, 2)
        self.assertEqual(self.procs.requests[-1].signal, 2)

        waited = vm.wait_process(42)
        self.assertEqual(self.procs.requests[-1], proc_pb2.WaitProcessRequest(vm_id="gen-1",
                                                                              pid=42))
        self.assertEqual((waited.running, waited.exit_code, waited.ok, waited.ended_at),
                         (False, 3, False, ENDED))

    def test_process_errors(self) -> None:
        never_started = SmolVM(options=self.options)
        for call in (lambda: never_started.start_process("true"),
                     lambda: never_started.list_processes(),
                     lambda: never_started.signal_process(42),
                     lambda: never_started.connect_process(42),
                     lambda: never_started.wait_process(42)):
            with self.assertRaises(FailedPreconditionError):
                call()
        self.assertEqual(self.procs.requests, [])  # Nothing sent.

        vm = SmolVM(options=self.options).start()
        for call in (lambda: vm.signal_process(404), lambda: vm.wait_process(404),
                     lambda: next(vm.connect_process(404))):
            with self.assertRaises(NotFoundError) as ctx:
                call()
            self.assertIs(ctx.exception.code, grpc.StatusCode.NOT_FOUND)
            self.assertEqual(ctx.exception.message, "process 404: not found")
        with self.assertRaises(NotFoundError) as ctx2:
            vm.start_process(["/no/such"])
        self.assertEqual(ctx2.exception.message, "start /no/such: no such file")
        with self.assertRaises(DeadlineExceededError):
            vm.wait_process(99, timeout=0.5)  # The daemon's timeout, not the call's.

        sent = len(self.procs.requests)
        for call in (lambda: vm.start_process([]),
                     lambda: vm.start_process(["echo", 1]),  # type: ignore[list-item]
                     lambda: vm.signal_process(-1),
                     lambda: vm.signal_process(42, "TERM"),  # type: ignore[arg-type]
                     lambda: vm.connect_process(42, tail_bytes=-1),
                     lambda: vm.connect_process(42, timeout=-1),
                     lambda: vm.wait_process(42, timeout=-1)):
            with self.assertRaises(InvalidArgumentError):
                call()
        self.assertEqual(len(self.procs.requests), sent)

    def test_connect_process_yields_outputs_then_the_exit(self) -> None:
        vm = SmolVM(options=self.options).start()
        with vm.connect_process(42, tail_bytes=100) as conn:
            self.assertIsInstance(conn, ProcessConnection)
            outputs = list(conn)
        self.assertEqual(self.procs.requests[-1], proc_pb2.ConnectProcessRequest(
            vm_id="gen-1", pid=42, tail_bytes=100))
        self.assertEqual(outputs, [ProcessOutput("stdout", b"tick0\n"),
                                   ProcessOutput("stderr", b"warn\n", skipped_bytes=10),
                                   ProcessOutput("stdout", b"tick1\n")])
        self.assertEqual((outputs[0].text, conn.skipped_bytes), ("tick0\n", 10))
        self.assertEqual(conn.exit, ProcessInfo.from_proto(
            fake_process(42, running=False, signal=15)))
        assert conn.exit is not None
        self.assertEqual((conn.exit.signal, conn.exit.running, conn.exit.ended_at),
                         (15, False, ENDED))
        self.assertTrue(conn.exited)
        self.assertEqual(list(conn), [])  # Over.

        no_tail = vm.connect_process(42)
        self.assertEqual(next(no_tail), ProcessOutput("stderr", b"warn\n", skipped_bytes=10))
        self.assertEqual(self.procs.requests[-1].tail_bytes, 0)
        no_tail.close()

    def test_connect_process_close_detaches_cleanly(self) -> None:
        vm = SmolVM(options=self.options).start()
        conn = vm.connect_process(43)
        self.assertEqual(next(conn), ProcessOutput("stdout", b"tick1\n"))
        self.assertFalse(self.procs.connect_ended.is_set())
        conn.close()
        self.assertTrue(conn.closed)
        self.assertEqual(list(conn), [])  # Ends without raising.
        self.assertIsNone(conn.exit)
        self.assertTrue(self.procs.connect_ended.wait(5))  # The call was cancelled.
        conn.close()  # Idempotent.

        # From another thread while the iteration is blocked.
        self.procs.connect_ended.clear()
        with vm.connect_process(43) as other:
            seen = []
            for out in other:
                seen.append(out)
                threading.Timer(0.2, other.cancel).start()
        self.assertEqual(seen, [ProcessOutput("stdout", b"tick1\n")])
        self.assertIsNone(other.exit)
        self.assertTrue(self.procs.connect_ended.wait(5))

        # A timeout ends it too, without raising.
        start = time.monotonic()
        with vm.connect_process(43, timeout=0.5) as timed:
            self.assertEqual(len(list(timed)), 1)
        self.assertGreaterEqual(time.monotonic() - start, 0.4)
        self.assertIsNone(timed.exit)

    def test_wait_process_passes_timeout_ms_and_a_longer_deadline(self) -> None:
        vm = SmolVM(options=self.options).start()  # A 30 s call timeout.
        vm.wait_process(42, timeout=100)
        self.assertEqual(self.procs.requests[-1], proc_pb2.WaitProcessRequest(
            vm_id="gen-1", pid=42, timeout_ms=100_000))
        # The call's deadline is the wait plus 60 s, not the 30 s default
        # (gRPC sends deadlines rounded up to the second).
        self.assertGreater(self.procs.wait_time_left, 150)
        self.assertLess(self.procs.wait_time_left, 162)
        vm.wait_process(42, timeout=1.5)
        self.assertEqual(self.procs.requests[-1].timeout_ms, 1500)
        self.assertGreater(self.procs.wait_time_left, 60)
        vm.wait_process(42, timeout=0.0001)
        self.assertEqual(self.procs.requests[-1].timeout_ms, 1)  # Rounded up.
        vm.wait_process(42)  # No limit: no deadline either.
        self.assertEqual(self.procs.requests[-1].timeout_ms, 0)
        self.assertTrue(self.procs.wait_time_left is None or self.procs.wait_time_left > 1e6,
                        self.procs.wait_time_left)


if __name__ == "__main__":
    unittest.main()
