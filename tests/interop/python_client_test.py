#!/usr/bin/python3
"""Interop test: a Python gRPC client generated from proto/ drives smolvmd.

Proves the claim of DESIGN.md "The client contract": a client generated from
proto/smolvm/v1/*.proto in another language can run the seed's flows against
the daemon using only the names the contract fixes (services, messages,
fields, enum values, status codes), plus the standard grpc.health.v1.Health
service and server reflection.

Run with Debian's interpreter (it needs python3-grpcio and python3-protobuf):

  SMOLVM_TEST_KERNEL_DIR=/var/cache/smolvmd-kernel /usr/bin/python3 \\
      tests/interop/python_client_test.py --smolvmd build/daemon/smolvmd \\
      --guest-dir guest --proto-dir proto

Stubs are generated at run time into the test's private temp dir with
Debian's protoc 3.21 (protobuf-compiler) and grpc_python_plugin 1.51
(protobuf-compiler-grpc): the same generators the C++ build uses, matching
python3-protobuf 3.21 and python3-grpcio 1.51. Debian's python3-grpc-tools
(1.14) bundles protoc 3.6, which rejects proto3 `optional`
(SnapshotInfo.restored_vm_id); it is only tried when grpc_python_plugin is
missing. The standard health and reflection protos come from Debian's
grpc-proto package (python3-grpcio ships neither grpc_health nor
grpc_reflection).

The daemon runs in its own network namespace (`unshare --net`), so nothing it
might set up (TAPs, bridges, NAT) can reach the machine's uplink; the Unix
socket is a filesystem object and works across namespaces.

Everything the test creates lives under one mkdtemp dir (/tmp/svi-XXXXXX) and
is removed at the end, on success and on failure: the daemon is SIGTERMed by
pid, QEMU processes whose command line names the temp dir are killed by pid.
The last line printed is "N passed, M failed"; the exit code is 0 only when
M is 0. SMOLVM_TEST_KEEP_DIR=1 keeps the temp dir for debugging.
"""

import argparse
import ctypes
import datetime
import importlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import grpc
except ImportError:  # environment problem, not a test failure
    sys.stderr.write(
        "python_client_test: cannot import grpc; run with /usr/bin/python3 and "
        "install Debian's python3-grpcio (and python3-protobuf)\n")
    sys.exit(2)

DEFAULT_KERNEL_DIR = "/var/cache/smolvmd-kernel"
GRPC_PROTO_DIR = "/usr/share/grpc-proto"  # Debian package grpc-proto
SNAPSHOT_ID = "my-checkpoint"
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class Fatal(Exception):
    """A failure after which the flow cannot continue."""

    def __init__(self, msg, counted=False):
        super().__init__(msg)
        self.counted = counted  # already recorded by Checks.require


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            log(f"  ok   {name}")
        else:
            self.failed += 1
            self.failures.append(f"{name}: {detail}" if detail else name)
            log(f"  FAIL {name}" + (f" -- {detail}" if detail else ""))
        return ok

    def require(self, name, ok, detail=""):
        if not self.check(name, ok, detail):
            raise Fatal(name, counted=True)


# --------------------------------------------------------------------------
# Stub generation


def generate_stubs(proto_dir, out_dir):
    """Generates *_pb2.py / *_pb2_grpc.py for smolvm.v1, health and reflection.

    The standard protos are copied under a private Python package (svi_std/)
    so the generated modules do not collide with the installed `grpc`
    package; their proto packages (grpc.health.v1, grpc.reflection.v1alpha)
    and therefore the wire names are unchanged.
    """
    src = os.path.join(out_dir, "src")
    std_protos = []
    for rel in ("health/v1/health.proto", "reflection/v1alpha/reflection.proto"):
        origin = os.path.join(GRPC_PROTO_DIR, "grpc", rel)
        if not os.path.exists(origin):
            raise Fatal(f"{origin} missing: install Debian's grpc-proto package")
        dest = os.path.join(src, "svi_std", rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(origin, dest)
        std_protos.append(dest)
    py = os.path.join(out_dir, "py")
    os.makedirs(py)
    v1 = os.path.join(proto_dir, "smolvm", "v1")
    smolvm_protos = sorted(os.path.join(v1, f) for f in os.listdir(v1) if f.endswith(".proto"))
    includes = ["-I", proto_dir, "-I", src]
    outs = [f"--python_out={py}", f"--grpc_python_out={py}"]

    plugin = shutil.which("grpc_python_plugin")
    protoc = shutil.which("protoc")
    if plugin and protoc:
        how = f"{protoc} + {plugin}"
        cmd = [protoc, *includes, "-I", "/usr/include",
               f"--plugin=protoc-gen-grpc_python={plugin}", *outs,
               *smolvm_protos, *std_protos]
    else:
        how = f"{sys.executable} -m grpc_tools.protoc"
        cmd = [sys.executable, "-m", "grpc_tools.protoc", *includes, *outs,
               *smolvm_protos, *std_protos]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise Fatal(f"stub generation failed ({how}):\n{r.stderr}"
                    "hint: Debian's grpc_tools (1.14) bundles protoc 3.6, which rejects "
                    "proto3 `optional`; install protobuf-compiler and protobuf-compiler-grpc "
                    "for protoc 3.21 + grpc_python_plugin")
    for root, _, _ in os.walk(py):
        open(os.path.join(root, "__init__.py"), "a").close()
    sys.path.insert(0, py)
    mods = {}
    for name in ("smolvm.v1.types_pb2",
                 "smolvm.v1.vm_service_pb2", "smolvm.v1.vm_service_pb2_grpc",
                 "smolvm.v1.snapshot_service_pb2", "smolvm.v1.snapshot_service_pb2_grpc",
                 "svi_std.health.v1.health_pb2", "svi_std.health.v1.health_pb2_grpc",
                 "svi_std.reflection.v1alpha.reflection_pb2",
                 "svi_std.reflection.v1alpha.reflection_pb2_grpc"):
        mods[name] = importlib.import_module(name)
    return how, mods


# --------------------------------------------------------------------------
# Daemon and process management


def _pdeathsig():
    """In the child, before exec: get SIGTERM if the test process dies first."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def qemu_pids(tmp):
    """Live QEMU processes whose command line names our temp dir (ours only)."""
    pids = []
    needle = (tmp.rstrip("/") + "/").encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(b")") + 2:][:1] == b"Z":
            continue
        if b"qemu-system" in cmdline and needle in cmdline:
            pids.append(int(entry))
    return pids


def tail(path, lines=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"<{path}: {e}>"


class Daemon:
    def __init__(self, binary, tmp, kernel_dir, guest_dir, use_netns):
        self.socket = os.path.join(tmp, "s.sock")
        self.log_path = os.path.join(tmp, "smolvmd.log")
        args = [binary, "--socket", self.socket,
                "--state-dir", os.path.join(tmp, "st"),
                "--run-dir", os.path.join(tmp, "r"),
                "--guest-kernel-dir", kernel_dir,
                "--guest-recipe-dir", guest_dir,
                "--accelerator", "auto", "--log-level", "debug",
                # The busybox image: this test is about the API, and its
                # daemon's namespace has no route to Debian's archive.
                "--default-image", "minimal"]
        # The VMs' cgroups go under a parent of this run, removed by stop().
        self.cgroup_parent = "smolvm-pytest-" + os.path.basename(tmp)
        args += ["--cgroup-parent", self.cgroup_parent]
        if use_netns:
            # unshare(1) execs the daemon in its own process, so the pid we hold
            # is smolvmd's.
            args = ["unshare", "--net", "--", *args]
        self.args = args
        self.proc = None
        self.logf = None

    def start(self):
        log("starting: " + " ".join(self.args))
        self.logf = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMOLVMD_")}
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=_pdeathsig)
        log(f"smolvmd pid {self.proc.pid}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            log(f"SIGTERM smolvmd pid {self.proc.pid}")
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"smolvmd pid {self.proc.pid} ignored SIGTERM for 20 s; SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        self.remove_cgroups()
        return self.proc.returncode

    def remove_cgroups(self):
        """rmdir the (empty) groups of this run's VMs and their parent."""
        for parent in glob.glob(f"/sys/fs/cgroup/*/{self.cgroup_parent}") + \
                glob.glob(f"/sys/fs/cgroup/{self.cgroup_parent}"):
            for group in glob.glob(os.path.join(parent, "*/")) + [parent]:
                for _ in range(100):
                    try:
                        os.rmdir(group)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.02)


def wait_ready(daemon, channel, m, deadline_s=120):
    stub = m["smolvm.v1.vm_service_pb2_grpc"].VmServiceStub(channel)
    req = m["smolvm.v1.vm_service_pb2"].ListVmsRequest()
    deadline = time.monotonic() + deadline_s
    last = "socket not created"
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise Fatal(f"smolvmd exited during startup (rc {daemon.proc.returncode})")
        if os.path.exists(daemon.socket):
            try:
                stub.ListVms(req, timeout=5)
                return
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
        time.sleep(0.1)
    raise Fatal(f"smolvmd did not answer ListVms within {deadline_s} s ({last})")


# --------------------------------------------------------------------------
# The flows, with contract names only


class Flow:
    def __init__(self, checks, channel, m):
        self.c = checks
        self.t = m["smolvm.v1.types_pb2"]
        self.vmpb = m["smolvm.v1.vm_service_pb2"]
        self.snpb = m["smolvm.v1.snapshot_service_pb2"]
        self.hpb = m["svi_std.health.v1.health_pb2"]
        self.rpb = m["svi_std.reflection.v1alpha.reflection_pb2"]
        self.vms = m["smolvm.v1.vm_service_pb2_grpc"].VmServiceStub(channel)
        self.snaps = m["smolvm.v1.snapshot_service_pb2_grpc"].SnapshotServiceStub(channel)
        self.health = m["svi_std.health.v1.health_pb2_grpc"].HealthStub(channel)
        self.refl = m["svi_std.reflection.v1alpha.reflection_pb2_grpc"].ServerReflectionStub(
            channel)
        self.vm_id = None
        self.vm_exists = False
        self.snapshot_exists = False

    @staticmethod
    def timed(what, fn, *args, **kw):
        t = time.monotonic()
        try:
            return fn(*args, **kw)
        finally:
            log(f"{what}: {time.monotonic() - t:.2f} s")

    def expect_code(self, name, code, fn, req):
        try:
            fn(req, timeout=30)
        except grpc.RpcError as e:
            if not self.c.check(f"{name} -> {code.name}", e.code() == code,
                                f"got {e.code().name}: {e.details()}"):
                return False
            return self.c.check(f"{name}: error message {e.details()!r}", bool(e.details()))
        return self.c.check(f"{name} -> {code.name}", False, "the call succeeded")

    def status(self, s):
        return self.t.VmStatus.Name(s)

    def run(self):
        t, vmpb, snpb, c = self.t, self.vmpb, self.snpb, self.c

        # The standard services.
        resp = self.timed("Health/Check", self.health.Check,
                          self.hpb.HealthCheckRequest(service=""), timeout=30)
        c.check("grpc.health.v1.Health/Check answers SERVING",
                resp.status == self.hpb.HealthCheckResponse.SERVING,
                self.hpb.HealthCheckResponse.ServingStatus.Name(resp.status))
        replies = list(self.timed(
            "ServerReflectionInfo(list_services)", self.refl.ServerReflectionInfo,
            iter([self.rpb.ServerReflectionRequest(list_services="")]), timeout=30))
        names = {s.name for r in replies for s in r.list_services_response.service}
        log(f"reflection lists {sorted(names)}")
        for svc in ("smolvm.v1.VmService", "smolvm.v1.SnapshotService"):
            c.check(f"reflection lists {svc}", svc in names, str(sorted(names)))

        # Error mapping.
        self.expect_code("GetVm(unknown id)", grpc.StatusCode.NOT_FOUND, self.vms.GetVm,
                         vmpb.GetVmRequest(vm_id="no-such-vm-interop"))
        self.expect_code('CreateVm(vm_id="../x")', grpc.StatusCode.INVALID_ARGUMENT,
                         self.vms.CreateVm,
                         vmpb.CreateVmRequest(config=t.VMConfig(vm_id="../x", memory_mib=256,
                                                                vcpu_count=1), start=True))

        # vm = SmolVM(VMConfig(memory_mib=256, vcpu_count=1)); vm.start()
        vm = self.timed("CreateVm(start=True) (cold boot)", self.vms.CreateVm,
                        vmpb.CreateVmRequest(config=t.VMConfig(memory_mib=256, vcpu_count=1),
                                             start=True), timeout=300)
        self.vm_id = vm.vm_id
        self.vm_exists = bool(vm.vm_id)
        log(f"created vm {vm.vm_id!r}, status {self.status(vm.status)}")
        c.require("CreateVm returns a generated vm_id", bool(vm.vm_id))
        c.require("CreateVm -> Vm.status RUNNING", vm.status == t.RUNNING,
                  f"{self.status(vm.status)} {vm.error}")
        c.check("Vm.config.memory_mib == 256", vm.config.memory_mib == 256,
                str(vm.config.memory_mib))
        c.check("Vm.config.vcpu_count == 1", vm.config.vcpu_count == 1,
                str(vm.config.vcpu_count))

        # vm.snapshot("my-checkpoint")
        info = self.timed("CreateSnapshot", self.snaps.CreateSnapshot,
                          snpb.CreateSnapshotRequest(vm_id=self.vm_id,
                                                     snapshot_id=SNAPSHOT_ID), timeout=300)
        self.snapshot_exists = True
        log("SnapshotInfo {\n  " + str(info).strip().replace("\n", "\n  ") + "\n}")
        c.check("SnapshotInfo.snapshot_id", info.snapshot_id == SNAPSHOT_ID, info.snapshot_id)
        c.check("SnapshotInfo.vm_id", info.vm_id == self.vm_id, info.vm_id)
        c.check("SnapshotInfo.snapshot_path ends with vmstate.bin",
                info.snapshot_path.endswith("vmstate.bin"), info.snapshot_path)
        c.check("SnapshotInfo.mem_file_path ends with mem.bin",
                info.mem_file_path.endswith("mem.bin"), info.mem_file_path)
        c.check("SnapshotInfo.disk_path ends with disk.ext4",
                info.disk_path.endswith("disk.ext4"), info.disk_path)
        for field in ("snapshot_path", "mem_file_path", "disk_path"):
            path = getattr(info, field)
            c.check(f"SnapshotInfo.{field} is a file", os.path.isfile(path), path)
        c.check("SnapshotInfo.vm_config present", info.HasField("vm_config"))
        c.check("SnapshotInfo.vm_config.memory_mib == 256", info.vm_config.memory_mib == 256,
                str(info.vm_config.memory_mib))
        c.check("SnapshotInfo.network_config present", info.HasField("network_config"))
        c.check("SnapshotInfo.created_at present", info.HasField("created_at"))
        created = info.created_at.ToDatetime()  # naive, UTC
        now = datetime.datetime.utcnow()
        age = (now - created).total_seconds()
        c.check("SnapshotInfo.created_at (UTC) within the last minute", -5 <= age <= 60,
                f"created_at={created.isoformat()}Z now={now.isoformat()}Z age={age:.1f} s")
        c.check("SnapshotInfo.restored is False", info.restored is False, str(info.restored))
        c.check("SnapshotInfo.restored_vm_id not set (HasField)",
                not info.HasField("restored_vm_id"), repr(info.restored_vm_id))

        # vm.close()
        self.timed("DeleteVm", self.vms.DeleteVm, vmpb.DeleteVmRequest(vm_id=self.vm_id),
                   timeout=120)
        self.vm_exists = False
        self.expect_code("GetVm(deleted vm)", grpc.StatusCode.NOT_FOUND, self.vms.GetVm,
                         vmpb.GetVmRequest(vm_id=self.vm_id))

        # SmolVM.list_snapshots()
        lst = self.timed("ListSnapshots", self.snaps.ListSnapshots, snpb.ListSnapshotsRequest(),
                         timeout=30)
        ids = [s.snapshot_id for s in lst.snapshots]
        c.check("ListSnapshots contains my-checkpoint", SNAPSHOT_ID in ids, str(ids))

        # SmolVM.from_snapshot("my-checkpoint", resume_vm=True)
        restored = self.timed("RestoreSnapshot(resume_vm=True)", self.snaps.RestoreSnapshot,
                              snpb.RestoreSnapshotRequest(snapshot_id=SNAPSHOT_ID,
                                                          resume_vm=True), timeout=300)
        self.vm_exists = True
        log(f"restored vm {restored.vm_id!r}, status {self.status(restored.status)}")
        c.check("RestoreSnapshot -> the original vm_id", restored.vm_id == self.vm_id,
                f"{restored.vm_id!r} != {self.vm_id!r}")
        c.check("RestoreSnapshot -> Vm.status RUNNING", restored.status == t.RUNNING,
                f"{self.status(restored.status)} {restored.error}")
        got = self.timed("GetVm(restored)", self.vms.GetVm, vmpb.GetVmRequest(vm_id=self.vm_id),
                         timeout=30)
        c.check("GetVm(restored) -> RUNNING", got.status == t.RUNNING, self.status(got.status))
        info2 = self.timed("GetSnapshot", self.snaps.GetSnapshot,
                           snpb.GetSnapshotRequest(snapshot_id=SNAPSHOT_ID), timeout=30)
        c.check("GetSnapshot: restored is True", info2.restored is True, str(info2.restored))
        c.check("GetSnapshot: restored_vm_id set (HasField)", info2.HasField("restored_vm_id"))
        c.check("GetSnapshot: restored_vm_id is the restored VM",
                info2.restored_vm_id == restored.vm_id, repr(info2.restored_vm_id))

        # Cleanup through the API, checked too.
        self.timed("DeleteVm(restored)", self.vms.DeleteVm,
                   vmpb.DeleteVmRequest(vm_id=self.vm_id), timeout=120)
        self.vm_exists = False
        self.timed("DeleteSnapshot", self.snaps.DeleteSnapshot,
                   snpb.DeleteSnapshotRequest(snapshot_id=SNAPSHOT_ID), timeout=60)
        self.snapshot_exists = False
        self.expect_code("GetSnapshot(deleted)", grpc.StatusCode.NOT_FOUND,
                         self.snaps.GetSnapshot, snpb.GetSnapshotRequest(snapshot_id=SNAPSHOT_ID))
        vms = self.timed("ListVms", self.vms.ListVms, vmpb.ListVmsRequest(), timeout=30)
        c.check("ListVms is empty after cleanup", len(vms.vms) == 0,
                str([v.vm_id for v in vms.vms]))

    def best_effort_cleanup(self):
        """After a failure: delete what the flow created, ignoring errors."""
        if self.vm_exists and self.vm_id:
            try:
                self.vms.DeleteVm(self.vmpb.DeleteVmRequest(vm_id=self.vm_id), timeout=60)
                log(f"cleanup: deleted vm {self.vm_id}")
            except grpc.RpcError as e:
                log(f"cleanup: DeleteVm({self.vm_id}): {e.code().name} {e.details()}")
        if self.snapshot_exists:
            try:
                self.snaps.DeleteSnapshot(
                    self.snpb.DeleteSnapshotRequest(snapshot_id=SNAPSHOT_ID), timeout=60)
                log(f"cleanup: deleted snapshot {SNAPSHOT_ID}")
            except grpc.RpcError as e:
                log(f"cleanup: DeleteSnapshot: {e.code().name} {e.details()}")


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smolvmd", required=True, help="the smolvmd binary")
    ap.add_argument("--guest-dir", required=True, help="the repository's guest/ dir")
    ap.add_argument("--kernel-dir",
                    default=os.environ.get("SMOLVM_TEST_KERNEL_DIR") or DEFAULT_KERNEL_DIR,
                    help="extracted guest kernel (env SMOLVM_TEST_KERNEL_DIR, default "
                         f"{DEFAULT_KERNEL_DIR})")
    ap.add_argument("--proto-dir", required=True, help="the repository's proto/ dir")
    ap.add_argument("--no-netns", action="store_true",
                    help="run smolvmd in the caller's network namespace")
    args = ap.parse_args()
    for p in ("smolvmd", "guest_dir", "kernel_dir", "proto_dir"):
        setattr(args, p, os.path.abspath(getattr(args, p)))
    os.environ["SMOLVM_TEST_KERNEL_DIR"] = args.kernel_dir

    # SIGTERM (ctest timeout, CI cancel) becomes an exception so `finally` cleans up.
    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    checks = Checks()
    tmp = tempfile.mkdtemp(prefix="svi-", dir="/tmp")
    daemon = flow = channel = None
    log(f"python {sys.version.split()[0]}, grpcio {grpc.__version__}; temp dir {tmp}; "
        f"kernel dir {args.kernel_dir}")
    try:
        for what, path in (("--smolvmd", args.smolvmd), ("--kernel-dir", args.kernel_dir),
                           ("--guest-dir", args.guest_dir), ("--proto-dir", args.proto_dir)):
            checks.require(f"{what} {path} exists", os.path.exists(path))

        t = time.monotonic()
        how, mods = generate_stubs(args.proto_dir, os.path.join(tmp, "gen"))
        log(f"generated and imported Python stubs ({how}) in {time.monotonic() - t:.2f} s")

        daemon = Daemon(args.smolvmd, tmp, args.kernel_dir, args.guest_dir,
                        use_netns=not args.no_netns)
        t = time.monotonic()
        daemon.start()
        channel = grpc.insecure_channel("unix:" + daemon.socket)
        wait_ready(daemon, channel, mods)
        log(f"smolvmd answers ListVms after {time.monotonic() - t:.2f} s")

        flow = Flow(checks, channel, mods)
        flow.run()
    except Fatal as e:
        first, _, rest = str(e).partition("\n")
        if not e.counted:
            checks.check(first, False, rest)
        log(f"aborting: {first}")
    except grpc.RpcError as e:
        traceback.print_exc()
        checks.check("no unexpected RPC error", False, f"{e.code().name}: {e.details()}")
    except KeyboardInterrupt as e:
        checks.check("not interrupted", False, str(e) or "SIGINT")
    except Exception as e:  # noqa: BLE001 - anything else is a failure too
        traceback.print_exc()
        checks.check("no unexpected exception", False, repr(e))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if checks.failed and daemon is not None:
            log(f"--- smolvmd log tail ({daemon.log_path}) ---\n" + tail(daemon.log_path, 60))
            vms_dir = os.path.join(tmp, "r", "vms")
            if os.path.isdir(vms_dir):
                for vm in sorted(os.listdir(vms_dir)):
                    con = os.path.join(vms_dir, vm, "console.log")
                    if os.path.exists(con):
                        log(f"--- console of {vm} ---\n" + tail(con, 30))
        if flow is not None and checks.failed and daemon is not None and daemon.alive():
            flow.best_effort_cleanup()
        if channel is not None:
            channel.close()
        if daemon is not None:
            log(f"smolvmd exited with {daemon.stop()}")
        for pid in qemu_pids(tmp):
            log(f"killing leftover qemu pid {pid}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while qemu_pids(tmp) and time.monotonic() < deadline:
            time.sleep(0.05)
        if qemu_pids(tmp):
            checks.check("no QEMU process left", False, str(qemu_pids(tmp)))
        if os.environ.get("SMOLVM_TEST_KEEP_DIR"):
            log(f"keeping {tmp} (SMOLVM_TEST_KEEP_DIR)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.exists(tmp):
                log(f"could not remove {tmp} completely")

    log(f"total {time.monotonic() - T0:.2f} s")
    if checks.failed:
        print("failures:\n  " + "\n  ".join(checks.failures), flush=True)
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
