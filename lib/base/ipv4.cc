#include "lib/base/ipv4.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace smolvm::net {
namespace {

// 1-`max_digits` ASCII digits, no leading zero unless it is the only digit.
// (SimpleAtoi alone would also take signs and surrounding spaces.)
bool IsPlainDecimal(absl::string_view text, size_t max_digits) {
  if (text.empty() || text.size() > max_digits) return false;
  if (text.size() > 1 && text[0] == '0') return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

}  // namespace

std::string IpToString(uint32_t ip) {
  return absl::StrFormat("%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff,
                         ip & 0xff);
}

absl::StatusOr<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  uint32_t ip = 0;
  bool ok = parts.size() == 4;
  for (size_t i = 0; ok && i < parts.size(); ++i) {
    uint32_t octet = 0;
    ok = IsPlainDecimal(parts[i], 3) && absl::SimpleAtoi(parts[i], &octet) && octet <= 255;
    ip = (ip << 8) | octet;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "parse ipv4 address \"", absl::CHexEscape(text.substr(0, 100)),
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
    return absl::InvalidArgumentError(absl::StrCat(
        "parse cidr \"", absl::CHexEscape(text.substr(0, 100)), "\": ", why));
  };
  auto ip = ParseIpv4(parts.first);
  if (!ip.ok()) return invalid("want an ipv4 address with an optional /0-32, like 10.0.0.0/8");
  int prefix = 32;
  if (text.find('/') != absl::string_view::npos) {
    if (!IsPlainDecimal(parts.second, 2) || !absl::SimpleAtoi(parts.second, &prefix) ||
        prefix > 32) {
      return invalid("the prefix length must be 0-32, in plain decimal");
    }
  }
  return std::make_pair(*ip & PrefixToMask(prefix), prefix);
}

}  // namespace smolvm::net
