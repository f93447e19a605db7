// File: events.h
//
// What the core reports as it works, for the daemon's metrics (issue 12):
// plain events with a duration, so lib/core depends on no metrics library.
// The sink is called on the thread that did the work, possibly under the
// core's locks: it must be quick and must not call back into the core.
#pragma once

#include <functional>

#include "absl/time/time.h"

namespace smolvm::core {

enum class CoreEvent {
  kAgentConnect,        // A VM's guest agent was connected (boot, restore, daemon start).
  kAgentReconnect,      // ... again, after its connection broke.
  kFirewallVmUpdate,    // One VM's firewall rules changed alone (duration: the transaction).
  kFirewallFullUpdate,  // The whole ruleset was applied (start, settings, fallback).
};

// Called once per event; `took` is zero where there is nothing to time.
using EventSink = std::function<void(CoreEvent event, absl::Duration took)>;

}  // namespace smolvm::core
