// File: ipv4.h
//
// The one IPv4 address and CIDR parser of smolvmd, used by API validation,
// the configuration and the firewall renderer alike, so that every value
// the API accepts is one the firewall can render (and nothing that nft,
// inet_aton or a shell would read differently gets through): dotted quads
// of four plain decimal octets without leading zeros, an optional "/n"
// with n 0-32 in plain decimal, no signs, no spaces.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

// In smolvm::net, where these lived first (ip_pool.h includes this file).
namespace smolvm::net {

// Addresses are host-order uint32_t: 10.200.0.1 == 0x0ac80001.

// "10.200.0.5".
std::string IpToString(uint32_t ip);

// Dotted quad with exactly four decimal octets 0-255 without leading zeros
// ("10.200.0.5"; "010.0.0.1" is octal to inet_aton, so it is refused);
// INVALID_ARGUMENT otherwise.
absl::StatusOr<uint32_t> ParseIpv4(absl::string_view text);

// "a.b.c.d/n" with n in 0..32, one or two digits without a leading zero
// (a bare "a.b.c.d" means /32). Host bits are masked off: "10.1.2.3/8" ->
// {10.0.0.0, 8}. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::pair<uint32_t, int>> ParseCidr(absl::string_view text);

// "a.b.c.d/n" of a (network, prefix) pair.
std::string CidrToString(uint32_t network, int prefix);

// The netmask of a prefix length 0..32 (24 -> 0xffffff00).
uint32_t PrefixToMask(int prefix);

}  // namespace smolvm::net
