// File: conntrack.h
//
// The connections the host's connection tracking holds toward a guest
// through a port forward (DNAT): what keeps a VM with an idle timeout from
// being idle, and what wakes a VM its idle policy paused (lifetime
// policies, lib/core). Read from /proc/net/nf_conntrack, the kernel's text
// view of the table in the daemon's network namespace.
#pragma once

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"

namespace smolvm::net {

struct ForwardedConnections {
  int open = 0;     // Answered by the guest and not closing (TCP established, UDP).
  int waiting = 0;  // Not answered yet (a SYN queued for a paused guest).
};

// Per guest address, the connections to it that were sent there by DNAT
// (their original destination was another address), in `table` (the text
// of /proc/net/nf_conntrack). Lines it cannot read are skipped.
ForwardedConnections CountForwarded(absl::string_view table, const std::string& guest_ip);

// The table's text; UNAVAILABLE when this kernel has no procfs view
// (CONFIG_NF_CONNTRACK_PROCFS) or conntrack is not loaded.
absl::StatusOr<std::string> ReadConntrackTable();

}  // namespace smolvm::net
