// File: conntrack.h
//
// The connections the host's connection tracking holds toward a guest
// through a port forward (DNAT): what keeps a VM with an idle timeout from
// being idle, and what wakes a VM its idle policy paused (lifetime
// policies, lib/core). Read from /proc/net/nf_conntrack, the kernel's text
// view of the table in the daemon's network namespace.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace smolvm::net {

struct ForwardedConnections {
  // Answered by the guest and not closing (TCP established, UDP), and how
  // long the most recently used of them has been quiet (TCP: the
  // established timeout minus what is left of it; UDP: zero).
  int open = 0;
  absl::Duration quiet_for = absl::InfiniteDuration();
  int waiting = 0;  // Not answered yet (a SYN queued for a paused guest).
};

// Per guest address, the connections to it that were sent there by DNAT
// (their original destination was another address), in `table` (the text
// of /proc/net/nf_conntrack); `established_timeout` is the kernel's
// nf_conntrack_tcp_timeout_established. Lines it cannot read are skipped.
std::map<std::string, ForwardedConnections> CountForwardedByGuest(
    absl::string_view table, absl::Duration established_timeout = absl::Hours(120));

// The table's text; UNAVAILABLE when this kernel has no procfs view
// (CONFIG_NF_CONNTRACK_PROCFS) or conntrack is not loaded.
absl::StatusOr<std::string> ReadConntrackTable();

// The kernel's idle timeout of established TCP connections in this network
// namespace (5 days unless changed).
absl::Duration EstablishedTimeout();

}  // namespace smolvm::net
