// File: ip_pool.h
//
// Pure IPv4 arithmetic for the VM network: the subnet the guests live in
// (gateway = first host, guests = the hosts after it) and the names derived
// from a guest address (TAP device, MAC), so that everything about a VM's
// network identity follows from its IP. Addresses and CIDRs are parsed by
// lib/base/ipv4.h (included here for the callers).
// No side effects; every function is thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/base/ipv4.h"

namespace smolvm::net {

// The VM subnet.
struct Subnet {
  static constexpr int kMinPrefix = 16;  // 65533 guests.
  static constexpr int kMaxPrefix = 29;  // 5 guests.

  uint32_t network = 0;
  int prefix = 0;

  // "10.200.0.0/24": prefix 16-29 and no host bits set. INVALID_ARGUMENT
  // with the rule (and the corrected network when host bits are set).
  static absl::StatusOr<Subnet> Parse(absl::string_view cidr);

  uint32_t mask() const { return PrefixToMask(prefix); }
  uint32_t broadcast() const { return network | ~mask(); }
  // The host side of the bridge: the first host address (10.200.0.1).
  uint32_t gateway() const { return network + 1; }
  // "255.255.255.0".
  std::string netmask_string() const { return IpToString(mask()); }
  // "10.200.0.0/24".
  std::string ToString() const { return CidrToString(network, prefix); }
  // Guest addresses in allocation order: the second host address up to the
  // last one before the broadcast address (10.200.0.2 .. 10.200.0.254).
  std::vector<uint32_t> HostAddresses() const;
  // Whether `ip` is inside the subnet (network and broadcast included).
  bool Contains(uint32_t ip) const { return (ip & mask()) == network; }
  // Whether `ip` is one of HostAddresses().
  bool IsGuestAddress(uint32_t ip) const {
    return Contains(ip) && ip > gateway() && ip < broadcast();
  }

  bool operator==(const Subnet&) const = default;
};

// The TAP device of a guest: "smv" + 8 lowercase hex digits of its address
// ("smv0ac80005", 11 characters, below IFNAMSIZ-1).
inline constexpr char kTapPrefix[] = "smv";
std::string TapNameFor(uint32_t ip);
// The address a TapNameFor name encodes; nullopt for any other name.
std::optional<uint32_t> AddressOfTap(const std::string& name);

// The guest's MAC: locally administered unicast "02:53:" + the four octets
// ("02:53:0a:c8:00:05").
std::string MacFor(uint32_t ip);

// A Linux interface name we are willing to pass to ip/nft: 1-15 characters
// of [A-Za-z0-9_.-] (a subset of what the kernel allows, and nothing that
// needs quoting in an nft script). INVALID_ARGUMENT naming `what` otherwise.
absl::Status ValidateInterfaceName(absl::string_view name, absl::string_view what);

}  // namespace smolvm::net
