#include "lib/model/validation.h"

#include "lib/model/domain_rules.h"

#include <algorithm>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "lib/base/ipv4.h"
#include "lib/model/domain_rules.h"

namespace smolvm {
namespace {

bool IsAlnumLower(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

absl::Status ValidateId(const std::string& id, const char* kind) {
  bool ok = !id.empty() && id.size() <= 64 && IsAlnumLower(id.front()) &&
            IsAlnumLower(id.back());
  for (char c : id) ok = ok && (IsAlnumLower(c) || c == '-');
  if (ok) return absl::OkStatus();
  std::string shown = id.size() > 80 ? id.substr(0, 80) + "..." : id;
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid ", kind, " \"", absl::CHexEscape(shown), "\": must be 1-64 characters of "
      "lowercase letters, digits and hyphens, starting and ending with a letter or digit"));
}

absl::Status ValidateOperationId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 64;
  for (char c : id) ok = ok && (absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-');
  if (ok) return absl::OkStatus();
  std::string shown = id.size() > 80 ? id.substr(0, 80) + "..." : id;
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid operation_id \"", absl::CHexEscape(shown),
      "\": must be 1-64 characters of letters, digits, '.', '_' and '-' (e.g. a UUID)"));
}

std::string GenerateId(const std::string& prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%s-%08x", prefix, static_cast<uint32_t>(rng()));
}

absl::Status ValidateImagePath(const std::string& path, const char* field) {
  if (path.empty()) return absl::OkStatus();
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " \"", absl::CHexEscape(path.substr(0, 200)), path.size() > 200 ? "..." : "",
        "\" ", why));
  };
  if (path[0] != '/') return invalid("must be an absolute path on the daemon's host");
  if (path.size() > 4096) return invalid("is longer than 4096 bytes");
  if (path.find('\0') != std::string::npos) return invalid("contains a NUL byte");
  // Which file a path names is decided where it is opened (beneath an
  // allowed directory, without following symlinks); here only the shape.
  for (absl::string_view component : absl::StrSplit(path, '/')) {
    if (component == "." || component == "..") {
      return invalid("must not contain \".\" or \"..\" components");
    }
  }
  return absl::OkStatus();
}

absl::Status NormalizeVmConfig(VmConfig& config) {
  if (config.vcpu_count == 0) config.vcpu_count = kDefaultVcpus;
  if (config.memory_mib == 0) config.memory_mib = kDefaultMemoryMib;
  if (config.vcpu_count < kMinVcpus || config.vcpu_count > kMaxVcpus) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vcpu_count ", config.vcpu_count, " is out of range: use ", kMinVcpus,
        "-", kMaxVcpus, " (0 means the default, ", kDefaultVcpus, ")"));
  }
  if (config.memory_mib < kMinMemoryMib || config.memory_mib > kMaxMemoryMib) {
    return absl::InvalidArgumentError(absl::StrCat(
        "memory_mib ", config.memory_mib, " is out of range: use ", kMinMemoryMib,
        "-", kMaxMemoryMib, " (0 means the default, ", kDefaultMemoryMib, ")"));
  }
  if (config.boot_args.size() > 2048 ||
      config.boot_args.find_first_of("\n\r\0", 0, 3) != std::string::npos) {
    return absl::InvalidArgumentError(
        "boot_args must be a single line of at most 2048 characters");
  }
  if (config.disk_size_mib != 0 &&
      (config.disk_size_mib < kMinDiskMib || config.disk_size_mib > kMaxDiskMib)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "disk_size_mib ", config.disk_size_mib, " is out of range: use ", kMinDiskMib, "-",
        kMaxDiskMib, " (0 means the image's size)"));
  }
  if (auto s = NormalizeMounts(config.mounts); !s.ok()) return s;
  if (config.image.size() > 256) {
    return absl::InvalidArgumentError("image must be a name or digest of at most 256 characters");
  }
  if (!config.initrd_path.empty() && config.kernel_path.empty()) {
    return absl::InvalidArgumentError(
        "initrd_path needs kernel_path: set both, or neither for the default image");
  }
  if (auto s = ValidateEnv(config.env, "env"); !s.ok()) return s;
  if (auto s = ValidateLabels(config.labels, "labels"); !s.ok()) return s;
  if (auto s = ValidateEgress(config.egress); !s.ok()) return s;
  if (auto s = ValidateLifetime(config.lifetime); !s.ok()) return s;
  for (auto& f : config.port_forwards) {
    if (auto s = NormalizePortForward(f); !s.ok()) return s;
  }
  if (auto s = ValidateImagePath(config.kernel_path, "kernel_path"); !s.ok()) return s;
  if (auto s = ValidateImagePath(config.initrd_path, "initrd_path"); !s.ok()) return s;
  return ValidateImagePath(config.rootfs_path, "rootfs_path");
}

absl::Status ValidateEnv(const std::map<std::string, std::string>& env, const char* field) {
  if (env.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", env.size(),
                                                   " variables; at most 256 are allowed"));
  }
  size_t total = 0;
  for (const auto& [name, value] : env) {
    bool ok = !name.empty() && !(name[0] >= '0' && name[0] <= '9');
    for (char c : name) {
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_');
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, " name \"", absl::CHexEscape(name),
          "\" is invalid: use letters, digits and underscores, not starting with a digit"));
    }
    if (value.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " value of ", name, " contains a NUL byte"));
    }
    total += name.size() + value.size();
  }
  if (total > 64 * 1024) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", total,
                                                   " bytes; at most 64 KiB are allowed"));
  }
  return absl::OkStatus();
}

absl::Status ValidateEgress(const EgressPolicy& egress) {
  if (egress.mode != EgressMode::kRestricted &&
      (!egress.allow_cidrs.empty() || !egress.allow_domains.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "egress.", egress.allow_cidrs.empty() ? "allow_domains" : "allow_cidrs",
        " is only meaningful with mode EGRESS_RESTRICTED"));
  }
  if (egress.mode == EgressMode::kRestricted && egress.allow_cidrs.empty() &&
      egress.allow_domains.empty()) {
    return absl::InvalidArgumentError(
        "egress mode EGRESS_RESTRICTED needs at least one entry in allow_cidrs or "
        "allow_domains (use EGRESS_OFF to allow nothing)");
  }
  if (egress.mode == EgressMode::kOff &&
      (!egress.deny_cidrs.empty() || !egress.deny_domains.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "egress.", egress.deny_cidrs.empty() ? "deny_domains" : "deny_cidrs",
        " is meaningless with mode EGRESS_OFF (nothing is reachable)"));
  }
  for (const auto& [field, cidrs] : {std::pair{"allow_cidrs", &egress.allow_cidrs},
                                     std::pair{"deny_cidrs", &egress.deny_cidrs}}) {
    if (cidrs->size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("egress.", field, " has more than 256 entries"));
    }
    for (const auto& cidr : *cidrs) {
      // The firewall's own parser: what passes here, the firewall renders.
      if (!net::ParseCidr(cidr).ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "egress.", field, " entry \"", absl::CHexEscape(cidr.substr(0, 100)),
            "\" is not an IPv4 CIDR like 198.51.100.0/24 or 203.0.113.7"));
      }
    }
  }
  for (const auto& [field, domains] : {std::pair{"allow_domains", &egress.allow_domains},
                                       std::pair{"deny_domains", &egress.deny_domains}}) {
    if (domains->size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("egress.", field, " has more than 256 entries"));
    }
    for (const auto& domain : *domains) {
      if (auto s = ValidateDomainPattern(domain, absl::StrCat("egress.", field)); !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status NormalizePortForward(PortForward& f) {
  if (f.host_ip.empty()) f.host_ip = "127.0.0.1";
  if (f.protocol.empty()) f.protocol = "tcp";
  if (f.protocol != "tcp" && f.protocol != "udp") {
    return absl::InvalidArgumentError(absl::StrCat(
        "port forward protocol \"", absl::CHexEscape(f.protocol), "\" must be tcp or udp"));
  }
  if (f.host_port < 1 || f.host_port > 65535 || f.guest_port < 1 || f.guest_port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "port forward ", f.host_port, " -> ", f.guest_port, ": ports must be 1-65535"));
  }
  if (!net::ParseIpv4(f.host_ip).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "port forward host_ip \"", absl::CHexEscape(f.host_ip.substr(0, 100)),
        "\" must be an IPv4 address of this host (or 0.0.0.0 for all)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateGuestPath(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest path \"", absl::CHexEscape(path.substr(0, 200)), "\" must be absolute"));
  }
  if (path.size() > 4096 || path.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "guest path must be at most 4096 bytes and contain no NUL byte");
  }
  return absl::OkStatus();
}

absl::Status ValidateGuestFsPath(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    // Relative: the same bounds as an absolute path, checked on "/" + path.
    if (path.size() > 4095 || path.find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          "guest path must be at most 4096 bytes and contain no NUL byte");
    }
    return absl::OkStatus();
  }
  return ValidateGuestPath(path);
}

absl::StatusOr<std::string> NormalizeGuestUser(const std::string& user) {
  if (user.empty() || user == "root" || user == "0") return std::string();
  const bool numeric = user.find_first_not_of("0123456789") == std::string::npos;
  if (numeric) {
    if (user.size() > 10 || std::stoull(user) > 0x7fffffffull) {
      return absl::InvalidArgumentError(
          absl::StrCat("user \"", user, "\": a uid must be below 2147483648"));
    }
    return user;
  }
  const bool ok = user.size() <= 32 && user[0] != '-' &&
                  std::all_of(user.begin(), user.end(), [](char c) {
                    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
                           c == '_' || c == '-';
                  });
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "user \"", absl::CHexEscape(user.substr(0, 64)),
        "\" is not a user name or uid: 1-32 characters of [A-Za-z0-9._-], not starting with "
        "'-', or a number"));
  }
  return user;
}

namespace {

// 1-`max` characters of [A-Za-z0-9._-] starting and ending with a letter or
// digit (or "" when `allow_empty`).
bool IsLabelWord(absl::string_view s, size_t max, bool allow_empty) {
  if (s.empty()) return allow_empty;
  auto alnum = [](char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)); };
  return s.size() <= max && alnum(s.front()) && alnum(s.back()) &&
         std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

}  // namespace

absl::Status ValidateLabels(const std::map<std::string, std::string>& labels,
                            const char* field) {
  if (labels.size() > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at most 32 labels, got ", labels.size()));
  }
  for (const auto& [key, value] : labels) {
    const size_t slash = key.find('/');
    const bool key_ok =
        slash == std::string::npos
            ? IsLabelWord(key, 63, false)
            : IsLabelWord(absl::string_view(key).substr(0, slash), 253, false) &&
                  IsLabelWord(absl::string_view(key).substr(slash + 1), 63, false);
    if (!key_ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": label key \"", absl::CHexEscape(key.substr(0, 300)),
          "\" must be 1-63 characters of [A-Za-z0-9._-] starting and ending with a letter or "
          "digit, optionally after \"prefix/\""));
    }
    if (!IsLabelWord(value, 63, true)) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": the value of label \"", key, "\" (\"", absl::CHexEscape(value.substr(0, 100)),
          "\") must be at most 63 characters of [A-Za-z0-9._-] starting and ending with a "
          "letter or digit"));
    }
  }
  return absl::OkStatus();
}

}  // namespace smolvm
