#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root:
# dependencies, build, guest kernel, unit tests, then end-to-end tests that
# run the real daemon with real QEMU guests. Fails if an e2e test skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/check-layering.sh
# Line tables only: the same code as a full-debug build, ~40% less compile
# time (scripts/build.sh).
SMOLVM_DEBUG_INFO=lines scripts/build.sh

# The guest kernel is fetched once (from Debian's archive) and shared by
# every test daemon.
export SMOLVM_TEST_KERNEL_DIR="$PWD/build/guest-kernel"
build/lib/smolvm-fetch-kernel "$SMOLVM_TEST_KERNEL_DIR"
# And Debian's generic flavour (9p modules) for VMs with host mounts.
export SMOLVM_TEST_MOUNTS_KERNEL_DIR="$PWD/build/guest-kernel-mounts"
SMOLVM_KERNEL_META=linux-image-amd64 build/lib/smolvm-fetch-kernel "$SMOLVM_TEST_MOUNTS_KERNEL_DIR"

# Debian packages downloaded by image builds (unit and e2e tests), kept in
# the build tree across runs.
export SMOLVM_TEST_DEBIAN_CACHE="$PWD/build/debian-cache"

# Fuzz targets (clang, build-fuzz/): every regression input and seed, then
# a bounded run of each target (fuzz/README.md for longer runs).
scripts/fuzz.sh

# Every GoogleTest binary writes an XML report, so a GTEST_SKIP() (e.g. a
# namespace test that found no root) is visible here: ctest counts a skipped
# gtest case as passed.
rm -rf build/test-xml
export GTEST_OUTPUT="xml:$PWD/build/test-xml/"
cd build
ctest --output-on-failure --no-tests=error -L unit
ctest --output-on-failure --no-tests=error -L e2e --timeout 900
if skipped=$(grep -l '<skipped' test-xml/*.xml 2>/dev/null) && [ -n "$skipped" ]; then
  echo "test.sh: tests were skipped; CI runs as root with QEMU and must run them all:" >&2
  echo "$skipped" >&2
  exit 1
fi

# Sanitizer builds (docs/sanitizers.md): ASan+LSan+UBSan and TSan on the
# unit tests, and on the daemon under a core subset of the e2e tests.
../scripts/sanitize.sh asan
../scripts/sanitize.sh tsan
