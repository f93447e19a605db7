// exec_bench: the exec path's latency, measured in one run on one warm VM:
//   - Exec of `true` through the public API (client → daemon → agent →
//     fork/exec in the guest → back), p50/p99 over N calls;
//   - the bare round trip of one protocol frame over the same virtio-serial
//     channel (PingAgent, timed inside the daemon), p50/p99 over N;
//   - restore from a snapshot → first Exec completed, over R restores.
// Usage: exec_bench [--calls N] [--restores R]; needs $SMOLVMD_SOCKET
// (bench/run.sh starts a private daemon).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/connection.h"
#include "client/smolvm.h"

namespace {

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

int Fail(const std::string& what, const absl::Status& s) {
  std::fprintf(stderr, "exec_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int calls = 1000, restores = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    int* target = flag == "--calls" ? &calls : flag == "--restores" ? &restores : nullptr;
    if (!target || !absl::SimpleAtoi(argv[i + 1], target) || *target < 1) {
      std::fprintf(stderr, "usage: exec_bench [--calls N] [--restores R]\n");
      return 2;
    }
  }
  smolvm::v1::VMConfig config;
  config.set_vm_id("exec-bench");
  config.set_memory_mib(256);
  config.set_vcpu_count(1);
  smolvm::SmolVM vm(config);
  if (auto s = vm.start(); !s.ok()) return Fail("start", s);
  // Warm up: first execs fault in the guest's page cache.
  for (int i = 0; i < 10; ++i) (void)vm.run(std::vector<std::string>{"true"});

  std::vector<double> exec_ms;
  for (int i = 0; i < calls; ++i) {
    absl::Time t = absl::Now();
    auto r = vm.run(std::vector<std::string>{"true"});
    if (!r.ok()) return Fail("exec", r.status());
    exec_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
  }
  smolvm::Connection conn(smolvm::ClientOptions{});
  smolvm::v1::PingAgentRequest ping;
  ping.set_vm_id("exec-bench");
  ping.set_count(calls);
  auto pings = conn.Call(&smolvm::v1::VmService::Stub::PingAgent, ping);
  if (!pings.ok()) return Fail("ping", pings.status());
  std::vector<double> ping_ms;
  for (uint64_t ns : pings->round_trip_ns()) ping_ms.push_back(ns / 1e6);

  auto snap = vm.snapshot("exec-bench-snap", /*resume_source=*/true);
  if (!snap.ok()) return Fail("snapshot", snap.status());
  std::vector<double> restore_ms, first_exec_ms;
  for (int i = 0; i < restores; ++i) {
    absl::Time t = absl::Now();
    auto clone = smolvm::SmolVM::from_snapshot("exec-bench-snap", true,
                                               absl::StrCat("exec-bench-clone-", i));
    if (!clone.ok()) return Fail("restore", clone.status());
    restore_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    auto r = clone->run(std::vector<std::string>{"true"});
    if (!r.ok()) return Fail("first exec", r.status());
    first_exec_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t));
    (void)clone->close();
  }
  (void)smolvm::SmolVMManager().delete_snapshot("exec-bench-snap");
  (void)vm.close();

  std::printf("%-44s %10s %10s\n", "measurement", "p50_ms", "p99_ms");
  std::printf("%-44s %10.2f %10.2f\n",
              absl::StrCat("exec `true` round trip (", calls, " calls)").c_str(),
              Pct(exec_ms, 0.5), Pct(exec_ms, 0.99));
  std::printf("%-44s %10.2f %10.2f\n",
              absl::StrCat("raw agent-channel round trip (", calls, " pings)").c_str(),
              Pct(ping_ms, 0.5), Pct(ping_ms, 0.99));
  std::printf("%-44s %10.2f %10.2f\n",
              absl::StrCat("restore -> RUNNING, agent fixed up (", restores, ")").c_str(),
              Pct(restore_ms, 0.5), Pct(restore_ms, 0.99));
  std::printf("%-44s %10.2f %10.2f\n",
              absl::StrCat("restore -> first exec completed (", restores, ")").c_str(),
              Pct(first_exec_ms, 0.5), Pct(first_exec_ms, 0.99));
  std::printf("\nbaseline: the raw channel round trip is the floor under every exec; "
              "DESIGN.md's restore-to-running is 80-180 ms (no agent)\n");
  return 0;
}
