#!/usr/bin/env bash
# Sanitizer run for CI (docs/sanitizers.md), as root, after scripts/test.sh:
#   asan  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer
#   tsan  ThreadSanitizer
# Builds only the unit tests and smolvmd into build-<mode>/, runs the unit
# tests there, then a core subset of the e2e tests of the normal build
# (build/, which scripts/test.sh made) against the sanitized smolvmd
# ($SMOLVM_TEST_SMOLVMD). Fails on a failed or skipped test and on any
# sanitizer report, which it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=${1:-}
case "$mode" in
  asan)
    sanitize=address,undefined
    e2e=(snapshot_lifecycle_test crash_recovery_test) ;;
  tsan)
    sanitize=thread
    e2e=(snapshot_lifecycle_test races_test) ;;
  *)
    echo "usage: $0 asan|tsan" >&2
    exit 2 ;;
esac
build=$root/build-$mode
supp=$root/tests/sanitizers
logs=$build/sanitizer-logs
status=0

phase_start=$SECONDS
elapsed() { echo "sanitize.sh $mode: $1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

# Reports go to files, not to the tests' output: e2e daemons log into temp
# dirs that their tests delete. Any file here fails the run.
report() {
  local found=0 f
  for f in "$logs"/*; do
    [ -e "$f" ] || continue
    found=1
    echo "=== sanitizer report $f" >&2
    cat "$f" >&2
  done
  rm -rf "$logs"
  mkdir -p "$logs"
  if [ "$found" = 1 ]; then
    echo "sanitize.sh $mode: sanitizer reports after $1 (above)" >&2
    return 1
  fi
}

skipped() {
  local xml
  if xml=$(grep -l '<skipped' "$1"/*.xml 2>/dev/null) && [ -n "$xml" ]; then
    echo "sanitize.sh $mode: tests were skipped in $1:" >&2
    echo "$xml" >&2
    return 0
  fi
  return 1
}

# -O1: instrumented code, fast enough to build and to run. -g1 (line tables)
# is all a sanitizer report needs for file:line frames and builds ~40% faster
# than -g (UBSan+ASan with full debug info is the slowest compile here).
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DSMOLVM_SANITIZE="$sanitize" >/dev/null
known=$(ninja -C "$build" -t targets all | sed 's/:.*//')
targets=(smolvmd)
[ "$mode" = tsan ] && targets+=(tsan_canary)
# Tests labelled nocode (Python, the install layout, the unit file) run no
# compiled code of ours: not built or run here.
for t in $(cd "$build" && ctest -N -L unit -LE nocode | sed -n 's/^ *Test *#[0-9]*: //p'); do
  if grep -qx "$t" <<<"$known"; then targets+=("$t"); fi  # unit_file_test is a script
done
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
elapsed build

rm -rf "$logs"
mkdir -p "$logs"
export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:check_initialization_order=1:strict_init_order=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="log_path=$logs/tsan:suppressions=$supp/tsan.supp:print_suppressions=0:second_deadlock_stack=1:ignore_noninstrumented_modules=1"

if [ "$mode" = tsan ]; then
  # The annotations of tsan_absl_sync.cc must leave real races visible.
  "$build/tsan_canary" || true
  if [ -z "$(ls "$logs")" ]; then
    echo "sanitize.sh: TSan missed the race in tests/sanitizers/tsan_canary.cc" >&2
    exit 1
  fi
  rm -rf "$logs"
  mkdir -p "$logs"
fi

# PidsMaxStopsForks counts the tasks a forked child can make under a pids
# limit; TSan's runtime thread in the child takes one of them.
filter=
[ "$mode" = tsan ] && filter=-VmCgroupsRealV1Test.PidsMaxStopsForks

rm -rf "$build/test-xml"
GTEST_FILTER="${filter:-*}" GTEST_OUTPUT="xml:$build/test-xml/unit/" \
  ctest --test-dir "$build" --output-on-failure --no-tests=error -L unit -LE nocode || status=1
report "the unit tests" || status=1
skipped "$build/test-xml/unit" && status=1
elapsed "unit tests"
[ "$status" = 0 ] || exit 1

# The e2e tests of the normal build, driving the sanitized daemon (its guest
# images get the unsanitized agent: the agent is never instrumented).
if ! grep -q SMOLVM_TEST_SMOLVMD "$root/build/tests/e2e/libsmolvm_e2e_harness.a"; then
  echo "sanitize.sh: build/ has no e2e tests that take SMOLVM_TEST_SMOLVMD; run scripts/build.sh" >&2
  exit 1
fi
# gcc's UBSan runtime ignores log_path beside ASan's and writes to stderr,
# which the harness sends to a log in a temp dir that the test deletes: the
# daemon runs through a wrapper that also copies a UBSan finding (and the
# stack after it) into the log dir. It execs, so the pid is the daemon's.
cat >"$build/smolvmd-e2e" <<WRAPPER
#!/usr/bin/env bash
exec "$build/daemon/smolvmd" "\$@" 2> >(tee >(awk -v f="$logs/ubsan.\$\$" \\
  '/runtime error:/ { p = 1 } p { print > f }') >&2)
WRAPPER
chmod +x "$build/smolvmd-e2e"
export SMOLVM_TEST_SMOLVMD="$build/smolvmd-e2e"
export SMOLVM_TEST_KERNEL_DIR=${SMOLVM_TEST_KERNEL_DIR:-$root/build/guest-kernel}
selected=$(IFS='|'; echo "${e2e[*]}")
GTEST_OUTPUT="xml:$build/test-xml/e2e/" \
  ctest --test-dir "$root/build" --output-on-failure --no-tests=error -L e2e \
  -R "^($selected)\$" --timeout 900 || status=1
report "the e2e tests" || status=1
skipped "$build/test-xml/e2e" && status=1
elapsed "e2e tests (${e2e[*]})"
exit "$status"
