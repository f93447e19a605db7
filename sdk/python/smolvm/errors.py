"""Errors of the smolvm SDK: one exception class per gRPC status code.

Every failed call raises a :class:`SmolVMError` (or a subclass) carrying the
gRPC status code and the daemon's message unchanged, as the C++ client
returns them as ``absl::Status`` (client/status.h). The subclasses let
callers catch what they can handle::

    try:
        SmolVM.from_snapshot("nope")
    except NotFoundError as e:
        print(e.code, e.message)   # StatusCode.NOT_FOUND, the daemon's text

Errors the SDK detects itself (a bad argument, a handle that was never
started) use the same classes with the code the C++ client would return.
"""

from typing import Dict, Optional, Type

import grpc

__all__ = [
    "SmolVMError", "CancelledError", "UnknownError", "InvalidArgumentError",
    "DeadlineExceededError", "NotFoundError", "AlreadyExistsError",
    "PermissionDeniedError", "ResourceExhaustedError", "FailedPreconditionError",
    "AbortedError", "OutOfRangeError", "UnimplementedError", "InternalError",
    "UnavailableError", "DataLossError", "UnauthenticatedError",
    "error_for_code", "error_for_code_number", "from_rpc_error",
]


class SmolVMError(Exception):
    """A failed smolvmd call (or a call the SDK refused to make).

    Attributes:
        code: the gRPC status code (``grpc.StatusCode``), e.g.
            ``StatusCode.NOT_FOUND``.
        message: the daemon's message, unchanged.
    """

    #: The code this class stands for; the base class takes any.
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: Optional[grpc.StatusCode] = None, message: str = "") -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message: str = message
        super().__init__(self.code, message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class CancelledError(SmolVMError):
    """CANCELLED: the call was cancelled, usually by the caller."""
    default_code = grpc.StatusCode.CANCELLED


class UnknownError(SmolVMError):
    """UNKNOWN: an error without a better code."""
    default_code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(SmolVMError, ValueError):
    """INVALID_ARGUMENT: a request that can never work (bad id, bad size...)."""
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(SmolVMError):
    """DEADLINE_EXCEEDED: the call's deadline passed (or a boot timed out)."""
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(SmolVMError):
    """NOT_FOUND: no such VM, snapshot, pool or image."""
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SmolVMError):
    """ALREADY_EXISTS: the id (or host port) is taken."""
    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(SmolVMError):
    """PERMISSION_DENIED: the caller may not do this."""
    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(SmolVMError):
    """RESOURCE_EXHAUSTED: out of disk, addresses, or over a quota."""
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(SmolVMError):
    """FAILED_PRECONDITION: the VM (or object) is in the wrong state."""
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(SmolVMError):
    """ABORTED: lost a race with another operation; retry the whole step."""
    default_code = grpc.StatusCode.ABORTED


class OutOfRangeError(SmolVMError):
    """OUT_OF_RANGE."""
    default_code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(SmolVMError):
    """UNIMPLEMENTED: the daemon does not have this RPC (an older smolvmd)."""
    default_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(SmolVMError):
    """INTERNAL: the VMM died or an invariant broke."""
    default_code = grpc.StatusCode.INTERNAL


class UnavailableError(SmolVMError):
    """UNAVAILABLE: smolvmd is not reachable, or a VM's channel is not up yet."""
    default_code = grpc.StatusCode.UNAVAILABLE


class DataLossError(SmolVMError):
    """DATA_LOSS: a snapshot's files no longer match their checksums, or a
    transfer was cut short."""
    default_code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(SmolVMError):
    """UNAUTHENTICATED: a TCP client without an accepted certificate."""
    default_code = grpc.StatusCode.UNAUTHENTICATED


_CLASSES: Dict[grpc.StatusCode, Type[SmolVMError]] = {
    cls.default_code: cls for cls in (
        CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError,
        NotFoundError, AlreadyExistsError, PermissionDeniedError,
        ResourceExhaustedError, FailedPreconditionError, AbortedError,
        OutOfRangeError, UnimplementedError, InternalError, UnavailableError,
        DataLossError, UnauthenticatedError)
}


def error_for_code(code: grpc.StatusCode, message: str) -> SmolVMError:
    """Returns the exception for `code` (never OK) with `message` unchanged."""
    cls = _CLASSES.get(code, SmolVMError)
    return cls(code, message)


def error_for_code_number(number: int, message: str) -> SmolVMError:
    """Like :func:`error_for_code` for a code received as a number (e.g.
    ``ForkResult.error_code``, a google.rpc.Code). A number outside 1-16 is
    UNKNOWN."""
    for code in grpc.StatusCode:
        if code.value[0] == number and code is not grpc.StatusCode.OK:
            return error_for_code(code, message)
    return UnknownError(grpc.StatusCode.UNKNOWN, message)


def from_rpc_error(error: grpc.RpcError) -> SmolVMError:
    """Converts a failed gRPC call to its SmolVMError (same code, same
    message). Objects without ``code()`` / ``details()`` become UNKNOWN."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
        code = grpc.StatusCode.UNKNOWN
    return error_for_code(code, details or "")
