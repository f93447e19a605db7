// smolvmctl vm stats ID and vm top: what VMs use (GetVmStats), once or
// refreshed like top(1).

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli/commands.h"
#include "client/cli/stream_stopper.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {
namespace {

struct StatsFlags {
  std::string vm_id;
  double interval_seconds = 2;
  int rounds = 0;
};

absl::Status RunStats(CliContext& ctx, const StatsFlags& f) {
  absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
  if (!target.ok()) return target.status();
  absl::StatusOr<v1::VmStats> stats = target->stats();
  if (!stats.ok()) return stats.status();
  return ctx.out.Message(*stats, StatsTable({*stats}));
}

// The stats of every RUNNING or PAUSED VM the caller sees; VMs that stop
// meanwhile are left out.
absl::StatusOr<std::vector<v1::VmStats>> TakeRound(const CliContext& ctx) {
  ListFilter filter;
  filter.statuses = {v1::RUNNING, v1::PAUSED};
  absl::StatusOr<std::vector<v1::Vm>> vms = SmolVMManager(ctx.globals.options()).list_vms(filter);
  if (!vms.ok()) return vms.status();
  std::vector<v1::VmStats> round;
  for (const v1::Vm& vm : *vms) {
    absl::StatusOr<SmolVM> target = SmolVM::attach(vm.vm_id(), ctx.globals.options());
    if (!target.ok()) continue;
    absl::StatusOr<v1::VmStats> stats = target->stats();
    if (stats.ok()) round.push_back(*std::move(stats));
  }
  return round;
}

absl::Status RunTop(CliContext& ctx, const StatsFlags& f) {
  std::atomic<bool> stop{false};
  absl::StatusOr<std::unique_ptr<StreamStopper>> stopper =
      StreamStopper::Start([&stop] { stop = true; }, absl::ZeroDuration());
  if (!stopper.ok()) return stopper.status();
  const bool tty = isatty(STDOUT_FILENO) == 1;
  std::vector<v1::VmStats> previous;
  absl::Status result;
  for (int round = 0; !stop && (f.rounds == 0 || round < f.rounds); ++round) {
    if (round > 0) {
      const absl::Time next = absl::Now() + absl::Seconds(f.interval_seconds);
      while (!stop && absl::Now() < next) absl::SleepFor(absl::Milliseconds(100));
      if (stop) break;
    }
    absl::StatusOr<std::vector<v1::VmStats>> stats = TakeRound(ctx);
    if (!stats.ok()) {
      result = stats.status();
      break;
    }
    if (ctx.out.structured()) {
      for (const v1::VmStats& s : *stats) {
        if (absl::Status p = ctx.out.StreamEvent(s); !p.ok()) return p;
      }
    } else {
      // Redrawn in place on a terminal; appended otherwise (a log).
      std::string screen = tty ? "\x1b[H\x1b[2J" : (round > 0 ? "\n" : "");
      absl::StrAppend(&screen, StatsTable(*stats, previous));
      std::fwrite(screen.data(), 1, screen.size(), stdout);
      std::fflush(stdout);
    }
    previous = *std::move(stats);
  }
  stopper->reset();
  return result;
}

}  // namespace

void RegisterStatsCommands(CLI::App& vm, CliContext& ctx) {
  StatsFlags& f = ctx.Make<StatsFlags>();
  CLI::App* stats = vm.add_subcommand(
      "stats",
      "what a RUNNING or PAUSED VM uses: VMM CPU time and memory, the guest's memory, disk "
      "blocks, network traffic, uptime (the VmStats message with --json)");
  stats->add_option("ID", f.vm_id, "VM id")->required();
  ctx.OnRun(stats, [&ctx, &f] { return RunStats(ctx, f); });

  CLI::App* top = vm.add_subcommand(
      "top",
      "the stats of every running VM, refreshed (CPU is the share of one host core since the "
      "last refresh); Ctrl-C ends it; VmStats JSON lines with --json");
  top->add_option("--interval", f.interval_seconds, "seconds between refreshes (default 2)")
      ->check(CLI::Range(0.2, 3600.0))
      ->type_name("SECONDS");
  top->add_option("-n,--rounds", f.rounds, "stop after N refreshes (default: until Ctrl-C)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("N");
  ctx.OnRun(top, [&ctx, &f] { return RunTop(ctx, f); });
}

}  // namespace smolvm::cli
