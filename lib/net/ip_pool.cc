#include "lib/net/ip_pool.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace smolvm::net {

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

std::optional<uint32_t> AddressOfTap(const std::string& name) {
  const size_t prefix = sizeof(kTapPrefix) - 1;
  if (name.size() != prefix + 8 || name.compare(0, prefix, kTapPrefix) != 0) return std::nullopt;
  uint32_t ip = 0;
  for (size_t i = prefix; i < name.size(); ++i) {
    char c = name[i];
    int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (digit < 0) return std::nullopt;
    ip = ip << 4 | static_cast<uint32_t>(digit);
  }
  return ip;
}

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
