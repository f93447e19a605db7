// File: dns_message.h
//
// The few things the VMs' resolver (dns_proxy.h) needs from DNS messages
// (RFC 1035), parsed and built with ldns (libldns, Debian-packaged) rather
// than by hand: the question of a guest's query, a refusal to send back
// instead of forwarding it, and the IPv4 addresses an upstream answer
// gives. Every function takes untrusted bytes (a guest's query, an
// upstream's reply) and never crashes on them: malformed input is an
// error status.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace smolvm::net {

// The one question of a query.
struct DnsQuestion {
  uint16_t id = 0;
  // Lower case, no trailing dot ("" for the root). Bytes of a label other
  // than printable ASCII, '.' and '\\' are written \DDD (RFC 1035 5.1).
  std::string name;
  uint16_t qtype = 0;  // 1 = A, 28 = AAAA, ...
  uint16_t qclass = 0;
};

// The question of `wire`, a query: INVALID_ARGUMENT unless it parses, is a
// query (QR = 0, opcode QUERY) and has exactly one question.
absl::StatusOr<DnsQuestion> ParseDnsQuery(absl::string_view wire);

// A reply to query `wire` (which ParseDnsQuery accepted) with response code
// `rcode` (3 = NXDOMAIN, 5 = REFUSED, 2 = SERVFAIL), the question echoed, no
// records: the bytes to send back to the guest.
absl::StatusOr<std::string> MakeDnsErrorReply(absl::string_view query_wire, uint8_t rcode);

struct DnsAddress {
  uint32_t ip = 0;   // Host byte order (as ip_pool.h's).
  uint32_t ttl = 0;  // Seconds, as the record says.
};

// The A records in the answer section of `wire`, a response to `question`:
// INVALID_ARGUMENT unless it parses as a response (QR = 1) whose id and
// question (name case-insensitively, type and class) are `question`'s.
// All A records of the answer count (also those of the CNAME chain's
// target, whatever their owner name: they are what the guest will use).
// At most 64 are returned (the rest ignored).
absl::StatusOr<std::vector<DnsAddress>> ParseDnsAnswer(absl::string_view wire,
                                                      const DnsQuestion& question);

}  // namespace smolvm::net
