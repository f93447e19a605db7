#include "daemon/metrics.h"

#include "daemon/config.h"

#include <atomic>
#include <exception>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/core/vm_manager.h"
#include "lib/model/vm.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {
namespace {

// 1 ms .. 10 min: an Exec of `true` to a cold boot or a large image build.
const prometheus::Histogram::BucketBoundaries& DurationBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 600};
  return *buckets;
}

// Firewall transactions: 0.1 ms .. 5 s.
const prometheus::Histogram::BucketBoundaries& FirewallBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5};
  return *buckets;
}

prometheus::MetricFamily Gauge(std::string name, std::string help) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  return family;
}

void AddValue(prometheus::MetricFamily& family, double value,
              std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

std::atomic<DaemonMetrics*> g_rpc_metrics{nullptr};

}  // namespace

struct DaemonMetrics::Families {
  explicit Families(prometheus::Registry& r)
      : rpcs(prometheus::BuildCounter()
                 .Name("smolvmd_rpc_requests_total")
                 .Help("RPCs served, by method and gRPC status code")
                 .Register(r)),
        rpc_seconds(prometheus::BuildHistogram()
                        .Name("smolvmd_rpc_duration_seconds")
                        .Help("Time to serve an RPC, by method (Exec: the whole command)")
                        .Register(r)),
        agent(prometheus::BuildCounter()
                  .Name("smolvmd_agent_connections_total")
                  .Help("Guest agent connections made: connect (first) or reconnect (after "
                        "a broken connection)")
                  .Register(r)),
        firewall(prometheus::BuildCounter()
                     .Name("smolvmd_firewall_updates_total")
                     .Help("Firewall transactions: vm (one VM's rules) or full (the whole "
                           "ruleset)")
                     .Register(r)),
        firewall_seconds(prometheus::BuildHistogram()
                             .Name("smolvmd_firewall_update_seconds")
                             .Help("Time of a firewall transaction, by kind")
                             .Register(r)),
        census_errors(prometheus::BuildCounter()
                          .Name("smolvmd_census_errors_total")
                          .Help("Scrapes whose read of the state store failed")
                          .Register(r)
                          .Add({})) {}
  prometheus::Family<prometheus::Counter>& rpcs;
  prometheus::Family<prometheus::Histogram>& rpc_seconds;
  prometheus::Family<prometheus::Counter>& agent;
  prometheus::Family<prometheus::Counter>& firewall;
  prometheus::Family<prometheus::Histogram>& firewall_seconds;
  prometheus::Counter& census_errors;
};

// The gauges read from the store at each scrape.
class CensusCollector : public prometheus::Collectable {
 public:
  CensusCollector(core::VmManager* manager, prometheus::Counter* errors)
      : manager_(manager), errors_(errors) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    absl::StatusOr<store::Store::Census> census = manager_->TakeCensus();
    if (!census.ok()) {
      // The rest of the scrape still answers; the gauges are left out
      // rather than reported as zeros.
      errors_->Increment();
      spdlog::warn("metrics: cannot read the store: {}", census.status().ToString());
      return {};
    }
    auto vms = Gauge("smolvmd_vms", "VMs by state (unclaimed pool members included)");
    for (VmState state : {VmState::kCreated, VmState::kRunning, VmState::kPaused,
                          VmState::kStopped, VmState::kError}) {
      const std::string name = VmStateName(state);
      auto it = census->vms_by_state.find(name);
      AddValue(vms, it == census->vms_by_state.end() ? 0 : static_cast<double>(it->second),
               {{"state", name}});
    }
    auto members = Gauge("smolvmd_pool_members", "Unclaimed members of warm pools");
    AddValue(members, static_cast<double>(census->pool_members));
    auto pools = Gauge("smolvmd_pools", "Warm pools");
    AddValue(pools, static_cast<double>(census->pools));
    auto snapshots = Gauge("smolvmd_snapshots", "Snapshots");
    AddValue(snapshots, static_cast<double>(census->snapshots));
    auto bytes = Gauge("smolvmd_snapshot_bytes", "Bytes the snapshots take on disk");
    AddValue(bytes, static_cast<double>(census->snapshot_bytes));
    return {vms, members, pools, snapshots, bytes};
  }

 private:
  core::VmManager* const manager_;
  prometheus::Counter* const errors_;
};

DaemonMetrics::DaemonMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      families_(std::make_unique<Families>(*registry_)) {}

DaemonMetrics::~DaemonMetrics() {
  // The server's threads stop before the families they read go.
  exposer_.reset();
  DaemonMetrics* self = this;
  g_rpc_metrics.compare_exchange_strong(self, nullptr);
}

core::EventSink DaemonMetrics::Events() {
  Families* f = families_.get();
  return [f](core::CoreEvent event, absl::Duration took) {
    switch (event) {
      case core::CoreEvent::kAgentConnect:
        f->agent.Add({{"kind", "connect"}}).Increment();
        break;
      case core::CoreEvent::kAgentReconnect:
        f->agent.Add({{"kind", "reconnect"}}).Increment();
        break;
      case core::CoreEvent::kFirewallVmUpdate:
      case core::CoreEvent::kFirewallFullUpdate: {
        const std::string kind = event == core::CoreEvent::kFirewallVmUpdate ? "vm" : "full";
        f->firewall.Add({{"kind", kind}}).Increment();
        f->firewall_seconds.Add({{"kind", kind}}, FirewallBuckets())
            .Observe(absl::ToDoubleSeconds(took));
        break;
      }
    }
  };
}

void DaemonMetrics::ObserveRpc(std::string_view method, absl::StatusCode code,
                               absl::Duration took) {
  const std::string m(method);
  families_->rpcs.Add({{"method", m}, {"code", absl::StatusCodeToString(code)}}).Increment();
  families_->rpc_seconds.Add({{"method", m}}, DurationBuckets())
      .Observe(absl::ToDoubleSeconds(took));
}

absl::Status DaemonMetrics::Serve(const std::string& listen, core::VmManager* manager) {
  if (absl::Status s = CheckMetricsListen(listen); !s.ok()) return s;
  census_ = std::make_shared<CensusCollector>(manager, &families_->census_errors);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen, ": ", e.what(),
                     " (is the port taken? pick another in [metrics] listen)"));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(census_);
  return absl::OkStatus();
}

int DaemonMetrics::port() const {
  if (!exposer_) return 0;
  std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

std::string DaemonMetrics::Render() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  if (census_) {
    for (auto& f : census_->Collect()) families.push_back(std::move(f));
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

void SetRpcMetrics(DaemonMetrics* metrics) { g_rpc_metrics = metrics; }

void ObserveRpc(std::string_view method, absl::StatusCode code, absl::Duration took) {
  if (DaemonMetrics* m = g_rpc_metrics.load()) m->ObserveRpc(method, code, took);
}

}  // namespace smolvm::daemon
