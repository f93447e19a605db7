// File: in_netns.h
//
// InNetns runs a function inside a named network namespace
// (/run/netns/NAME, as `ip netns add` makes them) on a short-lived thread
// of its own, so that the caller's thread never changes namespace. Netlink
// and nftables sockets opened by the function belong to that namespace.
// Used by the netlink and nftables backends when tests confine them to a
// throwaway namespace; an empty name runs the function right here.
#pragma once

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"

namespace smolvm::net {

// Runs `fn` in network namespace `netns` ("" = the caller's) and returns
// its status, or why the namespace could not be entered.
absl::Status InNetns(const std::string& netns, absl::FunctionRef<absl::Status()> fn);

}  // namespace smolvm::net
