#include "daemon/metrics.h"

#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smolvm::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(DaemonMetricsTest, RpcsAreCountedByMethodAndCodeAndTimed) {
  DaemonMetrics metrics;
  metrics.ObserveRpc("GetVm", absl::StatusCode::kNotFound, absl::Milliseconds(3));
  metrics.ObserveRpc("GetVm", absl::StatusCode::kNotFound, absl::Milliseconds(4));
  metrics.ObserveRpc("CreateVm", absl::StatusCode::kOk, absl::Seconds(6));
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("smolvmd_rpc_requests_total{code=\"NOT_FOUND\",method=\"GetVm\"} 2"));
  EXPECT_THAT(text, HasSubstr("smolvmd_rpc_requests_total{code=\"OK\",method=\"CreateVm\"} 1"));
  // 6 s lands in the 10 s bucket, not the 5 s one.
  EXPECT_THAT(text, HasSubstr("smolvmd_rpc_duration_seconds_bucket{method=\"CreateVm\",le=\"5\"} 0"));
  EXPECT_THAT(text,
              HasSubstr("smolvmd_rpc_duration_seconds_bucket{method=\"CreateVm\",le=\"10\"} 1"));
  EXPECT_THAT(text, HasSubstr("smolvmd_rpc_duration_seconds_count{method=\"GetVm\"} 2"));
  EXPECT_THAT(text, HasSubstr("# TYPE smolvmd_rpc_duration_seconds histogram"));
}

TEST(DaemonMetricsTest, CoreEventsBecomeCountersAndHistograms) {
  DaemonMetrics metrics;
  core::EventSink sink = metrics.Events();
  sink(core::CoreEvent::kAgentConnect, absl::ZeroDuration());
  sink(core::CoreEvent::kAgentConnect, absl::ZeroDuration());
  sink(core::CoreEvent::kAgentReconnect, absl::ZeroDuration());
  sink(core::CoreEvent::kFirewallVmUpdate, absl::Microseconds(400));
  sink(core::CoreEvent::kFirewallFullUpdate, absl::Milliseconds(300));
  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("smolvmd_agent_connections_total{kind=\"connect\"} 2"));
  EXPECT_THAT(text, HasSubstr("smolvmd_agent_connections_total{kind=\"reconnect\"} 1"));
  EXPECT_THAT(text, HasSubstr("smolvmd_firewall_updates_total{kind=\"vm\"} 1"));
  EXPECT_THAT(text, HasSubstr("smolvmd_firewall_updates_total{kind=\"full\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("smolvmd_firewall_update_seconds_bucket{kind=\"vm\",le=\"0.0005\"} 1"));
  EXPECT_THAT(text,
              HasSubstr("smolvmd_firewall_update_seconds_bucket{kind=\"full\",le=\"0.1\"} 0"));
}

// Serve() in rpc_reply.h reports through the process-wide pointer.
TEST(DaemonMetricsTest, ProcessWideObserverOnlyWhileSet) {
  DaemonMetrics metrics;
  ObserveRpc("ListVms", absl::StatusCode::kOk, absl::Milliseconds(1));  // None set: dropped.
  SetRpcMetrics(&metrics);
  ObserveRpc("ListVms", absl::StatusCode::kOk, absl::Milliseconds(1));
  SetRpcMetrics(nullptr);
  ObserveRpc("ListVms", absl::StatusCode::kOk, absl::Milliseconds(1));
  EXPECT_THAT(metrics.Render(),
              HasSubstr("smolvmd_rpc_requests_total{code=\"OK\",method=\"ListVms\"} 1"));
}

TEST(DaemonMetricsTest, ServeRefusesNonLoopbackAndABusyPort) {
  DaemonMetrics metrics;
  EXPECT_EQ(metrics.Serve("0.0.0.0:9464", nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(metrics.port(), 0);
  DaemonMetrics first;
  // Port 0 is refused by the check; find a free one by serving on it twice.
  for (int port = 39464; port < 39564; ++port) {
    const std::string listen = "127.0.0.1:" + std::to_string(port);
    if (!first.Serve(listen, nullptr).ok()) continue;
    EXPECT_EQ(first.port(), port);
    absl::Status again = metrics.Serve(listen, nullptr);
    EXPECT_EQ(again.code(), absl::StatusCode::kUnavailable) << again;
    EXPECT_THAT(std::string(again.message()), HasSubstr("cannot listen on " + listen));
    return;
  }
  FAIL() << "no free port in 39464-39563";
}

}  // namespace
}  // namespace smolvm::daemon
