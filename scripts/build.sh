#!/usr/bin/env bash
# Configures and builds smolvmd into build/ (Release with debug info).
#
# SMOLVM_DEBUG_INFO=lines builds with line tables only (-g1) instead of full
# debug info (-g). GCC's code is the same either way (-g never changes code
# generation); what -g adds is variable locations, and generating them is
# about 40% of the compile time here. CI (scripts/test.sh) uses lines so the
# suite fits its time limit; installs keep full debug info.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${SMOLVM_DEBUG_INFO:-full}" in
  full) debug=-g ;;
  lines) debug=-g1 ;;
  *) echo "build.sh: SMOLVM_DEBUG_INFO must be full or lines" >&2; exit 2 ;;
esac
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 $debug -DNDEBUG" >/dev/null
cmake --build build -j"$(nproc)"
