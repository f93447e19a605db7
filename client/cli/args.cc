#include "client/cli/args.h"

#include <arpa/inet.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace smolvm::cli {

absl::StatusOr<std::map<std::string, std::string>> ParseEnv(
    const std::vector<std::string>& flags) {
  return ParseKeyValues(flags, "--env");
}

absl::StatusOr<std::map<std::string, std::string>> ParseKeyValues(
    const std::vector<std::string>& flags, absl::string_view flag_name) {
  std::map<std::string, std::string> out;
  for (const std::string& flag : flags) {
    const size_t eq = flag.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag_name, " ", flag, ": want NAME=VALUE"));
    }
    out[flag.substr(0, eq)] = flag.substr(eq + 1);
  }
  return out;
}

absl::StatusOr<std::vector<v1::VmStatus>> ParseStatuses(const std::vector<std::string>& flags) {
  std::vector<v1::VmStatus> out;
  for (const std::string& flag : flags) {
    v1::VmStatus status;
    if (!v1::VmStatus_Parse(absl::AsciiStrToUpper(flag), &status) ||
        status == v1::VM_STATUS_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--status ", flag, ": want created, running, paused, stopped or error"));
    }
    out.push_back(status);
  }
  return out;
}

absl::StatusOr<uint32_t> ParsePort(absl::string_view text) {
  uint32_t port = 0;
  const bool digits =
      !text.empty() && text.size() <= 5 &&
      text.find_first_not_of("0123456789") == absl::string_view::npos;
  if (!digits || !absl::SimpleAtoi(text, &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", text, "\" is not a number in 1-65535"));
  }
  return port;
}

absl::StatusOr<HostSide> ParsePortSpec(absl::string_view what,
                                       absl::string_view spec,
                                       bool with_guest_port) {
  const absl::string_view want = with_guest_port
                                     ? "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]"
                                     : "[HOST_IP:]HOST_PORT[/udp]";
  auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", spec, ": ", why, "; want ", want));
  };
  HostSide out;
  absl::string_view rest = spec;
  if (const size_t slash = rest.rfind('/'); slash != absl::string_view::npos) {
    out.protocol = std::string(rest.substr(slash + 1));
    rest = rest.substr(0, slash);
    if (out.protocol != "tcp" && out.protocol != "udp") {
      return error(
          absl::StrCat("protocol \"", out.protocol, "\" is not tcp or udp"));
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
  const size_t ports = with_guest_port ? 2 : 1;
  if (parts.size() != ports && parts.size() != ports + 1) {
    return error("wrong number of fields");
  }
  if (parts.size() == ports + 1) {
    out.host_ip = std::string(parts[0]);
    in_addr ignored;
    if (inet_pton(AF_INET, out.host_ip.c_str(), &ignored) != 1) {
      return error(
          absl::StrCat("HOST_IP \"", out.host_ip, "\" is not an IPv4 address"));
    }
    parts.erase(parts.begin());
  }
  absl::StatusOr<uint32_t> host_port = ParsePort(parts[0]);
  if (!host_port.ok()) return error(host_port.status().message());
  out.host_port = *host_port;
  if (with_guest_port) {
    absl::StatusOr<uint32_t> guest_port = ParsePort(parts[1]);
    if (!guest_port.ok()) return error(guest_port.status().message());
    out.guest_port = *guest_port;
  }
  return out;
}

absl::StatusOr<v1::Mount> ParseMount(absl::string_view spec) {
  std::vector<std::string> parts = absl::StrSplit(spec, ':');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mount \"", spec, "\": ", why, " (use HOST_DIR:GUEST_DIR[:ro|rw][,detach])"));
  };
  if (parts.size() < 2 || parts.size() > 3 || parts[0].empty() || parts[1].empty()) {
    return bad("expected two or three ':'-separated parts");
  }
  v1::Mount mount;
  mount.set_host_path(parts[0]);
  mount.set_guest_path(parts[1]);
  if (parts.size() == 3) {
    for (absl::string_view opt : absl::StrSplit(parts[2], ',')) {
      if (opt == "ro") {
        mount.set_read_only(true);
      } else if (opt == "rw") {
        mount.set_read_only(false);
      } else if (opt == "detach") {
        mount.set_detach_on_snapshot(true);
      } else {
        return bad(absl::StrCat("unknown option \"", opt, "\""));
      }
    }
  }
  return mount;
}

absl::StatusOr<v1::PortForward> ParseForward(absl::string_view what,
                                             absl::string_view spec) {
  absl::StatusOr<HostSide> side = ParsePortSpec(what, spec, true);
  if (!side.ok()) return side.status();
  v1::PortForward forward;
  forward.set_host_ip(side->host_ip);
  forward.set_host_port(side->host_port);
  forward.set_guest_port(side->guest_port);
  forward.set_protocol(side->protocol);
  return forward;
}

namespace {

absl::StatusOr<uint32_t> ParseLimit(const std::string& text, const char* flag) {
  absl::Duration d;
  uint32_t seconds = 0;
  if (absl::SimpleAtoi(text, &seconds)) return seconds;
  if (!absl::ParseDuration(text, &d) || d < absl::ZeroDuration() ||
      d != absl::Trunc(d, absl::Seconds(1)) || d > absl::Hours(24 * 365)) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " \"", text, "\" is not a duration in whole seconds up to a year (300, 300s, 5m, 1h30m)"));
  }
  return static_cast<uint32_t>(absl::ToInt64Seconds(d));
}

absl::StatusOr<v1::LifetimeAction> ParseAction(const std::string& text, const char* flag) {
  if (text.empty()) return v1::LIFETIME_ACTION_UNSPECIFIED;
  if (text == "delete") return v1::LIFETIME_DELETE;
  if (text == "stop") return v1::LIFETIME_STOP;
  if (text == "pause") return v1::LIFETIME_PAUSE;
  if (text == "snapshot") return v1::LIFETIME_SNAPSHOT;
  return absl::InvalidArgumentError(absl::StrCat(
      flag, " \"", text, "\" is not an action: use delete, stop, pause or snapshot"));
}

}  // namespace

absl::StatusOr<std::optional<v1::Lifetime>> ParseLifetime(const LifetimeOptions& f) {
  if (f.max_lifetime.empty() && f.idle_timeout.empty()) {
    if (!f.max_lifetime_action.empty() || !f.idle_action.empty() || f.no_auto_resume) {
      return absl::InvalidArgumentError(
          "--max-lifetime-action, --idle-action and --no-auto-resume need --max-lifetime or "
          "--idle-timeout");
    }
    return std::nullopt;
  }
  v1::Lifetime out;
  if (!f.max_lifetime.empty()) {
    absl::StatusOr<uint32_t> s = ParseLimit(f.max_lifetime, "--max-lifetime");
    if (!s.ok()) return s.status();
    out.set_max_lifetime_seconds(*s);
  }
  if (!f.idle_timeout.empty()) {
    absl::StatusOr<uint32_t> s = ParseLimit(f.idle_timeout, "--idle-timeout");
    if (!s.ok()) return s.status();
    out.set_idle_timeout_seconds(*s);
  }
  absl::StatusOr<v1::LifetimeAction> max_action =
      ParseAction(f.max_lifetime_action, "--max-lifetime-action");
  if (!max_action.ok()) return max_action.status();
  out.set_max_lifetime_action(*max_action);
  absl::StatusOr<v1::LifetimeAction> idle_action = ParseAction(f.idle_action, "--idle-action");
  if (!idle_action.ok()) return idle_action.status();
  out.set_idle_action(*idle_action);
  if (f.no_auto_resume) out.set_auto_resume(false);
  return out;
}

absl::StatusOr<std::optional<v1::EgressPolicy>> ParseEgress(const EgressOptions& f) {
  const std::string& mode = f.mode;
  const bool allow = !f.allow.empty() || !f.allow_domains.empty();
  const bool deny = !f.deny.empty() || !f.deny_domains.empty();
  if (mode.empty() && !allow && !deny) return std::nullopt;
  v1::EgressPolicy policy;
  if (mode == "open") {
    policy.set_mode(v1::EgressPolicy::EGRESS_OPEN);
  } else if (mode == "off") {
    policy.set_mode(v1::EgressPolicy::EGRESS_OFF);
  } else if (mode == "restricted" || (mode.empty() && allow)) {
    policy.set_mode(v1::EgressPolicy::EGRESS_RESTRICTED);
  } else if (mode.empty()) {
    policy.set_mode(v1::EgressPolicy::EGRESS_OPEN);  // --deny alone: open but those
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--egress ", mode, ": want open, off or restricted"));
  }
  if (allow && policy.mode() != v1::EgressPolicy::EGRESS_RESTRICTED) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.allow.empty() ? "--allow-domain" : "--allow", " needs --egress restricted (not ",
        "--egress ", mode, ")"));
  }
  if (deny && policy.mode() == v1::EgressPolicy::EGRESS_OFF) {
    return absl::InvalidArgumentError(absl::StrCat(
        f.deny.empty() ? "--deny-domain" : "--deny",
        " does not go with --egress off (nothing is reachable)"));
  }
  for (const std::string& cidr : f.allow) policy.add_allow_cidrs(cidr);
  for (const std::string& cidr : f.deny) policy.add_deny_cidrs(cidr);
  for (const std::string& name : f.allow_domains) policy.add_allow_domains(name);
  for (const std::string& name : f.deny_domains) policy.add_deny_domains(name);
  return policy;
}

absl::StatusOr<uint32_t> ParseMode(const std::string& text) {
  uint32_t mode = 0;
  bool ok = !text.empty() && text.size() <= 5;
  for (char c : text) {
    if (c < '0' || c > '7') ok = false;
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (!ok || mode > 07777) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mode ", text, ": want octal permission bits, e.g. 0755"));
  }
  return mode;
}

namespace {
// kMaxStdin is the most an ExecRequest.stdin may carry.
constexpr size_t kMaxStdin = 16 << 20;

}  // namespace

absl::StatusOr<std::string> ReadStdin() {
  std::string data;
  char buffer[1 << 16];
  while (true) {
    size_t n = std::fread(buffer, 1, sizeof(buffer), stdin);
    data.append(buffer, n);
    if (data.size() > kMaxStdin) {
      return absl::InvalidArgumentError(
          "--stdin: more than 16 MiB on stdin; upload it as a file instead");
    }
    if (n < sizeof(buffer)) break;
  }
  if (std::ferror(stdin)) return absl::InternalError("--stdin: read error");
  return data;
}

std::string BaseName(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.rfind('/');
  std::string base =
      slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
  return base == "/" ? "" : base;
}

}  // namespace smolvm::cli
