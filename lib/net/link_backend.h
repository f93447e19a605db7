// File: link_backend.h
//
// Host links for the VM network: one bridge (the guests' gateway) and one
// persistent TAP per VM, enslaved to the bridge as an isolated port (isolated
// ports cannot exchange frames with each other, only with the bridge itself,
// which is how VMs are kept apart at layer 2; the firewall keeps them apart
// at layer 3).
//
// LinkBackend is the interface the VM manager uses (fakes implement it in
// tests). NetlinkLinkBackend (netlink_link_backend.h, the daemon's) speaks
// rtnetlink and the TUN ioctls itself; IpCommandLinkBackend runs iproute2's
// `ip` / `bridge` and `sysctl` from argv vectors. Every operation is
// idempotent so that a retry or a restart after a crash converges. Errors
// name the device and carry the kernel's (or the command's) reason.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/base/subprocess.h"

namespace smolvm::net {

class LinkBackend {
 public:
  virtual ~LinkBackend() = default;

  // Creates bridge `name` if missing, gives it `gateway_ip`/`prefix` if it
  // lacks that address (other addresses are left alone), sets it up, and
  // enables net.ipv4.ip_forward and net.ipv4.conf.<name>.route_localnet (so
  // connections to 127.0.0.1 can be DNATed to guests). OK if all of that is
  // already so. FAILED_PRECONDITION if `name` exists and is not a bridge.
  virtual absl::Status EnsureBridge(const std::string& name, uint32_t gateway_ip,
                                    int prefix) = 0;

  // Creates persistent TAP `name` (mode tap, no multi-queue), enslaves it to
  // `bridge` as an isolated port and sets it up. An existing TAP of that name
  // is brought to the same settings. On failure a TAP this call created is
  // deleted again; a pre-existing one is left as it was found.
  // FAILED_PRECONDITION if `name` exists and is not a TAP.
  virtual absl::Status CreateTap(const std::string& name, const std::string& bridge) = 0;

  // Deletes link `name`; OK if there is none.
  virtual absl::Status DeleteLink(const std::string& name) = 0;

  // Names of the links whose name starts with `prefix`, sorted.
  virtual absl::StatusOr<std::vector<std::string>> ListLinks(const std::string& prefix) = 0;

  // The device of the IPv4 default route (the lowest metric one if there are
  // several), for masquerading guest traffic. NOT_FOUND if there is none.
  virtual absl::StatusOr<std::string> DefaultRouteInterface() = 0;

  // The IPv4 subnets the host is directly connected to ("192.168.1.0/24":
  // network/prefix, in address order, without duplicates), from the
  // addresses of every interface except lo, `exclude_bridge` and the TAPs
  // (kTapPrefix): the LANs guests must not reach unless the operator
  // allows it.
  virtual absl::StatusOr<std::vector<std::string>> ConnectedSubnets(
      const std::string& exclude_bridge) = 0;

  // The kernel's counters of link `name` (in the backend's namespace, which
  // /sys/class/net need not show). UNIMPLEMENTED where a backend has none.
  struct Counters {
    uint64_t rx_bytes = 0, rx_packets = 0, tx_bytes = 0, tx_packets = 0;
  };
  virtual absl::StatusOr<Counters> LinkCounters(const std::string& name) {
    return absl::UnimplementedError("link counters: not supported by this link backend");
  }
};

// For the LinkBackends, so that they answer alike.
//
// EnsureBridge's argument checks: INVALID_ARGUMENT for a bad name or a
// prefix outside 1-30.
absl::Status CheckBridgeArguments(const std::string& name, int prefix);
//
// DefaultRouteChooser keeps the lowest-metric default route offered (the
// first on a tie); Result() is its device, or NOT_FOUND saying what to do.
class DefaultRouteChooser {
 public:
  void Offer(std::string dev, int64_t metric);
  absl::StatusOr<std::string> Result() const;

 private:
  std::string dev_;
  int64_t metric_ = 0;
};

// ConnectedSubnetSet collects the IPv4 subnets of the addresses offered,
// except those of lo, `exclude_bridge` and the TAPs (see ConnectedSubnets).
class ConnectedSubnetSet {
 public:
  explicit ConnectedSubnetSet(std::string exclude_bridge)
      : exclude_bridge_(std::move(exclude_bridge)) {}
  // Whether addresses of interface `name` count.
  bool Counts(const std::string& name) const;
  // Adds ip/prefix of a counted interface (a prefix outside 0-32 is ignored).
  void Offer(uint32_t ip, int prefix);
  // "network/prefix", in address order, without duplicates.
  std::vector<std::string> List() const;

 private:
  std::string exclude_bridge_;
  std::set<std::pair<uint32_t, int>> subnets_;  // (network, prefix).
};

// LinkBackend on iproute2. Stateless; calls may run concurrently, but two
// concurrent calls on the same device race like two shells would.
class IpCommandLinkBackend : public LinkBackend {
 public:
  // `command_prefix` is prepended to every command, e.g.
  // {"ip", "netns", "exec", "svn-1234"} to work inside a network namespace
  // (tests); empty in production.
  explicit IpCommandLinkBackend(std::vector<std::string> command_prefix = {});

  absl::Status EnsureBridge(const std::string& name, uint32_t gateway_ip,
                            int prefix) override;
  absl::Status CreateTap(const std::string& name, const std::string& bridge) override;
  absl::Status DeleteLink(const std::string& name) override;
  absl::StatusOr<std::vector<std::string>> ListLinks(const std::string& prefix) override;
  absl::StatusOr<std::string> DefaultRouteInterface() override;
  absl::StatusOr<std::vector<std::string>> ConnectedSubnets(
      const std::string& exclude_bridge) override;

 private:
  struct LinkInfo {
    std::string kind;       // linkinfo.info_kind: "bridge", "tun", "veth", "" ...
    std::string tun_type;   // For "tun": "tap" or "tun".
    std::string master;     // "" when not enslaved.
  };

  // Runs command_prefix_ + argv; a non-zero exit is an error.
  absl::StatusOr<SubprocessResult> Run(std::vector<std::string> argv) const;
  // Runs command_prefix_ + argv; a non-zero exit is reported in the result.
  absl::StatusOr<SubprocessResult> RunUnchecked(std::vector<std::string> argv) const;
  // The link's details, or NOT_FOUND.
  absl::StatusOr<LinkInfo> GetLink(const std::string& name) const;
  absl::Status ConfigureTap(const std::string& name, const std::string& bridge) const;

  std::vector<std::string> command_prefix_;
};

}  // namespace smolvm::net
