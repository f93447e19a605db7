#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into build-fuzz, replays
# every regression input and seed, then fuzzes each target for
# FUZZ_SECONDS (default 60; 0 = replay only), FUZZ_JOBS targets at a time
# (default 3). Fails on any crash, leak or hang, printing
# the reproducer. Writes the executions per target to
# build-fuzz/fuzz-summary.txt. The repository is not modified: the corpora
# grow in build-fuzz/corpus/<target>. See fuzz/README.md.
#
# With the defaults on a 2-CPU machine: the seven targets run in three rounds
# (of three, three and one), about 3 minutes, after a first build of about 1.5-4 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${ROOT}/build-fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-3}"

# Target and its -max_len: the largest input worth mutating (requests and
# manifests are small; streams need room for a few frames or lines).
TARGETS=(validation:4096 qmp:16384 agent_host:16384 agent_guest:16384 manifest:8192
         config:8192 migration_stream:16384 dns_message:4096)
# Common flags. -close_fd_mask=2: the code under test logs to stderr (the
# guest agent on every corrupt frame); libFuzzer and sanitizer reports
# still print. -timeout: no input may take this long (agent_host's calls
# have 20 s deadlines it never reaches).
FLAGS=(-rss_limit_mb=2048 -timeout=30 -close_fd_mask=2)

PIDS=()
cleanup() {  # On interruption: the running fuzzers, then their subshells.
  for pid in "${PIDS[@]}"; do
    pkill -P "${pid}" 2>/dev/null || true
    kill "${pid}" 2>/dev/null || true
  done
}
trap cleanup EXIT

start=$(date +%s)
cmake -S "${ROOT}/fuzz" -B "${BUILD}" -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build "${BUILD}" -j"$(nproc)"
built=$(date +%s)
echo "fuzz: built in $((built - start)) s"

# 1. Replay: every regression input and seed, once.
for entry in "${TARGETS[@]}"; do
  t="${entry%%:*}"
  inputs=()
  for dir in "${ROOT}/fuzz/regressions/${t}" "${ROOT}/fuzz/corpus/${t}"; do
    [[ -d "${dir}" ]] || continue
    while IFS= read -r -d '' f; do inputs+=("${f}"); done \
      < <(find "${dir}" -type f ! -name '*.md' -print0 | sort -z)
  done
  if (( ${#inputs[@]} == 0 )); then  # Without inputs libFuzzer would fuzz.
    echo "fuzz: ${t} has no seeds in fuzz/corpus/${t}" >&2
    exit 1
  fi
  log="${BUILD}/replay-${t}.log"
  if ! "${BUILD}/${t}_fuzz" "${FLAGS[@]}" "${inputs[@]}" >"${log}" 2>&1; then
    echo "fuzz: ${t} crashed on a regression input or seed:" >&2
    grep -E '^Running: ' "${log}" | tail -n 1 >&2 || true
    echo "fuzz: log in ${log}" >&2
    exit 1
  fi
  echo "fuzz: ${t}: ${#inputs[@]} regression inputs and seeds replayed"
done

if [[ "${SECONDS_PER_TARGET}" == 0 ]]; then
  exit 0
fi

# 2. Fuzz each target for SECONDS_PER_TARGET, JOBS at a time.
run_target() {
  local t="$1" max_len="$2"
  local corpus="${BUILD}/corpus/${t}" artifacts="${BUILD}/artifacts/${t}"
  mkdir -p "${corpus}" "${artifacts}"
  cp -f "${ROOT}/fuzz/corpus/${t}/"* "${corpus}/"
  "${BUILD}/${t}_fuzz" "${FLAGS[@]}" -max_len="${max_len}" \
    -max_total_time="${SECONDS_PER_TARGET}" -print_final_stats=1 \
    -artifact_prefix="${artifacts}/" "${corpus}" >"${BUILD}/fuzz-${t}.log" 2>&1
}
rm -f "${BUILD}"/fuzz-*.rc
for entry in "${TARGETS[@]}"; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n || true; done
  t="${entry%%:*}"
  ( rc=0; run_target "${t}" "${entry##*:}" || rc=$?; echo "${rc}" >"${BUILD}/fuzz-${t}.rc" ) &
  PIDS+=("$!")
done
wait || true
PIDS=()

summary="${BUILD}/fuzz-summary.txt"
: >"${summary}"
total=0
crashes=0
line="fuzz:"
for entry in "${TARGETS[@]}"; do
  t="${entry%%:*}"
  log="${BUILD}/fuzz-${t}.log"
  rc="$(cat "${BUILD}/fuzz-${t}.rc" 2>/dev/null || echo 1)"
  execs="$(awk '/stat::number_of_executed_units:/ {n = $2} END {print n}' "${log}" 2>/dev/null || true)"
  execs="${execs:-0}"
  total=$((total + execs))
  echo "fuzz: ${t} ${execs} execs in ${SECONDS_PER_TARGET} s" >>"${summary}"
  line+=" ${t} ${execs} execs in ${SECONDS_PER_TARGET} s,"
  if [[ "${rc}" != 0 ]]; then
    crashes=$((crashes + 1))
    echo "fuzz: ${t} failed (exit ${rc}); log in ${log}" >&2
    grep -E 'ERROR: |SUMMARY: |Test unit written to|Reproduce with|artifact' "${log}" >&2 || true
    echo "fuzz: reproduce with ${BUILD}/${t}_fuzz <the file written above>" >&2
  fi
done
line+=" total ${total} execs, ${crashes} crashes"
echo "${line}" | tee -a "${summary}"
echo "fuzz: done in $(($(date +%s) - start)) s"
[[ "${crashes}" == 0 ]]
