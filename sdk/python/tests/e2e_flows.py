#!/usr/bin/python3
"""End-to-end flows of the Python SDK against a running smolvmd.

Run by tests/e2e/python_sdk_test.cc with PYTHONPATH=<build>/sdk/python and
SMOLVMD_SOCKET pointing at a test daemon; runnable by hand against any
daemon you may write to:

    PYTHONPATH=build/sdk/python /usr/bin/python3 sdk/python/tests/e2e_flows.py \\
        [--from-snapshot my-checkpoint]

The main VM is a clone of --from-snapshot when given (so the suite pays for
one cold boot only, in create_and_snapshot.py), else a cold boot with
SmolVM().start(). Then: run (output, exit codes, a missing program, env,
cwd, stdin, a timeout), uploads and downloads, the guest file system,
background processes (start, list, reattach with a tail, signal, wait),
interactive exec sessions (stdin streamed to cat, a signal, a shell on a
tty with a resize), snapshot and its
SnapshotInfo, list/get, from_snapshot(resume_vm=True) seeing a file written
before the snapshot, pause/resume, a fork of 2, a warm pool of 1, errors as
exceptions with their codes, close. Every VM, pool and snapshot it makes is
removed at the end, on failure too. Its ids start with "pysdk-".

Prints one line per check; the last line is "N passed, M failed" and the
exit code is 0 only when M is 0.
"""

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Optional

import grpc

from smolvm import (DeadlineExceededError, ExecSession, FileType, InvalidArgumentError,
                    NotFoundError, SmolVM, SmolVMError, SmolVMManager, SnapshotInfo, VMConfig,
                    VmStatus, WatchEventType)

SNAPSHOT_ID = "pysdk-snap"
MAIN_VM_ID = "pysdk-main"
FORK_PREFIX = "pysdk-fork"
POOL_ID = "pysdk-pool"
T0 = time.monotonic()


class Checks:
    """Counts checks; `require` stops the flow when one fails."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: List[str] = []

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        if ok:
            self.passed += 1
            print(f"[{time.monotonic() - T0:6.2f}s]   ok   {name}", flush=True)
        else:
            self.failed.append(name)
            print(f"[{time.monotonic() - T0:6.2f}s]   FAIL {name}: {detail}", flush=True)
        return ok

    def require(self, name: str, ok: bool, detail: Any = "") -> None:
        if not self.check(name, ok, detail):
            raise RuntimeError(f"required check failed: {name}")

    def raises(self, name: str, cls: type, fn: Callable[[], Any],
               code: Optional[grpc.StatusCode] = None, text: str = "") -> None:
        try:
            fn()
        except cls as e:  # type: ignore[misc]
            ok = code is None or e.code is code
            ok = ok and text in getattr(e, "message", str(e))
            self.check(name, ok, repr(e))
            return
        except Exception as e:  # pylint: disable=broad-except
            self.check(name, False, f"raised {e!r}, want {cls.__name__}")
            return
        self.check(name, False, f"no exception, want {cls.__name__}")



def check_progress(c: Any, what: str, updates: list, kind: str) -> None:
    """A long call's progress as on_progress saw it: its kind, stages in
    order, done never past total, and a last update that says it succeeded."""
    c.check(f"{what} progress: updates arrived", len(updates) >= 1, updates)
    if not updates:
        return
    c.check(f"{what} progress: kind {kind}", all(p.kind == kind for p in updates), updates[0])
    c.check(f"{what} progress: stage numbers never go back",
            all(a.stage_number <= b.stage_number for a, b in zip(updates, updates[1:])), updates)
    c.check(f"{what} progress: done within total",
            all(p.total == 0 or p.done <= p.total for p in updates), updates)
    c.check(f"{what} progress: the last update is the successful end",
            updates[-1].finished and updates[-1].code == 0, updates[-1])
    c.check(f"{what} progress: only the last is finished",
            not any(p.finished for p in updates[:-1]), updates)

def check_snapshot_info(c: Checks, snap: SnapshotInfo, vm_id: str) -> None:
    c.check("snapshot_id", snap.snapshot_id == SNAPSHOT_ID, snap.snapshot_id)
    c.check("vm_id", snap.vm_id == vm_id, snap.vm_id)
    c.check("snapshot_path is vmstate.bin", snap.snapshot_path.endswith("/vmstate.bin"),
            snap.snapshot_path)
    c.check("mem_file_path is mem.bin", snap.mem_file_path.endswith("/mem.bin"),
            snap.mem_file_path)
    c.check("disk_path is disk.ext4", snap.disk_path.endswith("/disk.ext4"), snap.disk_path)
    now = datetime.now(timezone.utc)
    c.check("created_at is a recent UTC datetime",
            isinstance(snap.created_at, datetime) and snap.created_at.tzinfo is not None
            and abs(now - snap.created_at) < timedelta(minutes=5), snap.created_at)
    c.check("vm_config is a VMConfig", isinstance(snap.vm_config, VMConfig)
            and snap.vm_config.memory_mib > 0, snap.vm_config)
    c.check("network_config has the guest address", bool(snap.network_config.guest_ip),
            snap.network_config)
    c.check("not restored yet", snap.restored is False and snap.restored_vm_id is None,
            (snap.restored, snap.restored_vm_id))


def commands(c: Checks, vm: SmolVM) -> None:
    r = vm.run("echo to-out; echo to-err >&2; exit 3")
    c.check("run: exit_code 3", r.exit_code == 3 and not r.ok, r)
    c.check("run: stdout and stderr apart", (r.stdout, r.stderr) == ("to-out\n", "to-err\n"), r)
    c.check("run: true is ok", vm.run("true").ok)
    r = vm.run("cat; echo $GREETING; pwd", env={"GREETING": "hi"}, cwd="/tmp", stdin="in\n")
    c.check("run: stdin, env, cwd", r.stdout == "in\nhi\n/tmp\n", r)
    r = vm.run("no-such-command-pysdk")
    c.check("run: a missing command exits 127", r.exit_code == 127, r)
    c.raises("exec: a missing program is an exception naming it", SmolVMError,
             lambda: vm.exec(["/no/such/program"]), text="/no/such/program")
    r = vm.exec(["printf", "%s|", "a b", "c"])
    c.check("exec: argv without a shell", r.stdout == "a b|c|", r)
    r = vm.run("sleep 10", timeout=0.5)
    c.check("run: timeout kills the command", r.timed_out and not r.ok, r)
    chunks: List[Any] = []
    vm.exec(["sh", "-c", "echo one; echo two >&2"], on_output=lambda s, d: chunks.append((s, d)))
    c.check("exec: streamed output", sorted(chunks) == [("stderr", b"two\n"), ("stdout", b"one\n")],
            chunks)


def files(c: Checks, vm: SmolVM) -> None:
    payload = os.urandom(3 * (1 << 20) + 17)  # Four upload chunks.
    vm.upload_bytes(payload, "/root/pysdk/blob.bin")
    c.check("upload_bytes / download_bytes round trip",
            vm.download_bytes("/root/pysdk/blob.bin") == payload)
    with tempfile.TemporaryDirectory() as tmp:
        local_in, local_out = os.path.join(tmp, "in.txt"), os.path.join(tmp, "out.txt")
        with open(local_in, "w") as f:
            f.write("some data\n")
        vm.upload_file(local_in, "/root/in.txt", mode=0o600)
        r = vm.run("tr a-z A-Z < /root/in.txt > /root/out.txt; stat -c %a /root/in.txt")
        c.check("upload_file with mode", r.stdout.strip() == "600", r)
        vm.download_file("/root/out.txt", local_out)
        with open(local_out) as f:
            c.check("download_file", f.read() == "SOME DATA\n")
        c.raises("download of a missing file is NotFoundError naming it", NotFoundError,
                 lambda: vm.download_file("/root/missing", os.path.join(tmp, "x")),
                 code=grpc.StatusCode.NOT_FOUND, text="/root/missing")
        c.check("no temporary file left", sorted(os.listdir(tmp)) == ["in.txt", "out.txt"],
                os.listdir(tmp))


def filesystem(c: Checks, vm: SmolVM) -> None:
    c.check("make_dir with parents made it", vm.make_dir("/root/pyfs/a/b", parents=True) is True)
    c.check("make_dir of an existing dir with parents", vm.make_dir("/root/pyfs/a/b",
                                                                    parents=True) is False)
    vm.upload_bytes(b"12345", "/root/pyfs/a/f")
    entry = vm.stat_path("/root/pyfs/a/f")
    c.check("stat_path: a 5-byte file", (entry.type, entry.size, entry.name) ==
            (FileType.FILE, 5, "f"), entry)
    listed = vm.list_dir("/root/pyfs", depth=2)
    c.check("list_dir depth 2, breadth-first and sorted",
            [e.path for e in listed.entries] == ["/root/pyfs/a", "/root/pyfs/a/b", "/root/pyfs/a/f"]
            and not listed.truncated, listed)
    c.check("rename_path", vm.rename_path("/root/pyfs/a/f", "/root/pyfs/g").path == "/root/pyfs/g")
    c.raises("stat of a missing path is NotFoundError", NotFoundError,
             lambda: vm.stat_path("/root/pyfs/a/f"), code=grpc.StatusCode.NOT_FOUND,
             text="/root/pyfs/a/f")
    with vm.watch_dir("/root/pyfs", recursive=True, timeout=30) as watch:
        vm.run("echo hi > /root/pyfs/a/b/new")
        events = []
        for ev in watch:
            events.append((ev.type, ev.path))
            if len(events) == 2:
                break
    c.check("watch_dir: create then modify in a subdirectory",
            events == [(WatchEventType.CREATE, "/root/pyfs/a/b/new"),
                       (WatchEventType.MODIFY, "/root/pyfs/a/b/new")], events)
    vm.remove_path("/root/pyfs", recursive=True)
    c.raises("remove_path recursive removed the tree", NotFoundError,
             lambda: vm.stat_path("/root/pyfs"))


def read_until(conn: Any, marker: bytes) -> bytes:
    """The stdout `conn` yields until `marker` is in it (or its end)."""
    seen = b""
    for out in conn:
        if out.stream == "stdout":
            seen += out.data
        if marker in seen:
            break
    return seen


def processes(c: Checks, vm: SmolVM) -> None:
    loop = "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.2; done"
    proc = vm.start_process(["sh", "-c", loop])
    c.check("start_process: running, with a pid and its argv",
            proc.running and proc.pid > 0 and proc.argv == ["sh", "-c", loop], proc)
    listed = {p.pid: p for p in vm.list_processes()}
    c.check("list_processes: it is listed running",
            proc.pid in listed and listed[proc.pid].running, listed)

    with vm.connect_process(proc.pid, tail_bytes=100000, timeout=30) as conn:
        seen = read_until(conn, b"tick1\n")
    c.check("connect_process: its output arrives", b"tick1\n" in seen, seen[-200:])
    c.check("connect_process: close detaches, no exit", conn.closed and conn.exit is None,
            conn)

    # Another client reattaches and gets the earlier output from the tail.
    other = SmolVM.attach(vm.vm_id)
    try:
        with other.connect_process(proc.pid, tail_bytes=100000, timeout=30) as conn:
            seen = read_until(conn, b"tick0\n")
        c.check("connect_process from another client: the tail starts at tick0",
                seen.startswith(b"tick0\n"), seen[:200])
    finally:
        other.connection.close()  # Not other.close(): that would delete the VM.
    c.check("the process still runs after detaching",
            any(p.pid == proc.pid and p.running for p in vm.list_processes()))

    sent = vm.signal_process(proc.pid, 15, group=True)
    c.check("signal_process: returns the process", sent.pid == proc.pid, sent)
    done = vm.wait_process(proc.pid, timeout=10)
    c.check("wait_process: ended by signal 15",
            not done.running and done.signal == 15 and not done.ok
            and done.ended_at is not None and done.ended_at >= done.started_at, done)
    with vm.connect_process(proc.pid, timeout=30) as conn:
        rest = list(conn)
    c.check("connect_process to an exited process: the exit at once",
            conn.exit is not None and conn.exit.signal == 15 and not rest, (conn, rest))
    c.raises("signal_process of an exited process is NotFoundError", NotFoundError,
             lambda: vm.signal_process(proc.pid, 15, group=True),
             code=grpc.StatusCode.NOT_FOUND)
    c.raises("wait_process of an unknown pid is NotFoundError", NotFoundError,
             lambda: vm.wait_process(999999, timeout=1), code=grpc.StatusCode.NOT_FOUND)

    short = vm.start_process("exit 3")
    r = vm.wait_process(short.pid, timeout=10)
    c.check("wait_process: a process that exits 3 by itself",
            (r.pid, r.running, r.exit_code, r.signal, r.ok) == (short.pid, False, 3, 0, False), r)
    listed = {p.pid: p for p in vm.list_processes()}
    c.check("list_processes: the exited ones stay listed",
            short.pid in listed and listed[short.pid].exit_code == 3
            and proc.pid in listed and listed[proc.pid].signal == 15, listed)

def read_session_until(session: ExecSession, pattern: "re.Pattern[bytes]",
                       limit: float = 30) -> bytes:
    """The output `session` yields until `pattern` is found in it, or its
    end, or `limit` seconds."""
    seen = b""
    end = time.monotonic() + limit
    while not pattern.search(seen):
        left = end - time.monotonic()
        if left <= 0:
            break
        try:
            out = session.next_output(timeout=left)
        except DeadlineExceededError:
            break
        if out is None:
            break
        seen += out.data
    return seen


def exec_sessions(c: Checks, vm: SmolVM) -> None:
    # Stdin streamed in pieces (sent as several 1 MiB messages), then closed.
    payload = b"".join(b"line %06d of the streamed stdin\n" % i for i in range(100_000))
    with vm.exec_session(["cat"], timeout=120) as s:
        for i in range(0, len(payload), 300_000):
            s.write_stdin(payload[i:i + 300_000])
        s.close_stdin()
        r = s.wait(timeout=120)
    c.check("exec_session: stdin streamed to cat comes back whole",
            r.stdout_bytes == payload, (len(r.stdout_bytes), len(payload)))
    c.check("exec_session: cat exits 0 once its stdin is closed",
            r.ok and r.exit_code == 0 and r.stderr == "",
            (r.exit_code, r.signal, r.timed_out, r.stderr))

    # A signal ends the command; with an argv (no shell) it is the result.
    with vm.exec_session(["sleep", "100"], timeout=60) as s:
        time.sleep(0.5)  # Let it run first (so the signal meets sleep itself).
        s.send_signal(signal.SIGINT)
        r = s.wait(timeout=30)
    c.check("exec_session: SIGINT ends sleep, reported as signal 2",
            r.signal == 2 and not r.ok and not r.timed_out, r)

    # A shell on a pseudo-terminal: commands typed in, the size set and changed.
    with vm.exec_session(["sh"], tty=True, term="vt100", timeout=120) as s:
        s.write_stdin("tty\n")
        seen = read_session_until(s, re.compile(rb"/dev/pts/\d+"))
        c.check("exec_session tty: tty names a pseudo-terminal",
                re.search(rb"/dev/pts/\d+", seen) is not None, seen)
        s.write_stdin("stty size\n")
        seen = read_session_until(s, re.compile(rb"\b24 80\b"))
        c.check("exec_session tty: the default size is 24 x 80",
                re.search(rb"\b24 80\b", seen) is not None, seen)
        s.resize(40, 120)
        s.write_stdin("stty size\n")
        seen = read_session_until(s, re.compile(rb"\b40 120\b"))
        c.check("exec_session tty: resize(40, 120) reaches stty size",
                re.search(rb"\b40 120\b", seen) is not None, seen)
        s.write_stdin("echo term=$TERM\n")
        seen = read_session_until(s, re.compile(rb"term=vt100\b"))
        c.check("exec_session tty: TERM is the session's term",
                re.search(rb"term=vt100\b", seen) is not None, seen)
        s.write_stdin("exit 0\n")
        r = s.wait(timeout=30)
    c.check("exec_session tty: exit 0 ends the shell with 0, all output on stdout",
            (r.exit_code, r.signal, r.timed_out, r.stderr) == (0, 0, False, ""), r)


def console(c: Checks, vm: SmolVM) -> None:
    """vm.console(): what the guest writes to its console, followed."""
    stop = threading.Event()

    def say() -> None:
        # Written until seen: the stream may not be following yet.
        for _ in range(40):
            vm.run("echo py-console-marker > /dev/console")
            if stop.wait(0.5):
                return

    seen = b""
    writer = threading.Thread(target=say)
    with vm.console(follow=True, tail_bytes=0, timeout=60) as stream:
        writer.start()
        for chunk in stream:
            seen += chunk
            if b"py-console-marker" in seen or len(seen) > (1 << 20):
                break
    stop.set()
    writer.join()
    c.check("console: follow sees what the guest writes", b"py-console-marker" in seen,
            seen[-200:])
    tail = b"".join(vm.console(tail_bytes=4096))
    c.check("console: the tail holds it, within tail_bytes",
            b"py-console-marker" in tail and len(tail) <= 4096, len(tail))
    stats = vm.stats()
    c.check("stats: the VMM's memory and the guest's own view",
            stats.vm_id == vm.vm_id and stats.vmm_rss_bytes > 0 and stats.guest_memory_known
            and stats.guest_memory_total_bytes > stats.guest_memory_available_bytes > 0, stats)
    with vm.watch_stats(interval=1, timeout=30) as watch:
        reports = []
        for report in watch:
            reports.append(report)
            if len(reports) == 2:
                break
    c.check("watch_stats: reports a second apart, CPU time not going back",
            len(reports) == 2 and reports[1].taken_at > reports[0].taken_at
            and reports[1].cpu_time_ns >= reports[0].cpu_time_ns, reports)


def flows(c: Checks, sdk: SmolVMManager, base_snapshot: str, vms: List[SmolVM]) -> None:
    first_event = max((e.event_id for e in sdk.events()), default=0)
    if base_snapshot:
        vm = SmolVM.from_snapshot(base_snapshot, resume_vm=True, vm_id=MAIN_VM_ID)
    else:
        vm = SmolVM(VMConfig(vm_id=MAIN_VM_ID, memory_mib=256)).start()
    vms.append(vm)
    c.require("started: running", vm.vm_id == MAIN_VM_ID and vm.status == VmStatus.RUNNING,
              vm)
    c.check("status prints like the seed", f"{vm.status}" == "running", f"{vm.status}")
    commands(c, vm)
    files(c, vm)
    filesystem(c, vm)
    processes(c, vm)
    exec_sessions(c, vm)
    console(c, vm)

    c.require("marker written", vm.run("echo before-snapshot > /root/marker").ok)
    snap_progress: list = []
    snap = vm.snapshot(snapshot_id=SNAPSHOT_ID, on_progress=snap_progress.append)
    check_snapshot_info(c, snap, MAIN_VM_ID)
    check_progress(c, "snapshot", snap_progress, "CreateSnapshot")
    # Updates carry the latest state (at most ten a second), so a quick
    # stage may not be seen on its own; the count of stages is kept.
    c.check("snapshot progress: save, copies and seal were staged",
            bool(snap_progress) and snap_progress[-1].stage_number >= 3, snap_progress[-1:])
    c.check("the VM is paused after the snapshot", vm.status == VmStatus.PAUSED, vm.status)
    c.check("refresh agrees", vm.refresh().status == VmStatus.PAUSED)
    c.check("list_snapshots contains it",
            SNAPSHOT_ID in [s.snapshot_id for s in sdk.list_snapshots()])
    c.check("list_snapshots(vm_id)",
            [s.snapshot_id for s in sdk.list_snapshots(vm_id=MAIN_VM_ID)] == [SNAPSHOT_ID])
    c.check("get_snapshot", sdk.get_snapshot(SNAPSHOT_ID).disk_path == snap.disk_path)
    vm.close()
    c.check("close: the VM is gone", MAIN_VM_ID not in [v.vm_id for v in sdk.list_vms()])
    c.raises("a closed handle refuses calls", SmolVMError, lambda: vm.run("true"),
             code=grpc.StatusCode.FAILED_PRECONDITION)

    restored = SmolVM.from_snapshot(SNAPSHOT_ID, resume_vm=True)
    vms.append(restored)
    c.check("from_snapshot: own identity, running",
            (restored.vm_id, restored.status) == (MAIN_VM_ID, VmStatus.RUNNING), restored)
    r = restored.run("cat /root/marker")
    c.check("from_snapshot: sees the file written before the snapshot",
            r.stdout == "before-snapshot\n", r)
    info = sdk.get_snapshot(SNAPSHOT_ID)
    c.check("the snapshot is marked restored",
            info.restored and info.restored_vm_id == MAIN_VM_ID, info)
    c.check("pause", restored.pause().status == VmStatus.PAUSED, restored.status)
    c.check("resume", restored.resume().status == VmStatus.RUNNING, restored.status)

    fork_progress: list = []
    outcomes = sdk.fork_snapshot(SNAPSHOT_ID, 2, vm_id_prefix=FORK_PREFIX,
                                 on_progress=fork_progress.append)
    check_progress(c, "fork", fork_progress, "ForkSnapshot")
    c.check("fork progress: ends with 2 of 2 clones",
            (fork_progress[-1].done, fork_progress[-1].total, fork_progress[-1].unit)
            == (2, 2, "clones") if fork_progress else False, fork_progress[-1:])
    forks = [SmolVM.attach(o.vm_id) for o in outcomes if o.ok]
    vms.extend(forks)
    c.check("fork of 2: both running",
            len(outcomes) == 2 and all(o.ok and o.vm is not None
                                       and o.vm.status == VmStatus.RUNNING for o in outcomes),
            outcomes)
    for clone in forks:
        r = clone.run("cat /root/marker")
        c.check(f"fork {clone.vm_id} has the marker", r.stdout == "before-snapshot\n", r)
        c.check(f"fork {clone.vm_id} has its own address",
                clone.info.network.guest_ip != restored.info.network.guest_ip, clone.info.network)

    sdk.create_pool(POOL_ID, SNAPSHOT_ID, 1)
    fill: list = []
    pool = sdk.wait_for_pool(POOL_ID, timeout=120, on_progress=fill.append)
    c.check("pool: a member is ready", bool(pool.ready_vm_ids), pool)
    c.check("wait_for_pool: reports the fill, ending full",
            bool(fill) and fill[-1].finished and (fill[-1].done, fill[-1].total) == (1, 1), fill)
    c.check("list_pools", [p.pool_id for p in sdk.list_pools()] == [POOL_ID])
    claimed = SmolVM.from_pool(POOL_ID)
    vms.append(claimed)
    c.check("from_pool: running, from the pool",
            claimed.status == VmStatus.RUNNING and claimed.claimed_from_pool is True, claimed)
    c.check("from_pool: runs commands", claimed.run("cat /root/marker").stdout
            == "before-snapshot\n")
    sdk.delete_pool(POOL_ID)

    c.raises("NOT_FOUND is NotFoundError with its code", NotFoundError,
             lambda: SmolVM.from_snapshot("pysdk-no-such-snapshot"),
             code=grpc.StatusCode.NOT_FOUND, text="pysdk-no-such-snapshot")
    c.raises("get_vm of a missing VM", NotFoundError, lambda: sdk.get_vm("pysdk-none"),
             code=grpc.StatusCode.NOT_FOUND)
    c.raises("a bad id is InvalidArgumentError", InvalidArgumentError,
             lambda: SmolVM({"vm_id": "Not_A_Valid_Id"}).start(),
             code=grpc.StatusCode.INVALID_ARGUMENT, text="vm_id")

    with SmolVM.attach(MAIN_VM_ID) as attached:
        c.check("attach", attached.status == VmStatus.RUNNING)
    c.check("with: closed on exit", MAIN_VM_ID not in [v.vm_id for v in sdk.list_vms()])
    events(c, sdk, first_event, base_snapshot, claimed.vm_id)


def events(c: Checks, sdk: SmolVMManager, after: int, base_snapshot: str,
           claimed_vm_id: str) -> None:
    """sdk.events(): the main VM's life as the flows made it, in order; the
    claim out of the pool as the claimed VM's first event."""
    milestones = {"vm_created", "vm_restored", "snapshot_created", "vm_deleted", "vm_forked"}
    seen = [e for e in sdk.events(after_event_id=after, vm_id=MAIN_VM_ID)
            if e.kind in milestones]
    want = ["vm_restored" if base_snapshot else "vm_created", "snapshot_created",
            "vm_deleted", "vm_restored", "vm_forked", "vm_deleted"]
    c.check("events: create, snapshot, close, restore, fork, close in order",
            [e.kind for e in seen] == want, [(e.event_id, f"{e.kind}") for e in seen])
    c.check("events: ids only grow",
            all(a.event_id < b.event_id for a, b in zip(seen, seen[1:])), seen)
    claim = list(sdk.events(after_event_id=after, vm_id=claimed_vm_id, kinds=["vm_restored"]))
    c.check("events: a claim from a pool is the claimed VM's restore",
            len(claim) == 1 and claim[0].detail == f"claimed from pool {POOL_ID}", claim)


def cleanup(sdk: SmolVMManager, vms: List[SmolVM]) -> None:
    """Removes everything this script made; reports but survives errors."""
    for vm in vms:
        try:
            vm.close()
        except SmolVMError as e:
            print(f"cleanup: close {vm.vm_id}: {e}", flush=True)
    for name, fn in (("pool", lambda: sdk.delete_pool(POOL_ID)),
                     ("snapshot", lambda: sdk.delete_snapshot(SNAPSHOT_ID))):
        try:
            fn()
        except NotFoundError:
            pass
        except SmolVMError as e:
            print(f"cleanup: delete {name}: {e}", flush=True)
    # Pool members claimed after a failure, and clones whose attach failed.
    for v in sdk.list_vms():
        if v.vm_id.startswith("pysdk-"):
            try:
                SmolVM.attach(v.vm_id).close()
            except SmolVMError as e:
                print(f"cleanup: close {v.vm_id}: {e}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-snapshot", default="",
                        help="clone the main VM from this snapshot instead of booting")
    args = parser.parse_args()
    c = Checks()
    vms: List[SmolVM] = []
    with SmolVMManager() as sdk:
        try:
            flows(c, sdk, args.from_snapshot, vms)
        except Exception:  # pylint: disable=broad-except
            traceback.print_exc()
            c.failed.append("flow stopped by an exception")
        finally:
            cleanup(sdk, vms)
        left = [v.vm_id for v in sdk.list_vms() if v.vm_id.startswith("pysdk-")]
        c.check("cleanup: no pysdk VM left", not left, left)
        c.check("cleanup: no pysdk snapshot left",
                SNAPSHOT_ID not in [s.snapshot_id for s in sdk.list_snapshots()])
    for name in c.failed:
        print(f"FAILED: {name}")
    print(f"{c.passed} passed, {len(c.failed)} failed")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main())
