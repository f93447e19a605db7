#!/usr/bin/python3
"""Generates the smolvm.v1 gRPC stubs into a copy of the smolvm package.

The stubs are never checked in: this script makes them from proto/ at build
time (CMake, sdk/python/CMakeLists.txt) and at install time (setup.py).

It runs Debian's protoc 3.21 (protobuf-compiler) with --python_out and
--pyi_out, and Debian's grpc_python_plugin 1.51 (protobuf-compiler-grpc) for
*_pb2_grpc.py: the generators the C++ build already uses, matching
python3-protobuf 3.21 and python3-grpcio 1.51. Debian's python3-grpc-tools
(1.14) bundles protoc 3.6, which rejects proto3 `optional`
(SnapshotInfo.restored_vm_id), so it is not used.

The proto package smolvm.v1 becomes the Python package smolvm.v1, inside
this SDK's own `smolvm` package: protoc's absolute imports
(`from smolvm.v1 import types_pb2`) then resolve inside the package as
generated, with nothing rewritten.

  gen_protos.py --proto-dir proto --out DIR [--copy-package sdk/python/smolvm]

writes DIR/smolvm/v1/*_pb2.py, *_pb2.pyi, *_pb2_grpc.py and __init__.py;
with --copy-package, DIR/smolvm is first replaced by a copy of that source
package, so DIR is a ready-to-import tree (PYTHONPATH=DIR).
"""

import argparse
import os
import shutil
import subprocess
import sys
from typing import List, Optional

PROTOC = "protoc"
GRPC_PLUGIN = "grpc_python_plugin"


def _find(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(f"gen_protos: {tool} not found; install Debian's {package}")
    return path


def proto_files(proto_dir: str) -> List[str]:
    """Returns the smolvm.v1 .proto files under `proto_dir`, sorted."""
    v1 = os.path.join(proto_dir, "smolvm", "v1")
    return sorted(os.path.join(v1, f) for f in os.listdir(v1) if f.endswith(".proto"))


def generate(proto_dir: str, out_dir: str) -> None:
    """Writes the smolvm.v1 stubs under `out_dir`/smolvm/v1."""
    protoc = _find(PROTOC, "protobuf-compiler")
    plugin = _find(GRPC_PLUGIN, "protobuf-compiler-grpc")
    v1_out = os.path.join(out_dir, "smolvm", "v1")
    os.makedirs(v1_out, exist_ok=True)
    cmd = [protoc, "-I", proto_dir, "-I", "/usr/include",
           f"--plugin=protoc-gen-grpc_python={plugin}",
           f"--python_out={out_dir}", f"--pyi_out={out_dir}",
           f"--grpc_python_out={out_dir}", *proto_files(proto_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"gen_protos: {' '.join(cmd)} failed:\n{result.stderr}")
    with open(os.path.join(v1_out, "__init__.py"), "w") as init:
        init.write('"""smolvm.v1: stubs generated from proto/smolvm/v1/*.proto."""\n')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--copy-package", help="source smolvm package to copy first")
    args = parser.parse_args(argv)
    if args.copy_package:
        dest = os.path.join(args.out, "smolvm")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(args.copy_package, dest,
                        ignore=shutil.ignore_patterns("__pycache__", "v1"))
    generate(os.path.abspath(args.proto_dir), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
