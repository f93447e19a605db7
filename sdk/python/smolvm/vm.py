"""SmolVM: a handle on one microVM managed by smolvmd.

Mirrors the C++ ``smolvm::SmolVM`` (client/smolvm.h): each method is one RPC
plus conversion of its result; validation and state rules live in the daemon,
whose errors are raised unchanged (smolvm.errors).

    vm = SmolVM()                        # default image; nothing sent yet
    vm.start()                           # CreateVm(start=True): RUNNING
    print(vm.run("echo hi").output)      # Exec
    with vm.exec_session(["cat"]) as s:  # ExecStream: streamed stdin, signals, tty
        s.write_stdin("hi\\n"); s.close_stdin(); print(s.wait().stdout)
    print(vm.stat_path("/etc/hosts"))    # StatPath (FilesystemService)
    proc = vm.start_process("./serve")   # StartProcess (ProcessService)
    forked = vm.fork(2)                  # ForkVm: 2 children; vm keeps running
    snap = vm.snapshot("my-checkpoint")  # CreateSnapshot: vm is PAUSED
    vm.close()                           # DeleteVm; snapshots stay

    with SmolVM.from_snapshot("my-checkpoint", resume_vm=True) as vm:
        print(vm.vm_id, vm.status)       # "... running"; closed on exit
"""

import io
import signal as _signal
from typing import BinaryIO, Callable, Dict, List, Mapping, Optional, TypeVar, Union

from google.protobuf.message import Message

from smolvm import _streams
from smolvm.connection import ClientOptions, Connection
from smolvm.progress import ProgressCallback, call_with_progress
from smolvm.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from smolvm.exec_session import ExecSession
from smolvm.fs import DirWatch, FileEntry, ListDirResult
from smolvm.console import ConsoleStream
from smolvm.stats import StatsWatch, VmStats
from smolvm.process import ProcessConnection, ProcessInfo
from smolvm.types import (CommandResult, ConfigLike, EgressPolicy, ForkOutcome, ForkVmResult,
                          Lifetime, SnapshotInfo, VMConfig, VMInfo, VmStatus, _nested,
                          coerce_config, copy_labels)
from smolvm.v1 import (filesystem_service_pb2, pool_service_pb2, process_service_pb2,
                       snapshot_service_pb2, types_pb2, vm_service_pb2)

__all__ = ["SmolVM"]

Command = Union[str, List[str]]
T = TypeVar("T")


class SmolVM:
    """One microVM.

    ``SmolVM(config)`` refers to no VM until :meth:`start` creates it;
    :meth:`from_snapshot`, :meth:`from_pool` and :meth:`attach` return handles
    on VMs that exist. A VM lives in the daemon until :meth:`close`: dropping
    the handle neither stops nor deletes it. As a context manager the VM is
    started on entry (if it never was) and closed on exit.

    ``info`` / ``status`` are the last state the daemon returned (start,
    stop, pause, resume, refresh, restore, expose_port); :meth:`snapshot`
    records the state it leaves (PAUSED, or RUNNING with resume_source);
    :meth:`refresh` re-reads it. A failed call leaves them as they were.
    Methods that need a VM raise FailedPreconditionError before start() and
    after close(), without contacting the daemon.

    Not thread-safe: use one SmolVM from one thread at a time.
    """

    def __init__(self, config: ConfigLike = None, *,
                 options: Optional[ClientOptions] = None,
                 _connection: Optional[Connection] = None,
                 _info: Optional[types_pb2.Vm] = None) -> None:
        """Prepares a VM with `config` (a VMConfig, a dict of its fields or
        None for the daemon's defaults). Sends nothing."""
        self._config: VMConfig = coerce_config(config)
        self._connection = _connection or Connection(options)
        self._info: types_pb2.Vm = _info if _info is not None else types_pb2.Vm()
        self._closed = False
        #: For handles from from_pool(): whether the VM came ready from the
        #: pool (False: restored on demand); None otherwise.
        self.claimed_from_pool: Optional[bool] = None

    # --- State ---------------------------------------------------------------

    @property
    def vm_id(self) -> str:
        """The VM's id; "" before start()."""
        return self._info.vm_id

    @property
    def status(self) -> VmStatus:
        """The last known status (prints like ``running``)."""
        return VmStatus.from_proto(self._info.status)

    @property
    def state(self) -> VmStatus:
        """Same as :attr:`status`."""
        return self.status

    @property
    def info(self) -> VMInfo:
        """The last VM the daemon returned."""
        return VMInfo.from_proto(self._info)

    @property
    def config(self) -> VMConfig:
        """The configuration given to the constructor, or for handles on
        existing VMs the daemon's resolved one."""
        return self._config

    @property
    def connection(self) -> Connection:
        """The connection to smolvmd this handle uses."""
        return self._connection

    def __repr__(self) -> str:
        return f"SmolVM(vm_id={self.vm_id!r}, status={str(self.status)!r})"

    def _check_started(self, operation: str) -> None:
        if self._closed:
            raise FailedPreconditionError(message=f"{operation} vm {self.vm_id}: closed")
        if not self.vm_id:
            raise FailedPreconditionError(
                message=f"{operation} vm: not started; call start() first")

    def _set_info(self, vm: types_pb2.Vm) -> "SmolVM":
        self._info = vm
        return self

    @classmethod
    def _existing(cls, vm: types_pb2.Vm, connection: Connection) -> "SmolVM":
        return cls(VMConfig.from_proto(vm.config), _connection=connection, _info=vm)

    # --- Lifecycle -----------------------------------------------------------

    def start(self, *, on_progress: Optional[ProgressCallback] = None) -> "SmolVM":
        """Boots the VM and returns once the guest is ready (RUNNING).

        The first call creates it (CreateVm with start); later calls (after
        stop(), or on an attached VM) cold-boot it (StartVm). Returns self.
        `on_progress` (here and on the other long calls) sees the call's
        stages as the daemon reports them (smolvm.progress).
        """
        if self._closed:
            raise FailedPreconditionError(message=f"start vm {self.vm_id}: closed")
        conn = self._connection
        if not self.vm_id:
            request = vm_service_pb2.CreateVmRequest(config=self._config.to_proto(), start=True)
            return self._set_info(call_with_progress(conn, conn.vm.CreateVm, request,
                                                     on_progress))
        return self._set_info(call_with_progress(
            conn, conn.vm.StartVm, vm_service_pb2.StartVmRequest(vm_id=self.vm_id), on_progress))

    def snapshot(self, snapshot_id: str = "", resume_source: bool = False, *,
                 labels: Optional[Mapping[str, str]] = None,
                 on_progress: Optional[ProgressCallback] = None) -> SnapshotInfo:
        """Checkpoints the VM (CreateSnapshot) as `snapshot_id` ("" = a
        generated id), tagged with `labels` (``SnapshotInfo.labels``;
        ``SmolVMManager.list_snapshots(labels=...)`` filters by them). The VM
        is left PAUSED unless `resume_source`. Requires a RUNNING or PAUSED
        VM."""
        self._check_started("snapshot")
        conn = self._connection
        request = snapshot_service_pb2.CreateSnapshotRequest(
            vm_id=self.vm_id, snapshot_id=snapshot_id, resume_source=resume_source)
        copy_labels(labels, request.labels, f"snapshot vm {self.vm_id}")
        info = call_with_progress(conn, conn.snapshot.CreateSnapshot, request, on_progress)
        # The reply is the snapshot; the API documents the VM's new state.
        self._info.status = types_pb2.RUNNING if resume_source else types_pb2.PAUSED
        return SnapshotInfo.from_proto(info)

    def fork(self, count: int = 1, *, snapshot_id: str = "", vm_id_prefix: str = "",
             paused: bool = False, labels: Optional[Mapping[str, str]] = None,
             on_progress: Optional[ProgressCallback] = None) -> ForkVmResult:
        """Snapshots this RUNNING (or PAUSED) VM and restores `count`
        (1-128) children from it in one call (ForkVm). This VM keeps its
        state (``status`` is unchanged). Children inherit its files and
        processes, then diverge, each with its own identity.

        Args:
            snapshot_id: the snapshot's id ("" = ``<vm_id>-fork-<unix ms>``);
                AlreadyExistsError if taken. The snapshot is kept (more
                children can be forked from it with
                ``SmolVMManager.fork_snapshot()``) until deleted.
            vm_id_prefix: children are named ``<vm_id_prefix>-<n>`` ("" =
                the snapshot id).
            paused: leave the children PAUSED instead of RUNNING.
            labels: tags of the snapshot (the children carry this VM's
                own labels, being copies of it).

        Raises only for a bad request or a failed snapshot; otherwise
        returns the snapshot id and one outcome per child, each with its VM
        or its own error. ``SmolVM.attach(outcome.vm_id)`` gives a handle on
        a child.
        """
        self._check_started("fork")
        conn = self._connection
        request = vm_service_pb2.ForkVmRequest(
            vm_id=self.vm_id, count=count, snapshot_id=snapshot_id, vm_id_prefix=vm_id_prefix,
            paused=paused)
        copy_labels(labels, request.labels, f"fork vm {self.vm_id}")
        response = call_with_progress(conn, conn.vm.ForkVm, request, on_progress)
        return ForkVmResult(snapshot_id=response.snapshot_id,
                            children=[ForkOutcome.from_proto(r, f"fork vm {self.vm_id}")
                                      for r in response.results])

    def stop(self) -> "SmolVM":
        """Ends the VM's VMM (StopVm); the disk is kept and start() boots it
        again. Requires RUNNING or PAUSED."""
        self._check_started("stop")
        conn = self._connection
        return self._set_info(conn.call(conn.vm.StopVm,
                                        vm_service_pb2.StopVmRequest(vm_id=self.vm_id)))

    def pause(self) -> "SmolVM":
        """Stops the vCPUs of a RUNNING VM (PauseVm)."""
        self._check_started("pause")
        conn = self._connection
        return self._set_info(conn.call(conn.vm.PauseVm,
                                        vm_service_pb2.PauseVmRequest(vm_id=self.vm_id)))

    def resume(self) -> "SmolVM":
        """Continues a PAUSED VM (ResumeVm)."""
        self._check_started("resume")
        conn = self._connection
        return self._set_info(conn.call(conn.vm.ResumeVm,
                                        vm_service_pb2.ResumeVmRequest(vm_id=self.vm_id)))

    def refresh(self) -> VMInfo:
        """Re-reads the VM from the daemon (GetVm) and returns it."""
        self._check_started("refresh")
        conn = self._connection
        self._set_info(conn.call(conn.vm.GetVm, vm_service_pb2.GetVmRequest(vm_id=self.vm_id)))
        return self.info

    def close(self) -> None:
        """Deletes the VM and its disk (DeleteVm), stopping it first if
        needed; its snapshots are kept. Idempotent: a VM the daemon no longer
        knows counts as closed, later calls do nothing, and closing a
        never-started SmolVM sends nothing. The channel is released."""
        if self._closed:
            return
        if self.vm_id:
            conn = self._connection
            try:
                conn.call(conn.vm.DeleteVm, vm_service_pb2.DeleteVmRequest(vm_id=self.vm_id))
            except NotFoundError:
                pass  # Already deleted: the goal of close() is reached.
        self._closed = True
        self._info.status = types_pb2.VM_STATUS_UNSPECIFIED
        self._connection.close()

    def __enter__(self) -> "SmolVM":
        if not self.vm_id and not self._closed:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Constructors for existing VMs -----------------------------------------

    @classmethod
    def from_snapshot(cls, snapshot_id: str, resume_vm: bool = True, vm_id: str = "", *,
                      options: Optional[ClientOptions] = None,
                      on_progress: Optional[ProgressCallback] = None) -> "SmolVM":
        """Restores a VM from `snapshot_id` (RestoreSnapshot): RUNNING when
        `resume_vm`, else PAUSED. With an empty `vm_id` the VM takes the
        snapshot's own identity (FAILED_PRECONDITION while that VM is
        RUNNING or PAUSED); another id makes an independent clone."""
        conn = Connection(options)
        request = snapshot_service_pb2.RestoreSnapshotRequest(
            snapshot_id=snapshot_id, resume_vm=resume_vm, vm_id=vm_id)
        try:
            restored = call_with_progress(conn, conn.snapshot.RestoreSnapshot, request,
                                          on_progress)
        except BaseException:
            conn.close()
            raise
        return cls._existing(restored, conn)

    @classmethod
    def from_pool(cls, pool_id: str, vm_id: str = "", *,
                  options: Optional[ClientOptions] = None) -> "SmolVM":
        """Claims a VM from warm pool `pool_id` (ClaimVm): RUNNING, with its
        own identity and clock stepped. `vm_id` picks a ready member ("" =
        any); an empty pool restores one on demand (see
        ``claimed_from_pool``)."""
        conn = Connection(options)
        request = pool_service_pb2.ClaimVmRequest(pool_id=pool_id, vm_id=vm_id)
        claimed = _call_or_close(conn, conn.pool.ClaimVm, request)
        vm = cls._existing(claimed.vm, conn)
        vm.claimed_from_pool = claimed.from_pool
        return vm

    @classmethod
    def attach(cls, vm_id: str, *, options: Optional[ClientOptions] = None) -> "SmolVM":
        """Returns a handle on the existing VM `vm_id` (GetVm)."""
        conn = Connection(options)
        return cls._existing(
            _call_or_close(conn, conn.vm.GetVm, vm_service_pb2.GetVmRequest(vm_id=vm_id)), conn)

    # --- Networking ----------------------------------------------------------

    def expose_port(self, host_port: int, guest_port: int, host_ip: str = "",
                    protocol: str = "tcp") -> "SmolVM":
        """Makes guest port `guest_port` reachable at `host_ip`:`host_port`
        ("" = 127.0.0.1) (ExposePort). ALREADY_EXISTS if the port is taken."""
        self._check_started("expose port")
        conn = self._connection
        forward = types_pb2.PortForward(host_ip=host_ip, host_port=host_port,
                                        guest_port=guest_port, protocol=protocol)
        request = vm_service_pb2.ExposePortRequest(vm_id=self.vm_id, forward=forward)
        return self._set_info(conn.call(conn.vm.ExposePort, request))

    def update_network_policy(self, egress: "EgressPolicy") -> "SmolVM":
        """Replaces the VM's egress policy (UpdateNetworkPolicy), in any
        state; for a running VM in force on return (what the guest sends on
        connections already open is judged by it too); kept across daemon
        restarts and in snapshots."""
        self._check_started("update the network policy of")
        conn = self._connection
        request = vm_service_pb2.UpdateNetworkPolicyRequest(vm_id=self.vm_id,
                                                            egress=egress.to_proto())
        return self._set_info(conn.call(conn.vm.UpdateNetworkPolicy, request))

    def set_lifetime(self, lifetime: Optional["Lifetime"] = None) -> "SmolVM":
        """Replaces the VM's lifetime policy (SetLifetime): extends, shortens
        or, with None, clears it; max_lifetime counts from now."""
        self._check_started("set the lifetime of")
        conn = self._connection
        request = vm_service_pb2.SetLifetimeRequest(vm_id=self.vm_id)
        if lifetime is not None:
            request.lifetime.CopyFrom(_nested(lifetime, Lifetime).to_proto())
        return self._set_info(conn.call(conn.vm.SetLifetime, request))

    def unexpose_port(self, host_port: int, host_ip: str = "",
                      protocol: str = "tcp") -> "SmolVM":
        """Removes the forward on `host_ip`:`host_port` (UnexposePort)."""
        self._check_started("unexpose port")
        conn = self._connection
        request = vm_service_pb2.UnexposePortRequest(
            vm_id=self.vm_id, host_ip=host_ip, host_port=host_port, protocol=protocol)
        return self._set_info(conn.call(conn.vm.UnexposePort, request))

    # --- Commands (Exec; the VM must be RUNNING) -----------------------------

    def run(self, cmd: Command, timeout: Optional[float] = None, *,
            env: Optional[Dict[str, str]] = None, cwd: str = "",
            stdin: Union[str, bytes, None] = None, user: str = "") -> CommandResult:
        """Runs `cmd` in the guest and waits for it: a string runs with
        ``/bin/sh -c``, a list is an argv (no shell).

        Args:
            timeout: seconds; the guest kills the command's process group
                then and the result has ``timed_out``. None = no limit.
            env: added to the VM's environment (these win).
            cwd: working directory ("" = /root, or `user`'s home).
            stdin: the command's whole stdin (at most 16 MiB); None =
                /dev/null.
            user: the guest user to run as, a name from the guest's
                /etc/passwd or a numeric uid ("" = root); USER, LOGNAME and
                HOME follow it (`env` still wins).

        A failing command is a result (check ``.ok`` / ``.exit_code``); an
        exception means it could not run: NotFoundError for no such program
        (argv form) or cwd, PermissionDeniedError for one not executable,
        InvalidArgumentError for an unknown `user`, FailedPreconditionError
        for a VM not RUNNING, UnavailableError for an unreachable daemon...
        The RPC deadline is max(client timeout, timeout + 60 s), none without
        a timeout.
        """
        return self.exec(cmd, timeout=timeout, env=env, cwd=cwd, stdin=stdin, user=user)

    def exec(self, argv: Command, timeout: Optional[float] = None, *,
             env: Optional[Dict[str, str]] = None, cwd: str = "",
             stdin: Union[str, bytes, None] = None, user: str = "",
             on_output: Optional[_streams.OutputCallback] = None) -> CommandResult:
        """Runs `argv` like :meth:`run`; with `on_output`, each chunk of
        output is passed to ``on_output("stdout" | "stderr", data)`` as it
        arrives instead of being buffered into the result."""
        self._check_started("exec in")
        request = _streams.exec_request(self.vm_id, argv, env, cwd, stdin, timeout, user)
        return _streams.run_exec(self._connection, request, timeout, on_output)

    def exec_session(self, cmd: Command, *, tty: bool = False, rows: int = 0, cols: int = 0,
                     term: str = "", env: Optional[Dict[str, str]] = None, cwd: str = "",
                     user: str = "", timeout: Optional[float] = None) -> ExecSession:
        """Starts `cmd` as an interactive command (ExecStream): a string runs
        with ``/bin/sh -c``, a list is an argv, with `env`, `cwd`, `user` and
        `timeout` as in :meth:`run`. Its stdin is streamed
        (``write_stdin()`` / ``close_stdin()``; until then the command reads
        and waits), signals and terminal resizes are sent while it runs, and
        its output is read as it comes. Returns an
        :class:`~smolvm.exec_session.ExecSession`, a context manager that
        cancels the command if it is still running on exit::

            with vm.exec_session(["sh"], tty=True, rows=24, cols=80) as s:
                s.write_stdin("stty size; exit\\n")
                for out in s:                # ProcessOutput
                    print(out.text, end="")  # "24 80"
                print(s.exit.exit_code)      # 0 (CommandResult)

        Args:
            tty: run on a pseudo-terminal in the guest (its controlling
                terminal: job control, ^C, ``stty size``); all output is
                then stdout.
            rows, cols: with `tty`, the terminal's initial size (1-1000;
                0 and 0 = 24 x 80).
            term: with `tty`, TERM ("" = xterm-256color; `env` wins).

        The command dies with the session: cancel(), leaving the ``with``
        block before the exit, dropping the session, a lost client or a
        daemon restart kill its process group. Errors of the start
        (NotFoundError for no such program, ...) are raised by the session's
        iteration, ``wait()`` and writers, not here. The RPC deadline is
        max(client timeout, timeout + 60 s), none without a timeout.
        """
        self._check_started("exec session in")
        request = _streams.exec_request(self.vm_id, cmd, env, cwd, None, timeout, user)
        return ExecSession(self._connection, request, tty=tty, rows=rows, cols=cols, term=term,
                           command_timeout=timeout)

    # --- Files (UploadFile / DownloadFile; the VM must be RUNNING) -----------

    def upload_file(self, local_path: str, remote_path: str, mode: int = 0, *,
                    user: str = "") -> None:
        """Copies the local regular file `local_path` to the absolute guest
        path `remote_path` (parents created), which the guest replaces
        atomically. `mode` is its permission bits (0 = 0644). `user` (here
        and in the other file methods; a name or uid as in :meth:`run`, "" =
        root) is the guest user whose permissions apply and who owns what is
        written. A local file that cannot be read raises its OSError."""
        self._check_started("upload to")
        _streams.check_regular_file(local_path)
        with open(local_path, "rb") as source:
            self._upload(source, remote_path, mode, user)

    def upload_bytes(self, data: Union[bytes, str], remote_path: str, mode: int = 0, *,
                     user: str = "") -> None:
        """Writes `data` (str is UTF-8 encoded) to the guest file
        `remote_path`, like :meth:`upload_file`."""
        self._check_started("upload to")
        self._upload(io.BytesIO(data.encode() if isinstance(data, str) else data),
                     remote_path, mode, user)

    def _upload(self, source: BinaryIO, remote_path: str, mode: int, user: str) -> None:
        header = vm_service_pb2.UploadFileHeader(vm_id=self.vm_id, path=remote_path,
                                                 mode=mode, make_parents=True, user=user)
        _streams.upload(self._connection, header, source)

    def download_file(self, remote_path: str, local_path: str, *, user: str = "") -> None:
        """Copies the guest file `remote_path` (read as `user`, "" = root) to
        `local_path`, through a temporary file renamed over it when complete
        (so `local_path` is untouched or whole), with the guest file's
        permission bits."""
        self._check_started("download from")
        _streams.download_to_file(self._connection, self.vm_id, remote_path, local_path, user)

    def download_bytes(self, remote_path: str, *, user: str = "") -> bytes:
        """Returns the contents of the guest file `remote_path` (read as
        `user`, "" = root)."""
        self._check_started("download from")
        chunks: List[bytes] = []
        _streams.download(self._connection, self.vm_id, remote_path, chunks.append, user)
        return b"".join(chunks)

    # --- Guest file system (FilesystemService; the VM must be RUNNING) -------
    #
    # Paths are absolute or relative to `user`'s home ("" user = root, whose
    # permissions then apply). Errors carry the guest's meaning and name the
    # path: NotFoundError (missing), AlreadyExistsError (existing target),
    # PermissionDeniedError, ResourceExhaustedError (full disk),
    # InvalidArgumentError (a directory where a file was expected, or the
    # reverse), FailedPreconditionError (a non-empty directory without
    # `recursive`; also an image whose agent predates these calls).

    def _request(self, operation: str, message: Callable[..., T], **fields: object) -> T:
        """`message` (a request type) with this VM's id and `fields`; a
        field of the wrong type or range is INVALID_ARGUMENT. Raises
        FailedPreconditionError before start() and after close()."""
        self._check_started(operation)
        try:
            return message(vm_id=self.vm_id, **fields)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(message=f"{operation} vm {self.vm_id}: {e}") from None

    def stat_path(self, path: str, *, user: str = "") -> FileEntry:
        """Describes `path` (StatPath), as lstat does: a symlink is reported
        (type SYMLINK, ``symlink_target``), not followed. NotFoundError if
        it does not exist."""
        conn = self._connection
        request = self._request("stat path in", filesystem_service_pb2.StatPathRequest,
                                path=path, user=user)
        return FileEntry.from_proto(conn.call(conn.filesystem.StatPath, request).entry)

    def list_dir(self, path: str = "", depth: int = 1, *, user: str = "") -> ListDirResult:
        """Lists what is under the directory `path` ("" = `user`'s home)
        (ListDir): `depth` (1-32) levels down, breadth-first, each
        directory's entries sorted by name; symlinks are listed, not
        followed. At most 10,000 entries: ``truncated`` then says the
        entries are a prefix."""
        conn = self._connection
        request = self._request("list dir in", filesystem_service_pb2.ListDirRequest,
                                path=path, user=user, depth=depth)
        return ListDirResult.from_proto(conn.call(conn.filesystem.ListDir, request))

    def make_dir(self, path: str, parents: bool = False, mode: int = 0, *,
                 user: str = "") -> bool:
        """Makes the directory `path` (MakeDir), owned by `user`, with
        permission bits `mode` (0 = 0755; the guest's umask 022 applies).
        With `parents` the missing directories above it are made too, and
        an existing directory is not an error. Returns whether it was
        created (False: it existed, only with `parents`); without `parents`
        an existing path is AlreadyExistsError. :meth:`stat_path` describes
        the directory."""
        conn = self._connection
        request = self._request("make dir in", filesystem_service_pb2.MakeDirRequest,
                                path=path, user=user, parents=parents, mode=mode)
        return conn.call(conn.filesystem.MakeDir, request).created

    def remove_path(self, path: str, recursive: bool = False, *, user: str = "") -> None:
        """Removes the file, symlink or empty directory `path` (RemovePath);
        with `recursive` a whole tree (symlinks in it are removed, never
        followed). A non-empty directory without `recursive` is
        FailedPreconditionError; a missing path NotFoundError."""
        conn = self._connection
        request = self._request("remove path in", filesystem_service_pb2.RemovePathRequest,
                                path=path, user=user, recursive=recursive)
        conn.call(conn.filesystem.RemovePath, request)

    def rename_path(self, path: str, new_path: str, overwrite: bool = False, *,
                    user: str = "") -> FileEntry:
        """Moves `path` to `new_path` within the guest (RenamePath); an
        existing `new_path` is AlreadyExistsError unless `overwrite`.
        Returns what is now at `new_path`."""
        conn = self._connection
        request = self._request("rename path in", filesystem_service_pb2.RenamePathRequest,
                                path=path, new_path=new_path, user=user,
                                overwrite=overwrite)
        return FileEntry.from_proto(conn.call(conn.filesystem.RenamePath, request).entry)

    def watch_dir(self, path: str, recursive: bool = False, *, user: str = "",
                  timeout: Optional[float] = None) -> DirWatch:
        """Watches the directory `path` (WatchDir; inotify in the guest),
        with `recursive` every directory below it too (up to 4,096,
        including ones made later).

        Returns once the watch is in place in the guest (waiting at most the
        connection's per-call timeout), so every change after the return is
        seen. The :class:`~smolvm.fs.DirWatch` is an iterator of
        :class:`~smolvm.fs.WatchEvent` and a context manager::

            with vm.watch_dir("/tmp/jobs", timeout=30) as watch:
                for event in watch:
                    print(event.type, event.path)

        The iteration ends without raising after ``close()`` / ``cancel()``
        (from any thread) or `timeout` seconds after this call (None or 0 =
        no limit), and raises the SmolVMError of any other end (the VM
        stopped, the daemon lost).
        """
        request = self._request("watch dir in", filesystem_service_pb2.WatchDirRequest,
                                path=path, user=user, recursive=recursive)
        return DirWatch(self._connection, request, timeout)

    # --- The guest console (StreamConsole; RUNNING or PAUSED) ---------------

    def console(self, follow: bool = False, tail_bytes: Optional[int] = None, *,
                timeout: Optional[float] = None) -> ConsoleStream:
        """Streams the guest's serial console as the daemon keeps it
        (StreamConsole): first the last `tail_bytes` (None = all that is
        kept, 0 = none), then with `follow` what the guest writes until the
        VM stops. The :class:`~smolvm.console.ConsoleStream` is an iterator
        of ``bytes`` and a context manager; `timeout` seconds after this
        call (None or 0 = no limit) the iteration ends without raising."""
        request = self._request("stream the console of", vm_service_pb2.StreamConsoleRequest,
                                follow=follow)
        if tail_bytes is not None:
            request.tail_bytes = tail_bytes
        return ConsoleStream(self._connection, request, timeout)

    # --- Resource use (GetVmStats / WatchVmStats; RUNNING or PAUSED) --------

    def stats(self) -> VmStats:
        """What the VM uses now (GetVmStats)."""
        conn = self._connection
        request = self._request("get the stats of", vm_service_pb2.GetVmStatsRequest)
        return VmStats.from_proto(conn.call(conn.vm.GetVmStats, request))

    def watch_stats(self, interval: float = 5.0, *,
                    timeout: Optional[float] = None) -> StatsWatch:
        """A :class:`~smolvm.stats.VmStats` every `interval` seconds (1 to
        3600) until the VM stops (WatchVmStats); `timeout` seconds after
        this call (None or 0 = no limit) the iteration ends."""
        request = self._request("watch the stats of", vm_service_pb2.WatchVmStatsRequest,
                                interval_ms=int(interval * 1000))
        return StatsWatch(self._connection, request, timeout)

    # --- Background processes (ProcessService; the VM must be RUNNING) ------
    #
    # A background process belongs to the guest: it runs whether or not a
    # client is attached, outlives this handle, this client and a daemon
    # restart, and is part of the VM's memory (snapshots, restores and forks
    # keep it). The guest keeps its last 256 KiB of output for any client to
    # attach to, and tracks up to 64 processes (a new one evicts the oldest
    # exited one; with 64 running, ResourceExhaustedError). Images whose
    # agent predates these calls answer FailedPreconditionError.

    def start_process(self, cmd: Command, *, env: Optional[Dict[str, str]] = None,
                      cwd: str = "", user: str = "") -> ProcessInfo:
        """Starts `cmd` in the background (StartProcess) and returns once it
        runs: a string runs with ``/bin/sh -c``, a list is an argv (no
        shell), as in :meth:`run`, with its `env`, `cwd` and `user` (the
        process has no stdin and no time limit).

        An exception means it could not start: NotFoundError for no such
        program (argv form) or cwd, PermissionDeniedError for one not
        executable, InvalidArgumentError for an unknown `user`.
        """
        self._check_started("start process in")
        fields: Dict[str, object] = {"cwd": cwd, "user": user}
        if isinstance(cmd, str):
            fields["command"] = cmd
        else:
            argv = list(cmd)
            if not argv:
                raise InvalidArgumentError(
                    message=f"start process in vm {self.vm_id}: empty argv")
            fields["argv"] = argv
        if env:
            fields["env"] = dict(env)
        conn = self._connection
        request = self._request("start process in", process_service_pb2.StartProcessRequest,
                                **fields)
        return ProcessInfo.from_proto(conn.call(conn.process.StartProcess, request))

    def list_processes(self) -> List[ProcessInfo]:
        """The tracked background processes, running and exited, by pid
        (ListProcesses)."""
        conn = self._connection
        request = self._request("list processes in",
                                process_service_pb2.ListProcessesRequest)
        return [ProcessInfo.from_proto(p)
                for p in conn.call(conn.process.ListProcesses, request).processes]

    def signal_process(self, pid: int, signal: Union[int, _signal.Signals] = 15, *,
                       group: bool = False) -> ProcessInfo:
        """Sends `signal` (1-64, e.g. ``signal.SIGKILL``; default SIGTERM)
        to the running process `pid`, with `group` to its whole process
        group (the process and its children) (SignalProcess). Returns the
        process as it was then (usually still running: :meth:`wait_process`
        waits for the end). NotFoundError if `pid` is not tracked or has
        exited."""
        self._check_started("signal process in")
        if not isinstance(signal, int) or isinstance(signal, bool):
            raise InvalidArgumentError(
                message=f"signal process {pid} in vm {self.vm_id}: signal {signal!r} "
                        "is not a number")
        conn = self._connection
        request = self._request("signal process in", process_service_pb2.SignalProcessRequest,
                                pid=pid, signal=int(signal), group=group)
        return ProcessInfo.from_proto(conn.call(conn.process.SignalProcess, request))

    def connect_process(self, pid: int, *, tail_bytes: int = 0,
                        timeout: Optional[float] = None) -> ProcessConnection:
        """Attaches to the output of process `pid` (ConnectProcess): first
        up to `tail_bytes` of what it wrote before (0 = only new output; at
        most the 256 KiB the guest keeps), then what it writes, then its
        exit. The :class:`~smolvm.process.ProcessConnection` is an iterator
        of :class:`~smolvm.process.ProcessOutput` and a context manager::

            with vm.connect_process(pid, tail_bytes=4096) as conn:
                for out in conn:
                    print(out.stream, out.text, end="")
            print(conn.exit)             # ProcessInfo, or None if detached

        The iteration ends when the process has exited (``conn.exit`` is
        then set; at once for an exited process, after its tail), and
        without raising after ``close()`` / ``cancel()`` (from any thread)
        or `timeout` seconds after this call (None or 0 = no limit; the call
        has no other deadline). Detaching never touches the process. Errors
        (NotFoundError for an unknown pid, the VM stopped, the daemon lost)
        are raised by the iteration.
        """
        request = self._request("connect to process in",
                                process_service_pb2.ConnectProcessRequest,
                                pid=pid, tail_bytes=tail_bytes)
        return ProcessConnection(self._connection, request, timeout)

    def wait_process(self, pid: int, *, timeout: Optional[float] = None) -> ProcessInfo:
        """Waits until process `pid` has exited and returns it
        (WaitProcess; at once for an exited one). `timeout`: seconds (None
        or 0 = no limit), after which DeadlineExceededError is raised and
        the process goes on. The RPC deadline is max(client timeout,
        timeout + 60 s), none without a timeout. NotFoundError if `pid` is
        not tracked."""
        conn = self._connection
        request = self._request("wait for process in", process_service_pb2.WaitProcessRequest,
                                pid=pid)
        request.timeout_ms = _streams.timeout_ms(
            timeout, f"wait for process {pid} in vm {self.vm_id}")
        deadline = _streams.exec_deadline(conn.options.timeout,
                                          timeout if request.timeout_ms else None)
        return ProcessInfo.from_proto(conn.call(conn.process.WaitProcess, request,
                                                timeout=deadline))


def _call_or_close(conn: Connection, method: Callable[..., T], request: Message) -> T:
    """conn.call, closing `conn` when the call fails (no handle owns it)."""
    try:
        return conn.call(method, request)
    except BaseException:
        conn.close()
        raise
