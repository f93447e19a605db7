"""Build step of the smolvm package: generates the smolvm.v1 stubs.

Metadata is in pyproject.toml. This only adds to `build_py` the generation
of smolvm/v1/*_pb2*.py(i) from proto/ (gen_protos.py, Debian's protoc and
grpc_python_plugin) into the build tree, so that they are installed with the
package and never live in the source tree. The protos are taken from
$SMOLVM_PROTO_DIR, else ./proto (an sdist), else ../../proto (the repository).
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_protos  # noqa: E402  pylint: disable=wrong-import-position


def _proto_dir() -> str:
    for candidate in (os.environ.get("SMOLVM_PROTO_DIR", ""), os.path.join(HERE, "proto"),
                      os.path.join(HERE, "..", "..", "proto")):
        if candidate and os.path.isdir(os.path.join(candidate, "smolvm", "v1")):
            return os.path.abspath(candidate)
    raise SystemExit("setup.py: proto/smolvm/v1 not found; set SMOLVM_PROTO_DIR")


class BuildWithStubs(build_py):
    """build_py, then the generated stubs into the build tree."""

    def run(self) -> None:
        super().run()
        gen_protos.generate(_proto_dir(), self.build_lib)


setup(cmdclass={"build_py": BuildWithStubs})
