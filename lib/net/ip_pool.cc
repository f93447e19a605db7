#include "lib/net/ip_pool.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace smolvm::net {

std::string IpToString(uint32_t ip) {
  return absl::StrFormat("%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
                         ip & 0xff);
}

absl::StatusOr<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  uint32_t ip = 0;
  bool ok = parts.size() == 4;
  for (size_t i = 0; ok && i < parts.size(); ++i) {
    absl::string_view part = parts[i];
    // SimpleAtoi accepts signs and spaces; an octet is 1-3 plain digits.
    // No leading zeros either: "010" is octal to inet_aton.
    ok = !part.empty() && part.size() <= 3 && (part.size() == 1 || part[0] != '0');
    for (char c : part) ok = ok && absl::ascii_isdigit(static_cast<unsigned char>(c));
    uint32_t octet = 0;
    ok = ok && absl::SimpleAtoi(part, &octet) && octet <= 255;
    ip = (ip << 8) | octet;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parse ipv4 address \"", text,
        "\": want four decimal octets 0-255 without leading zeros, like 10.0.0.1"));
  }
  return ip;
}

uint32_t PrefixToMask(int prefix) {
  if (prefix <= 0) return 0;
  if (prefix >= 32) return 0xffffffffu;
  return ~((uint32_t{1} << (32 - prefix)) - 1);
}

std::string CidrToString(uint32_t network, int prefix) {
  return absl::StrCat(IpToString(network), "/", prefix);
}

absl::StatusOr<std::pair<uint32_t, int>> ParseCidr(absl::string_view text) {
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(text, absl::MaxSplits('/', 1));
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("parse cidr \"", text, "\": ", why));
  };
  auto ip = ParseIpv4(parts.first);
  if (!ip.ok()) return invalid("want an ipv4 address with an optional /0-32, like 10.0.0.0/8");
  int prefix = 32;
  if (text.find('/') != absl::string_view::npos) {
    bool digits = !parts.second.empty() && parts.second.size() <= 2;
    for (char c : parts.second) {
      digits = digits && absl::ascii_isdigit(static_cast<unsigned char>(c));
    }
    if (!digits || !absl::SimpleAtoi(parts.second, &prefix) || prefix > 32) {
      return invalid("the prefix length must be 0-32");
    }
  }
  return std::make_pair(*ip & PrefixToMask(prefix), prefix);
}

absl::StatusOr<Subnet> Subnet::Parse(absl::string_view cidr) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("parse subnet \"", cidr, "\": ", why));
  };
  if (cidr.find('/') == absl::string_view::npos) {
    return invalid("want network/prefix, like 10.200.0.0/24");
  }
  std::pair<absl::string_view, absl::string_view> parts =
      absl::StrSplit(cidr, absl::MaxSplits('/', 1));
  auto address = ParseIpv4(parts.first);
  auto parsed = ParseCidr(cidr);
  if (!address.ok() || !parsed.ok()) {
    return invalid("want network/prefix, like 10.200.0.0/24");
  }
  Subnet subnet{parsed->first, parsed->second};
  if (subnet.prefix < kMinPrefix || subnet.prefix > kMaxPrefix) {
    return invalid(absl::StrCat("the prefix length must be ", kMinPrefix, "-", kMaxPrefix));
  }
  if (*address != subnet.network) {
    return invalid(absl::StrCat("host bits are set; did you mean ", subnet.ToString(), "?"));
  }
  return subnet;
}

std::vector<uint32_t> Subnet::HostAddresses() const {
  std::vector<uint32_t> hosts;
  if (prefix < kMinPrefix || prefix > 30) return hosts;  // Not a usable subnet.
  hosts.reserve(broadcast() - gateway() - 1);
  for (uint32_t ip = gateway() + 1; ip < broadcast(); ++ip) hosts.push_back(ip);
  return hosts;
}

std::string TapNameFor(uint32_t ip) { return absl::StrFormat("%s%08x", kTapPrefix, ip); }

std::string MacFor(uint32_t ip) {
  return absl::StrFormat("02:53:%02x:%02x:%02x:%02x", ip >> 24, (ip >> 16) & 0xff,
                         (ip >> 8) & 0xff, ip & 0xff);
}

absl::Status ValidateInterfaceName(absl::string_view name, absl::string_view what) {
  bool ok = !name.empty() && name.size() <= 15;
  for (char c : name) {
    ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, " \"", name,
                     "\": an interface name is 1-15 characters of [A-Za-z0-9_.-]"));
  }
  return absl::OkStatus();
}

}  // namespace smolvm::net
