// File: event.h
//
// The event journal's record (issue 14 item 3): one state change of a VM,
// snapshot or image, as the store keeps it (lib/store/store_events.cc) and
// EventService.WatchEvents streams it. Most events are written by SQLite
// triggers in the same transaction as the change they describe; the rest
// (kForked, kLifetimeAction) by Store::AppendEvent.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace smolvm {

// Event kinds, as stored in events.kind. The VM state kinds are the names
// of the states (VmStateName), so a state change's kind is its new state.
inline constexpr char kEventCreated[] = "created";
inline constexpr char kEventRunning[] = "running";
inline constexpr char kEventPaused[] = "paused";
inline constexpr char kEventStopped[] = "stopped";
inline constexpr char kEventError[] = "error";
inline constexpr char kEventDeleted[] = "deleted";
inline constexpr char kEventRestored[] = "restored";
inline constexpr char kEventForked[] = "forked";
inline constexpr char kEventSnapshotCreated[] = "snapshot_created";
inline constexpr char kEventSnapshotDeleted[] = "snapshot_deleted";
inline constexpr char kEventLifetimeAction[] = "lifetime_action";
inline constexpr char kEventImageBuilt[] = "image_built";

// Every kind above, in the order of the API's EventKind enum.
inline const std::vector<std::string>& EventKinds() {
  static const std::vector<std::string> kinds = {
      kEventCreated,  kEventRunning,         kEventPaused,          kEventStopped,
      kEventError,    kEventDeleted,         kEventRestored,        kEventForked,
      kEventSnapshotCreated, kEventSnapshotDeleted, kEventLifetimeAction, kEventImageBuilt};
  return kinds;
}

struct EventRecord {
  int64_t event_id = 0;  // Assigned by the store; increasing, never reused.
  absl::Time at;         // Millisecond precision.
  std::string owner;     // The tenant of the VM/snapshot/image.
  std::string kind;      // One of EventKinds().
  std::string vm_id;     // "" for image events.
  std::string snapshot_id;
  std::string state;     // The VM's state after the event (VmStateName), "" if none.
  std::string detail;    // Free text: an error's reason, a fork's children, ...
};

// What a reader wants; empty fields match everything.
struct EventFilter {
  std::string vm_id;
  std::string snapshot_id;
  std::vector<std::string> kinds;
};

}  // namespace smolvm
