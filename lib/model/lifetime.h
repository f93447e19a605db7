// File: lifetime.h
//
// A VM's lifetime policy (issue 14 item 1): what the daemon does to it when
// it has lived too long (max_lifetime) or been idle too long (idle_timeout),
// and whether a call to a VM its idle policy paused resumes it. Part of the
// VM's config, persisted with it; the daemon keeps the deadline and what an
// action left behind in the same record.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace smolvm {

enum class LifetimeAction {
  kDelete,    // The VM and its files go (its snapshots stay).
  kStop,      // Its VMM ends; the disk stays; StartVm cold-boots it.
  kPause,     // Its vCPUs stop, memory kept; a resume (or auto-resume) goes on.
  kSnapshot,  // A snapshot ("<vm_id>-lifetime-<time>") then stop.
};

// "delete", "stop", "pause", "snapshot" (the store's and the CLI's spelling).
const char* LifetimeActionName(LifetimeAction action);
std::optional<LifetimeAction> ParseLifetimeAction(std::string_view name);

struct Lifetime {
  // Zero: no limit. Counted from the VM's creation (a restored or claimed
  // clone: from its restore or claim), or from the SetLifetime that set it.
  absl::Duration max_lifetime = absl::ZeroDuration();
  LifetimeAction max_lifetime_action = LifetimeAction::kDelete;
  // Zero: never idle. Only a RUNNING VM is idle: no guest call (exec, file,
  // process), lifecycle call, running exec, process or forwarded connection
  // for this long.
  absl::Duration idle_timeout = absl::ZeroDuration();
  LifetimeAction idle_action = LifetimeAction::kPause;
  // A guest call or forwarded connection to a VM the idle policy paused
  // resumes it first.
  bool auto_resume = true;

  // Kept by the daemon, not set by callers:
  // When max_lifetime runs out; InfinitePast when it has no limit or the
  // action was taken.
  absl::Time expires_at = absl::InfinitePast();
  // Paused by idle_action (what auto_resume undoes).
  bool idle_paused = false;
  // The snapshot the last kSnapshot action took.
  std::string snapshot_id;

  bool has_policy() const {
    return max_lifetime != absl::ZeroDuration() || idle_timeout != absl::ZeroDuration();
  }
  // Worth storing at all (a policy, or what an action left).
  bool empty() const { return !has_policy() && !idle_paused && snapshot_id.empty(); }
  bool operator==(const Lifetime&) const = default;
};

inline constexpr absl::Duration kMinLifetimeLimit = absl::Seconds(1);
inline constexpr absl::Duration kMaxLifetimeLimit = absl::Hours(24 * 365);

// INVALID_ARGUMENT unless each limit is zero or 1 s .. 365 days in whole
// seconds.
absl::Status ValidateLifetime(const Lifetime& lifetime);

// The caller's part of `requested` (what the daemon keeps reset), with the
// max_lifetime deadline counted from `now`: a new VM's, a clone's, or a
// SetLifetime's.
Lifetime StartLifetime(const Lifetime& requested, absl::Time now);

}  // namespace smolvm
