// File: metrics.h
//
// The daemon's Prometheus metrics (issue 12), served as text on GET /metrics
// at a loopback address (`[metrics] listen`, off by default), through
// Debian's prometheus-cpp (its civetweb-based Exposer).
//
//   smolvmd_rpc_requests_total{method,code}      every RPC (Serve in rpc_reply.h)
//   smolvmd_rpc_duration_seconds{method}         histogram; CreateVm, CreateSnapshot,
//                                                RestoreSnapshot, ForkSnapshot, ClaimVm,
//                                                Exec, BuildImage ... (the whole call)
//   smolvmd_agent_connections_total{kind}        connect | reconnect (lib/core events)
//   smolvmd_firewall_updates_total{kind}         vm (one VM's rules) | full (whole ruleset)
//   smolvmd_firewall_update_seconds{kind}        histogram of those transactions
//   smolvmd_vms{state}                           gauges read from the store per scrape,
//   smolvmd_pool_members, smolvmd_pools,         every state listed (0 too)
//   smolvmd_snapshots, smolvmd_snapshot_bytes
//   smolvmd_census_errors_total                  scrapes whose store read failed
//
// Image builds are smolvmd_rpc_requests_total{method="BuildImage"} and its
// histogram. Labels hold only method names and status codes, never ids or
// client text, so the series stay few and nothing a client sends reaches
// the output.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "lib/core/events.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace smolvm::core {
class VmManager;
}

namespace smolvm::daemon {

class DaemonMetrics {
 public:
  DaemonMetrics();
  ~DaemonMetrics();
  DaemonMetrics(const DaemonMetrics&) = delete;
  DaemonMetrics& operator=(const DaemonMetrics&) = delete;

  // What lib/core reports to (ManagerOptions::events).
  core::EventSink Events();
  // One finished RPC.
  void ObserveRpc(std::string_view method, absl::StatusCode code, absl::Duration took);
  // Serves GET /metrics on `listen` (CheckMetricsListen, config.h), reading
  // `manager`'s census on every scrape. UNAVAILABLE if it cannot listen.
  absl::Status Serve(const std::string& listen, core::VmManager* manager);
  // The port it listens on (after Serve; 0 before).
  int port() const;

  // The text of GET /metrics, as a scrape would see it (tests).
  std::string Render() const;

  struct Families;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<Families> families_;
  std::shared_ptr<class CensusCollector> census_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// Serve() (rpc_reply.h) reports every RPC to the process's DaemonMetrics
// once one is set; main sets it before serving and clears it after.
void SetRpcMetrics(DaemonMetrics* metrics);
void ObserveRpc(std::string_view method, absl::StatusCode code, absl::Duration took);

}  // namespace smolvm::daemon
