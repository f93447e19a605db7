// File: net_identity.h
//
// The network part of Reidentify: gives one interface a new MAC, IPv4
// address and default route, rewrites resolv.conf and announces the new
// address, all inside the agent's own process (ioctls on a datagram
// socket, rtnetlink, an AF_PACKET socket): no `ip` or `arping` is started,
// which in a freshly restored TCG guest (cold translation cache) costs
// tens of milliseconds per process. Needs CAP_NET_ADMIN and CAP_NET_RAW.
#pragma once

#include <string>

#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// Makes the sockets ApplyNetworkIdentity works through (see
// net_identity.cc), so that a snapshot taken later holds them. Call once at
// startup; failures are logged and retried when needed.
void PrepareNetworkIdentity();

// Applies `id` (see agent.proto Reidentify for the steps and their order).
// Stops at the first failed step and returns its error, naming the step and
// the object ("set eth9 down: No such device"); "" on success. A failed
// step after the interface was taken down brings it back up if it was up.
// The gratuitous ARP's failure is only logged. `resolv_conf` is the file
// to rewrite (/etc/resolv.conf; tests point it elsewhere).
std::string ApplyNetworkIdentity(const agent::v1::NetworkIdentity& id,
                                 const std::string& resolv_conf);

// Replaces `path` with `contents` atomically: a temp file in the same
// directory renamed over it (no fsync: it is rewritten at every boot and
// restore). A symlink that resolves to a regular file is written through
// (its target replaced); any other symlink (dangling, as images link it to
// /run/systemd/resolve/...) is replaced by a file. Returns the error, or "".
std::string ReplaceFileAtomically(const std::string& path, const std::string& contents);

}  // namespace smolvm::guest
