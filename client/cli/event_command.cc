// smolvmctl events [-f] [--after ID] [--vm ID] [--snapshot ID] [--kind K]:
// the event journal (EventService.WatchEvents), one line per event.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/stream_stopper.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {
namespace {

struct EventsFlags {
  bool follow = false;
  int64_t after = 0;
  std::string vm_id;
  std::string snapshot_id;
  std::vector<std::string> kinds;
};

absl::Status RunEvents(CliContext& ctx, const EventsFlags& f) {
  EventWatchOptions options{.after_event_id = f.after, .follow = f.follow,
                            .vm_id = f.vm_id, .snapshot_id = f.snapshot_id};
  for (const std::string& name : f.kinds) {
    absl::StatusOr<v1::EventKind> kind = ParseEventKind(name);
    if (!kind.ok()) return kind.status();
    options.kinds.push_back(*kind);
  }
  absl::StatusOr<std::unique_ptr<EventStream>> stream =
      SmolVMManager(ctx.globals.options()).watch_events(options);
  if (!stream.ok()) return stream.status();
  // Ends with Ctrl-C, or after the kept events without -f.
  return PrintUntilEnd(**stream, [&ctx](const v1::Event& event) -> absl::Status {
    if (ctx.out.structured()) return ctx.out.StreamEvent(event);
    const std::string line = EventLine(event) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
    return absl::OkStatus();
  });
}

}  // namespace

void RegisterEventsCommand(CLI::App& app, CliContext& ctx) {
  EventsFlags& f = ctx.Make<EventsFlags>();
  CLI::App* events = app.add_subcommand(
      "events",
      "print what happened to your VMs, snapshots and images (an admin: everyone's), oldest "
      "first, one line each: ID TIME KIND VM SNAPSHOT STATE DETAIL; with -f go on printing new "
      "events until Ctrl-C; Event JSON lines with --json");
  events->add_flag("--follow,-f", f.follow, "keep printing new events");
  events->add_option("--after", f.after,
                     "only events after this id (the last one you handled: resumes there, also "
                     "after a daemon restart; default 0 = from the oldest kept)")
      ->check(CLI::NonNegativeNumber)
      ->type_name("ID");
  events->add_option("--vm", f.vm_id, "only events of this VM")->type_name("ID");
  events->add_option("--snapshot", f.snapshot_id, "only events of this snapshot")
      ->type_name("ID");
  events->add_option("--kind", f.kinds,
                     "only events of this kind (repeatable): vm_created, vm_running, vm_paused, "
                     "vm_stopped, vm_error, vm_deleted, vm_restored, vm_forked, "
                     "snapshot_created, snapshot_deleted, lifetime_action, image_built")
      ->type_name("KIND");
  ctx.OnRun(events, [&ctx, &f] { return RunEvents(ctx, f); });
}

}  // namespace smolvm::cli
