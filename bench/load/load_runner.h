// File: bench/load/load_runner.h
// -----------------------------------------------------------------------------
//
// The load benchmark (issue 9, part 8): LoadOptions::clients concurrent
// clients mix reads, Exec and VM/snapshot churn against one smolvmd for a
// bounded time, and the daemon's RSS and open fds are compared between the
// end of a warmup and the end of the run.
//
//   setup     cold-boot ONE base VM (<prefix>-base) and snapshot it once
//             (<prefix>-base-snap, the base keeps running);
//   warmup    the clients run the mix for LoadOptions::warmup, then delete
//             everything they made; the daemon's usage is sampled ("before");
//   measured  the mix again for LoadOptions::duration (in
//             LoadOptions::rounds rounds, each ending with the same cleanup
//             and a sample; the last is "after"): the same objects exist at both
//             samples (the base VM and its snapshot), so fds must be equal
//             and RSS within the tolerance;
//   teardown  the base snapshot and VM are deleted, then every VM and
//             snapshot whose id starts with the prefix that is still listed
//             is deleted and reported as a leftover.
// Teardown also runs after an interruption (LoadOptions::interrupted) or a
// failed setup.
#ifndef SMOLVM_BENCH_LOAD_LOAD_RUNNER_H_
#define SMOLVM_BENCH_LOAD_LOAD_RUNNER_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "bench/load/daemon_usage.h"
#include "bench/load/load_options.h"
#include "bench/load/load_stats.h"
#include "nlohmann/json.hpp"

namespace smolvm::load {

struct LoadReport {
  LoadOptions options;                                  // As run (id_prefix resolved).
  pid_t daemon_pid = 0;                                 // 0 if not sampled.
  absl::Duration boot_time = absl::ZeroDuration();      // Base VM, cold.
  absl::Duration snapshot_time = absl::ZeroDuration();  // Base snapshot.
  PhaseStats warmup, measured;
  // The daemon before the base VM existed, after the warmup's cleanup, and
  // after the measured phase's cleanup (unset if not sampled).
  std::optional<DaemonUsage> initial, before, after;
  // The sample after each measured round (the last one is `after`).
  std::vector<DaemonUsage> rounds;
  // RSS growth allowed between `before` and `after`.
  int64_t rss_tolerance_kib = 0;
  // Objects with the prefix the final sweep found (and deleted), and
  // failures of the teardown itself.
  std::vector<std::string> leftovers;
  std::vector<std::string> teardown_errors;
  bool interrupted = false;

  // Failed calls of both phases.
  int64_t errors() const { return warmup.error_count() + measured.error_count(); }
  bool fds_ok() const;
  bool rss_ok() const;
  // No error, no growth, nothing left, not interrupted.
  bool ok() const;
  // Why !ok(), one reason a line ("" if ok).
  std::string Problems() const;
  nlohmann::json ToJson() const;
  std::string ToText() const;
};

// Runs the load. Fails (after cleaning up) only if setup fails: the daemon
// cannot be reached, the base VM does not boot or cannot be snapshotted,
// or the options are unusable. Everything else is in the report.
absl::StatusOr<LoadReport> RunLoad(LoadOptions options);

}  // namespace smolvm::load

#endif  // SMOLVM_BENCH_LOAD_LOAD_RUNNER_H_
