// File: bench/load/load_stats.h
// -----------------------------------------------------------------------------
//
// What the load benchmark counts: the RPC kinds of its mix, and for each one
// the latency of every call and its failures by gRPC code (with the first
// message of each code, to report a bug precisely). One PhaseStats per
// client per phase; the runner merges them. Not thread-safe: each client
// fills its own.
#ifndef SMOLVM_BENCH_LOAD_LOAD_STATS_H_
#define SMOLVM_BENCH_LOAD_LOAD_STATS_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"

namespace smolvm::load {

// The RPCs the load mixes, in report order: the cheap reads, Exec, then the
// operations that start or end VMMs or write snapshots.
enum class Rpc {
  kListVms,
  kGetVm,
  kListSnapshots,
  kGetSnapshot,
  kExec,
  kRestoreSnapshot,
  kForkSnapshot,
  kCreateSnapshot,
  kDeleteVm,
  kDeleteSnapshot,
};
inline constexpr int kRpcCount = 10;

// The RPC's name as in the .proto ("ListVms").
const char* RpcName(Rpc rpc);
// The short name used in --mix ("list_vms"); ParseRpc is its inverse.
const char* RpcFlagName(Rpc rpc);
bool ParseRpc(absl::string_view flag_name, Rpc* rpc);

// The outcomes of one RPC kind.
struct RpcStats {
  // Every call's latency in ms, failed ones included.
  std::vector<double> latencies_ms;
  // Failures by code name ("UNAVAILABLE"), and the first message of each.
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> first_error;

  int64_t calls() const { return static_cast<int64_t>(latencies_ms.size()); }
  int64_t error_count() const;
  // Records one call that took `latency` and ended with `status`.
  void Record(absl::Duration latency, const absl::Status& status);
  // Records a failure that is part of a call already recorded (a clone of a
  // ForkSnapshot whose call succeeded).
  void RecordError(const absl::Status& status);
  void Merge(const RpcStats& other);
};

// Everything counted in one phase (warmup or measured).
struct PhaseStats {
  std::array<RpcStats, kRpcCount> rpcs;
  absl::Duration wall = absl::ZeroDuration();

  RpcStats& operator[](Rpc rpc) { return rpcs[static_cast<int>(rpc)]; }
  const RpcStats& operator[](Rpc rpc) const { return rpcs[static_cast<int>(rpc)]; }
  int64_t calls() const;
  int64_t error_count() const;
  // Failures of every RPC, by code name.
  std::map<std::string, int64_t> ErrorsByCode() const;
  // Merges counts; `wall` becomes the longer of the two.
  void Merge(const PhaseStats& other);
  // {"wall_s", "calls", "calls_per_s", "rpcs": {name: {calls, per_s, p50_ms,
  // p99_ms, max_ms, errors: {code: n}, first_error: {code: message}}}}.
  nlohmann::json ToJson() const;
  // A table: one line per RPC kind, then the errors.
  std::string ToText() const;
};

// The p-quantile (0..1) of `values` by nearest rank; 0 if empty.
double Percentile(std::vector<double> values, double p);

}  // namespace smolvm::load

#endif  // SMOLVM_BENCH_LOAD_LOAD_STATS_H_
