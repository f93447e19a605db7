"""How the SDK reaches smolvmd: endpoint resolution, the channel, deadlines.

Mirrors the C++ client (client/connection.{h,cc}). The endpoint is the first
that is set of: ``ClientOptions.endpoint``, ``ClientOptions.socket_path``,
``$SMOLVMD_ENDPOINT``, ``$SMOLVMD_SOCKET``, ``/run/smolvmd/smolvmd.sock``.
An endpoint is ``unix:///abs/path``, ``unix:/abs/path``, ``unix:rel/path`` or
a bare ``/abs/path`` for a Unix socket (whose permissions are its access
control), or ``host:port`` / ``[v6addr]:port`` for TCP, which always uses
mutual TLS with the client certificate, key and CA of ``ClientOptions.tls_*``
or ``$SMOLVMD_TLS_CERT`` / ``$SMOLVMD_TLS_KEY`` / ``$SMOLVMD_TLS_CA``.

A :class:`Connection` with unusable options (malformed endpoint:
INVALID_ARGUMENT; a TCP endpoint without all three TLS files or with an
unreadable one: FAILED_PRECONDITION naming the option and its variable)
sends nothing and raises that error from every call, like the C++ client.
Constructing one does no I/O besides reading the TLS files; the channel
connects on the first call, and calls fail fast (no wait-for-ready).
"""

import grp
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import grpc

from smolvm.errors import (FailedPreconditionError, InvalidArgumentError,
                           PermissionDeniedError, SmolVMError, UnavailableError, from_rpc_error)
from smolvm.v1 import (event_service_pb2_grpc, filesystem_service_pb2_grpc,
                       image_service_pb2_grpc,
                       operation_service_pb2_grpc, pool_service_pb2_grpc,
                       process_service_pb2_grpc, snapshot_service_pb2_grpc,
                       vm_service_pb2_grpc)

__all__ = [
    "DEFAULT_SOCKET_PATH", "SOCKET_ENV_VAR", "ENDPOINT_ENV_VAR", "TLS_CERT_ENV_VAR",
    "TLS_KEY_ENV_VAR", "TLS_CA_ENV_VAR", "TENANT_METADATA_KEY", "DEFAULT_TIMEOUT",
    "ClientOptions", "Connection", "ClosesOnExit", "resolve_socket_path", "resolve_endpoint",
    "parse_endpoint",
]

#: Where smolvmd listens unless configured otherwise.
DEFAULT_SOCKET_PATH = "/run/smolvmd/smolvmd.sock"
#: Overrides the default socket path (daemon, C++ client, CLI and this SDK).
SOCKET_ENV_VAR = "SMOLVMD_SOCKET"
#: The client's default endpoint; wins over $SMOLVMD_SOCKET.
ENDPOINT_ENV_VAR = "SMOLVMD_ENDPOINT"
#: The default TLS files of TCP endpoints.
TLS_CERT_ENV_VAR = "SMOLVMD_TLS_CERT"
TLS_KEY_ENV_VAR = "SMOLVMD_TLS_KEY"
TLS_CA_ENV_VAR = "SMOLVMD_TLS_CA"
#: gRPC metadata with which an admin acts for a tenant.
TENANT_METADATA_KEY = "x-smolvm-tenant"
#: Deadline of each call in seconds: boots and snapshots under TCG take
#: seconds to minutes, hence the generous default (the C++ client's).
DEFAULT_TIMEOUT = 600.0

_UNIX_SCHEME = "unix:"
# Streamed Exec output and DownloadFile chunks are sized by the daemon, and
# Exec stdin travels in one request (at most 16 MiB): lift gRPC's 4 MiB.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                    ("grpc.max_send_message_length", 64 << 20)]
_MAX_PEM_BYTES = 1 << 20

T = TypeVar("T")
S = TypeVar("S", bound="ClosesOnExit")


class ClosesOnExit:
    """Mixin: ``with obj:`` returns obj and calls ``obj.close()`` on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ClientOptions:
    """Says how to reach smolvmd. Empty strings mean "not set".

    Attributes:
        socket_path: the daemon's Unix socket; used when `endpoint` is empty.
        endpoint: ``unix:///abs/path`` or ``host:port``; wins over
            `socket_path`.
        timeout: deadline of each call in seconds; None or <= 0: none.
        tls_cert, tls_key, tls_ca: PEM files of a TCP endpoint's mutual TLS
            (client certificate chain, its key, the CA of the daemon's
            certificate); each "" = its environment variable.
        act_as_tenant: the tenant an admin acts for (printable ASCII).
    """

    socket_path: str = ""
    endpoint: str = ""
    timeout: Optional[float] = DEFAULT_TIMEOUT
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    act_as_tenant: str = ""


def resolve_socket_path(explicit_path: str = "") -> str:
    """Returns `explicit_path` if set, else $SMOLVMD_SOCKET if set, else
    the default socket path (endpoints are ignored)."""
    return explicit_path or os.environ.get(SOCKET_ENV_VAR, "") or DEFAULT_SOCKET_PATH


def _unix_endpoint(path: str) -> str:
    # "unix:///abs/path" so that a path starting with "//" survives.
    return f"{_UNIX_SCHEME}//{path}" if path.startswith("/") else f"{_UNIX_SCHEME}{path}"


def resolve_endpoint(options: Optional[ClientOptions] = None) -> str:
    """Returns the endpoint `options` lead to (see the module docstring),
    with socket paths written ``unix:///abs/path``. Not checked."""
    options = options or ClientOptions()
    if options.endpoint:
        return options.endpoint
    if options.socket_path:
        return _unix_endpoint(options.socket_path)
    env = os.environ.get(ENDPOINT_ENV_VAR, "")
    return env or _unix_endpoint(resolve_socket_path())


def _bad_endpoint(endpoint: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        message=f'endpoint "{endpoint}": {why}; want unix:///abs/path or host:port')


def parse_endpoint(endpoint: str) -> Tuple[str, str]:
    """Returns ``(unix_path, "")`` or ``("", "host:port")`` for `endpoint`;
    raises InvalidArgumentError when it is neither."""
    if endpoint.startswith("/"):
        return endpoint, ""
    if endpoint.startswith(_UNIX_SCHEME):
        path = endpoint[len(_UNIX_SCHEME):]
        if path.startswith("//"):
            path = path[2:]
            # unix://HOST/path has an authority, which Unix sockets lack.
            if not path.startswith("/"):
                raise _bad_endpoint(endpoint, "unix:// must be followed by an absolute path")
        if not path:
            raise _bad_endpoint(endpoint, "no socket path")
        return path, ""
    if endpoint.startswith("["):
        close = endpoint.find("]")
        if close < 0 or endpoint[close + 1:close + 2] != ":":
            raise _bad_endpoint(endpoint, "an IPv6 address needs ]:port")
        host, port = endpoint[1:close], endpoint[close + 2:]
    else:
        colon = endpoint.rfind(":")
        if colon < 0:
            raise _bad_endpoint(endpoint, "no port")
        host, port = endpoint[:colon], endpoint[colon + 1:]
        if ":" in host:
            raise _bad_endpoint(endpoint,
                                "unknown scheme, or an IPv6 address without [brackets]")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise _bad_endpoint(endpoint, "the port is not a number in 1-65535")
    if not host:
        raise _bad_endpoint(endpoint, "no host")
    if any(ord(c) <= 0x20 or c == "/" or ord(c) == 0x7F for c in host):
        raise _bad_endpoint(endpoint, "the host has a blank, control character or '/'")
    return "", endpoint


def _socket_permission_error(path: str) -> Optional[PermissionDeniedError]:
    """PermissionDeniedError naming the fix when connecting to the Unix
    socket `path` is refused for lack of permission, else None (as the C++
    client's ProbeUnixSocket)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return None
    except PermissionError:
        try:
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
        except (OSError, KeyError):
            group = "smolvm"
        return PermissionDeniedError(message=(
            f"connect to smolvmd: permission denied on {path}: join group {group} or use sudo"))
    except OSError:
        return None
    finally:
        probe.close()


def _read_pem(option: str, flag: str, env_var: str, path: str) -> bytes:
    def fail(why: str) -> FailedPreconditionError:
        return FailedPreconditionError(message=f"read {option} ({flag}, ${env_var}) {path}: {why}")
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PEM_BYTES + 1)
    except OSError as e:
        raise fail(e.strerror or str(e)) from None
    if len(data) > _MAX_PEM_BYTES:
        raise fail("larger than 1 MiB; not a PEM file")
    if b"-----BEGIN " not in data:
        raise fail("no PEM block (-----BEGIN ...) in it")
    return data


def _tls_credentials(address: str, options: ClientOptions) -> grpc.ChannelCredentials:
    files = [("tls_cert", "--tls-cert", TLS_CERT_ENV_VAR, options.tls_cert),
             ("tls_key", "--tls-key", TLS_KEY_ENV_VAR, options.tls_key),
             ("tls_ca", "--tls-ca", TLS_CA_ENV_VAR, options.tls_ca)]
    missing = [f"{o} ({flag} or ${env})" for o, flag, env, path in files if not path]
    if missing:
        raise FailedPreconditionError(message=(
            f"connect to smolvmd at {address}: a TCP endpoint needs mutual TLS, but no "
            f"{', '.join(missing)} is set; give the client certificate, its key and the CA"))
    cert, key, ca = (_read_pem(*f) for f in files)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                        certificate_chain=cert)


class Connection(ClosesOnExit):
    """One gRPC channel to smolvmd plus the stubs of its services
    (``vm``, ``snapshot``, ``image``, ``pool``, ``operation``, ``filesystem``,
    ``process``).

    Thread-safe (gRPC channels and stubs are). ``close()`` (or ``with``)
    releases the channel.
    """

    def __init__(self, options: Optional[ClientOptions] = None) -> None:
        opts = ClientOptions(**vars(options)) if options else ClientOptions()
        opts.endpoint = resolve_endpoint(opts)
        opts.socket_path = ""
        self._setup_error: Optional[SmolVMError] = None
        target = "localhost:1"  # Never dialled: see below.
        credentials: Optional[grpc.ChannelCredentials] = None
        try:
            unix_path, tcp_address = parse_endpoint(opts.endpoint)
            if unix_path:
                opts.socket_path = unix_path
                opts.endpoint = _unix_endpoint(unix_path)
                opts.tls_cert = opts.tls_key = opts.tls_ca = ""
                target = opts.endpoint
            else:
                opts.tls_cert = opts.tls_cert or os.environ.get(TLS_CERT_ENV_VAR, "")
                opts.tls_key = opts.tls_key or os.environ.get(TLS_KEY_ENV_VAR, "")
                opts.tls_ca = opts.tls_ca or os.environ.get(TLS_CA_ENV_VAR, "")
                target = tcp_address
                credentials = _tls_credentials(tcp_address, opts)
            if any(not 0x20 <= ord(c) <= 0x7E for c in opts.act_as_tenant):
                raise InvalidArgumentError(
                    message="act_as_tenant (--as-tenant): a tenant name is printable ASCII")
        except SmolVMError as e:
            self._setup_error = e
        self.options: ClientOptions = opts
        # With unusable options the stubs still exist, on a channel that is
        # never used: every call raises the setup error first.
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.vm = vm_service_pb2_grpc.VmServiceStub(self._channel)
        self.snapshot = snapshot_service_pb2_grpc.SnapshotServiceStub(self._channel)
        self.image = image_service_pb2_grpc.ImageServiceStub(self._channel)
        self.pool = pool_service_pb2_grpc.PoolServiceStub(self._channel)
        self.operation = operation_service_pb2_grpc.OperationServiceStub(self._channel)
        self.filesystem = filesystem_service_pb2_grpc.FilesystemServiceStub(self._channel)
        self.process = process_service_pb2_grpc.ProcessServiceStub(self._channel)
        self.event = event_service_pb2_grpc.EventServiceStub(self._channel)

    @property
    def endpoint(self) -> str:
        """The resolved endpoint, e.g. ``unix:///run/smolvmd/smolvmd.sock``."""
        return self.options.endpoint

    @property
    def socket_path(self) -> str:
        """The resolved Unix socket path; "" for a TCP endpoint."""
        return self.options.socket_path

    def deadline(self, timeout: Optional[float] = -1.0) -> Optional[float]:
        """The gRPC `timeout` argument of a call: `timeout` seconds (the
        configured per-call timeout when omitted); None means no deadline."""
        if timeout is not None and timeout < 0:
            timeout = self.options.timeout
        if timeout is None or timeout <= 0 or timeout == float("inf"):
            return None
        return timeout

    def metadata(self) -> List[Tuple[str, str]]:
        """The metadata of every call (the tenant an admin acts for)."""
        if self.options.act_as_tenant:
            return [(TENANT_METADATA_KEY, self.options.act_as_tenant)]
        return []

    def check(self) -> None:
        """Raises the options' error, if any (then no call may be made)."""
        if self._setup_error is not None:
            raise self._setup_error

    def call(self, method: Callable[..., T], request: Any,
             timeout: Optional[float] = -1.0) -> T:
        """Makes one unary RPC, e.g. ``conn.call(conn.vm.GetVm, request)``,
        with the configured deadline; raises the converted error."""
        self.check()
        try:
            return method(request, timeout=self.deadline(timeout), metadata=self.metadata())
        except grpc.RpcError as e:
            raise self.convert(e) from None

    def convert(self, error: grpc.RpcError) -> SmolVMError:
        """Converts a failed call's error (see errors.from_rpc_error), adding
        the "is smolvmd running?" hint when the daemon could not be reached:
        UNAVAILABLE while the channel is not connected."""
        converted = from_rpc_error(error)
        if isinstance(converted, UnavailableError) and not self._channel_ready():
            # A Unix socket we may not open reads as no daemon to gRPC: say which.
            denied = _socket_permission_error(self.socket_path) if self.socket_path else None
            if denied is not None:
                return denied
            where = (f"socket {self.socket_path}" if self.socket_path else
                     f"(and do the TLS files match it?) endpoint {self.endpoint}")
            return UnavailableError(message=(
                f"connect to smolvmd: is smolvmd running? {where}: {converted.message}"))
        return converted

    def _channel_ready(self) -> bool:
        # grpc's Python API has no synchronous state query; the core channel
        # under it has one (present in grpcio 1.51). Without it, assume ready
        # (no hint) rather than guess.
        core = getattr(self._channel, "_channel", None)
        check = getattr(core, "check_connectivity_state", None)
        if check is None:
            return True
        try:
            return check(False) == grpc.ChannelConnectivity.READY.value[0]
        except Exception:  # pylint: disable=broad-except
            return True

    def close(self) -> None:
        """Closes the channel; later calls fail."""
        self._channel.close()
