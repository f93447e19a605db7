#!/usr/bin/env bash
# lib/ is the core library: it must not include gRPC or the public API's
# generated messages (STYLE.md 6.1). The CMake link rule alone cannot catch
# a stray include, since system headers resolve anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
if grep -rnE '#include *["<](grpcpp/|grpc/|smolvm/v1/)' lib/; then
  echo "check-layering: lib/ must not include gRPC or smolvm/v1 headers (see above)" >&2
  exit 1
fi
echo "check-layering: ok"
