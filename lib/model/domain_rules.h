// File: domain_rules.h
//
// Domain rules of an egress policy (EgressPolicy.allow_domains and
// deny_domains): the spelling of a pattern and what the VM's resolver does
// with a query for a name. One owner for both, so that the validation at
// the edge and the resolver agree on what a pattern matches.
//
// A pattern is a DNS name ("example.com": that name only) or a wildcard
// ("*.example.com": every name below example.com, not example.com itself).
// Names compare case-insensitively; a trailing dot on the queried name is
// ignored (it is the root).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lib/model/vm.h"

namespace smolvm {

// OK if `pattern` is a valid pattern: an optional "*." then 1-127 labels
// of 1-63 characters of [A-Za-z0-9_-] separated by dots, not starting or
// ending with '-', at most 253 characters in all, no trailing dot, no
// other '*'. Else INVALID_ARGUMENT naming `field` and the pattern and
// saying what is wrong.
absl::Status ValidateDomainPattern(const std::string& pattern, const std::string& field);

// Whether `name` (a queried name, any case, maybe with one trailing dot)
// matches `pattern` (valid, see above).
bool DomainMatches(absl::string_view pattern, absl::string_view name);

// Whether any of `patterns` matches `name`.
bool AnyDomainMatches(const std::vector<std::string>& patterns, absl::string_view name);

// Whether `egress` has domain rules (then the VM's DNS goes through the
// daemon's resolver).
bool HasDomainRules(const EgressPolicy& egress);

// What the resolver does with a query for `name` from a VM with `egress`:
//  * kNxDomain: the name matches deny_domains (deny wins over allow);
//  * kRefused: restricted egress with allow_domains and the name matches
//    none of them (nothing is sent upstream: DNS cannot carry data out);
//  * kForwardAndAllow: restricted egress and the name matches
//    allow_domains: forwarded upstream, and the IPv4 addresses of the
//    answer become reachable for the VM for their TTL;
//  * kForward: anything else (forwarded; nothing learned).
// Egress kOff refuses every query (nothing may leave the VM, DNS included).
enum class DnsVerdict { kForward, kForwardAndAllow, kRefused, kNxDomain };
DnsVerdict DecideDnsQuery(const EgressPolicy& egress, absl::string_view name);

}  // namespace smolvm
