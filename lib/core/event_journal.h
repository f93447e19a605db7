// File: event_journal.h
//
// EventJournal serves the store's event journal (issue 14 item 3) to
// callers: validation of what they ask for, their tenant's events only
// (admins see all), and following new events as the store commits them.
// The journal itself is written by the store (triggers and AppendEvent, see
// lib/store/store.h); the daemon's EventService is a thin shell over Watch.
//
// Thread-safety: all methods may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "absl/status/status.h"
#include "lib/model/event.h"
#include "lib/model/tenant.h"
#include "lib/store/store.h"

namespace smolvm::core {

class EventJournal {
 public:
  // `store` must outlive the journal.
  explicit EventJournal(store::Store* store) : store_(store) {}

  // INVALID_ARGUMENT for a malformed vm_id/snapshot_id or an unknown kind.
  static absl::Status ValidateFilter(const EventFilter& filter);

  // Calls `send` with each event after `after_event_id` that `caller` may
  // see and `filter` passes, in id order. Without `follow` it returns once
  // the kept events are sent; with it, it goes on sending new ones as they
  // are committed until `cancelled()` is true (checked at least every
  // `poll`) and returns CANCELLED. A `send` that returns false (the reader
  // went away) ends it with CANCELLED too. OUT_OF_RANGE: see
  // Store::ListEvents.
  struct WatchOptions {
    int64_t after_event_id = 0;
    bool follow = false;
    EventFilter filter;
    absl::Duration poll = absl::Milliseconds(500);
  };
  absl::Status Watch(const Caller& caller, const WatchOptions& options,
                     const std::function<bool(const EventRecord&)>& send,
                     const std::function<bool()>& cancelled) const;

  // Ends every follow (within `poll`) with UNAVAILABLE, so that a daemon
  // that stops does not wait for its followers; later watches fail at once.
  void Shutdown() { shutting_down_ = true; }

 private:
  store::Store* const store_;
  std::atomic<bool> shutting_down_{false};
};

}  // namespace smolvm::core
