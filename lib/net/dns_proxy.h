// File: dns_proxy.h
//
// The resolver of VMs with domain rules (EgressPolicy.allow_domains /
// deny_domains): the firewall sends their DNS (port 53, whatever address
// they ask) to this proxy on the bridge's address, which answers from the
// VM's policy (domain_rules.h: NXDOMAIN, REFUSED, or the upstream's
// answer) and, for names a restricted VM may reach, makes the IPv4
// addresses of the answer reachable for that VM (Firewall::AllowLearned)
// before the guest sees them, so the guest can connect at once.
//
// Who asks is the source address: the bridge table of the firewall
// vouches for it (a TAP sends only its VM's address). Everything a guest
// sends is untrusted: bounded in size, in queries in flight (per guest and
// in all) and in TCP connections; upstream answers are matched to the
// query (id, question) and to the socket it was sent from.
//
// One thread serves UDP and the upstream sockets with poll(); each TCP
// connection (a guest retrying a truncated answer) gets a thread of its
// own, at most kMaxTcpConnections at once, each bounded in time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/model/vm.h"
#include "lib/net/firewall.h"

namespace smolvm::net {

class DnsProxy {
 public:
  // The VM a guest address belongs to, if it has domain rules.
  struct Client {
    std::string vm_id;
    EgressPolicy egress;
  };
  // nullopt: not a VM with domain rules (its query is REFUSED).
  using Lookup = std::function<std::optional<Client>(uint32_t guest)>;

  struct Options {
    uint32_t listen_ip = 0;  // The bridge's address.
    // 53, else (taken on this address, e.g. by a resolver bound to every
    // address) any free port: the firewall redirects to whichever it is.
    uint16_t port = 53;
    uint32_t upstream_ip = 0;  // 0 = none: forwarded queries get SERVFAIL.
    uint16_t upstream_port = 53;
    absl::Duration upstream_timeout = absl::Seconds(3);
    // Where learned addresses go (table inet `table`'s dns_allow).
    Firewall* firewall = nullptr;
    std::string table;
  };

  static constexpr int kMaxInFlight = 512;           // Queries sent upstream, in all.
  static constexpr int kMaxInFlightPerGuest = 64;
  static constexpr int kMaxTcpConnections = 16;
  static constexpr int kMaxTcpConnectionsPerGuest = 4;
  static constexpr size_t kMaxLearnedPerGuest = 4096;  // Addresses remembered for Forget.

  static absl::StatusOr<std::unique_ptr<DnsProxy>> Start(Options options, Lookup lookup);
  ~DnsProxy();  // Stops serving; waits for every thread.
  DnsProxy(const DnsProxy&) = delete;
  DnsProxy& operator=(const DnsProxy&) = delete;

  uint16_t port() const;

  // Removes what guest `guest` learned (its policy changed, or the address
  // went to another VM), in the firewall too; answers to queries it sent
  // before are no longer learned from.
  absl::Status Forget(uint32_t guest);
  // The firewall's tables were replaced (a whole-state apply), emptying the
  // dynamic sets: puts back what the guests in `keep` (those whose policy
  // did not change) learned and is not expired, with the time left, so
  // they keep their allowed addresses; every other guest's records are
  // dropped (they are not in the new tables) and its generation bumped.
  void Reinstall(const std::set<uint32_t>& keep);

  struct Impl;

 private:
  explicit DnsProxy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace smolvm::net
