// firewall_bench: what one VM's firewall change costs with 1 and with 1,000
// VMs, for the per-VM transaction (NftFirewall::ApplyVm) and for the whole
// ruleset re-rendered and swapped in (NftFirewall::Apply through
// libnftables, and the same script run by a spawned `nft -f`, which is what
// every change cost before per-VM changes).
//
//   stdout: one JSON object per line and result, the shape perf_bench
//     prints: {"name": "firewall.N.<path>.<change>", "unit": "ms", "n": reps,
//     "p50": x, "p99": y, "samples": [...]} (nearest-rank percentiles);
//   stderr: progress.
//
// Cases per N in --vms (default 1,1000; every VM has open egress and one
// port forward): incremental.{add,update,remove} (a VM added, its egress
// policy changed, removed again: one ApplyVm each), full.libnftables (Apply
// of the whole state) and full.nft_command (the whole script through
// `nft -f`). --reps samples each (default 50).
//
// Runs as root in a throwaway network namespace ("svfb-" + random hex, with
// a process-wide setns), deleted at the end, also on failure.
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/net/firewall.h"
#include "lib/net/ip_pool.h"
#include "lib/net/nft_firewall.h"
#include "nlohmann/json.hpp"

namespace smolvm::net {
namespace {

using Clock = std::chrono::steady_clock;

double NearestRank(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * samples.size()));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

double Round(double v) { return std::round(v * 1000) / 1000; }

void Emit(const std::string& name, const std::vector<double>& samples) {
  nlohmann::ordered_json j;
  j["name"] = name;
  j["unit"] = "ms";
  j["n"] = samples.size();
  j["p50"] = Round(NearestRank(samples, 50));
  j["p99"] = Round(NearestRank(samples, 99));
  nlohmann::json list = nlohmann::json::array();
  for (double v : samples) list.push_back(Round(v));
  j["samples"] = std::move(list);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "firewall_bench: %-40s p50 %8.3f ms  p99 %8.3f ms\n", name.c_str(),
               NearestRank(samples, 50), NearestRank(samples, 99));
}

// Times `fn` `reps` times; the first failure ends the run.
absl::StatusOr<std::vector<double>> Time(int reps, const std::function<absl::Status()>& fn) {
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    auto start = Clock::now();
    if (absl::Status s = fn(); !s.ok()) return s;
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return ms;
}

absl::Status Check(const absl::StatusOr<std::map<std::string, absl::Status>>& applied) {
  if (!applied.ok()) return applied.status();
  if (!applied->empty()) return applied->begin()->second;
  return absl::OkStatus();
}

VmFirewallEntry Entry(int i, uint32_t ip) {
  VmFirewallEntry vm;
  vm.vm_id = absl::StrCat("vm-", i);
  vm.tap = TapNameFor(ip);
  vm.ip = ip;
  vm.egress.mode = EgressMode::kOpen;
  vm.forwards.push_back({"0.0.0.0", static_cast<uint32_t>(20000 + i), 80, "tcp"});
  return vm;
}

absl::Status RunCases(int vms, int reps) {
  FirewallState state;
  state.table = "smolvmd_bench";
  state.bridge = "svfbbr0";
  SMOLVM_ASSIGN_OR_RETURN(state.subnet, Subnet::Parse("10.200.0.0/16"));
  state.uplink = "eth0";
  state.deny_cidrs = {"169.254.0.0/16", "192.168.0.0/16"};
  state.output_dnat_ips = {0x7f000001};
  std::vector<uint32_t> ips = state.subnet.HostAddresses();
  for (int i = 0; i < vms; ++i) state.vms.push_back(Entry(i, ips[i]));
  SMOLVM_ASSIGN_OR_RETURN(std::unique_ptr<NftFirewall> firewall, NftFirewall::Create());
  absl::Cleanup remove = [&] { (void)firewall->Remove(state.table); };
  SMOLVM_RETURN_IF_ERROR(Check(firewall->Apply(state)));
  const std::string prefix = absl::StrCat("firewall.", vms, ".");

  // One more VM comes and goes; an existing one flips its egress policy.
  const VmFirewallEntry extra = Entry(vms, ips[vms]);
  std::vector<double> add, remove_ms;
  for (int i = 0; i < reps; ++i) {
    state.vms.push_back(extra);
    SMOLVM_ASSIGN_OR_RETURN(auto a, Time(1, [&] { return Check(firewall->ApplyVm(state, extra.vm_id)); }));
    state.vms.pop_back();
    SMOLVM_ASSIGN_OR_RETURN(auto r, Time(1, [&] { return Check(firewall->ApplyVm(state, extra.vm_id)); }));
    add.push_back(a[0]);
    remove_ms.push_back(r[0]);
  }
  VmFirewallEntry& target = state.vms[vms / 2];
  SMOLVM_ASSIGN_OR_RETURN(auto update, Time(reps, [&] {
    target.egress.mode =
        target.egress.mode == EgressMode::kOpen ? EgressMode::kOff : EgressMode::kOpen;
    return Check(firewall->ApplyVm(state, target.vm_id));
  }));
  Emit(prefix + "incremental.add", add);
  Emit(prefix + "incremental.update", update);
  Emit(prefix + "incremental.remove", remove_ms);

  SMOLVM_ASSIGN_OR_RETURN(auto full, Time(reps, [&] { return Check(firewall->Apply(state)); }));
  Emit(prefix + "full.libnftables", full);

  // The path before per-VM changes: render, write, spawn nft.
  char path[] = "/tmp/firewall_bench-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return absl::ErrnoToStatus(errno, "mkstemp");
  close(fd);
  absl::Cleanup unlink_script = [&path] { unlink(path); };
  SMOLVM_ASSIGN_OR_RETURN(auto command, Time(reps, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(RenderedRuleset rendered, RenderNftRulesetLenient(state));
    FILE* f = std::fopen(path, "w");
    if (f == nullptr) return absl::ErrnoToStatus(errno, "open script");
    std::fputs(rendered.script.c_str(), f);
    std::fclose(f);
    return RunChecked({"nft", "-f", path}).status();
  }));
  Emit(prefix + "full.nft_command", command);
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<int> counts = {1, 1000};
  int reps = 50;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value = i + 1 < argc ? argv[i + 1] : "";
    if (arg == "--reps" && absl::SimpleAtoi(value, &reps) && reps > 0) {
      ++i;
    } else if (arg == "--vms" && !value.empty()) {
      counts.clear();
      for (absl::string_view n : absl::StrSplit(value, ',')) {
        int count = 0;
        if (!absl::SimpleAtoi(n, &count) || count < 1 || count > 60000) {
          std::fprintf(stderr, "firewall_bench: bad --vms %s\n", value.c_str());
          return 2;
        }
        counts.push_back(count);
      }
      ++i;
    } else {
      std::fprintf(stderr, "usage: firewall_bench [--vms 1,1000] [--reps 50]\n");
      return 2;
    }
  }
  if (geteuid() != 0) {
    std::fprintf(stderr, "firewall_bench: needs root (a network namespace)\n");
    return 2;
  }
  std::random_device random;
  const std::string netns = absl::StrFormat("svfb-%08x", random());
  if (auto added = RunChecked({"ip", "netns", "add", netns}); !added.ok()) {
    std::fprintf(stderr, "firewall_bench: %s\n", std::string(added.status().message()).c_str());
    return 1;
  }
  absl::Cleanup delete_netns = [&] { (void)RunChecked({"ip", "netns", "del", netns}); };
  // This thread (and the nft it spawns) works in the namespace from here;
  // `ip netns del` above runs from it too, which is fine: it names it.
  int fd = open(absl::StrCat("/run/netns/", netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    std::perror("firewall_bench: enter the namespace");
    return 1;
  }
  close(fd);
  for (int count : counts) {
    if (absl::Status s = RunCases(count, reps); !s.ok()) {
      std::fprintf(stderr, "firewall_bench: %d vms: %s\n", count, std::string(s.message()).c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace smolvm::net

int main(int argc, char** argv) { return smolvm::net::Main(argc, argv); }
