// File: netlink_link_backend.h
//
// NetlinkLinkBackend: the LinkBackend on rtnetlink (libnl-route-3), the
// TUN driver's ioctls and /proc/sys, without spawning a process. Same
// contract as link_backend.h describes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/net/link_backend.h"

namespace smolvm::net {

// Stateless (a netlink socket per call); calls may run concurrently, but
// two concurrent calls on the same device race like two shells would.
class NetlinkLinkBackend : public LinkBackend {
 public:
  // `netns` names a network namespace (/run/netns/NAME) to work in
  // (tests); "" (production) is the daemon's own.
  explicit NetlinkLinkBackend(std::string netns = "");

  absl::Status EnsureBridge(const std::string& name, uint32_t gateway_ip,
                            int prefix) override;
  absl::Status CreateTap(const std::string& name, const std::string& bridge) override;
  absl::Status DeleteLink(const std::string& name) override;
  absl::StatusOr<std::vector<std::string>> ListLinks(const std::string& prefix) override;
  absl::StatusOr<Counters> LinkCounters(const std::string& name) override;
  absl::StatusOr<std::string> DefaultRouteInterface() override;
  absl::StatusOr<std::vector<std::string>> ConnectedSubnets(
      const std::string& exclude_bridge) override;

 private:
  const std::string netns_;
};

}  // namespace smolvm::net
