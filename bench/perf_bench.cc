// perf_bench: the daemon side of the performance benchmarks, measured through
// the public C++ client (client/smolvm.h) against a running smolvmd. The
// bare-QEMU baselines come from bench/bare_qemu.py; a combiner pairs the two
// by result name, so the output format is the contract:
//
//   stdout: one JSON object per line and result,
//     {"name": "daemon.restore.256.clone.running", "unit": "ms"|"mib"|"count",
//      "n": N, "p50": x, "p99": y, "samples": [...]}
//     (p50 / p99 by nearest rank: the ceil(p/100 * n)-th smallest sample);
//   stderr: progress and explanations for humans.
//
// Every VM boots the "minimal" image with --vcpus (default 1) vCPUs.
//
// Cases (`perf_bench <case> [flags]`; `all` runs exec, list, cold, restore,
// snapshot, fork and pool in that order):
//   restore   per --memory-mib M (default 256,2048): boot a VM, snapshot it,
//             delete it. Per rep, from the request: a clone
//             (from_snapshot(snap, resume, new id)) RUNNING and its first
//             `run("true")` done (daemon.restore.M.clone.{running,first_exec});
//             the same into the snapshot's own identity, which needs its VM
//             gone (daemon.restore.M.own.*); and a clone of a generation-2
//             snapshot (taken of a VM itself restored from the first one:
//             daemon.restore.M.gen2.*).
//   snapshot  per M (default 256,2048) and D in --dirty-mib (default 0, 64,
//             512 where D <= M/4): per rep, write D MiB of guest RAM, then time
//             CreateSnapshot(resume_source) (daemon.snapshot.M.dirtyD) and
//             report its size_bytes (daemon.snapshot.M.dirtyD.size_mib).
//   cold      CreateVm(start) → returned (daemon.cold.running) → first
//             `run("true")` done (daemon.cold.first_exec), 256 MiB.
//   fork      one 256 MiB snapshot; per --fork-counts N (default 1,10,32) and
//             --fork-reps rep: ForkSnapshot(N) returned (daemon.fork.N),
//             failed clones (daemon.fork.N.failed), each clone's QEMU PSS
//             while all N run (daemon.fork.N.pss_mib). Then
//             daemon.density.fit_256mib = floor(MemAvailable at the start of
//             the case / p50 PSS of the largest N).
//   exec      `run("true")` round trip (daemon.exec.true) vs PingAgent: the
//             bare agent-channel round trip timed inside the daemon
//             (daemon.exec.ping) and one PingAgent RPC timed here
//             (daemon.exec.ping_rpc), --calls samples each.
//   pool      one 256 MiB snapshot, a pool of --pool-size (4) members; per
//             --claims claim, from a full pool: ClaimVm on the client's
//             channel (daemon.pool.claim; the daemon's own account:
//             .daemon_side), then the claimed VM's first `run("true")` done
//             (daemon.pool.claim.first_exec, counted from the claim), and how
//             many claims found no ready member (daemon.pool.claim.fallbacks).
//   list      with the snapshots present (C of them; --seed-snapshots N
//             adds N synthetic rows to --state-db first): the full
//             list_snapshots() (every page; daemon.list.snapshots.C), one
//             ListSnapshots page of the default size
//             (daemon.list.snapshots.C.page) and GetSnapshot
//             (daemon.get.snapshot).
//
// Everything this run creates is named <prefix>-... (a random per-run prefix,
// "pb-xxxxxx") and deleted by guard objects, also when a step fails or on
// SIGINT / SIGTERM (checked between steps); a final sweep deletes whatever
// still carries the prefix. A failed step is reported on stderr, naming it,
// and the exit status is 1 (2 for a usage error).
//
// Needs a running smolvmd ($SMOLVMD_SOCKET; bench/run.sh starts a private
// one with --default-image minimal), on this host, as root (PSS is read from
// /proc/<vmm_pid>/smaps_rollup).
#include <signal.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "client/smolvm.h"
#include "nlohmann/json.hpp"

namespace {

using smolvm::SmolVM;
using smolvm::SmolVMManager;
namespace v1 = smolvm::v1;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};

void OnSignal(int sig) {
  g_interrupted.store(true);
  signal(sig, SIG_DFL);  // A second one ends the process.
}

// Log prints one human-readable line on stderr.
template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fprintf(stderr, "perf_bench: %s\n", absl::StrFormat(format, args...).c_str());
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// Annotate prefixes a failure with the step it happened in.
absl::Status Annotate(const absl::Status& s, absl::string_view step) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(step, ": ", s.message()));
}

absl::Status CheckInterrupted() {
  if (g_interrupted.load()) return absl::CancelledError("interrupted by a signal");
  return absl::OkStatus();
}

// --- Results -----------------------------------------------------------------

// NearestRank is the p-th percentile (0 < p <= 100) of `samples` by nearest
// rank: the ceil(p/100 * n)-th smallest. 0 for no samples.
double NearestRank(std::vector<double> samples, double p) {
  if (samples.empty()) return 0;
  std::sort(samples.begin(), samples.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * samples.size()));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

// Round keeps a few decimals: ms to the microsecond, MiB to the KiB.
double Round(double v, double scale) { return std::round(v * scale) / scale; }

// Emit prints one result as a JSON line on stdout (flushed, so results
// survive a later failure) and a summary on stderr.
void Emit(const std::string& name, const std::string& unit, const std::vector<double>& samples) {
  const double scale = unit == "count" ? 1 : 1000;
  nlohmann::ordered_json j;
  j["name"] = name;
  j["unit"] = unit;
  j["n"] = samples.size();
  j["p50"] = Round(NearestRank(samples, 50), scale);
  j["p99"] = Round(NearestRank(samples, 99), scale);
  nlohmann::json list = nlohmann::json::array();
  for (double v : samples) list.push_back(Round(v, scale));
  if (unit == "count") {  // Whole numbers print as such.
    j["p50"] = static_cast<int64_t>(j["p50"].get<double>());
    j["p99"] = static_cast<int64_t>(j["p99"].get<double>());
    for (auto& v : list) v = static_cast<int64_t>(v.get<double>());
  }
  j["samples"] = std::move(list);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
  Log("RESULT %-44s n=%-4zu p50=%10.3f p99=%10.3f %s", name, samples.size(),
      NearestRank(samples, 50), NearestRank(samples, 99), unit);
}

// --- Guards: everything the run creates is deleted on every path -------------

// VmGuard deletes VM `vm_id` (DeleteVm, stopping it first) when it goes out of
// scope, unless Delete() already did. Made *before* the call that creates the
// VM, so that a VM the daemon kept after a failed boot or restore goes too;
// a VM that does not exist counts as deleted.
class VmGuard {
 public:
  VmGuard(const SmolVMManager& manager, std::string vm_id)
      : manager_(&manager), vm_id_(std::move(vm_id)) {}
  VmGuard(const VmGuard&) = delete;
  VmGuard& operator=(const VmGuard&) = delete;
  ~VmGuard() {
    if (auto s = Delete(); !s.ok()) Log("cleanup: %s", s.ToString());
  }

  absl::Status Delete() {
    if (vm_id_.empty()) return absl::OkStatus();
    v1::DeleteVmRequest req;
    req.set_vm_id(vm_id_);
    auto r = manager_->connection().Call(&v1::VmService::Stub::DeleteVm, req);
    if (!r.ok() && !absl::IsNotFound(r.status())) {
      return Annotate(r.status(), absl::StrCat("delete vm ", vm_id_));
    }
    vm_id_.clear();
    return absl::OkStatus();
  }
  const std::string& vm_id() const { return vm_id_; }

 private:
  const SmolVMManager* manager_;
  std::string vm_id_;
};

// SnapshotGuard is VmGuard for a snapshot (DeleteSnapshot).
class SnapshotGuard {
 public:
  SnapshotGuard(const SmolVMManager& manager, std::string snapshot_id)
      : manager_(&manager), snapshot_id_(std::move(snapshot_id)) {}
  SnapshotGuard(const SnapshotGuard&) = delete;
  SnapshotGuard& operator=(const SnapshotGuard&) = delete;
  ~SnapshotGuard() {
    if (auto s = Delete(); !s.ok()) Log("cleanup: %s", s.ToString());
  }

  absl::Status Delete() {
    if (snapshot_id_.empty()) return absl::OkStatus();
    absl::Status s = manager_->delete_snapshot(snapshot_id_);
    if (!s.ok() && !absl::IsNotFound(s)) {
      return Annotate(s, absl::StrCat("delete snapshot ", snapshot_id_));
    }
    snapshot_id_.clear();
    return absl::OkStatus();
  }
  const std::string& snapshot_id() const { return snapshot_id_; }

 private:
  const SmolVMManager* manager_;
  std::string snapshot_id_;
};

// --- Host measurements ---------------------------------------------------------

// ReadKibField returns the "<field>: N kB" value of a /proc file, in KiB.
absl::StatusOr<uint64_t> ReadKibField(const std::string& path, absl::string_view field) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("read ", path, ": cannot open"));
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, field) || line.size() <= field.size() ||
        line[field.size()] != ':') {
      continue;
    }
    std::string value(absl::StripAsciiWhitespace(line.substr(field.size() + 1)));
    if (absl::EndsWith(value, " kB")) value.resize(value.size() - 3);
    uint64_t kib;
    if (!absl::SimpleAtoi(value, &kib)) break;
    return kib;
  }
  return absl::NotFoundError(absl::StrCat("read ", path, ": no ", field, " line"));
}

std::string ReadCmdline(int64_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

// VmmPid is the host pid of VM `vm`'s QEMU: Vm.vmm_pid, checked against the
// process's command line (QEMU runs with -name smolvm-<vm_id>).
absl::StatusOr<int64_t> VmmPid(const v1::Vm& vm) {
  const std::string want = absl::StrCat("-name smolvm-", vm.vm_id(), " ");
  if (vm.vmm_pid() > 0 && absl::StrContains(ReadCmdline(vm.vmm_pid()), want)) {
    return vm.vmm_pid();
  }
  return absl::NotFoundError(absl::StrCat("vm ", vm.vm_id(), ": vmm_pid ", vm.vmm_pid(),
                                          " is not its QEMU (no \"", want, "\")"));
}

// PssMib is the proportional set size of process `pid` in MiB: its private
// pages plus its share of pages mapped by several processes (here: the
// snapshot's mem.bin in the page cache, shared by its clones).
absl::StatusOr<double> PssMib(int64_t pid) {
  auto kib = ReadKibField(absl::StrCat("/proc/", pid, "/smaps_rollup"), "Pss");
  if (!kib.ok()) return kib.status();
  return *kib / 1024.0;
}

// --- The benchmark -------------------------------------------------------------

struct Options {
  int reps = 10;
  int fork_reps = 3;
  int calls = 200;
  uint32_t vcpus = 1;
  std::vector<uint32_t> memory_mib;  // Empty = each case's default.
  std::vector<uint32_t> dirty_mib;   // Empty = 0, 64, 512 where D <= M/4.
  std::vector<uint32_t> fork_counts = {1, 10, 32};
  uint32_t pool_size = 4;
  int claims = 20;
  // list: snapshot rows added to the daemon's database for the listing
  // (copies of this run's snapshot's row; removed at the end), and where
  // that database is ("" = add none).
  int seed_snapshots = 0;
  std::string state_db;
};

class PerfBench {
 public:
  PerfBench(Options options, std::string prefix)
      : options_(std::move(options)), prefix_(std::move(prefix)) {}

  absl::Status Restore();
  absl::Status Snapshot();
  absl::Status Cold();
  absl::Status Fork();
  absl::Status Exec();
  absl::Status List();
  absl::Status Pool();

  // Sweep deletes every VM and snapshot whose id carries this run's prefix
  // (guards normally leave none); returns how many it found.
  int Sweep();

 private:
  // Id is a fresh id of this run: <prefix>-<what>.
  std::string Id(absl::string_view what) const { return absl::StrCat(prefix_, "-", what); }
  // The memory sizes of a case: --memory-mib, else `defaults`.
  std::vector<uint32_t> Sizes(std::vector<uint32_t> defaults) const {
    return options_.memory_mib.empty() ? defaults : options_.memory_mib;
  }
  uint32_t SingleSize() const { return Sizes({256}).front(); }

  v1::VMConfig Config(const std::string& vm_id, uint32_t memory_mib) const;
  // Boots a VM (guarded by `guard`, whose id it takes) and returns it.
  absl::StatusOr<SmolVM> Boot(const VmGuard& guard, uint32_t memory_mib) const;
  // Boots a VM, snapshots it (left PAUSED) and deletes the VM: the snapshot
  // then stands alone, and its own identity is free for restores.
  absl::Status MakeSnapshot(const SnapshotGuard& snap, uint32_t memory_mib) const;

  Options options_;
  std::string prefix_;
  SmolVMManager manager_;
};

// Run runs `command` in `vm` and fails unless it exits 0.
absl::Status Run(SmolVM& vm, const std::string& command) {
  auto r = vm.run(command);
  if (!r.ok()) return Annotate(r.status(), absl::StrCat("run `", command, "`"));
  if (!r->ok()) {
    return absl::InternalError(absl::StrCat("run `", command, "`: exit ", r->exit_code,
                                            " signal ", r->signal, ": ", r->stderr_text));
  }
  return absl::OkStatus();
}

// SourceVmId is the id of the VM MakeSnapshot boots to take `snapshot_id`:
// the snapshot's own identity.
std::string SourceVmId(const std::string& snapshot_id) { return snapshot_id + "-src"; }

v1::VMConfig PerfBench::Config(const std::string& vm_id, uint32_t memory_mib) const {
  v1::VMConfig config;
  config.set_vm_id(vm_id);
  config.set_image("minimal");
  config.set_vcpu_count(options_.vcpus);
  config.set_memory_mib(memory_mib);
  return config;
}

absl::StatusOr<SmolVM> PerfBench::Boot(const VmGuard& guard, uint32_t memory_mib) const {
  SmolVM vm(Config(guard.vm_id(), memory_mib));
  auto start = Clock::now();
  if (auto s = vm.start(); !s.ok()) return Annotate(s, absl::StrCat("boot vm ", guard.vm_id()));
  Log("booted %s (%u MiB) in %.0f ms", guard.vm_id(), memory_mib, MsSince(start));
  return vm;
}

absl::Status PerfBench::MakeSnapshot(const SnapshotGuard& snap, uint32_t memory_mib) const {
  VmGuard source(manager_, SourceVmId(snap.snapshot_id()));
  auto vm = Boot(source, memory_mib);
  if (!vm.ok()) return vm.status();
  auto start = Clock::now();
  auto info = vm->snapshot(snap.snapshot_id());
  if (!info.ok()) return Annotate(info.status(), absl::StrCat("snapshot ", snap.snapshot_id()));
  Log("snapshot %s of %s: %.0f ms, %.1f MiB", snap.snapshot_id(), source.vm_id(),
      MsSince(start), info->size_bytes() / 1048576.0);
  return source.Delete();
}

// Restore timings of one kind (clone, own, gen2): RUNNING and first exec.
struct RestoreSeries {
  std::vector<double> running, first_exec;
};

// RestoreOnce restores `snapshot_id` as `vm_id` ("" = own identity), runs
// `true`, records both times from the request, and deletes the VM.
absl::Status RestoreOnce(const SmolVMManager& manager, const std::string& snapshot_id,
                         const std::string& vm_id, const std::string& guard_id,
                         RestoreSeries& series) {
  VmGuard guard(manager, guard_id);
  auto start = Clock::now();
  auto vm = SmolVM::from_snapshot(snapshot_id, /*resume_vm=*/true, vm_id);
  if (!vm.ok()) {
    return Annotate(vm.status(), absl::StrCat("restore ", snapshot_id, " as ",
                                              vm_id.empty() ? "its own vm" : vm_id));
  }
  double running = MsSince(start);
  if (auto s = Run(*vm, "true"); !s.ok()) {
    return Annotate(s, absl::StrCat("first exec in ", vm->vm_id()));
  }
  double first_exec = MsSince(start);
  series.running.push_back(running);
  series.first_exec.push_back(first_exec);
  Log("  %-28s running %8.1f ms  first exec %8.1f ms", vm->vm_id(), running, first_exec);
  return guard.Delete();
}

absl::Status PerfBench::Restore() {
  for (uint32_t mib : Sizes({256, 2048})) {
    Log("restore %u MiB: %d reps (clone, own identity, generation-2 clone)", mib, options_.reps);
    // Generation 1: a snapshot of a cold-booted VM, which is then deleted
    // (RestoreSnapshot with an empty vm_id needs its VM stopped or gone).
    SnapshotGuard gen1(manager_, Id(absl::StrCat("r", mib)));
    if (auto s = MakeSnapshot(gen1, mib); !s.ok()) return s;
    // Generation 2: a snapshot of a VM restored from generation 1, after it ran.
    SnapshotGuard gen2(manager_, Id(absl::StrCat("r", mib, "-g2")));
    {
      VmGuard mid(manager_, Id(absl::StrCat("r", mib, "-g2src")));
      auto vm = SmolVM::from_snapshot(gen1.snapshot_id(), true, mid.vm_id());
      if (!vm.ok()) return Annotate(vm.status(), "restore the generation-2 source");
      if (auto s = Run(*vm, "true"); !s.ok()) return Annotate(s, "generation-2 source");
      auto start = Clock::now();
      auto info = vm->snapshot(gen2.snapshot_id());
      if (!info.ok()) return Annotate(info.status(), "snapshot generation 2");
      // A restored VM's RAM is a private mapping of its snapshot's mem.bin,
      // so QEMU streams all of it; the daemon splits it back out into
      // mem.bin (lib/snapshot/migration_stream.h), which this time includes.
      Log("snapshot %s of %s (generation 2): %.0f ms, %.1f MiB", gen2.snapshot_id(),
          mid.vm_id(), MsSince(start), info->size_bytes() / 1048576.0);
      if (auto s = mid.Delete(); !s.ok()) return s;
    }
    RestoreSeries clone, own, second;
    for (int rep = 0; rep < options_.reps; ++rep) {
      if (auto s = CheckInterrupted(); !s.ok()) return s;
      const std::string clone_id = Id(absl::StrCat("r", mib, "-c", rep));
      if (auto s = RestoreOnce(manager_, gen1.snapshot_id(), clone_id, clone_id, clone); !s.ok()) {
        return s;
      }
      // Own identity: the id is the (deleted) source VM's.
      const std::string own_id = SourceVmId(gen1.snapshot_id());
      if (auto s = RestoreOnce(manager_, gen1.snapshot_id(), "", own_id, own); !s.ok()) return s;
      const std::string gen2_id = Id(absl::StrCat("r", mib, "-g2c", rep));
      if (auto s = RestoreOnce(manager_, gen2.snapshot_id(), gen2_id, gen2_id, second); !s.ok()) {
        return s;
      }
    }
    const std::string base = absl::StrCat("daemon.restore.", mib);
    for (const auto& [kind, series] :
         {std::pair<const char*, RestoreSeries*>{"clone", &clone}, {"own", &own},
          {"gen2", &second}}) {
      Emit(absl::StrCat(base, ".", kind, ".running"), "ms", series->running);
      Emit(absl::StrCat(base, ".", kind, ".first_exec"), "ms", series->first_exec);
    }
    if (auto s = gen2.Delete(); !s.ok()) return s;
    if (auto s = gen1.Delete(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// DirtyLevels is the ascending list of MiB to dirty in an M MiB guest.
std::vector<uint32_t> DirtyLevels(const std::vector<uint32_t>& given, uint32_t mib) {
  std::vector<uint32_t> levels;
  if (given.empty()) {
    for (uint32_t d : {0u, 64u, 512u}) {
      if (d <= mib / 4) levels.push_back(d);
    }
  } else {
    levels = given;
  }
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  return levels;
}

// How the snapshot case dirties guest RAM. The daemon's snapshot copies
// every page of the guest's RAM file that was ever touched (a sparse copy),
// not the pages changed since the last snapshot, so a separate in-guest
// source of random data would count twice. Instead /mnt/d/x (tmpfs) is grown
// to D MiB from /dev/urandom once per level (untimed; ~25 MiB/s under TCG),
// and each rep rewrites all of it with new contents: x shifted down by 1 MiB
// onto itself, plus 1 MiB of fresh random data at the end. Every page of the
// D MiB is written and changes, while the guest's touched RAM stays
// boot + D MiB.
std::string GrowDirtyFile(uint32_t from_mib, uint32_t to_mib) {
  return absl::StrFormat(
      "dd if=/dev/urandom of=/mnt/d/x bs=1M seek=%u count=%u conv=notrunc 2>/dev/null", from_mib,
      to_mib - from_mib);
}
std::string RewriteDirtyFile(uint32_t mib) {
  std::string refill = absl::StrFormat(
      "dd if=/dev/urandom of=/mnt/d/x bs=1M seek=%u count=1 conv=notrunc 2>/dev/null", mib - 1);
  if (mib == 1) return refill;
  return absl::StrFormat(
      "dd if=/mnt/d/x of=/mnt/d/x bs=1M skip=1 count=%u conv=notrunc 2>/dev/null && %s", mib - 1,
      refill);
}

absl::Status PerfBench::Snapshot() {
  for (uint32_t mib : Sizes({256, 2048})) {
    const std::vector<uint32_t> levels = DirtyLevels(options_.dirty_mib, mib);
    if (levels.back() > mib / 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot ", mib, " MiB: cannot dirty ", levels.back(),
                       " MiB; at most half the guest's memory (", mib / 2, " MiB)"));
    }
    Log("snapshot %u MiB: dirty %s MiB, %d reps each", mib, absl::StrJoin(levels, ","),
        options_.reps);
    VmGuard guard(manager_, Id(absl::StrCat("s", mib)));
    auto vm = Boot(guard, mib);
    if (!vm.ok()) return vm.status();
    if (auto s = Run(*vm, absl::StrCat("mkdir -p /mnt/d && mount -t tmpfs -o size=", mib / 2,
                                       "m tmpfs /mnt/d"));
        !s.ok()) {
      return Annotate(s, "mount the tmpfs to dirty");
    }
    uint32_t filled = 0;
    for (uint32_t dirty : levels) {
      if (dirty > filled) {
        auto start = Clock::now();
        if (auto s = Run(*vm, GrowDirtyFile(filled, dirty)); !s.ok()) {
          return Annotate(s, absl::StrCat("fill ", dirty, " MiB with random data"));
        }
        Log("  filled %u MiB of random data in %.0f ms", dirty - filled, MsSince(start));
        filled = dirty;
      }
      std::vector<double> ms, size_mib;
      for (int rep = 0; rep < options_.reps; ++rep) {
        if (auto s = CheckInterrupted(); !s.ok()) return s;
        auto start = Clock::now();
        // A rep that dirties nothing still lets the guest run a command.
        if (auto s = Run(*vm, dirty == 0 ? "true" : RewriteDirtyFile(dirty)); !s.ok()) {
          return Annotate(s, absl::StrCat("dirty ", dirty, " MiB"));
        }
        double dirty_ms = MsSince(start);
        SnapshotGuard snap(manager_, Id(absl::StrCat("s", mib, "-d", dirty, "-", rep)));
        start = Clock::now();
        auto info = vm->snapshot(snap.snapshot_id(), /*resume_source=*/true);
        if (!info.ok()) return Annotate(info.status(), absl::StrCat("snapshot ", snap.snapshot_id()));
        ms.push_back(MsSince(start));
        size_mib.push_back(info->size_bytes() / 1048576.0);
        Log("  dirty %4u MiB (%.0f ms): snapshot %8.1f ms, %7.1f MiB", dirty, dirty_ms, ms.back(),
            size_mib.back());
        if (auto s = snap.Delete(); !s.ok()) return s;
      }
      const std::string name = absl::StrCat("daemon.snapshot.", mib, ".dirty", dirty);
      Emit(name, "ms", ms);
      Emit(name + ".size_mib", "mib", size_mib);
    }
    if (auto s = guard.Delete(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PerfBench::Cold() {
  const uint32_t mib = SingleSize();
  Log("cold %u MiB: %d reps", mib, options_.reps);
  std::vector<double> running, first_exec;
  for (int rep = 0; rep < options_.reps; ++rep) {
    if (auto s = CheckInterrupted(); !s.ok()) return s;
    VmGuard guard(manager_, Id(absl::StrCat("cold-", rep)));
    SmolVM vm(Config(guard.vm_id(), mib));
    auto start = Clock::now();
    if (auto s = vm.start(); !s.ok()) return Annotate(s, absl::StrCat("boot ", guard.vm_id()));
    running.push_back(MsSince(start));
    if (auto s = Run(vm, "true"); !s.ok()) return Annotate(s, absl::StrCat("first exec in ", guard.vm_id()));
    first_exec.push_back(MsSince(start));
    Log("  %-28s running %8.1f ms  first exec %8.1f ms", guard.vm_id(), running.back(),
        first_exec.back());
    if (auto s = guard.Delete(); !s.ok()) return s;
  }
  Emit("daemon.cold.running", "ms", running);
  Emit("daemon.cold.first_exec", "ms", first_exec);
  return absl::OkStatus();
}

absl::Status PerfBench::Fork() {
  const uint32_t mib = SingleSize();
  // Before this case's VMs exist: what a host in this state has to give.
  auto available_kib = ReadKibField("/proc/meminfo", "MemAvailable");
  if (!available_kib.ok()) return available_kib.status();
  Log("fork %u MiB: counts %s, %d reps each; MemAvailable %.0f MiB", mib,
      absl::StrJoin(options_.fork_counts, ","), options_.fork_reps, *available_kib / 1024.0);
  SnapshotGuard snap(manager_, Id("f"));
  if (auto s = MakeSnapshot(snap, mib); !s.ok()) return s;
  std::vector<double> last_pss;
  uint32_t last_count = 0;
  for (uint32_t count : options_.fork_counts) {
    std::vector<double> ms, failed, pss;
    for (int rep = 0; rep < options_.fork_reps; ++rep) {
      if (auto s = CheckInterrupted(); !s.ok()) return s;
      const std::string prefix = Id(absl::StrCat("f", count, "-", rep));
      // Clones are named <prefix>-1..N; guarded before the call, which may
      // leave some behind even when it fails as a whole (e.g. a deadline).
      std::vector<std::unique_ptr<VmGuard>> clones;
      for (uint32_t i = 1; i <= count; ++i) {
        clones.push_back(std::make_unique<VmGuard>(manager_, absl::StrCat(prefix, "-", i)));
      }
      auto start = Clock::now();
      auto outcomes = manager_.fork_snapshot(snap.snapshot_id(), count, true, prefix);
      if (!outcomes.ok()) return Annotate(outcomes.status(), absl::StrCat("fork ", count));
      ms.push_back(MsSince(start));
      int bad = 0;
      std::vector<double> rep_pss;
      for (const smolvm::ForkOutcome& o : *outcomes) {
        if (!o.ok()) {
          ++bad;
          Log("  clone %s failed: %s", o.vm_id, o.vm.status().ToString());
          continue;
        }
        auto pid = VmmPid(*o.vm);
        if (!pid.ok()) return Annotate(pid.status(), "find a clone's QEMU");
        auto p = PssMib(*pid);
        if (!p.ok()) return Annotate(p.status(), absl::StrCat("PSS of ", o.vm_id));
        rep_pss.push_back(*p);
      }
      failed.push_back(bad);
      Log("  fork %2u: %8.1f ms, %d failed, PSS per clone p50 %.1f MiB", count, ms.back(), bad,
          NearestRank(rep_pss, 50));
      pss.insert(pss.end(), rep_pss.begin(), rep_pss.end());
      for (auto& clone : clones) {
        if (auto s = clone->Delete(); !s.ok()) return s;
      }
    }
    const std::string name = absl::StrCat("daemon.fork.", count);
    Emit(name, "ms", ms);
    Emit(name + ".failed", "count", failed);
    Emit(name + ".pss_mib", "mib", pss);
    if (count >= last_count && !pss.empty()) {
      last_count = count;
      last_pss = pss;
    }
  }
  if (!last_pss.empty()) {
    const double available_mib = *available_kib / 1024.0;
    const double per_clone = NearestRank(last_pss, 50);
    const double fit = std::floor(available_mib / per_clone);
    Log("density: MemAvailable at the start %.0f MiB / p50 PSS per clone of fork.%u %.1f MiB "
        "= %.0f clones of %u MiB (PSS counts each clone's share of the snapshot's page cache)",
        available_mib, last_count, per_clone, fit, mib);
    Emit(absl::StrCat("daemon.density.fit_", mib, "mib"), "count", {fit});
  }
  return snap.Delete();
}

absl::Status PerfBench::Exec() {
  const uint32_t mib = SingleSize();
  Log("exec %u MiB: %d calls each", mib, options_.calls);
  VmGuard guard(manager_, Id("exec"));
  auto vm = Boot(guard, mib);
  if (!vm.ok()) return vm.status();
  // Warm up: the first execs fault in the guest's page cache.
  for (int i = 0; i < 10; ++i) {
    if (auto s = Run(*vm, "true"); !s.ok()) return Annotate(s, "warm up");
  }
  std::vector<double> exec_ms;
  for (int i = 0; i < options_.calls; ++i) {
    auto start = Clock::now();
    if (auto s = Run(*vm, "true"); !s.ok()) return s;
    exec_ms.push_back(MsSince(start));
  }
  v1::PingAgentRequest ping;
  ping.set_vm_id(guard.vm_id());
  ping.set_count(options_.calls);
  auto pings = manager_.connection().Call(&v1::VmService::Stub::PingAgent, ping);
  if (!pings.ok()) return Annotate(pings.status(), "PingAgent");
  std::vector<double> ping_ms;
  for (uint64_t ns : pings->round_trip_ns()) ping_ms.push_back(ns / 1e6);
  ping.set_count(1);
  std::vector<double> ping_rpc_ms;
  for (int i = 0; i < options_.calls; ++i) {
    auto start = Clock::now();
    auto r = manager_.connection().Call(&v1::VmService::Stub::PingAgent, ping);
    if (!r.ok()) return Annotate(r.status(), "PingAgent (one)");
    ping_rpc_ms.push_back(MsSince(start));
  }
  Emit("daemon.exec.true", "ms", exec_ms);
  Emit("daemon.exec.ping", "ms", ping_ms);
  Emit("daemon.exec.ping_rpc", "ms", ping_rpc_ms);
  return guard.Delete();
}

// SeedSnapshots adds `count` rows to the snapshots table of the database
// `db_path`, copies of snapshot `from` named <prefix><n>; with count 0 it
// removes every row named <prefix>*. SQLite lets the daemon's connection
// and this one share the file (WAL; a busy timeout covers its writes).
absl::Status SeedSnapshots(const std::string& db_path, const std::string& from,
                           const std::string& prefix, int count) {
  if (db_path.empty()) {
    return absl::InvalidArgumentError("--seed-snapshots needs --state-db (the daemon's "
                                      "smolvmd.db)");
  }
  sqlite3* db = nullptr;
  absl::Cleanup close = [&] { sqlite3_close(db); };
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    return absl::UnavailableError(absl::StrCat("open ", db_path, ": ", sqlite3_errmsg(db)));
  }
  sqlite3_busy_timeout(db, 10000);
  auto exec = [&](const std::string& sql) -> absl::Status {
    char* error = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
      absl::Status s = absl::InternalError(absl::StrCat(sql.substr(0, 80), ": ", error));
      sqlite3_free(error);
      return s;
    }
    return absl::OkStatus();
  };
  // Ids are [a-z0-9-], so they need no quoting beyond the quotes.
  if (count == 0) return exec(absl::StrCat("DELETE FROM snapshots WHERE snapshot_id LIKE '",
                                           prefix, "%'"));
  Log("list: adding %d snapshot rows (copies of %s) to %s", count, from, db_path);
  return exec(absl::StrCat(
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ", count,
      ") INSERT INTO snapshots SELECT '", prefix, "' || printf('%05d', i), vm_id, snapshot_path, "
      "mem_file_path, disk_path, vm_config, network_config, created_at, restored, "
      "restored_vm_id, size_bytes, accelerator, owner, integrity FROM snapshots, n "
      "WHERE snapshot_id = '", from, "'"));
}

absl::Status PerfBench::List() {
  auto all = manager_.list_snapshots();
  if (!all.ok()) return Annotate(all.status(), "list snapshots");
  // GetSnapshot needs a snapshot; without any, this run makes one.
  std::unique_ptr<SnapshotGuard> own;
  if (all->empty()) {
    own = std::make_unique<SnapshotGuard>(manager_, Id("l"));
    if (auto s = MakeSnapshot(*own, SingleSize()); !s.ok()) return s;
    all = manager_.list_snapshots();
    if (!all.ok()) return Annotate(all.status(), "list snapshots");
  }
  // Synthetic rows (copies of one real row under new ids) make the listing
  // as long as a busy host's; they have no files, which listing never reads.
  absl::Cleanup unseed = [&] {
    if (options_.seed_snapshots > 0) {
      if (auto s = SeedSnapshots(options_.state_db, "", Id("seed-"), 0); !s.ok()) {
        Log("cleanup: %s", s.ToString());
      }
    }
  };
  if (options_.seed_snapshots > 0) {
    if (auto s = SeedSnapshots(options_.state_db, (*all)[0].snapshot_id(), Id("seed-"),
                               options_.seed_snapshots);
        !s.ok()) {
      return s;
    }
    all = manager_.list_snapshots();
    if (!all.ok()) return Annotate(all.status(), "list snapshots");
  }
  const size_t count = all->size();
  const std::string target = (*all)[count / 2].snapshot_id();
  Log("list: %zu snapshots present; %d full listings, %d single pages and gets (of %s)", count,
      options_.reps, options_.calls, target);
  std::vector<double> list_ms, page_ms, get_ms;
  for (int rep = 0; rep < options_.reps; ++rep) {
    if (auto s = CheckInterrupted(); !s.ok()) return s;
    auto start = Clock::now();
    auto r = manager_.list_snapshots();
    if (!r.ok()) return Annotate(r.status(), "list snapshots");
    list_ms.push_back(MsSince(start));
  }
  v1::ListSnapshotsRequest page;  // The default page size.
  for (int i = 0; i < options_.calls; ++i) {
    auto start = Clock::now();
    auto r = manager_.connection().Call(&v1::SnapshotService::Stub::ListSnapshots, page);
    if (!r.ok()) return Annotate(r.status(), "list one page of snapshots");
    page_ms.push_back(MsSince(start));
  }
  for (int i = 0; i < options_.calls; ++i) {
    auto start = Clock::now();
    auto r = manager_.get_snapshot(target);
    if (!r.ok()) return Annotate(r.status(), absl::StrCat("get snapshot ", target));
    get_ms.push_back(MsSince(start));
  }
  const std::string name = absl::StrCat("daemon.list.snapshots.", count);
  Emit(name, "ms", list_ms);
  Emit(name + ".page", "ms", page_ms);
  Emit("daemon.get.snapshot", "ms", get_ms);
  return own ? own->Delete() : absl::OkStatus();
}

// PoolGuard deletes a pool (and with it its unclaimed members).
class PoolGuard {
 public:
  PoolGuard(const SmolVMManager& manager, std::string pool_id)
      : manager_(&manager), pool_id_(std::move(pool_id)) {}
  PoolGuard(const PoolGuard&) = delete;
  PoolGuard& operator=(const PoolGuard&) = delete;
  ~PoolGuard() {
    if (pool_id_.empty()) return;
    if (auto s = manager_->delete_pool(pool_id_); !s.ok() && !absl::IsNotFound(s)) {
      Log("cleanup: delete pool %s: %s", pool_id_, s.ToString());
    }
  }
  const std::string& pool_id() const { return pool_id_; }

 private:
  const SmolVMManager* manager_;
  std::string pool_id_;
};

// Waits until pool `id` has all `size` members ready.
absl::Status WaitPoolFull(const SmolVMManager& manager, const std::string& id, uint32_t size) {
  const auto deadline = Clock::now() + std::chrono::minutes(3);
  for (;;) {
    auto pool = manager.get_pool(id);
    if (!pool.ok()) return Annotate(pool.status(), absl::StrCat("get pool ", id));
    if (pool->ready_vm_ids_size() >= static_cast<int>(size)) return absl::OkStatus();
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pool ", id, ": ",
                                                      pool->ready_vm_ids_size(), " of ", size,
                                                      " ready after 3 min; last error: ",
                                                      pool->last_error()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

absl::Status PerfBench::Pool() {
  SnapshotGuard snap(manager_, Id("pool-snap"));
  if (auto s = MakeSnapshot(snap, SingleSize()); !s.ok()) return s;
  PoolGuard pool(manager_, Id("pool"));
  auto start = Clock::now();
  auto created = manager_.create_pool(pool.pool_id(), snap.snapshot_id(), options_.pool_size);
  if (!created.ok()) return Annotate(created.status(), "create pool");
  if (auto s = WaitPoolFull(manager_, pool.pool_id(), options_.pool_size); !s.ok()) return s;
  Log("pool %s: %u members ready in %.0f ms", pool.pool_id(), options_.pool_size,
      MsSince(start));
  // Each claim from a full pool (the steady state of a pool sized for its
  // load): ClaimVm on the client's existing channel, as a long-lived
  // client calls it; then the claimed VM's first Exec.
  std::vector<double> claim_ms, daemon_ms, first_exec_ms;
  int fallbacks = 0;
  for (int i = 0; i < options_.claims; ++i) {
    if (auto s = CheckInterrupted(); !s.ok()) return s;
    if (auto s = WaitPoolFull(manager_, pool.pool_id(), options_.pool_size); !s.ok()) return s;
    v1::ClaimVmRequest req;
    req.set_pool_id(pool.pool_id());
    auto t0 = Clock::now();
    auto claimed = manager_.connection().Call(&v1::PoolService::Stub::ClaimVm, req);
    const double claim = MsSince(t0);
    if (!claimed.ok()) return Annotate(claimed.status(), "claim");
    VmGuard guard(manager_, claimed->vm().vm_id());
    if (!claimed->from_pool()) ++fallbacks;
    auto vm = SmolVM::attach(claimed->vm().vm_id());
    if (!vm.ok()) return Annotate(vm.status(), "attach to the claimed vm");
    auto t1 = Clock::now();
    if (auto s = Run(*vm, "true"); !s.ok()) return s;
    claim_ms.push_back(claim);
    daemon_ms.push_back(claimed->claim_ms());
    first_exec_ms.push_back(claim + MsSince(t1));
    if (auto s = guard.Delete(); !s.ok()) return s;
  }
  Emit("daemon.pool.claim", "ms", claim_ms);
  Emit("daemon.pool.claim.daemon_side", "ms", daemon_ms);
  Emit("daemon.pool.claim.first_exec", "ms", first_exec_ms);
  Emit("daemon.pool.claim.fallbacks", "count", {static_cast<double>(fallbacks)});
  return absl::OkStatus();
}

int PerfBench::Sweep() {
  const std::string mine = prefix_ + "-";
  int found = 0;
  if (auto pools = manager_.list_pools(); pools.ok()) {
    for (const v1::Pool& pool : *pools) {
      if (!absl::StartsWith(pool.pool_id(), mine)) continue;
      ++found;
      PoolGuard leftover(manager_, pool.pool_id());
    }
  }
  if (auto vms = manager_.list_vms(); vms.ok()) {
    for (const v1::Vm& vm : *vms) {
      if (!absl::StartsWith(vm.vm_id(), mine)) continue;
      ++found;
      VmGuard leftover(manager_, vm.vm_id());  // Deleted (or logged) right here.
    }
  }
  if (auto snaps = manager_.list_snapshots(); snaps.ok()) {
    for (const v1::SnapshotInfo& snap : *snaps) {
      if (!absl::StartsWith(snap.snapshot_id(), mine)) continue;
      ++found;
      SnapshotGuard leftover(manager_, snap.snapshot_id());
    }
  }
  return found;
}

// RunPrefix is a short random id prefix unique to this run ("pb-k3x9qa").
std::string RunPrefix() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device rd;
  std::string prefix = "pb-";
  for (int i = 0; i < 6; ++i) prefix += kChars[rd() % (sizeof(kChars) - 1)];
  return prefix;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string which;
  CLI::App app{"perf_bench: daemon-side performance benchmarks through the C++ client; "
               "one JSON result per line on stdout, logs on stderr"};
  app.add_option("case", which, "restore, snapshot, cold, fork, exec, list, pool or all")
      ->required()
      ->check(CLI::IsMember(
          {"restore", "snapshot", "cold", "fork", "exec", "list", "pool", "all"}));
  app.add_option("--reps", options.reps, "reps of each measurement (restore, snapshot, cold, "
                 "list)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--fork-reps", options.fork_reps, "reps of each fork count")
      ->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--calls", options.calls, "samples of the cheap calls (exec, ping, get, page)")
      ->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--vcpus", options.vcpus, "vCPUs of every VM (bench/bare_qemu.py defaults to 2)")
      ->capture_default_str()->check(CLI::Range(1, 32));
  app.add_option("--memory-mib", options.memory_mib,
                 "guest memory sizes (restore, snapshot: all; cold, fork, exec: the first); "
                 "default 256,2048 for restore and snapshot, 256 otherwise")
      ->delimiter(',')->check(CLI::Range(128, 16384));
  app.add_option("--dirty-mib", options.dirty_mib,
                 "MiB to dirty before each snapshot (default 0,64,512 where <= memory/4)")
      ->delimiter(',');
  app.add_option("--fork-counts", options.fork_counts, "clones per ForkSnapshot")
      ->capture_default_str()->delimiter(',')->check(CLI::Range(1, 128));
  app.add_option("--pool-size", options.pool_size, "members of the pool case's pool")
      ->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--claims", options.claims, "claims timed by the pool case")
      ->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--seed-snapshots", options.seed_snapshots,
                 "list: snapshot rows to add to the daemon's database for the listing "
                 "(removed at the end; needs --state-db)")
      ->capture_default_str()->check(CLI::Range(0, 1000000));
  app.add_option("--state-db", options.state_db, "the daemon's smolvmd.db (for --seed-snapshots)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a usage error: 2.
  }

  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  const std::string prefix = RunPrefix();
  PerfBench bench(options, prefix);
  using Case = std::pair<const char*, std::function<absl::Status()>>;
  const std::vector<Case> cases = {
      {"exec", [&] { return bench.Exec(); }},         {"list", [&] { return bench.List(); }},
      {"cold", [&] { return bench.Cold(); }},         {"restore", [&] { return bench.Restore(); }},
      {"snapshot", [&] { return bench.Snapshot(); }}, {"fork", [&] { return bench.Fork(); }},
      {"pool", [&] { return bench.Pool(); }},
  };
  Log("run %s: case %s, reps %d, fork reps %d, calls %d, %u vCPUs", prefix, which, options.reps,
      options.fork_reps, options.calls, options.vcpus);
  const auto run_start = Clock::now();
  int status = 0;
  for (const auto& [name, run] : cases) {
    if (which != "all" && which != name) continue;
    const auto start = Clock::now();
    if (absl::Status s = run(); !s.ok()) {
      Log("FAILED %s: %s", name, s.ToString());
      status = 1;
      break;
    }
    Log("case %s done in %.1f s", name, MsSince(start) / 1000);
  }
  if (int left = bench.Sweep(); left > 0) Log("swept %d leftover VMs/snapshots of %s", left, prefix);
  Log("total %.1f s", MsSince(run_start) / 1000);
  return status;
}
