// The Prometheus endpoint of the real daemon, scraped over HTTP as
// Prometheus would (GET /metrics on the loopback address of the daemon's
// network namespace), checking that each family moves with the work that
// feeds it: RPCs by method and code, latency histograms, VMs by state, the
// guest agent's connections, firewall transactions, snapshots and their
// bytes. One cold boot.
#include <fstream>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

constexpr char kListen[] = "127.0.0.1:9464";

class MetricsScrapeTest : public ::testing::Test {
 protected:
  // Every sample line "name{labels} value" -> value.
  std::map<std::string, double> Scrape() {
    // The endpoint is the loopback of the daemon's namespace: fetched from
    // inside it by a small script (no quoting through the shell).
    const std::string script = daemon_.dir() + "/scrape.py";
    std::ofstream(script) << "import sys, urllib.request\n"
                          << "url = 'http://" << kListen << "/metrics'\n"
                          << "sys.stdout.write(urllib.request.urlopen(url, timeout=10).read()"
                             ".decode())\n";
    auto [rc, out] = daemon_.InNetns(daemon_.NetnsHost(), "python3 " + script);
    EXPECT_EQ(rc, 0) << out;
    std::map<std::string, double> samples;
    for (absl::string_view line : absl::StrSplit(out, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      const size_t space = line.rfind(' ');
      double value = 0;
      if (space == absl::string_view::npos || !absl::SimpleAtod(line.substr(space + 1), &value)) {
        ADD_FAILURE() << "not a sample line: " << line;
        continue;
      }
      samples[std::string(line.substr(0, space))] = value;
    }
    return samples;
  }
  static double Get(const std::map<std::string, double>& s, const std::string& key) {
    auto it = s.find(key);
    return it == s.end() ? 0 : it->second;
  }

  TestDaemon daemon_;
};

TEST_F(MetricsScrapeTest, ScrapedFamiliesMoveWithTheWork) {
  ASSERT_TRUE(daemon_.Start({"--metrics-listen", kListen}).ok()) << daemon_.DaemonLog();
  ClientOptions options = daemon_.client_options();
  SmolVMManager manager(options);

  auto before = Scrape();
  EXPECT_EQ(Get(before, "smolvmd_vms{state=\"running\"}"), 0);
  EXPECT_EQ(Get(before, "smolvmd_snapshots"), 0);
  const std::string not_found = "smolvmd_rpc_requests_total{code=\"NOT_FOUND\",method=\"GetVm\"}";
  const double misses = Get(before, not_found);
  EXPECT_EQ(manager.get_vm("no-such-vm").status().code(), absl::StatusCode::kNotFound);

  v1::VMConfig config;
  config.set_vm_id("metrics-vm");
  config.set_memory_mib(256);
  config.set_vcpu_count(1);
  SmolVM vm(config, options);
  ASSERT_TRUE(vm.start().ok());
  auto ran = vm.run("true");
  ASSERT_TRUE(ran.ok()) << ran.status();
  auto snap = vm.snapshot("metrics-snap");
  ASSERT_TRUE(snap.ok()) << snap.status();

  auto after = Scrape();
  EXPECT_EQ(Get(after, not_found), misses + 1);
  EXPECT_EQ(Get(after, "smolvmd_rpc_requests_total{code=\"OK\",method=\"CreateVm\"}"), 1);
  EXPECT_EQ(Get(after, "smolvmd_rpc_duration_seconds_count{method=\"CreateVm\"}"), 1);
  // A cold boot under TCG takes seconds: the sum says so.
  EXPECT_GT(Get(after, "smolvmd_rpc_duration_seconds_sum{method=\"CreateVm\"}"), 1.0);
  EXPECT_EQ(Get(after, "smolvmd_rpc_duration_seconds_count{method=\"Exec\"}"), 1);
  EXPECT_EQ(Get(after, "smolvmd_rpc_duration_seconds_count{method=\"CreateSnapshot\"}"), 1);
  EXPECT_GE(Get(after, "smolvmd_agent_connections_total{kind=\"connect\"}"), 1);
  EXPECT_GE(Get(after, "smolvmd_firewall_updates_total{kind=\"vm\"}") +
                Get(after, "smolvmd_firewall_updates_total{kind=\"full\"}"),
            Get(before, "smolvmd_firewall_updates_total{kind=\"vm\"}") +
                Get(before, "smolvmd_firewall_updates_total{kind=\"full\"}") + 1);
  // snapshot() leaves the VM paused unless told otherwise.
  EXPECT_EQ(Get(after, "smolvmd_vms{state=\"running\"}") + Get(after, "smolvmd_vms{state=\"paused\"}"),
            1);
  EXPECT_EQ(Get(after, "smolvmd_snapshots"), 1);
  EXPECT_GT(Get(after, "smolvmd_snapshot_bytes"), 1 << 20);
  EXPECT_EQ(Get(after, "smolvmd_census_errors_total"), 0);

  ASSERT_TRUE(vm.close().ok());
  ASSERT_TRUE(manager.delete_snapshot("metrics-snap").ok());
  auto gone = Scrape();
  EXPECT_EQ(Get(gone, "smolvmd_vms{state=\"running\"}") + Get(gone, "smolvmd_vms{state=\"paused\"}"),
            0);
  EXPECT_EQ(Get(gone, "smolvmd_snapshots"), 0);
  EXPECT_EQ(Get(gone, "smolvmd_rpc_requests_total{code=\"OK\",method=\"DeleteVm\"}"), 1);
}

// The endpoint has no authentication: a non-loopback address is refused at
// start, naming the setting.
TEST_F(MetricsScrapeTest, NonLoopbackAddressIsRefusedAtStart) {
  absl::Status started = daemon_.Start({"--metrics-listen", "0.0.0.0:9464"});
  EXPECT_FALSE(started.ok());
  EXPECT_NE(daemon_.DaemonLog().find("[metrics] listen / --metrics-listen"), std::string::npos)
      << daemon_.DaemonLog();
}

}  // namespace
}  // namespace smolvm::testing
