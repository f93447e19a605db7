#include "lib/core/event_journal.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lib/base/status_macros.h"
#include "lib/model/validation.h"

namespace smolvm::core {
namespace {

// Events read from the store at a time.
constexpr int kBatch = 500;

}  // namespace

absl::Status EventJournal::ValidateFilter(const EventFilter& filter) {
  if (!filter.vm_id.empty()) {
    SMOLVM_RETURN_IF_ERROR(ValidateId(filter.vm_id, "filter.vm_id"));
  }
  if (!filter.snapshot_id.empty()) {
    SMOLVM_RETURN_IF_ERROR(ValidateId(filter.snapshot_id, "filter.snapshot_id"));
  }
  for (const std::string& kind : filter.kinds) {
    const auto& known = EventKinds();
    if (std::find(known.begin(), known.end(), kind) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown event kind \"", kind,
                                                     "\"; known: ", absl::StrJoin(known, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::Status EventJournal::Watch(const Caller& caller, const WatchOptions& options,
                                 const std::function<bool(const EventRecord&)>& send,
                                 const std::function<bool()>& cancelled) const {
  SMOLVM_RETURN_IF_ERROR(ValidateFilter(options.filter));
  if (options.after_event_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_event_id ", options.after_event_id, " must be >= 0"));
  }
  // The filter applies in SQL, the tenant too: an admin reads every owner's.
  const std::string owner = caller.admin ? "" : caller.tenant;
  int64_t after = options.after_event_id;
  for (;;) {
    if (cancelled()) return absl::CancelledError("the watcher went away");
    if (shutting_down_) {
      return absl::UnavailableError(absl::StrCat(
          "smolvmd is shutting down; watch again after event ", after, " once it is back"));
    }
    // Read before listing: a commit after the list changes it, so the wait
    // below returns at once instead of missing it.
    const uint64_t commits = store_->CommitCount();
    SMOLVM_ASSIGN_OR_RETURN(store::Store::EventPage page,
                            store_->ListEvents(after, owner, options.filter, kBatch));
    for (const EventRecord& event : page.events) {
      if (!send(event)) return absl::CancelledError("the watcher went away");
    }
    // Past what the filter skipped too: retention is judged on this.
    after = page.read_through;
    if (page.events.size() == static_cast<size_t>(kBatch)) continue;  // More kept.
    if (!options.follow) return absl::OkStatus();
    store_->WaitForCommit(commits, absl::Now() + options.poll);
  }
}

}  // namespace smolvm::core
