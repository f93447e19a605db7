#include "lib/model/domain_rules.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace smolvm {
namespace {

constexpr size_t kMaxNameChars = 253;  // RFC 1035's 255 octets on the wire.
constexpr size_t kMaxLabelChars = 63;

bool IsLabelChar(char c) { return absl::ascii_isalnum(c) || c == '-' || c == '_'; }

// What is wrong with `label`, or "" if nothing.
std::string LabelProblem(absl::string_view label) {
  if (label.empty()) return "has an empty label (two dots in a row, or a leading dot)";
  if (label.size() > kMaxLabelChars) {
    return absl::StrCat("has a label longer than ", kMaxLabelChars, " characters");
  }
  if (label.front() == '-' || label.back() == '-') {
    return "has a label starting or ending with '-'";
  }
  for (char c : label) {
    if (c == '*') return "may hold '*' only as a leading \"*.\"";
    if (!IsLabelChar(c)) return "may hold only letters, digits, '-', '_' and dots";
  }
  return "";
}

}  // namespace

absl::Status ValidateDomainPattern(const std::string& pattern, const std::string& field) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " entry \"", absl::CHexEscape(pattern.substr(0, 100)),
        pattern.size() > 100 ? "..." : "", "\" ", why));
  };
  if (pattern.empty()) return invalid("is empty");
  if (pattern.size() > kMaxNameChars) {
    return invalid(absl::StrCat("is longer than ", kMaxNameChars, " characters"));
  }
  absl::string_view name = pattern;
  if (absl::ConsumePrefix(&name, "*.") && name.empty()) {
    return invalid("needs a name after \"*.\"");
  }
  if (absl::EndsWith(name, ".")) {
    return invalid("must not end with a dot (write \"example.com\", not \"example.com.\")");
  }
  // 127 labels is what 253 characters hold at most, so the length check
  // above already bounds the count.
  for (absl::string_view label : absl::StrSplit(name, '.')) {
    if (std::string why = LabelProblem(label); !why.empty()) return invalid(why);
  }
  return absl::OkStatus();
}

bool DomainMatches(absl::string_view pattern, absl::string_view name) {
  absl::ConsumeSuffix(&name, ".");
  if (absl::ConsumePrefix(&pattern, "*")) {
    // pattern is now ".example.com": a suffix that leaves at least one
    // character of label before it (the apex does not match).
    return name.size() > pattern.size() && absl::EndsWithIgnoreCase(name, pattern);
  }
  return absl::EqualsIgnoreCase(pattern, name);
}

bool AnyDomainMatches(const std::vector<std::string>& patterns, absl::string_view name) {
  for (const std::string& p : patterns) {
    if (DomainMatches(p, name)) return true;
  }
  return false;
}

// Mode by mode, the rules DecideDnsQuery applies (validation rejects the
// others).
bool HasDomainRules(const EgressPolicy& egress) {
  switch (egress.mode) {
    case EgressMode::kOpen:
      return !egress.deny_domains.empty();
    case EgressMode::kRestricted:
      return !egress.allow_domains.empty() || !egress.deny_domains.empty();
    case EgressMode::kOff:
      return false;
  }
  return false;
}

DnsVerdict DecideDnsQuery(const EgressPolicy& egress, absl::string_view name) {
  // Nothing is reachable, so nothing goes upstream either (a query is data
  // leaving the VM). Such a VM has no domain rules, so its queries should
  // not reach the resolver at all; this is the safe answer if one does.
  if (egress.mode == EgressMode::kOff) return DnsVerdict::kRefused;
  if (AnyDomainMatches(egress.deny_domains, name)) return DnsVerdict::kNxDomain;
  if (egress.mode != EgressMode::kRestricted || egress.allow_domains.empty()) {
    return DnsVerdict::kForward;
  }
  return AnyDomainMatches(egress.allow_domains, name) ? DnsVerdict::kForwardAndAllow
                                                      : DnsVerdict::kRefused;
}

}  // namespace smolvm
