#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root:
# dependencies, build, guest kernel, unit tests, then end-to-end tests that
# run the real daemon with real QEMU guests. Fails if an e2e test skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/check-layering.sh
scripts/build.sh

# The guest kernel is fetched once (from Debian's archive) and shared by
# every test daemon.
export SMOLVM_TEST_KERNEL_DIR="$PWD/build/guest-kernel"
guest/fetch-kernel.sh "$SMOLVM_TEST_KERNEL_DIR"

cd build
ctest --output-on-failure -L unit
ctest --output-on-failure -L e2e --timeout 900 | tee e2e.log
if grep -qiE "[0-9]+ tests? (were )?skipped|\*\*\*Skipped|SKIPPED" e2e.log; then
  echo "test.sh: an e2e test was skipped; CI must run them all" >&2
  exit 1
fi
