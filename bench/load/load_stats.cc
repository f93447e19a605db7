// File: bench/load/load_stats.cc
#include "bench/load/load_stats.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace smolvm::load {
namespace {

struct RpcNames {
  const char* name;
  const char* flag;
};
constexpr RpcNames kNames[kRpcCount] = {
    {"ListVms", "list_vms"},
    {"GetVm", "get_vm"},
    {"ListSnapshots", "list_snapshots"},
    {"GetSnapshot", "get_snapshot"},
    {"Exec", "exec"},
    {"RestoreSnapshot", "restore"},
    {"ForkSnapshot", "fork"},
    {"CreateSnapshot", "snapshot"},
    {"DeleteVm", "delete_vm"},
    {"DeleteSnapshot", "delete_snapshot"},
};

double PerSecond(int64_t n, absl::Duration wall) {
  double s = absl::ToDoubleSeconds(wall);
  return s > 0 ? n / s : 0;
}

}  // namespace

const char* RpcName(Rpc rpc) { return kNames[static_cast<int>(rpc)].name; }
const char* RpcFlagName(Rpc rpc) { return kNames[static_cast<int>(rpc)].flag; }

bool ParseRpc(absl::string_view flag_name, Rpc* rpc) {
  for (int i = 0; i < kRpcCount; ++i) {
    if (flag_name == kNames[i].flag) {
      *rpc = static_cast<Rpc>(i);
      return true;
    }
  }
  return false;
}

int64_t RpcStats::error_count() const {
  int64_t n = 0;
  for (const auto& [code, count] : errors) n += count;
  return n;
}

void RpcStats::Record(absl::Duration latency, const absl::Status& status) {
  latencies_ms.push_back(absl::ToDoubleMilliseconds(latency));
  if (!status.ok()) RecordError(status);
}

void RpcStats::RecordError(const absl::Status& status) {
  const std::string code = absl::StatusCodeToString(status.code());
  ++errors[code];
  first_error.emplace(code, std::string(status.message()));
}

void RpcStats::Merge(const RpcStats& other) {
  latencies_ms.insert(latencies_ms.end(), other.latencies_ms.begin(), other.latencies_ms.end());
  for (const auto& [code, count] : other.errors) errors[code] += count;
  for (const auto& [code, message] : other.first_error) first_error.emplace(code, message);
}

int64_t PhaseStats::calls() const {
  int64_t n = 0;
  for (const RpcStats& r : rpcs) n += r.calls();
  return n;
}

int64_t PhaseStats::error_count() const {
  int64_t n = 0;
  for (const RpcStats& r : rpcs) n += r.error_count();
  return n;
}

std::map<std::string, int64_t> PhaseStats::ErrorsByCode() const {
  std::map<std::string, int64_t> by_code;
  for (const RpcStats& r : rpcs) {
    for (const auto& [code, count] : r.errors) by_code[code] += count;
  }
  return by_code;
}

void PhaseStats::Merge(const PhaseStats& other) {
  for (int i = 0; i < kRpcCount; ++i) rpcs[i].Merge(other.rpcs[i]);
  wall = std::max(wall, other.wall);
}

nlohmann::json PhaseStats::ToJson() const {
  nlohmann::json j = {{"wall_s", absl::ToDoubleSeconds(wall)},
                      {"calls", calls()},
                      {"calls_per_s", PerSecond(calls(), wall)},
                      {"errors", error_count()},
                      {"errors_by_code", ErrorsByCode()}};
  nlohmann::json per_rpc = nlohmann::json::object();
  for (int i = 0; i < kRpcCount; ++i) {
    const RpcStats& r = rpcs[i];
    per_rpc[kNames[i].name] = {
        {"calls", r.calls()},
        {"per_s", PerSecond(r.calls(), wall)},
        {"p50_ms", Percentile(r.latencies_ms, 0.5)},
        {"p99_ms", Percentile(r.latencies_ms, 0.99)},
        {"max_ms", Percentile(r.latencies_ms, 1.0)},
        {"errors", r.errors},
        {"first_error", r.first_error},
    };
  }
  j["rpcs"] = std::move(per_rpc);
  return j;
}

std::string PhaseStats::ToText() const {
  std::string out = absl::StrFormat("%-16s %8s %8s %10s %10s %10s %7s\n", "rpc", "calls", "per_s",
                                    "p50_ms", "p99_ms", "max_ms", "errors");
  for (int i = 0; i < kRpcCount; ++i) {
    const RpcStats& r = rpcs[i];
    absl::StrAppendFormat(&out, "%-16s %8d %8.2f %10.2f %10.2f %10.2f %7d\n", kNames[i].name,
                          r.calls(), PerSecond(r.calls(), wall), Percentile(r.latencies_ms, 0.5),
                          Percentile(r.latencies_ms, 0.99), Percentile(r.latencies_ms, 1.0),
                          r.error_count());
  }
  absl::StrAppendFormat(&out, "%-16s %8d %8.2f   (%.1f s)\n", "all", calls(),
                        PerSecond(calls(), wall), absl::ToDoubleSeconds(wall));
  for (int i = 0; i < kRpcCount; ++i) {
    for (const auto& [code, count] : rpcs[i].errors) {
      absl::StrAppend(&out, "  error ", kNames[i].name, " ", code, " x", count, ": ",
                      rpcs[i].first_error.at(code), "\n");
    }
  }
  return out;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t i = static_cast<size_t>(p * (values.size() - 1) + 0.5);
  return values[std::min(i, values.size() - 1)];
}

}  // namespace smolvm::load
