"""Unit tests of smolvm.connection: endpoint resolution and option errors."""

import os
import tempfile
import unittest
from typing import Dict
from unittest import mock

import grpc

from smolvm import connection as c
from smolvm import errors
from smolvm.v1 import vm_service_pb2


def env(**values: str) -> "mock._patch[Dict[str, str]]":
    """Patches os.environ to exactly `values` (no SMOLVMD_* from outside)."""
    return mock.patch.dict(os.environ, values, clear=True)


class ResolveTest(unittest.TestCase):
    def test_default_socket(self) -> None:
        with env():
            self.assertEqual(c.resolve_socket_path(), "/run/smolvmd/smolvmd.sock")
            self.assertEqual(c.resolve_endpoint(), "unix:///run/smolvmd/smolvmd.sock")

    def test_precedence(self) -> None:
        with env(SMOLVMD_SOCKET="/tmp/s.sock"):
            self.assertEqual(c.resolve_socket_path(), "/tmp/s.sock")
            self.assertEqual(c.resolve_endpoint(), "unix:///tmp/s.sock")
            self.assertEqual(c.resolve_socket_path("/x.sock"), "/x.sock")
        with env(SMOLVMD_SOCKET="/tmp/s.sock", SMOLVMD_ENDPOINT="unix:///tmp/e.sock"):
            self.assertEqual(c.resolve_endpoint(), "unix:///tmp/e.sock")
            opts = c.ClientOptions(socket_path="rel.sock")
            self.assertEqual(c.resolve_endpoint(opts), "unix:rel.sock")
            opts = c.ClientOptions(socket_path="/o.sock", endpoint="host:1")
            self.assertEqual(c.resolve_endpoint(opts), "host:1")

    def test_empty_env_is_unset(self) -> None:
        with env(SMOLVMD_SOCKET="", SMOLVMD_ENDPOINT=""):
            self.assertEqual(c.resolve_endpoint(), "unix:///run/smolvmd/smolvmd.sock")

    def test_parse_endpoint(self) -> None:
        good = {
            "/abs.sock": ("/abs.sock", ""), "unix:///abs.sock": ("/abs.sock", ""),
            "unix:/abs.sock": ("/abs.sock", ""), "unix:rel.sock": ("rel.sock", ""),
            "unix:////x": ("//x", ""), "smolvm.example.org:7443": ("", "smolvm.example.org:7443"),
            "127.0.0.1:1": ("", "127.0.0.1:1"), "[::1]:65535": ("", "[::1]:65535"),
        }
        for endpoint, want in good.items():
            self.assertEqual(c.parse_endpoint(endpoint), want, endpoint)
        bad = {"unix://host/x": "absolute path", "unix:": "no socket path",
               "host": "no port", "host:0": "1-65535", "host:99999": "1-65535",
               "host:12a": "1-65535", ":80": "no host", "::1:80": "brackets",
               "[::1]80": "]:port", "a b:80": "blank", "http://x:80": "unknown scheme"}
        for endpoint, why in bad.items():
            with self.assertRaises(errors.InvalidArgumentError, msg=endpoint) as ctx:
                c.parse_endpoint(endpoint)
            self.assertIn(why, ctx.exception.message, endpoint)
            self.assertIn(endpoint, ctx.exception.message)


class ConnectionTest(unittest.TestCase):
    def _request(self, conn: c.Connection) -> None:
        conn.call(conn.vm.GetVm, vm_service_pb2.GetVmRequest(vm_id="x"))

    def test_unix_connection_drops_tls_and_keeps_socket(self) -> None:
        with env(SMOLVMD_TLS_CERT="/c.pem"), c.Connection(c.ClientOptions(socket_path="/a.sock")) as conn:
            self.assertEqual(conn.endpoint, "unix:///a.sock")
            self.assertEqual(conn.socket_path, "/a.sock")
            self.assertEqual(conn.options.tls_cert, "")

    def test_tcp_without_tls_fails_every_call_naming_the_options(self) -> None:
        with env(), c.Connection(c.ClientOptions(endpoint="127.0.0.1:9")) as conn:
            with self.assertRaises(errors.FailedPreconditionError) as ctx:
                self._request(conn)
            for name in ("tls_cert", "$SMOLVMD_TLS_KEY", "--tls-ca", "127.0.0.1:9"):
                self.assertIn(name, ctx.exception.message)

    def test_tcp_with_unreadable_or_non_pem_files(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            junk = os.path.join(d, "junk.pem")
            with open(junk, "w") as f:
                f.write("not a certificate")
            with env(SMOLVMD_TLS_CERT=junk, SMOLVMD_TLS_KEY=junk, SMOLVMD_TLS_CA=junk):
                conn = c.Connection(c.ClientOptions(endpoint="127.0.0.1:9"))
                with self.assertRaises(errors.FailedPreconditionError) as ctx:
                    self._request(conn)
                self.assertIn("no PEM block", ctx.exception.message)
                self.assertEqual(conn.options.tls_ca, junk)  # From the environment.
                conn = c.Connection(c.ClientOptions(endpoint="127.0.0.1:9",
                                                    tls_cert=os.path.join(d, "missing")))
                with self.assertRaises(errors.FailedPreconditionError) as ctx:
                    self._request(conn)
                self.assertIn("No such file", ctx.exception.message)

    def test_bad_endpoint_and_tenant_fail_calls_not_construction(self) -> None:
        conn = c.Connection(c.ClientOptions(endpoint="nonsense"))
        with self.assertRaises(errors.InvalidArgumentError):
            self._request(conn)
        conn = c.Connection(c.ClientOptions(socket_path="/a.sock", act_as_tenant="bad\n"))
        with self.assertRaises(errors.InvalidArgumentError):
            self._request(conn)

    def test_deadlines_and_metadata(self) -> None:
        conn = c.Connection(c.ClientOptions(socket_path="/a.sock", act_as_tenant="ci"))
        self.assertEqual(conn.deadline(), 600.0)
        self.assertEqual(conn.deadline(5), 5)
        self.assertIsNone(conn.deadline(None))
        self.assertEqual(conn.metadata(), [("x-smolvm-tenant", "ci")])
        for unlimited in (None, 0, -1, float("inf")):
            conn = c.Connection(c.ClientOptions(socket_path="/a.sock", timeout=unlimited))
            self.assertIsNone(conn.deadline(), unlimited)
            self.assertEqual(conn.metadata(), [])

    def test_unreachable_daemon_is_unavailable_with_hint(self) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "none.sock")
            conn = c.Connection(c.ClientOptions(socket_path=path, timeout=5))
            with self.assertRaises(errors.UnavailableError) as ctx:
                self._request(conn)
            self.assertIs(ctx.exception.code, grpc.StatusCode.UNAVAILABLE)
            self.assertIn("is smolvmd running?", ctx.exception.message)
            self.assertIn(path, ctx.exception.message)


if __name__ == "__main__":
    unittest.main()
