// File: bench/load/load_runner.cc
#include "bench/load/load_runner.h"

#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "bench/load/load_client.h"
#include "client/smolvm.h"

namespace smolvm::load {
namespace {

// How long the daemon's fd count must hold still before it is sampled, and
// how long to wait for that (a VMM's last fds close just after DeleteVm).
constexpr absl::Duration kSettleStep = absl::Milliseconds(250);
constexpr int kSettleSteps = 4;
constexpr absl::Duration kSettleMax = absl::Seconds(15);

void Progress(const LoadOptions& o, const std::string& line) {
  if (o.progress) o.progress(line);
}

absl::Status Validate(const LoadOptions& o) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (o.clients < 1) return bad("clients must be at least 1");
  if (o.rounds < 1) return bad("rounds must be at least 1");
  if (o.duration <= absl::ZeroDuration()) return bad("duration must be positive");
  if (o.warmup < absl::ZeroDuration()) return bad("warmup must not be negative");
  if (o.max_clones < 0 || o.max_snapshots < 0) return bad("bounds must not be negative");
  if (o.fork_count < 1 || o.fork_count > 64) return bad("fork count must be 1-64");
  int sum = 0;
  for (int w : o.mix) sum += w;
  if (sum == 0) return bad("the mix has no call with a positive weight");
  if (o.mix[static_cast<int>(Rpc::kForkSnapshot)] > 0 &&
      static_cast<int>(o.fork_count) > o.max_clones) {
    return bad("fork count ", o.fork_count, " exceeds max clones ", o.max_clones,
               ": no fork could ever run");
  }
  // Ids are at most 64 characters; the longest is a fork clone's.
  if (o.id_prefix.size() > 32) return bad("id prefix longer than 32 characters");
  return absl::OkStatus();
}

std::string RandomPrefix() {
  std::random_device rd;
  return absl::StrFormat("load-%06x", rd() & 0xffffff);
}

// Samples the daemon once its fd count held still for kSettleSteps steps
// (and, with `want_fds` >= 0, dropped to at most that), or after kSettleMax.
std::optional<DaemonUsage> Settle(pid_t pid, int64_t want_fds = -1) {
  if (pid <= 0) return std::nullopt;
  absl::Time deadline = absl::Now() + kSettleMax;
  std::optional<DaemonUsage> last;
  int stable = 0;
  while (true) {
    auto u = ReadUsage(pid);
    if (!u.ok()) return std::nullopt;
    stable = last.has_value() && last->fds == u->fds ? stable + 1 : 0;
    last = *u;
    bool settled = stable >= kSettleSteps && (want_fds < 0 || u->fds <= want_fds);
    if (settled || absl::Now() > deadline) return last;
    absl::SleepFor(kSettleStep);
  }
}

// Runs every client for one phase (the mix until `length` passed, then
// each deletes what it made) and merges their counts.
PhaseStats RunPhase(std::vector<std::unique_ptr<LoadClient>>& clients, absl::Duration length) {
  std::vector<PhaseStats> per_client(clients.size());
  absl::Time start = absl::Now();
  absl::Time end = start + length;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clients.size(); ++i) {
    threads.emplace_back([&, i] {
      clients[i]->Run(end, &per_client[i]);
      clients[i]->Release(&per_client[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  PhaseStats merged;
  for (const PhaseStats& s : per_client) merged.Merge(s);
  // Throughput over the mix's time, not the cleanup after it.
  merged.wall = std::min(absl::Now(), end) - start;
  return merged;
}

// Deletes every VM, then every snapshot, whose id starts with `prefix`;
// returns what it found.
std::vector<std::string> Sweep(const SmolVMManager& manager, const std::string& prefix,
                               std::vector<std::string>* errors) {
  std::vector<std::string> found;
  const std::string p = prefix + "-";
  if (auto vms = manager.list_vms(); vms.ok()) {
    for (const v1::Vm& vm : *vms) {
      if (!absl::StartsWith(vm.vm_id(), p)) continue;
      found.push_back("vm " + vm.vm_id());
      v1::DeleteVmRequest req;
      req.set_vm_id(vm.vm_id());
      auto r = manager.connection().Call(&v1::VmService::Stub::DeleteVm, req);
      if (!r.ok()) {
        errors->push_back(absl::StrCat("delete vm ", vm.vm_id(), ": ", r.status().ToString()));
      }
    }
  } else {
    errors->push_back(absl::StrCat("list vms: ", vms.status().ToString()));
  }
  if (auto snaps = manager.list_snapshots(); snaps.ok()) {
    for (const v1::SnapshotInfo& s : *snaps) {
      if (!absl::StartsWith(s.snapshot_id(), p)) continue;
      found.push_back("snapshot " + s.snapshot_id());
      if (auto st = manager.delete_snapshot(s.snapshot_id()); !st.ok()) {
        errors->push_back(absl::StrCat("delete snapshot ", s.snapshot_id(), ": ", st.ToString()));
      }
    }
  } else {
    errors->push_back(absl::StrCat("list snapshots: ", snaps.status().ToString()));
  }
  return found;
}

}  // namespace

absl::StatusOr<LoadReport> RunLoad(LoadOptions options) {
  if (options.id_prefix.empty()) options.id_prefix = RandomPrefix();
  if (absl::Status s = Validate(options); !s.ok()) return s;
  LoadReport report;
  report.options = options;
  const LoadOptions& o = report.options;
  auto interrupted = [&o] { return o.interrupted != nullptr && o.interrupted->load(); };

  SmolVMManager manager(o.client);
  if (auto vms = manager.list_vms(); !vms.ok()) return vms.status();
  report.daemon_pid = o.daemon_pid;
  if (report.daemon_pid == 0 && !manager.connection().socket_path().empty()) {
    auto pid = FindDaemonPid(manager.connection().socket_path());
    if (!pid.ok()) return pid.status();
    report.daemon_pid = *pid;
  }
  report.initial = Settle(report.daemon_pid);

  LoadShared shared;
  shared.options = &o;
  shared.base_vm = o.id_prefix + "-base";
  shared.base_snapshot = o.id_prefix + "-base-snap";
  v1::VMConfig config;
  config.set_vm_id(shared.base_vm);
  config.set_memory_mib(o.memory_mib);
  config.set_vcpu_count(o.vcpu_count);
  SmolVM base(config, o.client);
  // Setup, the phases, then teardown whatever happened before it.
  absl::Status setup = [&]() -> absl::Status {
    Progress(o, absl::StrCat("booting base vm ", shared.base_vm));
    absl::Time t = absl::Now();
    if (absl::Status s = base.start(); !s.ok()) return s;
    report.boot_time = absl::Now() - t;
    t = absl::Now();
    if (auto s = base.snapshot(shared.base_snapshot, /*resume_source=*/true); !s.ok()) {
      return s.status();
    }
    report.snapshot_time = absl::Now() - t;
    return absl::OkStatus();
  }();

  if (setup.ok() && !interrupted()) {
    std::vector<std::unique_ptr<LoadClient>> clients;
    for (int i = 0; i < o.clients; ++i) clients.push_back(std::make_unique<LoadClient>(i, &shared));
    Progress(o,
             absl::StrCat("warmup: ", o.clients, " clients for ", absl::FormatDuration(o.warmup)));
    report.warmup = RunPhase(clients, o.warmup);
    report.before = Settle(report.daemon_pid);
    if (!interrupted()) {
      Progress(o, absl::StrCat("measured: ", o.clients, " clients for ",
                               absl::FormatDuration(o.duration)));
      const int64_t want_fds = report.before ? report.before->fds : -1;
      for (int round = 0; round < o.rounds && !interrupted(); ++round) {
        PhaseStats stats = RunPhase(clients, o.duration / o.rounds);
        absl::Duration wall = report.measured.wall + stats.wall;
        report.measured.Merge(stats);
        report.measured.wall = wall;
        report.after = Settle(report.daemon_pid, want_fds);
        if (report.after) report.rounds.push_back(*report.after);
        if (o.rounds > 1 && report.after) {
          Progress(o, absl::StrCat("round ", round + 1, "/", o.rounds, ": rss ",
                                   report.after->rss_kib, " KiB, fds ", report.after->fds));
        }
      }
    }
  }
  report.interrupted = interrupted();

  Progress(o, "teardown");
  if (!base.vm_id().empty()) {
    // A snapshot may have been taken even if the call reported a failure.
    if (auto s = manager.delete_snapshot(shared.base_snapshot); !s.ok() && !absl::IsNotFound(s)) {
      report.teardown_errors.push_back(
          absl::StrCat("delete snapshot ", shared.base_snapshot, ": ", s.ToString()));
    }
    if (auto s = base.close(); !s.ok()) {
      report.teardown_errors.push_back(
          absl::StrCat("delete vm ", shared.base_vm, ": ", s.ToString()));
    }
  }
  report.leftovers = Sweep(manager, o.id_prefix, &report.teardown_errors);
  if (!setup.ok()) {
    return absl::Status(setup.code(), absl::StrCat("setup: ", setup.message()));
  }
  if (report.before.has_value()) {
    report.rss_tolerance_kib =
        std::max<int64_t>(o.rss_tolerance_mib * 1024,
                          static_cast<int64_t>(o.rss_tolerance_fraction * report.before->rss_kib));
  }
  return report;
}

bool LoadReport::fds_ok() const { return before && after && after->fds == before->fds; }

bool LoadReport::rss_ok() const {
  return before && after && after->rss_kib - before->rss_kib <= rss_tolerance_kib;
}

std::string LoadReport::Problems() const {
  std::vector<std::string> p;
  if (interrupted) p.push_back("interrupted");
  if (errors() > 0) p.push_back(absl::StrCat(errors(), " failed calls"));
  if (daemon_pid > 0 && (!before || !after)) {
    p.push_back("the daemon's usage could not be sampled (did it exit?)");
  }
  if (before && after && !fds_ok()) {
    p.push_back(absl::StrCat("fds grew from ", before->fds, " to ", after->fds));
  }
  if (before && after && !rss_ok()) {
    p.push_back(absl::StrCat("RSS grew by ", after->rss_kib - before->rss_kib,
                             " KiB, more than the tolerance of ", rss_tolerance_kib, " KiB"));
  }
  if (!leftovers.empty()) p.push_back("left behind: " + absl::StrJoin(leftovers, ", "));
  for (const std::string& e : teardown_errors) p.push_back("teardown: " + e);
  return absl::StrJoin(p, "\n");
}

bool LoadReport::ok() const { return Problems().empty(); }

nlohmann::json LoadReport::ToJson() const {
  const LoadOptions& o = options;
  nlohmann::json j;
  j["config"] = {{"clients", o.clients},
                 {"warmup_s", absl::ToDoubleSeconds(o.warmup)},
                 {"duration_s", absl::ToDoubleSeconds(o.duration)},
                 {"rounds", o.rounds},
                 {"max_clones", o.max_clones},
                 {"max_snapshots", o.max_snapshots},
                 {"fork_count", o.fork_count},
                 {"memory_mib", o.memory_mib},
                 {"vcpu_count", o.vcpu_count},
                 {"mix", MixToString(o.mix)},
                 {"seed", o.seed},
                 {"id_prefix", o.id_prefix}};
  j["setup"] = {{"boot_ms", absl::ToDoubleMilliseconds(boot_time)},
                {"snapshot_ms", absl::ToDoubleMilliseconds(snapshot_time)}};
  j["warmup"] = warmup.ToJson();
  j["measured"] = measured.ToJson();
  std::map<std::string, int64_t> by_code = warmup.ErrorsByCode();
  for (const auto& [code, n] : measured.ErrorsByCode()) by_code[code] += n;
  j["errors"] = {{"total", errors()}, {"by_code", by_code}};
  nlohmann::json d = {{"pid", daemon_pid}};
  if (initial) d["initial"] = initial->ToJson();
  if (before) d["before"] = before->ToJson();
  d["rounds"] = nlohmann::json::array();
  for (const DaemonUsage& u : rounds) d["rounds"].push_back(u.ToJson());
  if (after) d["after"] = after->ToJson();
  if (before && after) {
    d["rss_growth_kib"] = after->rss_kib - before->rss_kib;
    d["rss_tolerance_kib"] = rss_tolerance_kib;
    d["rss_ok"] = rss_ok();
    d["fd_growth"] = after->fds - before->fds;
    d["fds_ok"] = fds_ok();
  }
  j["daemon"] = std::move(d);
  j["leftovers"] = leftovers;
  j["teardown_errors"] = teardown_errors;
  j["interrupted"] = interrupted;
  j["ok"] = ok();
  j["problems"] = Problems();
  return j;
}

std::string LoadReport::ToText() const {
  const LoadOptions& o = options;
  std::string out = absl::StrFormat(
      "smolvm_load: %d clients, warmup %s, measured %s; at most %d clones + the base VM "
      "(%u MiB, %u vCPU), %d clone snapshots, forks of %u; seed %u; ids %s-*\n",
      o.clients, absl::FormatDuration(o.warmup), absl::FormatDuration(o.duration), o.max_clones,
      o.memory_mib, o.vcpu_count, o.max_snapshots, o.fork_count, o.seed, o.id_prefix);
  absl::StrAppend(&out, "mix: ", MixToString(o.mix), "\n");
  absl::StrAppendFormat(&out, "setup: base cold boot %.0f ms, base snapshot %.0f ms\n\n",
                        absl::ToDoubleMilliseconds(boot_time),
                        absl::ToDoubleMilliseconds(snapshot_time));
  absl::StrAppend(&out, "measured phase (latency of every call, failed ones included):\n",
                  measured.ToText());
  absl::StrAppendFormat(&out, "warmup phase: %d calls in %.1f s, %d failed\n", warmup.calls(),
                        absl::ToDoubleSeconds(warmup.wall), warmup.error_count());
  if (warmup.error_count() > 0) absl::StrAppend(&out, warmup.ToText());
  std::map<std::string, int64_t> by_code = warmup.ErrorsByCode();
  for (const auto& [code, n] : measured.ErrorsByCode()) by_code[code] += n;
  std::vector<std::string> codes;
  for (const auto& [code, n] : by_code) codes.push_back(absl::StrCat(code, " ", n));
  absl::StrAppend(&out, "errors by code: ", codes.empty() ? "none" : absl::StrJoin(codes, ", "),
                  "\n\n");
  if (daemon_pid > 0) {
    absl::StrAppendFormat(&out, "daemon pid %-24d %8s %8s %8s %8s %8s\n", daemon_pid, "rss_kib",
                          "anon_kib", "file_kib", "fds", "threads");
    auto row = [&out](const char* what, const std::optional<DaemonUsage>& u) {
      if (!u) return;
      absl::StrAppendFormat(&out, "  %-32s %8d %8d %8d %8d %8d\n", what, u->rss_kib,
                            u->rss_anon_kib, u->rss_file_kib, u->fds, u->threads);
    };
    row("before the base VM", initial);
    row("after warmup (base VM only)", before);
    if (rounds.size() > 1) {
      for (size_t i = 0; i + 1 < rounds.size(); ++i) {
        row(absl::StrCat("after round ", i + 1).c_str(), rounds[i]);
      }
    }
    row("at the end (base VM only)", after);
    if (before && after) {
      absl::StrAppendFormat(
          &out,
          "  rss growth %+d KiB (anon %+d, file %+d), tolerance %d KiB (max of "
          "%d MiB and %.0f%% of %d KiB): %s\n",
          after->rss_kib - before->rss_kib, after->rss_anon_kib - before->rss_anon_kib,
          after->rss_file_kib - before->rss_file_kib, rss_tolerance_kib, o.rss_tolerance_mib,
          o.rss_tolerance_fraction * 100, before->rss_kib, rss_ok() ? "ok" : "GROWTH");
      absl::StrAppendFormat(&out, "  fd growth %+d (must be 0): %s\n", after->fds - before->fds,
                            fds_ok() ? "ok" : "GROWTH");
    }
  } else {
    absl::StrAppend(&out, "daemon usage not sampled (no pid)\n");
  }
  absl::StrAppend(
      &out, "left behind: ", leftovers.empty() ? "nothing" : absl::StrJoin(leftovers, ", "), "\n");
  absl::StrAppend(&out, "verdict: ", ok() ? "OK" : "FAIL\n" + Problems(), "\n");
  return out;
}

}  // namespace smolvm::load
