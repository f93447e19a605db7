#!/usr/bin/env python3
"""bare_qemu.py: the "physical baseline" for smolvmd's benchmarks.

The operations smolvmd performs on a VM -- cold boot, snapshot, restore, fork
(many restores of one snapshot) -- done by hand on bare QEMU processes with
the daemon's recipe (DESIGN.md, "Facts measured on the development machines"),
driving QMP directly. No daemon, no gRPC, no store, no checksums, no guest
agent round trips: what is left is the cost of QEMU and of the file copies.
Python 3 standard library only; run as root (like the daemon's VMMs).

USAGE
  bench/bare_qemu.py boot     --image-dir DIR [--memory-mib 256] [--reps 10]
  bench/bare_qemu.py snapshot --image-dir DIR [--memory-mib 256] [--dirty-mib 0[,64,...]] [--reps 10]
                              [--dirty-chunk-kib 4]
  bench/bare_qemu.py restore  --image-dir DIR [--memory-mib 256] [--reps 10]
  bench/bare_qemu.py fork     --image-dir DIR [--memory-mib 256] [--count 10[,32]] [--reps 3]
                              [--parallel P]
  bench/bare_qemu.py all      --image-dir DIR [--memory-mib 256,2048] [--reps 10] [--fork-reps 3]
                              [--fork-counts 1,10,32]
  Common options (after the subcommand): --image-dir DIR (vmlinuz, rootfs.ext4 and, if the
  image has one, initrd.img: a daemon image dir, $STATE/images/sha256-<hex>/), --qemu-binary,
  --vcpus 2, --accel tcg|kvm, --machine q35, --tb-size-mib 64, --ram-dir /dev/shm (tmpfs:
  run dirs and the booted guests' RAM files), --work-dir /var/tmp (disk: VM disks and
  snapshots, like the daemon's state dir), --boot-timeout 300, --seed N.

  stdout: one JSON line per metric,
    {"name": ..., "unit": "ms", "n": N, "p50": x, "p99": y, "samples": [...]}
  p50 and p99 are nearest-rank percentiles (the ceil(p/100*n)-th smallest sample).
  stderr: human-readable progress, the QEMU command lines, notes.

WHAT IS MEASURED
  bare.boot.<M>                 QEMU launched (-daemonize; its parent exits once QEMU is
                                initialized, as the daemon's unconfined launch waits for)
                                -> the guest's init prints the line SMOLVM_READY on the
                                serial console (guest/rootfs-init.sh step 4; it is printed
                                whether or not the image has the agent). The daemon instead
                                waits for its agent to answer on the virtio-serial port,
                                which init starts just before that console line. The
                                root-disk copy is made before the clock starts (the daemon
                                makes it in CreateVm, before its boot clock too).
  bare.boot.<M>.launch          the QEMU start alone (exec -> parent exited).
  bare.snapshot.<M>.dirty<D>    one VM booted once; per rep: (untimed) D MiB of guest RAM
                                dirtied, then QMP stop -> migrate-set-capabilities
                                x-ignore-shared -> migrate-set-parameters max-bandwidth ->
                                getfd + migrate fd: (vmstate.bin) -> query-migrate polled
                                every 2 ms until completed -> the RAM file sparse-copied to
                                mem.bin -> the disk sparse-copied to disk.ext4 -> cont. Same
                                order as VmManager::CreateSnapshot with resume_source, minus
                                its checksums, manifest and database row.
    .device_state / .mem_copy / .disk_copy / .cont   the phases of that total;
    .mem_bin_bytes (unit bytes)  allocated bytes of mem.bin (its apparent size is M MiB);
    .size_mib (unit mib)         allocated MiB of vmstate.bin + mem.bin + disk.ext4 (as the
                                daemon's SnapshotInfo size_bytes, which adds its manifest).
  bare.restore.<M>.running      per rep: the snapshot's disk sparse-copied to a private disk
                                (as the daemon's StageRestoredDisk) -> a new QEMU with the
                                same device model, RAM = mem.bin with share=off, -S
                                -incoming defer -> QMP migrate-set-capabilities
                                x-ignore-shared -> getfd + migrate-incoming fd: ->
                                query-status polled every 2 ms until it leaves "inmigrate"
                                (the daemon's MigrateFromFile) -> cont -> query-status is
                                "running". The daemon's clock/random fix-up through the
                                agent afterwards is not part of it. The clone is killed.
    .disk_copy / .launch / .load / .cont   the phases of that total.
  bare.fork.<N>                 N such restores of one snapshot started together from a
                                thread pool of --parallel workers (default N: all at once;
                                the daemon's ForkSnapshot uses --fork-parallelism, default
                                the number of cores), from the first start until the last
                                clone runs. All N stay alive until then, then
  bare.fork.<N>.pss_mib (mib)   each clone QEMU's PSS (Pss of /proc/PID/smaps_rollup),
                                percentiles over the clones of all reps.

  The snapshot that restore and fork use is made first from a freshly booted, idle guest
  (in `all`, the last dirty-0 snapshot of that memory size).

DIRTYING GUEST RAM FROM THE HOST
  The booted guest's RAM is a shared (share=on) file on tmpfs; pwrite()s of random bytes
  into it at random page-aligned offsets are, for the save, the same as the guest writing
  those pages: the sparse copy of the RAM file copies every allocated page, whoever wrote
  it. So that those writes cannot corrupt the running guest, they go to a region the
  guest's kernel is told not to use: the VM that is dirtied boots with one extra kernel
  parameter, memmap=<R>M$<S>M (R = twice the largest --dirty-mib, where that fits), placed
  below the initrd at the top of low RAM. The region's pages are put in one random order;
  level D writes (fresh random bytes, every rep) the first D MiB of it, so each level's
  mem.bin holds the idle footprint plus D MiB; levels run in increasing order on one VM.
  Single random 4 KiB pages (the default) are the worst case for the copy: 64 MiB of them
  make ~8000 separate extents in mem.bin (an idle guest's RAM file has ~20);
  --dirty-chunk-kib 2048 dirties randomly placed 2 MiB runs instead, closer to how a
  guest's allocator hands out memory (the daemon's perf_bench dirties a file in a guest
  tmpfs). On ext4, deleting such a fragmented mem.bin after each rep takes seconds; that
  is outside the timings.

HOW IT DIFFERS FROM THE DAEMON'S QEMU (lib/vmm/qemu_argv.cc)
  Same: -machine q35,memory-backend=ram, -accel tcg,tb-size=64, -smp 2, -m, the
  memory-backend-file, -nodefaults -no-user-config -display none -vga none -no-reboot,
  -kernel/-initrd/-append (kernel command line = the daemon's base_cmdline
  "console=ttyS0 root=/dev/vda rw panic=-1"), virtio-blk-pci on a raw drive with
  cache=writeback, virtio-serial-pci + virtserialport org.smolvm.agent on a unix-socket
  chardev (server=on,wait=off; nothing connects), virtio-rng-pci, the serial console on a
  unix-socket chardev, -qmp on a unix socket, -pidfile, -D qemu.log, -daemonize (the
  daemon's --vmm-confinement=off launch), -S -incoming defer for restores.
  Different: no network -- no TAP, no virtio-net-pci, no smolvm.net= kernel parameter;
  no confinement -- no jail (uid, namespaces), no -sandbox seccomp filter, no cgroup;
  -name bare-<tag> instead of smolvm-<vm_id>; the memmap= parameter of dirtied VMs (above).

WHERE FILES GO
  --ram-dir (default /dev/shm, tmpfs) holds the run dirs and the booted guests' RAM files, as
  the daemon's --run-dir (default /run/smolvmd) does; --work-dir (default /var/tmp) holds
  disks and snapshots, as the daemon's --state-dir. Note that on the development machines
  /run and /tmp are on the root ext4, not tmpfs, and bench/run.sh gives its private daemon
  --run-dir under /tmp: to reproduce that placement, pass --ram-dir /tmp.

CLEANUP
  Every QEMU gets its own run dir under a fresh --ram-dir/bq-XXXXXX and its disk under a
  fresh --work-dir/bq-XXXXXX; each is SIGKILLed by pid once measured, and on any exit
  (errors, Ctrl-C, SIGTERM) every QEMU whose command line names this run's temp dir is
  killed and both temp dirs are removed.
"""

import argparse
import concurrent.futures
import errno
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

PAGE = 4096
MIB = 1 << 20
MARKER = b"SMOLVM_READY"
# lib/core/vm_manager.h: VmManager options base_cmdline (the network part,
# smolvm.net=..., is only added for VMs with a NIC).
BASE_CMDLINE = "console=ttyS0 root=/dev/vda rw panic=-1"


class BenchError(Exception):
    pass


_log_lock = threading.Lock()


def log(msg):
    with _log_lock:
        print(f"[bare_qemu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now():
    return time.monotonic()


def ms(t0, t1):
    return (t1 - t0) * 1000.0


def nearest_rank(sorted_samples, p):
    n = len(sorted_samples)
    return sorted_samples[max(1, math.ceil(p / 100.0 * n)) - 1]


def emit(name, samples, unit="ms", ndigits=3):
    if not samples:
        return
    s = sorted(samples)

    def rnd(x):
        return int(round(x)) if ndigits == 0 else round(x, ndigits)

    rec = {
        "name": name, "unit": unit, "n": len(s),
        "p50": rnd(nearest_rank(s, 50)),
        "p99": rnd(nearest_rank(s, 99)),
        "samples": [rnd(x) for x in samples],
    }
    print(json.dumps(rec), flush=True)


def tail(path, nbytes=1500):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - nbytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def allocated_bytes(path):
    return os.stat(path).st_blocks * 512


# ---------------------------------------------------------------------------
# Sparse copy: lib/base/file_util.cc SparseCopy + CopyRange (data extents by
# SEEK_DATA/SEEK_HOLE, copy_file_range or, where the kernel refuses it, e.g.
# across filesystem types, pread/pwrite in 1 MiB chunks; fsync at the end).

def _copy_range(fin, fout, off, end, state):
    while off < end:
        if not state.get("plain"):
            try:
                n = os.copy_file_range(fin, fout, end - off, off, off)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                if e.errno not in (errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                state["plain"] = True
                continue
            if n == 0:
                return
            off += n
            continue
        data = os.pread(fin, min(end - off, MIB), off)
        if not data:
            return
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.pwrite(fout, view[done:], off + done)
        off += len(data)


def sparse_copy(src, dst):
    """Returns the number of data extents copied."""
    extents = 0
    fin = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fin).st_size
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fout, size)
            state = {}
            pos = 0
            while pos < size:
                try:
                    data = os.lseek(fin, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:
                        break  # only a hole remains
                    raise
                hole = min(os.lseek(fin, data, os.SEEK_HOLE), size)
                if data >= hole:
                    break
                _copy_range(fin, fout, data, hole, state)
                extents += 1
                pos = hole
            os.fsync(fout)
        except BaseException:
            os.close(fout)
            fout = -1
            try:
                os.unlink(dst)
            except OSError:
                pass
            raise
        finally:
            if fout >= 0:
                os.close(fout)
    finally:
        os.close(fin)
    return extents


# ---------------------------------------------------------------------------
# QMP

class Qmp:
    """A minimal QMP client: greeting, qmp_capabilities, commands (optionally
    with one descriptor passed as SCM_RIGHTS, for getfd); events are skipped."""

    def __init__(self, path, timeout=30.0):
        deadline = now() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if now() > deadline:
                    raise BenchError(f"connect to QMP socket {path}: {e}") from None
                time.sleep(0.005)
        self.sock = sock
        self.buf = b""
        greeting = self._read(deadline, "greeting")
        if "QMP" not in greeting:
            raise BenchError(f"qmp: unexpected greeting {str(greeting)[:200]}")
        self.execute("qmp_capabilities")

    def _read(self, deadline, what):
        while True:
            while b"\n" not in self.buf:
                left = deadline - now()
                if left <= 0:
                    raise BenchError(f"qmp {what}: no reply from QEMU in time")
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    raise BenchError(f"qmp {what}: QEMU closed the connection")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                raise BenchError(f"qmp {what}: malformed message {line[:200]!r}") from None
            if not isinstance(msg, dict):
                raise BenchError(f"qmp {what}: malformed message {line[:200]!r}")
            return msg

    def execute(self, command, arguments=None, fd=None, timeout=60.0):
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        data = (json.dumps(req) + "\n").encode()
        deadline = now() + timeout
        self.sock.settimeout(timeout)
        if fd is None:
            self.sock.sendall(data)
        else:
            sent = socket.send_fds(self.sock, [data], [fd])
            if sent < len(data):
                self.sock.sendall(data[sent:])
        while True:
            msg = self._read(deadline, command)
            if "event" in msg:
                continue
            if "return" in msg:
                return msg["return"]
            if "error" in msg:
                err = msg["error"] if isinstance(msg["error"], dict) else {}
                raise BenchError(f"qmp {command} failed: {err.get('class', '?')}: "
                                 f"{err.get('desc', msg['error'])}")
            raise BenchError(f"qmp {command}: unexpected reply {str(msg)[:200]}")

    def status(self):
        r = self.execute("query-status")
        if not isinstance(r, dict) or not isinstance(r.get("status"), str):
            raise BenchError(f"qmp query-status: reply has no status: {r}")
        return r["status"]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Console: drains the serial-console socket into console.log (as the daemon's
# ConsoleRecorder does) and notes when the readiness line arrives.

class Console(threading.Thread):
    def __init__(self, sock_path, log_path):
        super().__init__(daemon=True)
        self.sock_path = sock_path
        self.log_path = log_path
        self.ready = threading.Event()
        self.ready_at = None
        self.closed = threading.Event()
        self.sock = None
        self.error = None

    def run(self):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = now() + 30
            while True:
                try:
                    sock.connect(self.sock_path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if now() > deadline:
                        raise
                    time.sleep(0.005)
            self.sock = sock
            pending = b""
            with open(self.log_path, "ab") as out:
                while True:
                    chunk = sock.recv(65536)
                    t = now()
                    if not chunk:
                        break
                    out.write(chunk)
                    out.flush()
                    if self.ready.is_set():
                        continue
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    if any(MARKER in line for line in lines):
                        self.ready_at = t
                        self.ready.set()
                    pending = pending[-4096:]
        except OSError as e:
            self.error = e
        finally:
            self.closed.set()

    def stop(self):
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------------------
# Session: temp dirs and every QEMU started, for cleanup.

class Session:
    def __init__(self, args):
        self.args = args
        for d, what in ((args.ram_dir, "--ram-dir"), (args.work_dir, "--work-dir")):
            if not os.path.isdir(d):
                raise BenchError(f"{what} {d} is not a directory")
        fstype = fs_type(args.ram_dir)
        if fstype != "tmpfs":
            log(f"warning: --ram-dir {args.ram_dir} is on {fstype or 'an unknown filesystem'}, "
                "not tmpfs: the booted guests' RAM files are not in memory-only files")
        self.ram_root = tempfile.mkdtemp(prefix="bq-", dir=args.ram_dir)
        self.disk_root = tempfile.mkdtemp(prefix="bq-", dir=args.work_dir)
        self.lock = threading.Lock()
        self.pids = {}  # pid -> run dir
        self.closing = False
        self.counter = 0
        self.logged_argv = set()
        self.rng = random.Random(args.seed)

    def unique(self, tag):
        with self.lock:
            self.counter += 1
            return f"{tag}-{self.counter}"

    def register(self, pid, run_dir):
        with self.lock:
            self.pids[pid] = run_dir
            closing = self.closing
        if closing:  # started while the run is being torn down
            self.kill(pid, run_dir)

    def kill(self, pid, run_dir):
        """SIGKILLs `pid` if it is still the QEMU of `run_dir`; waits until it is gone."""
        if is_our_qemu(pid, run_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = now() + 10
            while is_alive(pid) and now() < deadline:
                time.sleep(0.005)
            if is_alive(pid):
                log(f"warning: QEMU pid {pid} did not exit after SIGKILL")
        with self.lock:
            self.pids.pop(pid, None)

    def close(self):
        with self.lock:
            self.closing = True
            pids = dict(self.pids)
        for pid, run_dir in pids.items():
            self.kill(pid, run_dir)
        # A QEMU whose pid was not read yet (interrupted launch): found by
        # this run's unique temp dir in its command line.
        token = (self.ram_root + "/").encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if token in cmd and is_alive(int(entry)):
                log(f"killing leftover QEMU pid {entry}")
                self.kill(int(entry), self.ram_root)
        for d in (self.ram_root, self.disk_root):
            shutil.rmtree(d, ignore_errors=True)


def fs_type(path):
    best, best_type = "", ""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, best_type = mnt, parts[2]
    except OSError:
        pass
    return best_type


def is_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2:][:1]
    return state not in ("Z", "X", "")


def is_our_qemu(pid, directory):
    """True if `pid` lives and its command line names a file under `directory`."""
    if not is_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return (directory.rstrip("/") + "/").encode() in f.read()
    except OSError:
        return False


def pss_mib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no Pss line in /proc/{pid}/smaps_rollup")


# ---------------------------------------------------------------------------
# One QEMU

class Vm:
    def __init__(self, s, tag, memory_mib, disk, mem_path=None, mem_shared=True,
                 incoming=False, cmdline_extra=""):
        self.s = s
        self.tag = s.unique(tag)
        self.memory_mib = memory_mib
        self.run_dir = os.path.join(s.ram_root, self.tag)
        os.mkdir(self.run_dir, 0o700)
        self.disk = disk
        self.mem_path = mem_path or os.path.join(self.run_dir, "mem")
        self.mem_shared = mem_shared
        self.incoming = incoming
        self.cmdline = BASE_CMDLINE + (" " + cmdline_extra if cmdline_extra else "")
        self.pid = None
        self.qmp = None
        self.console = None

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def argv(self):
        a = self.s.args
        kvm = a.accel == "kvm"
        img = a.image
        argv = [
            a.qemu_binary,
            "-name", f"bare-{self.tag}",
            "-machine", f"{a.machine},memory-backend=ram",
            "-accel", "kvm" if kvm else f"tcg,tb-size={a.tb_size_mib}",
            "-smp", str(a.vcpus),
            "-m", f"{self.memory_mib}M",
            "-object", f"memory-backend-file,id=ram,size={self.memory_mib}M,"
                       f"mem-path={self.mem_path},share={'on' if self.mem_shared else 'off'}",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-no-reboot",
            "-kernel", img["vmlinuz"],
        ]
        if kvm:
            argv += ["-cpu", "host"]
        if img.get("initrd"):
            argv += ["-initrd", img["initrd"]]
        argv += [
            "-append", self.cmdline,
            "-drive", f"file={self.disk},if=none,id=disk0,format=raw,cache=writeback",
            "-device", "virtio-blk-pci,drive=disk0",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=agent,path={self.path('agent.sock')},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=agent,name=org.smolvm.agent",
            "-device", "virtio-rng-pci",
            "-chardev", f"socket,id=console,path={self.path('console.sock')},server=on,wait=off",
            "-serial", "chardev:console",
            "-qmp", f"unix:{self.path('qmp.sock')},server=on,wait=off",
            "-pidfile", self.path("qemu.pid"),
            "-D", self.path("qemu.log"),
            "-daemonize",
            # No -netdev/virtio-net-pci (no TAP) and no -sandbox (unconfined).
        ]
        if self.incoming:
            argv += ["-S", "-incoming", "defer"]
        return argv

    def launch(self, watch_console=False, timeout=60.0):
        """Starts QEMU and connects QMP; returns the time its parent exited."""
        argv = self.argv()
        kind = "restore" if self.incoming else "boot"
        with self.s.lock:
            first = kind not in self.s.logged_argv
            self.s.logged_argv.add(kind)
        if first:
            log(f"QEMU argv ({kind}): " + " ".join(argv))
        with open(self.path("qemu.log"), "ab") as errlog:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=errlog, close_fds=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{self.tag}: QEMU did not finish starting in {timeout:.0f} s; "
                             f"its log: {tail(self.path('qemu.log'))}") from None
        t_parent_exit = now()
        if rc != 0:
            raise BenchError(f"{self.tag}: QEMU failed to start (exit {rc}): "
                             f"{tail(self.path('qemu.log')).strip()}")
        try:
            with open(self.path("qemu.pid")) as f:
                self.pid = int(f.read().strip())
        except (OSError, ValueError) as e:
            raise BenchError(f"{self.tag}: no QEMU pid file: {e}") from None
        self.s.register(self.pid, self.run_dir)
        if watch_console:
            self.console = Console(self.path("console.sock"), self.path("console.log"))
            self.console.start()
        self.qmp = Qmp(self.path("qmp.sock"))
        return t_parent_exit

    def alive(self):
        return self.pid is not None and is_our_qemu(self.pid, self.run_dir)

    def death_note(self):
        note = f"{self.tag}: QEMU (pid {self.pid}) exited; qemu.log: " \
               f"{tail(self.path('qemu.log')).strip() or '(empty)'}"
        if self.console:
            note += f"\nconsole tail:\n{tail(self.path('console.log'))}"
        return note

    def wait_ready(self, timeout):
        deadline = now() + timeout
        while not self.console.ready.wait(0.1):
            if self.console.closed.is_set() and not self.console.ready.is_set():
                if self.alive():
                    raise BenchError(f"{self.tag}: console socket failed: {self.console.error}")
                raise BenchError(self.death_note())
            if not self.alive():
                raise BenchError(self.death_note())
            if now() > deadline:
                raise BenchError(f"{self.tag}: no {MARKER.decode()} on the console within "
                                 f"{timeout:.0f} s; console tail:\n{tail(self.path('console.log'))}")
        return self.console.ready_at

    def destroy(self):
        if self.qmp:
            self.qmp.close()
        if self.pid is not None:
            self.s.kill(self.pid, self.run_dir)
        if self.console:
            self.console.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.disk.startswith(self.s.disk_root + "/"):
            shutil.rmtree(os.path.dirname(self.disk), ignore_errors=True)


def new_disk_dir(s, tag):
    d = os.path.join(s.disk_root, s.unique(tag))
    os.mkdir(d, 0o700)
    return d


def check_ram_space(s, memory_mib):
    st = os.statvfs(s.ram_root)
    free = st.f_bavail * st.f_frsize
    if free < memory_mib * MIB:
        raise BenchError(f"--ram-dir {s.args.ram_dir} has {free // MIB} MiB free but a "
                         f"{memory_mib} MiB guest's RAM file needs that much")


def boot_vm(s, memory_mib, tag, cmdline_extra=""):
    """Boots a VM (RAM shared on tmpfs) to SMOLVM_READY. Returns (vm, total_ms, launch_ms)."""
    check_ram_space(s, memory_mib)
    disk = os.path.join(new_disk_dir(s, tag + "-disk"), "disk.ext4")
    sparse_copy(s.args.image["rootfs"], disk)
    vm = Vm(s, tag, memory_mib, disk, cmdline_extra=cmdline_extra)
    try:
        t0 = now()
        t_launched = vm.launch(watch_console=True)
        t_ready = vm.wait_ready(s.args.boot_timeout)
        return vm, ms(t0, t_ready), ms(t0, t_launched)
    except BaseException:
        vm.destroy()
        raise


# ---------------------------------------------------------------------------
# Snapshot and restore (the daemon's QMP sequences, qmp_client.cc)

def save_device_state(qmp, path):
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    qmp.execute("migrate-set-parameters", {"max-bandwidth": 1 << 40})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        qmp.execute("getfd", {"fdname": "migfd"}, fd=fd)
    finally:
        os.close(fd)
    qmp.execute("migrate", {"uri": "fd:migfd"})
    deadline = now() + 300
    while True:
        info = qmp.execute("query-migrate")
        if not isinstance(info, dict):
            raise BenchError(f"qmp query-migrate: reply is not an object: {info}")
        st = info.get("status")
        if st == "completed":
            return
        if st in ("failed", "cancelled"):
            raise BenchError(f"save device state failed: {info.get('error-desc', st)}")
        if now() > deadline:
            raise BenchError("save device state did not complete within 5 minutes")
        time.sleep(0.002)


def load_device_state(qmp, path):
    qmp.execute("migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        qmp.execute("getfd", {"fdname": "migfd"}, fd=fd)
    finally:
        os.close(fd)
    qmp.execute("migrate-incoming", {"uri": "fd:migfd"})
    deadline = now() + 300
    while True:
        st = qmp.status()
        if st != "inmigrate":
            if st in ("paused", "running", "prelaunch"):
                return st
            raise BenchError(f"load device state from {path}: QEMU ended in state {st}")
        if now() > deadline:
            raise BenchError(f"load device state from {path} did not complete within 5 minutes")
        time.sleep(0.002)


def snapshot_vm(vm, snap_dir):
    """stop -> device state -> mem.bin -> disk.ext4 -> cont; returns phase times (ms)."""
    os.makedirs(snap_dir, 0o700, exist_ok=True)
    t0 = now()
    vm.qmp.execute("stop")
    save_device_state(vm.qmp, os.path.join(snap_dir, "vmstate.bin"))
    t1 = now()
    extents = sparse_copy(vm.mem_path, os.path.join(snap_dir, "mem.bin"))
    t2 = now()
    sparse_copy(vm.disk, os.path.join(snap_dir, "disk.ext4"))
    t3 = now()
    vm.qmp.execute("cont")
    t4 = now()
    return {"total": ms(t0, t4), "device_state": ms(t0, t1), "mem_copy": ms(t1, t2),
            "disk_copy": ms(t2, t3), "cont": ms(t3, t4),
            "mem_bin_bytes": allocated_bytes(os.path.join(snap_dir, "mem.bin")),
            "size_mib": sum(allocated_bytes(os.path.join(snap_dir, f))
                            for f in ("vmstate.bin", "mem.bin", "disk.ext4")) / MIB,
            "mem_extents": extents}


def restore_clone(s, snap_dir, memory_mib, tag):
    """Disk copy -> QEMU -incoming defer on mem.bin (share=off) -> load -> cont -> running.
    Returns (vm, phases in ms, time it ran); the caller destroys the vm."""
    t0 = now()
    disk = os.path.join(new_disk_dir(s, tag + "-disk"), "disk.ext4")
    vm = None
    try:
        sparse_copy(os.path.join(snap_dir, "disk.ext4"), disk)
        t1 = now()
        vm = Vm(s, tag, memory_mib, disk, mem_path=os.path.join(snap_dir, "mem.bin"),
                mem_shared=False, incoming=True)
        vm.launch()
        t2 = now()
        st = load_device_state(vm.qmp, os.path.join(snap_dir, "vmstate.bin"))
        if st != "paused":
            raise BenchError(f"{vm.tag}: after loading the state QEMU is {st}, expected paused")
        t3 = now()
        vm.qmp.execute("cont")
        st = vm.qmp.status()
        t4 = now()
        if st != "running":
            raise BenchError(f"{vm.tag}: after cont QEMU is {st}, expected running")
        return vm, {"total": ms(t0, t4), "disk_copy": ms(t0, t1), "launch": ms(t1, t2),
                    "load": ms(t2, t3), "cont": ms(t3, t4)}, t4
    except BaseException:
        if vm is not None:
            vm.destroy()
        else:
            shutil.rmtree(os.path.dirname(disk), ignore_errors=True)
        raise


# ---------------------------------------------------------------------------
# Dirtying guest RAM from the host (see the module docstring).

def low_ram_mib(memory_mib):
    # q35 (hw/i386/pc_q35.c): all RAM is below 4 GiB up to 2.75 GiB; beyond
    # that only the first 2 GiB are, and file offsets stop being addresses.
    return memory_mib if memory_mib < 2816 else 2048


def dirty_region(memory_mib, max_dirty_mib):
    """(start_mib, size_mib) of the guest RAM reserved for host writes, or None."""
    if max_dirty_mib <= 0:
        return None
    low = low_ram_mib(memory_mib)
    # Away from the kernel's usual load area (below 64 MiB) and from the top
    # of low RAM, where QEMU puts the initrd and the firmware its tables.
    room = low - 64 - 32
    if room < max_dirty_mib:
        raise BenchError(f"--dirty-mib {max_dirty_mib} is too much for a {memory_mib} MiB "
                         f"guest: at most {max(room, 0)} MiB can be dirtied from the host")
    size = min(2 * max_dirty_mib, room)
    return low - 32 - size, size


def check_region_untouched(vm, region):
    start, size = region[0] * MIB, region[1] * MIB
    fd = os.open(vm.mem_path, os.O_RDONLY)
    try:
        try:
            data = os.lseek(fd, start, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return
            raise
        if data < start + size:
            log(f"warning: the reserved region [{region[0]}, {region[0] + region[1]}) MiB has "
                f"data at {data / MIB:.1f} MiB after boot: something in the guest wrote it")
    finally:
        os.close(fd)


def dirty_chunks(vm, region, chunk_indexes, chunk_bytes):
    """Writes fresh random bytes to the given chunks of the region."""
    pool = os.urandom(max(8 * MIB, 2 * chunk_bytes))
    view = memoryview(pool)
    slots = (len(pool) - chunk_bytes) // PAGE + 1
    base = region[0] * MIB
    fd = os.open(vm.mem_path, os.O_WRONLY)
    try:
        for i in chunk_indexes:
            k = random.randrange(slots) * PAGE
            os.pwrite(fd, view[k:k + chunk_bytes], base + i * chunk_bytes)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# The subcommands

def run_boot(s, memory_mib, reps):
    totals, launches = [], []
    for r in range(reps):
        vm, total, launch = boot_vm(s, memory_mib, f"boot{memory_mib}")
        vm.destroy()
        totals.append(total)
        launches.append(launch)
        log(f"boot {memory_mib} MiB rep {r + 1}/{reps}: ready in {total:.1f} ms "
            f"(QEMU started in {launch:.1f} ms)")
    emit(f"bare.boot.{memory_mib}", totals)
    emit(f"bare.boot.{memory_mib}.launch", launches)


def run_snapshots(s, memory_mib, levels, reps, emit_metrics=True):
    """Boots one VM, runs `reps` snapshots per dirty level (increasing), and
    returns the directory of the last dirty-0 snapshot (kept), if any."""
    levels = sorted(set(levels))
    region = dirty_region(memory_mib, levels[-1])
    extra = f"memmap={region[1]}M${region[0]}M" if region else ""
    vm, boot_ms, _ = boot_vm(s, memory_mib, f"snap{memory_mib}", extra)
    kept = None
    try:
        log(f"source VM {vm.tag} ({memory_mib} MiB) booted in {boot_ms:.1f} ms"
            + (f"; host-dirtied region: {region[1]} MiB at {region[0]} MiB ({extra})"
               if region else ""))
        if region:
            check_region_untouched(vm, region)
        # One random order of the region's chunks; level D dirties its first
        # D MiB, so a higher level's set contains the lower ones' and
        # mem.bin holds exactly the idle footprint + D MiB.
        chunk = getattr(s.args, "dirty_chunk_kib", 4) * 1024
        order = []
        if region:
            order = list(range(region[1] * MIB // chunk))
            s.rng.shuffle(order)
        for level in levels:
            chunks = order[:max(1, level * MIB // chunk)] if level else []
            name = f"bare.snapshot.{memory_mib}.dirty{level}"
            phases = {}
            for r in range(reps):
                if chunks:
                    t = now()
                    dirty_chunks(vm, region, chunks, chunk)
                    log(f"dirtied {level} MiB ({len(chunks)} x {chunk // 1024} KiB at random "
                        f"offsets) in {ms(t, now()):.0f} ms")
                if not vm.alive():
                    raise BenchError(vm.death_note())
                snap_dir = os.path.join(new_disk_dir(s, f"snap{memory_mib}-d{level}"), "snap")
                p = snapshot_vm(vm, snap_dir)
                for k, v in p.items():
                    phases.setdefault(k, []).append(v)
                log(f"snapshot {memory_mib} MiB dirty {level} rep {r + 1}/{reps}: "
                    f"{p['total']:.1f} ms (device state {p['device_state']:.1f}, mem "
                    f"{p['mem_copy']:.1f}, disk {p['disk_copy']:.1f}, cont {p['cont']:.1f}); "
                    f"mem.bin {p['mem_bin_bytes'] / MIB:.1f} MiB allocated in "
                    f"{p['mem_extents']} extents")
                if level == 0:
                    if kept:
                        shutil.rmtree(os.path.dirname(kept), ignore_errors=True)
                    kept = snap_dir
                else:
                    shutil.rmtree(os.path.dirname(snap_dir), ignore_errors=True)
            if emit_metrics:
                emit(name, phases.get("total", []))
                for k in ("device_state", "mem_copy", "disk_copy", "cont"):
                    emit(f"{name}.{k}", phases.get(k, []))
                emit(f"{name}.mem_bin_bytes", phases.get("mem_bin_bytes", []), unit="bytes",
                     ndigits=0)
                emit(f"{name}.size_mib", phases.get("size_mib", []), unit="mib")
        if not vm.alive():
            raise BenchError(vm.death_note())
    finally:
        vm.destroy()
    return kept


def idle_snapshot(s, memory_mib):
    log(f"making the idle {memory_mib} MiB snapshot that restores start from")
    return run_snapshots(s, memory_mib, [0], 1, emit_metrics=False)


def run_restores(s, snap_dir, memory_mib, reps):
    phases = {}
    for r in range(reps):
        vm, p, _ = restore_clone(s, snap_dir, memory_mib, f"restore{memory_mib}")
        try:
            time.sleep(0.05)  # a clone that dies right after cont is an error, not a sample
            if not vm.alive():
                raise BenchError(vm.death_note())
        finally:
            vm.destroy()
        for k, v in p.items():
            phases.setdefault(k, []).append(v)
        log(f"restore {memory_mib} MiB rep {r + 1}/{reps}: running in {p['total']:.1f} ms "
            f"(disk {p['disk_copy']:.1f}, launch {p['launch']:.1f}, load {p['load']:.1f}, "
            f"cont {p['cont']:.1f})")
    name = f"bare.restore.{memory_mib}.running"
    emit(name, phases.get("total", []))
    for k in ("disk_copy", "launch", "load", "cont"):
        emit(f"bare.restore.{memory_mib}.{k}", phases.get(k, []))


def run_fork(s, snap_dir, memory_mib, count, reps, parallel):
    workers = parallel or count
    totals, pss = [], []
    for r in range(reps):
        clones = []
        errors = []
        lock = threading.Lock()

        def one(i):
            if s.closing:
                return
            try:
                vm, _, t_run = restore_clone(s, snap_dir, memory_mib, f"fork{count}")
            except BaseException as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)
                return
            with lock:
                clones.append((vm, t_run))

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
        try:
            t0 = now()
            futures = [pool.submit(one, i) for i in range(count)]
            for f in futures:
                f.result()
            if errors:
                raise BenchError(f"fork {count}: {len(errors)} clone(s) failed; first: {errors[0]}")
            total = ms(t0, max(t for _, t in clones))
            dead = [vm for vm, _ in clones if not vm.alive()]
            if dead:
                raise BenchError(dead[0].death_note())
            rep_pss = [pss_mib(vm.pid) for vm, _ in clones]
            totals.append(total)
            pss.extend(rep_pss)
            log(f"fork {count} x {memory_mib} MiB rep {r + 1}/{reps}: all running in "
                f"{total:.1f} ms; PSS per clone {min(rep_pss):.1f}-{max(rep_pss):.1f} MiB")
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            for vm, _ in clones:
                vm.destroy()
    emit(f"bare.fork.{count}", totals)
    emit(f"bare.fork.{count}.pss_mib", pss, unit="mib")


# ---------------------------------------------------------------------------
# Command line

def int_list(text):
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}")
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"need non-negative integers: {text}")
    return vals


def check_image(image_dir):
    if not os.path.isdir(image_dir):
        raise BenchError(f"--image-dir {image_dir} is not a directory")
    img = {"vmlinuz": os.path.join(image_dir, "vmlinuz"),
           "rootfs": os.path.join(image_dir, "rootfs.ext4"),
           "initrd": os.path.join(image_dir, "initrd.img")}
    missing = [os.path.basename(p) for k, p in img.items() if k != "initrd" and not os.path.isfile(p)]
    if missing:
        raise BenchError(f"--image-dir {image_dir} has no {' or '.join(missing)} (it needs "
                         "vmlinuz, rootfs.ext4 and, if the image has one, initrd.img: the "
                         "layout of a smolvmd image, $STATE_DIR/images/sha256-<hex>/)")
    if not os.path.isfile(img["initrd"]):
        log(f"note: {image_dir} has no initrd.img; booting without -initrd")
        img["initrd"] = None
    return {k: (os.path.realpath(v) if v else v) for k, v in img.items()}


def parse_args(argv):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--image-dir", required=True,
                        help="dir with vmlinuz, rootfs.ext4 (and initrd.img)")
    common.add_argument("--qemu-binary", default="qemu-system-x86_64")
    common.add_argument("--vcpus", type=int, default=2, help="-smp (daemon default 2)")
    common.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    common.add_argument("--machine", default="q35")
    common.add_argument("--tb-size-mib", type=int, default=64,
                        help="TCG translation cache (daemon default 64)")
    common.add_argument("--ram-dir", default="/dev/shm",
                        help="tmpfs for run dirs and booted guests' RAM files")
    common.add_argument("--work-dir", default="/var/tmp",
                        help="disk dir for VM disks and snapshots (like the daemon's state dir)")
    common.add_argument("--boot-timeout", type=float, default=300.0, help="seconds")
    common.add_argument("--seed", type=int, default=None, help="for the dirtied page offsets")

    p = argparse.ArgumentParser(
        description="Baseline: smolvmd's boot/snapshot/restore/fork on bare QEMU via QMP. "
                    "See the docstring at the top of this file for what is measured.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot", parents=[common], help="launch -> SMOLVM_READY on the console")
    b.add_argument("--memory-mib", type=int, default=256)
    b.add_argument("--reps", type=int, default=10)
    sn = sub.add_parser("snapshot", parents=[common], help="stop -> state -> mem.bin -> disk -> cont")
    sn.add_argument("--memory-mib", type=int, default=256)
    sn.add_argument("--dirty-mib", type=int_list, default=[0],
                    help="MiB dirtied before each snapshot; a list runs each level")
    sn.add_argument("--reps", type=int, default=10)
    sn.add_argument("--dirty-chunk-kib", type=int, default=4,
                    help="size of each randomly placed dirtied run (default 4: single pages)")
    rs = sub.add_parser("restore", parents=[common], help="new QEMU from a snapshot -> running")
    rs.add_argument("--memory-mib", type=int, default=256)
    rs.add_argument("--reps", type=int, default=10)
    fk = sub.add_parser("fork", parents=[common], help="N concurrent restores of one snapshot")
    fk.add_argument("--memory-mib", type=int, default=256)
    fk.add_argument("--count", type=int_list, default=[10])
    fk.add_argument("--reps", type=int, default=3)
    fk.add_argument("--parallel", type=int, default=0,
                    help="restores in flight at once (default: all N)")
    al = sub.add_parser("all", parents=[common], help="the default set")
    al.add_argument("--memory-mib", type=int_list, default=[256, 2048])
    al.add_argument("--reps", type=int, default=10)
    al.add_argument("--fork-reps", type=int, default=3)
    al.add_argument("--fork-counts", type=int_list, default=[1, 10, 32])
    al.add_argument("--parallel", type=int, default=0)
    al.add_argument("--dirty-chunk-kib", type=int, default=4)
    a = p.parse_args(argv)
    mems = a.memory_mib if isinstance(a.memory_mib, list) else [a.memory_mib]
    if any(m < 128 for m in mems):
        p.error("--memory-mib must be at least 128")
    if getattr(a, "reps", 1) < 1 or getattr(a, "fork_reps", 1) < 1:
        p.error("repetitions must be at least 1")
    chunk = getattr(a, "dirty_chunk_kib", 4)
    if chunk < 4 or chunk & (chunk - 1) or chunk > 8192:
        p.error("--dirty-chunk-kib must be a power of two from 4 to 8192")
    if a.cmd == "fork" and any(c < 1 for c in a.count):
        p.error("--count must be at least 1")
    return a


def main(argv):
    a = parse_args(argv)
    if shutil.which(a.qemu_binary) is None:
        raise BenchError(f"{a.qemu_binary} not found: install Debian's qemu-system-x86 "
                         "package (apt-get install qemu-system-x86) or pass --qemu-binary")
    if a.accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise BenchError("--accel kvm needs a usable /dev/kvm")
    if os.geteuid() != 0:
        log("warning: not root; the daemon runs its VMMs as root (or per-VM uids)")
    a.image = check_image(a.image_dir)
    version = subprocess.run([a.qemu_binary, "--version"], capture_output=True,
                             text=True).stdout.splitlines()[:1]
    log(f"{version[0] if version else a.qemu_binary}; accel {a.accel}"
        + (f", tb-size {a.tb_size_mib} MiB" if a.accel == "tcg" else "") + f", {a.vcpus} vCPUs")
    log("NOTE: these VMs have NO network (no TAP, no virtio-net, no smolvm.net= kernel "
        "argument) and run UNCONFINED as root (no jail, no seccomp -sandbox, no cgroup)")

    s = Session(a)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        if a.cmd == "boot":
            run_boot(s, a.memory_mib, a.reps)
        elif a.cmd == "snapshot":
            run_snapshots(s, a.memory_mib, a.dirty_mib, a.reps)
        elif a.cmd == "restore":
            snap = idle_snapshot(s, a.memory_mib)
            run_restores(s, snap, a.memory_mib, a.reps)
        elif a.cmd == "fork":
            snap = idle_snapshot(s, a.memory_mib)
            for count in a.count:
                run_fork(s, snap, a.memory_mib, count, a.reps, a.parallel)
        elif a.cmd == "all":
            mems = sorted(set(a.memory_mib))
            small = mems[0]
            run_boot(s, small, a.reps)
            idle = {}
            for m in mems:
                levels = [d for d in (0, 64, 512) if d == 0 or 4 * d <= m]
                idle[m] = run_snapshots(s, m, levels, a.reps)
            for m in mems:
                run_restores(s, idle[m], m, a.reps)
            for count in a.fork_counts:
                run_fork(s, idle[small], small, count, a.fork_reps, a.parallel)
    finally:
        s.close()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted; every QEMU of this run was killed and its temp dirs removed")
        sys.exit(130)
