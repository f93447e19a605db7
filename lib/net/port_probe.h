// File: port_probe.h
//
// Whether a host process already holds a host port that a port forward
// would take over. A forward's DNAT rule would silently steal the
// connections of a service listening there (sshd on 22, a database on
// 5432), so a forward onto a held port is refused, naming the holder.
//
// Reads the socket tables of /proc (tcp, tcp6, udp, udp6 of the calling
// thread's network namespace) and, to name the holder, the fd links of
// /proc/<pid>/fd. Read-only; thread-safe. What a holder is:
//  * tcp: a socket in LISTEN state;
//  * udp: an unconnected bound socket (connected ones are clients whose
//    replies conntrack already maps, so a new forward does not touch them);
//  * on the forward's address, or on a wildcard (0.0.0.0, and :: which may
//    be dual-stack), or anywhere when the forward is on 0.0.0.0; IPv6
//    sockets count only when bound to :: or to a v4-mapped address.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace smolvm::net {

// OK if no socket of `protocol` ("tcp" or "udp") is bound to `host_ip`
// ("127.0.0.1"; "0.0.0.0" = every address) and `port`.
// FAILED_PRECONDITION otherwise: "host port tcp 127.0.0.1:22 is already in
// use by sshd (pid 123); pick another host port" ("by a host process" when
// its owner is not visible, e.g. in another pid namespace).
// INVALID_ARGUMENT for a bad address, port (1-65535) or protocol; an error
// if the socket table cannot be read. `proc_root` is for tests: a tree
// shaped like /proc (thread-self/net/tcp, <pid>/fd/*, <pid>/comm).
absl::Status CheckHostPortFree(const std::string& host_ip, uint32_t port,
                               const std::string& protocol,
                               const std::string& proc_root = "/proc");

}  // namespace smolvm::net
