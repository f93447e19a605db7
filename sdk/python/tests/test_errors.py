"""Unit tests of smolvm.errors: gRPC codes to exceptions, messages unchanged."""

import unittest

import grpc

from smolvm import errors


class FakeRpcError(grpc.RpcError):
    """What a failed grpc call raises: code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__()
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class ErrorMappingTest(unittest.TestCase):
    def test_every_code_has_its_class_and_keeps_code_and_message(self) -> None:
        expected = {
            grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
            grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExistsError,
            grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgumentError,
            grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPreconditionError,
            grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDeniedError,
            grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhaustedError,
            grpc.StatusCode.UNAVAILABLE: errors.UnavailableError,
            grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceededError,
            grpc.StatusCode.DATA_LOSS: errors.DataLossError,
            grpc.StatusCode.INTERNAL: errors.InternalError,
            grpc.StatusCode.ABORTED: errors.AbortedError,
            grpc.StatusCode.UNAUTHENTICATED: errors.UnauthenticatedError,
            grpc.StatusCode.CANCELLED: errors.CancelledError,
            grpc.StatusCode.UNKNOWN: errors.UnknownError,
            grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRangeError,
            grpc.StatusCode.UNIMPLEMENTED: errors.UnimplementedError,
        }
        self.assertEqual(len(expected), len(grpc.StatusCode) - 1)  # All but OK.
        for code, cls in expected.items():
            message = f"get vm box-{code.name}: not found; ünïcode kept"
            err = errors.from_rpc_error(FakeRpcError(code, message))
            self.assertIs(type(err), cls)
            self.assertIsInstance(err, errors.SmolVMError)
            self.assertIs(err.code, code)
            self.assertEqual(err.message, message)
            self.assertIn(message, str(err))
            self.assertIn(code.name, str(err))

    def test_code_numbers_as_in_fork_results(self) -> None:
        err = errors.error_for_code_number(5, "no such snapshot")
        self.assertIsInstance(err, errors.NotFoundError)
        self.assertEqual(err.message, "no such snapshot")
        for bad in (0, -1, 17, 1000):
            self.assertIs(errors.error_for_code_number(bad, "x").code, grpc.StatusCode.UNKNOWN)

    def test_odd_errors_become_unknown(self) -> None:
        err = errors.from_rpc_error(FakeRpcError(grpc.StatusCode.OK, "odd"))
        self.assertIs(err.code, grpc.StatusCode.UNKNOWN)
        err = errors.from_rpc_error(grpc.RpcError())  # No code() or details().
        self.assertIs(err.code, grpc.StatusCode.UNKNOWN)
        self.assertEqual(err.message, "")

    def test_classes_are_catchable_as_expected(self) -> None:
        with self.assertRaises(ValueError):  # InvalidArgumentError is a ValueError.
            raise errors.InvalidArgumentError(message="bad id")
        err = errors.NotFoundError(message="gone")
        self.assertIs(err.code, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(repr(err), "NotFoundError(<StatusCode.NOT_FOUND: (5, 'not found')>, "
                                    "'gone')")


if __name__ == "__main__":
    unittest.main()
