"""The SDK's value types and their mapping to the smolvm.v1 messages.

Names follow the SmolVM SDK and proto/smolvm/v1/types.proto field for field:
:class:`VMConfig`, :class:`NetworkConfig`, :class:`SnapshotInfo` (the seed's
attributes, with ``created_at`` a timezone-aware UTC ``datetime`` and
``restored_vm_id`` None until a restore), :class:`VMInfo` (a ``Vm``), plus
results of the SDK's calls (:class:`CommandResult`, :class:`ForkOutcome`,
:class:`ForkVmResult`, :class:`Pool`, :class:`Image`, ...). Each type converts from its message with
``from_proto``; the config types also convert back with ``to_proto``.
"""

import dataclasses
import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from google.protobuf import timestamp_pb2

from smolvm.errors import (InternalError, InvalidArgumentError, SmolVMError,
                           error_for_code_number)
from smolvm.v1 import (image_service_pb2, pool_service_pb2, snapshot_service_pb2,
                       types_pb2)

__all__ = [
    "VmStatus", "EgressPolicy", "PortForward", "Mount", "VMConfig", "NetworkConfig", "VMInfo",
    "SnapshotInfo", "CommandResult", "ForkOutcome", "ForkVmResult", "Pool", "Image",
    "BuiltImage", "FileCheck", "SnapshotVerification", "to_datetime", "coerce_config",
    "StatusLike", "coerce_status", "copy_labels",
]


def _copy_fields(src: Any, dst: Any, names: Sequence[str]) -> None:
    """Copies the scalar attributes `names` from `src` to `dst`."""
    for name in names:
        setattr(dst, name, getattr(src, name))


def _scalar_names(cls: Any, exclude: Sequence[str] = ()) -> List[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in exclude]


def to_datetime(ts: timestamp_pb2.Timestamp) -> Optional[datetime]:
    """A Timestamp as a timezone-aware UTC datetime; None when unset (0)."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return datetime.fromtimestamp(ts.seconds, tz=timezone.utc).replace(
        microsecond=ts.nanos // 1000)


class VmStatus(str, enum.Enum):
    """A VM's lifecycle state; reads like ``running`` in an f-string and
    compares equal to that string."""

    UNSPECIFIED = "unspecified"
    CREATED = "created"        #: Defined, never booted (or not yet).
    RUNNING = "running"        #: The guest is up and its agent answered.
    PAUSED = "paused"          #: vCPUs stopped (after a snapshot, or pause()).
    STOPPED = "stopped"        #: The VMM exited on request; start() boots it.
    ERROR = "error"            #: The VMM died or the guest never came up.

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def from_proto(cls, value: int) -> "VmStatus":
        """The status of a ``smolvm.v1.VmStatus`` number."""
        name = types_pb2.VmStatus.Name(value) if value in types_pb2.VmStatus.values() else ""
        return cls.__members__.get(name, cls.UNSPECIFIED)

    def to_proto(self) -> int:
        """The ``smolvm.v1.VmStatus`` number of this status."""
        if self is VmStatus.UNSPECIFIED:
            return types_pb2.VM_STATUS_UNSPECIFIED
        return types_pb2.VmStatus.Value(self.name)


#: A status as the SDK takes it: a VmStatus, its name ("running") or number.
StatusLike = Union[VmStatus, str, int]


def coerce_status(value: StatusLike) -> int:
    """`value` as a ``smolvm.v1.VmStatus`` number: a VmStatus, its value or
    name in any case ("running", "RUNNING") or a VmStatus number; anything
    else is INVALID_ARGUMENT."""
    if isinstance(value, VmStatus):
        return value.to_proto()
    if isinstance(value, str):
        status = VmStatus.__members__.get(value.upper())
        if status is None:
            known = ", ".join(s.value for s in VmStatus if s is not VmStatus.UNSPECIFIED)
            raise InvalidArgumentError(message=f'status "{value}": want one of {known}')
        return status.to_proto()
    valid_number = (isinstance(value, int) and not isinstance(value, bool)
                    and value in types_pb2.VmStatus.values())
    if valid_number:
        return value
    raise InvalidArgumentError(message=f"status {value!r}: want a VmStatus, its name or number")


def copy_labels(labels: Optional[Mapping[str, str]], dst: Any, what: str) -> None:
    """Copies `labels` (None = none) into the map field `dst`. A key or
    value that is not a str is INVALID_ARGUMENT; the daemon checks the rest
    (types.proto, VMConfig.labels)."""
    try:
        dst.update(labels or {})
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(message=f"{what}: labels: {e}") from None


_EGRESS_MODES = {"open": types_pb2.EgressPolicy.EGRESS_OPEN,
                 "off": types_pb2.EgressPolicy.EGRESS_OFF,
                 "restricted": types_pb2.EgressPolicy.EGRESS_RESTRICTED}


@dataclass
class EgressPolicy:
    """What a guest may reach: mode "open" (default), "off" or "restricted"
    (only `allow_cidrs`, IPv4 CIDRs, and the addresses DNS gives for
    `allow_domains`, names like "example.com" or "*.example.com"), in open
    and restricted mode never `deny_cidrs` (checked before any allow) and
    never a name of `deny_domains` (NXDOMAIN)."""

    mode: str = "open"
    allow_cidrs: List[str] = field(default_factory=list)
    deny_cidrs: List[str] = field(default_factory=list)
    allow_domains: List[str] = field(default_factory=list)
    deny_domains: List[str] = field(default_factory=list)

    def to_proto(self) -> types_pb2.EgressPolicy:
        if self.mode not in _EGRESS_MODES:
            raise InvalidArgumentError(message=(
                f'egress mode "{self.mode}": want one of {", ".join(_EGRESS_MODES)}'))
        return types_pb2.EgressPolicy(mode=_EGRESS_MODES[self.mode],
                                      allow_cidrs=list(self.allow_cidrs),
                                      deny_cidrs=list(self.deny_cidrs),
                                      allow_domains=list(self.allow_domains),
                                      deny_domains=list(self.deny_domains))

    @classmethod
    def from_proto(cls, msg: types_pb2.EgressPolicy) -> "EgressPolicy":
        mode = next((k for k, v in _EGRESS_MODES.items() if v == msg.mode), "open")
        return cls(mode=mode, allow_cidrs=list(msg.allow_cidrs),
                   deny_cidrs=list(msg.deny_cidrs),
                   allow_domains=list(msg.allow_domains),
                   deny_domains=list(msg.deny_domains))


_LIFETIME_ACTIONS = {"delete": types_pb2.LIFETIME_DELETE,
                     "stop": types_pb2.LIFETIME_STOP,
                     "pause": types_pb2.LIFETIME_PAUSE,
                     "snapshot": types_pb2.LIFETIME_SNAPSHOT}


def _lifetime_action(name: str, what: str) -> int:
    if name not in _LIFETIME_ACTIONS:
        raise InvalidArgumentError(message=(
            f'{what} "{name}": want one of {", ".join(_LIFETIME_ACTIONS)}'))
    return _LIFETIME_ACTIONS[name]


def _lifetime_action_name(value: int, unset: str) -> str:
    return next((k for k, v in _LIFETIME_ACTIONS.items() if v == value), unset)


@dataclass
class Lifetime:
    """When the daemon acts on a VM by itself (smolvm.v1.Lifetime):
    `max_lifetime` seconds after its creation (or set_lifetime), and after
    `idle_timeout` seconds without guest calls, execs, processes or
    forwarded connections; actions "delete", "stop", "pause", "snapshot".
    0 = no limit. A VM the idle policy paused resumes on the next guest
    call or forwarded connection unless `auto_resume` is False."""

    max_lifetime: int = 0
    max_lifetime_action: str = "delete"
    idle_timeout: int = 0
    idle_action: str = "pause"
    auto_resume: bool = True

    def to_proto(self) -> types_pb2.Lifetime:
        try:
            return types_pb2.Lifetime(
                max_lifetime_seconds=self.max_lifetime,
                max_lifetime_action=_lifetime_action(self.max_lifetime_action,
                                                     "max_lifetime_action"),
                idle_timeout_seconds=self.idle_timeout,
                idle_action=_lifetime_action(self.idle_action, "idle_action"),
                auto_resume=self.auto_resume)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(message=f"Lifetime: {e}") from None

    @classmethod
    def from_proto(cls, msg: types_pb2.Lifetime) -> "Lifetime":
        return cls(max_lifetime=msg.max_lifetime_seconds,
                   max_lifetime_action=_lifetime_action_name(msg.max_lifetime_action, "delete"),
                   idle_timeout=msg.idle_timeout_seconds,
                   idle_action=_lifetime_action_name(msg.idle_action, "pause"),
                   auto_resume=msg.auto_resume if msg.HasField("auto_resume") else True)


def _flat_to_proto(value: Any, msg: Any) -> Any:
    """Fills `msg` from the dataclass `value`, whose fields are all scalars."""
    try:
        _copy_fields(value, msg, _scalar_names(type(value)))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(message=f"{type(value).__name__}: {e}") from None
    return msg


def _flat_from_proto(cls: Any, msg: Any) -> Any:
    """The dataclass `cls` (scalar fields only) from `msg`."""
    out = cls()
    _copy_fields(msg, out, _scalar_names(cls))
    return out


@dataclass
class PortForward:
    """A guest port reachable on a host address ("" = 127.0.0.1)."""

    host_port: int = 0
    guest_port: int = 0
    host_ip: str = ""
    protocol: str = "tcp"

    def to_proto(self) -> types_pb2.PortForward:
        return _flat_to_proto(self, types_pb2.PortForward())

    @classmethod
    def from_proto(cls, msg: types_pb2.PortForward) -> "PortForward":
        return _flat_from_proto(cls, msg)


@dataclass
class Mount:
    """A host directory shown to the guest over virtio-9p (smolvm.v1.Mount):
    `host_path` beneath the operator's ``[mounts] allowed_dirs``, mounted at
    `guest_path` by the guest's init. A VM with mounts can be snapshotted
    only when every mount sets `detach_on_snapshot` (the guest unmounts it
    for the snapshot and mounts it again after)."""

    host_path: str = ""
    guest_path: str = ""
    read_only: bool = False
    detach_on_snapshot: bool = False

    def to_proto(self) -> types_pb2.Mount:
        return _flat_to_proto(self, types_pb2.Mount())

    @classmethod
    def from_proto(cls, msg: types_pb2.Mount) -> "Mount":
        return _flat_from_proto(cls, msg)


def _nested(value: Any, cls: Any) -> Any:
    """`value` as an instance of the dataclass `cls` (from a dict, too)."""
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return _from_dict(cls, value)
    raise InvalidArgumentError(message=f"{cls.__name__}: want a {cls.__name__} or a dict, "
                                       f"got {type(value).__name__}")


def _from_dict(cls: Any, values: Mapping[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidArgumentError(message=(
            f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"))
    return cls(**values)


@dataclass
class VMConfig:
    """The shape of a microVM (smolvm.v1.VMConfig). Zero values and empty
    strings mean the daemon's defaults: a generated `vm_id`, 2 vCPUs, 512
    MiB, the default image."""

    vm_id: str = ""
    vcpu_count: int = 0               #: 1-32; 0 = 2.
    memory_mib: int = 0               #: 128-16384; 0 = 512.
    kernel_path: str = ""             #: Host path (admins); "" = the image's.
    initrd_path: str = ""
    rootfs_path: str = ""
    boot_args: str = ""               #: Appended to the daemon's command line.
    env: Dict[str, str] = field(default_factory=dict)  #: Of every exec.
    egress: Optional[EgressPolicy] = None               #: None = open.
    port_forwards: List[PortForward] = field(default_factory=list)
    image: str = ""                   #: "debian-python", "minimal", "name:tag".
    disk_size_mib: int = 0            #: 0 = the image's.
    image_digest: str = ""            #: Set by the daemon.
    #: The caller's key=value tags; ``SmolVMManager.list_vms(labels=...)``
    #: filters by them. At most 32.
    labels: Dict[str, str] = field(default_factory=dict)
    lifetime: Optional[Lifetime] = None                 #: None = no limits.
    #: Host directories shown to the guest (`Mount`s or dicts); at most 8.
    mounts: List[Mount] = field(default_factory=list)

    _SCALARS = ("vm_id", "vcpu_count", "memory_mib", "kernel_path", "initrd_path",
                "rootfs_path", "boot_args", "image", "disk_size_mib", "image_digest")

    def to_proto(self) -> types_pb2.VMConfig:
        """The smolvm.v1.VMConfig message."""
        msg = types_pb2.VMConfig()
        try:
            _copy_fields(self, msg, self._SCALARS)
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(message=f"VMConfig: {e}") from None
        msg.env.update(self.env)
        copy_labels(self.labels, msg.labels, "VMConfig")
        if self.egress is not None:
            msg.egress.CopyFrom(_nested(self.egress, EgressPolicy).to_proto())
        msg.port_forwards.extend(_nested(p, PortForward).to_proto() for p in self.port_forwards)
        if self.lifetime is not None:
            msg.lifetime.CopyFrom(_nested(self.lifetime, Lifetime).to_proto())
        msg.mounts.extend(_nested(m, Mount).to_proto() for m in self.mounts)
        return msg

    @classmethod
    def from_proto(cls, msg: types_pb2.VMConfig) -> "VMConfig":
        out = cls(env=dict(msg.env), labels=dict(msg.labels),
                  egress=EgressPolicy.from_proto(msg.egress) if msg.HasField("egress") else None,
                  port_forwards=[PortForward.from_proto(p) for p in msg.port_forwards],
                  lifetime=Lifetime.from_proto(msg.lifetime) if msg.HasField("lifetime")
                  else None,
                  mounts=[Mount.from_proto(m) for m in msg.mounts])
        _copy_fields(msg, out, cls._SCALARS)
        return out


ConfigLike = Union[VMConfig, Mapping[str, Any], types_pb2.VMConfig, None]


def coerce_config(config: ConfigLike) -> VMConfig:
    """`config` as a VMConfig: None (defaults), a VMConfig, a dict of its
    fields (unknown keys are INVALID_ARGUMENT) or a smolvm.v1.VMConfig."""
    if config is None:
        return VMConfig()
    if isinstance(config, VMConfig):
        return config
    if isinstance(config, types_pb2.VMConfig):
        return VMConfig.from_proto(config)
    if isinstance(config, Mapping):
        return _from_dict(VMConfig, config)
    raise InvalidArgumentError(message=(
        f"config: want a VMConfig, a dict or None, got {type(config).__name__}"))


@dataclass
class NetworkConfig:
    """A VM's network identity (smolvm.v1.NetworkConfig); empty strings
    mean no networking."""

    guest_ip: str = ""
    gateway_ip: str = ""
    netmask: str = ""
    tap_device: str = ""
    guest_mac: str = ""
    dns_server: str = ""
    port_forwards: List[PortForward] = field(default_factory=list)
    egress: EgressPolicy = field(default_factory=EgressPolicy)

    @classmethod
    def from_proto(cls, msg: types_pb2.NetworkConfig) -> "NetworkConfig":
        out = cls(port_forwards=[PortForward.from_proto(p) for p in msg.port_forwards],
                  egress=EgressPolicy.from_proto(msg.egress))
        _copy_fields(msg, out, _scalar_names(cls, ("port_forwards", "egress")))
        return out


@dataclass
class VMInfo:
    """A VM as the daemon reports it (smolvm.v1.Vm)."""

    vm_id: str
    status: VmStatus
    config: VMConfig
    network: NetworkConfig
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    error: str = ""                      #: Why it is in ERROR.
    vmm_pid: int = 0
    restored_from_snapshot_id: str = ""
    owner: str = ""
    vmm_uid: int = 0
    pool_id: str = ""
    #: When the max_lifetime runs out (UTC) and what happens then.
    lifetime_deadline: Optional[datetime] = None
    lifetime_action: str = ""
    idle_paused: bool = False            #: Paused by its idle policy.
    lifetime_snapshot_id: str = ""       #: Taken by a "snapshot" action.

    @classmethod
    def from_proto(cls, msg: types_pb2.Vm) -> "VMInfo":
        out = cls(vm_id=msg.vm_id, status=VmStatus.from_proto(msg.status),
                  config=VMConfig.from_proto(msg.config),
                  network=NetworkConfig.from_proto(msg.network),
                  created_at=to_datetime(msg.created_at), updated_at=to_datetime(msg.updated_at))
        _copy_fields(msg, out, ("error", "vmm_pid", "restored_from_snapshot_id", "owner",
                                "vmm_uid", "pool_id", "idle_paused", "lifetime_snapshot_id"))
        if msg.HasField("lifetime_deadline"):
            out.lifetime_deadline = to_datetime(msg.lifetime_deadline)
            out.lifetime_action = _lifetime_action_name(msg.lifetime_action, "")
        return out


@dataclass
class SnapshotInfo:
    """A snapshot (smolvm.v1.SnapshotInfo): the seed's ten attributes, then
    smolvmd's own."""

    snapshot_id: str
    vm_id: str                         #: The VM it was taken from.
    snapshot_path: str                 #: Device state: .../vmstate.bin
    mem_file_path: str                 #: Guest memory: .../mem.bin
    disk_path: str                     #: Root disk: .../disk.ext4
    vm_config: VMConfig
    network_config: NetworkConfig
    created_at: datetime               #: UTC.
    restored: bool = False             #: True once any restore succeeded.
    restored_vm_id: Optional[str] = None  #: The VM of the latest restore.
    size_bytes: int = 0                #: Allocated bytes of the three files.
    accelerator: str = ""              #: "kvm" or "tcg".
    owner: str = ""
    #: The snapshot's own tags (``SmolVM.snapshot(labels=...)``); the source
    #: VM's are in ``vm_config.labels``.
    labels: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: types_pb2.SnapshotInfo) -> "SnapshotInfo":
        return cls(
            snapshot_id=msg.snapshot_id, vm_id=msg.vm_id, snapshot_path=msg.snapshot_path,
            mem_file_path=msg.mem_file_path, disk_path=msg.disk_path,
            vm_config=VMConfig.from_proto(msg.vm_config),
            network_config=NetworkConfig.from_proto(msg.network_config),
            created_at=to_datetime(msg.created_at) or datetime.fromtimestamp(0, timezone.utc),
            restored=msg.restored,
            restored_vm_id=msg.restored_vm_id if msg.HasField("restored_vm_id") else None,
            size_bytes=msg.size_bytes, accelerator=msg.accelerator, owner=msg.owner,
            labels=dict(msg.labels))


@dataclass
class CommandResult:
    """How a command run by ``SmolVM.run()`` / ``exec()`` ended, and what it
    wrote. A failing command is a result, not an exception: check ``ok``."""

    exit_code: int = 0              #: Meaningful when signal == 0 and not timed_out.
    stdout: str = ""                #: Decoded as UTF-8 (invalid bytes replaced).
    stderr: str = ""
    signal: int = 0                 #: The signal that ended it, or 0.
    timed_out: bool = False         #: Killed at the run's timeout.
    stdout_bytes: bytes = b""       #: The raw bytes.
    stderr_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        """True when the command exited by itself with status 0."""
        return self.exit_code == 0 and self.signal == 0 and not self.timed_out

    @property
    def output(self) -> str:
        """stdout without leading and trailing whitespace."""
        return self.stdout.strip()


@dataclass
class ForkOutcome:
    """One clone of ``SmolVMManager.fork_snapshot()`` or child of
    ``SmolVM.fork()``: its `vm` when it was restored, else the `error` that
    stopped it."""

    vm_id: str
    vm: Optional[VMInfo] = None
    error: Optional[SmolVMError] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_proto(cls, msg: snapshot_service_pb2.ForkResult, what: str) -> "ForkOutcome":
        """The outcome of a ForkSnapshot / ForkVm result: its VM, or the
        daemon's error_code (a google.rpc.Code) as a SmolVMError. A result
        with neither is INTERNAL; `what` ("fork snapshot X") names the call
        in that message."""
        outcome = cls(vm_id=msg.vm_id)
        if msg.error_code != 0:
            outcome.error = error_for_code_number(msg.error_code, msg.error_message)
        elif not msg.HasField("vm"):
            outcome.error = InternalError(message=(
                f"{what}: daemon reported clone {msg.vm_id} as created but returned no VM"))
        else:
            outcome.vm = VMInfo.from_proto(msg.vm)
        return outcome


@dataclass
class ForkVmResult:
    """What ``SmolVM.fork()`` made: the snapshot the children came from
    (kept; fork more from it with ``SmolVMManager.fork_snapshot()``, delete
    it like any other) and one outcome per child, in order."""

    snapshot_id: str
    children: List[ForkOutcome] = field(default_factory=list)


@dataclass
class Pool:
    """A warm pool (smolvm.v1.Pool)."""

    pool_id: str
    snapshot_id: str
    size: int
    owner: str = ""
    created_at: Optional[datetime] = None
    ready_vm_ids: List[str] = field(default_factory=list)  #: Claimable now.
    starting: int = 0                                      #: Being restored.
    last_error: str = ""

    @classmethod
    def from_proto(cls, msg: pool_service_pb2.Pool) -> "Pool":
        return cls(pool_id=msg.pool_id, snapshot_id=msg.snapshot_id, size=msg.size,
                   owner=msg.owner, created_at=to_datetime(msg.created_at),
                   ready_vm_ids=list(msg.ready_vm_ids), starting=msg.starting,
                   last_error=msg.last_error)


@dataclass
class Image:
    """An image VMs boot from (smolvm.v1.Image)."""

    digest: str
    names: List[str] = field(default_factory=list)
    owner: str = ""                  #: "" = built in.
    source_kind: str = ""
    source: str = ""                 #: The build request's source, as JSON.
    size_bytes: int = 0
    disk_size_bytes: int = 0
    created_at: Optional[datetime] = None
    kernel_version: str = ""
    kernel_package: str = ""
    exec_env: Dict[str, str] = field(default_factory=dict)
    exec_working_dir: str = ""
    build_ms: int = 0
    used_by: List[str] = field(default_factory=list)

    @classmethod
    def from_proto(cls, msg: image_service_pb2.Image) -> "Image":
        created = (datetime.fromtimestamp(msg.created_at_unix_ms / 1000, tz=timezone.utc)
                   if msg.created_at_unix_ms else None)
        return cls(digest=msg.digest, names=list(msg.names), owner=msg.owner,
                   source_kind=msg.source_kind, source=msg.source, size_bytes=msg.size_bytes,
                   disk_size_bytes=msg.disk_size_bytes, created_at=created,
                   kernel_version=msg.kernel_version, kernel_package=msg.kernel_package,
                   exec_env=dict(msg.exec_defaults.env),
                   exec_working_dir=msg.exec_defaults.working_dir, build_ms=msg.build_ms,
                   used_by=list(msg.used_by))


@dataclass
class BuiltImage:
    """What ``SmolVMManager.build_image()`` returns: the image and, for a
    warm build, its snapshot."""

    image: Image
    warm_snapshot: Optional[SnapshotInfo] = None


@dataclass
class FileCheck:
    """One file of a snapshot and its checksums (smolvm.v1.FileCheck)."""

    name: str
    path: str
    expected: str
    actual: str
    ok: bool


@dataclass
class SnapshotVerification:
    """The result of ``SmolVMManager.verify_snapshot()``."""

    snapshot_id: str
    files: List[FileCheck]
    ok: bool                 #: Every file matches (False if legacy).
    legacy: bool             #: Taken before checksums were recorded.
    duration_ms: int = 0
    bytes_read: int = 0

    @classmethod
    def from_proto(cls, msg: snapshot_service_pb2.VerifySnapshotResponse
                   ) -> "SnapshotVerification":
        return cls(snapshot_id=msg.snapshot_id,
                   files=[FileCheck(f.name, f.path, f.expected, f.actual, f.ok)
                          for f in msg.files],
                   ok=msg.ok, legacy=msg.legacy, duration_ms=msg.duration_ms,
                   bytes_read=msg.bytes_read)
