#include "lib/net/link_backend.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/net/ip_pool.h"
#include "nlohmann/json.hpp"

namespace smolvm::net {
namespace {

// ip/bridge/sysctl answer in milliseconds; a stuck one must not wedge the
// daemon.
SubprocessOptions CommandOptions() {
  SubprocessOptions options;
  options.timeout = absl::Seconds(30);
  return options;
}

// "<operation> <object>: <cause>".
absl::Status Annotate(const absl::Status& status, absl::string_view operation) {
  return absl::Status(status.code(), absl::StrCat(operation, ": ", status.message()));
}

absl::StatusOr<nlohmann::json> ParseJson(const std::string& text, absl::string_view what) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_array()) {
    return absl::InternalError(
        absl::StrCat("parse output of ", what, ": not a json array: ", TailOf(text, 200)));
  }
  return json;
}

std::string JsonString(const nlohmann::json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

IpCommandLinkBackend::IpCommandLinkBackend(std::vector<std::string> command_prefix)
    : command_prefix_(std::move(command_prefix)) {}

absl::StatusOr<SubprocessResult> IpCommandLinkBackend::Run(
    std::vector<std::string> argv) const {
  argv.insert(argv.begin(), command_prefix_.begin(), command_prefix_.end());
  return RunChecked(argv, CommandOptions());
}

absl::StatusOr<SubprocessResult> IpCommandLinkBackend::RunUnchecked(
    std::vector<std::string> argv) const {
  argv.insert(argv.begin(), command_prefix_.begin(), command_prefix_.end());
  return RunSubprocess(argv, CommandOptions());
}

absl::StatusOr<IpCommandLinkBackend::LinkInfo> IpCommandLinkBackend::GetLink(
    const std::string& name) const {
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult result,
                          RunUnchecked({"ip", "-j", "-d", "link", "show", "dev", name}));
  if (result.exit_code != 0) {
    if (absl::StrContains(result.stderr_text, "does not exist")) {
      return absl::NotFoundError(absl::StrCat("link ", name, " does not exist"));
    }
    return absl::InternalError(absl::StrCat("ip link show dev ", name, " exited with ",
                                            result.exit_code, ": ",
                                            TailOf(result.stderr_text, 2000)));
  }
  SMOLVM_ASSIGN_OR_RETURN(nlohmann::json links, ParseJson(result.stdout_text, "ip link show"));
  if (links.empty() || !links[0].is_object()) {
    return absl::NotFoundError(absl::StrCat("link ", name, " does not exist"));
  }
  const nlohmann::json& link = links[0];
  LinkInfo info;
  info.master = JsonString(link, "master");
  if (auto it = link.find("linkinfo"); it != link.end() && it->is_object()) {
    info.kind = JsonString(*it, "info_kind");
    if (auto data = it->find("info_data"); data != it->end() && data->is_object()) {
      info.tun_type = JsonString(*data, "type");
    }
  }
  return info;
}

absl::Status IpCommandLinkBackend::EnsureBridge(const std::string& name, uint32_t gateway_ip,
                                                int prefix) {
  const std::string op = absl::StrCat("ensure bridge ", name);
  SMOLVM_RETURN_IF_ERROR(CheckBridgeArguments(name, prefix));
  auto link = GetLink(name);
  if (absl::IsNotFound(link.status())) {
    auto added = RunUnchecked({"ip", "link", "add", name, "type", "bridge"});
    if (!added.ok()) return Annotate(added.status(), op);
    // "File exists": someone else created it meanwhile; checked below.
    if (added->exit_code != 0 && !absl::StrContains(added->stderr_text, "File exists")) {
      return absl::InternalError(absl::StrCat(op, ": ip link add ", name,
                                              " type bridge exited with ", added->exit_code,
                                              ": ", TailOf(added->stderr_text, 2000)));
    }
    link = GetLink(name);
  }
  if (!link.ok()) return Annotate(link.status(), op);
  if (link->kind != "bridge") {
    return absl::FailedPreconditionError(absl::StrCat(
        op, ": link exists and is a \"", link->kind, "\", not a bridge; delete it or choose "
        "another bridge name"));
  }

  // A fixed MAC: by default a bridge takes the lowest MAC of its ports, so
  // it would change as VMs come and go, and guests (restored ones above
  // all, whose ARP caches come from the snapshot) would keep sending to a
  // stale gateway MAC. Derived from the gateway address, like guests' MACs.
  if (auto mac = Run({"ip", "link", "set", "dev", name, "address", MacFor(gateway_ip)});
      !mac.ok()) {
    return Annotate(mac.status(), op);
  }

  // The address: add it unless the bridge has it already.
  auto addrs = Run({"ip", "-j", "-4", "addr", "show", "dev", name});
  if (!addrs.ok()) return Annotate(addrs.status(), op);
  auto json = ParseJson(addrs->stdout_text, "ip addr show");
  if (!json.ok()) return Annotate(json.status(), op);
  const std::string gateway = IpToString(gateway_ip);
  bool has_address = false;
  for (const auto& entry : *json) {
    auto infos = entry.find("addr_info");
    if (infos == entry.end() || !infos->is_array()) continue;
    for (const auto& info : *infos) {
      auto len = info.find("prefixlen");
      if (JsonString(info, "local") == gateway && len != info.end() &&
          len->is_number_integer() && len->get<int>() == prefix) {
        has_address = true;
      }
    }
  }
  if (!has_address) {
    auto added = RunUnchecked(
        {"ip", "addr", "add", absl::StrCat(gateway, "/", prefix), "dev", name});
    if (!added.ok()) return Annotate(added.status(), op);
    if (added->exit_code != 0 && !absl::StrContains(added->stderr_text, "already assigned") &&
        !absl::StrContains(added->stderr_text, "File exists")) {
      return absl::InternalError(absl::StrCat(op, ": ip addr add ", gateway, "/", prefix,
                                              " exited with ", added->exit_code, ": ",
                                              TailOf(added->stderr_text, 2000)));
    }
  }

  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"ip", "link", "set", "dev", name, "up"},
           {"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
           // Lets 127.0.0.1-sourced connections DNATed to a guest leave via
           // the bridge (they are masqueraded on the way out).
           {"sysctl", "-q", "-w", absl::StrCat("net.ipv4.conf.", name, ".route_localnet=1")},
       }) {
    if (auto result = Run(argv); !result.ok()) return Annotate(result.status(), op);
  }
  return absl::OkStatus();
}

absl::Status IpCommandLinkBackend::ConfigureTap(const std::string& name,
                                                const std::string& bridge) const {
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {"ip", "link", "set", "dev", name, "master", bridge},
           // Isolated ports talk to the bridge (the gateway) only, never to
           // each other.
           {"bridge", "link", "set", "dev", name, "isolated", "on"},
           {"ip", "link", "set", "dev", name, "up"},
       }) {
    SMOLVM_RETURN_IF_ERROR(Run(argv).status());
  }
  return absl::OkStatus();
}

absl::Status IpCommandLinkBackend::CreateTap(const std::string& name,
                                             const std::string& bridge) {
  const std::string op = absl::StrCat("create tap ", name);
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "tap name"));
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(bridge, "bridge name"));
  auto link = GetLink(name);
  bool created = false;
  if (absl::IsNotFound(link.status())) {
    auto added = Run({"ip", "tuntap", "add", "dev", name, "mode", "tap"});
    if (!added.ok()) return Annotate(added.status(), op);
    created = true;
  } else if (!link.ok()) {
    return Annotate(link.status(), op);
  } else if (link->kind != "tun" || link->tun_type != "tap") {
    return absl::FailedPreconditionError(absl::StrCat(
        op, ": link exists and is not a tap (kind \"", link->kind, "\" ", link->tun_type,
        "); delete it first"));
  }
  if (absl::Status configured = ConfigureTap(name, bridge); !configured.ok()) {
    if (created) (void)DeleteLink(name);  // Best effort; the first error matters.
    return Annotate(configured, absl::StrCat(op, " on bridge ", bridge));
  }
  return absl::OkStatus();
}

absl::Status IpCommandLinkBackend::DeleteLink(const std::string& name) {
  const std::string op = absl::StrCat("delete link ", name);
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "link name"));
  auto deleted = RunUnchecked({"ip", "link", "del", "dev", name});
  if (!deleted.ok()) return Annotate(deleted.status(), op);
  if (deleted->exit_code == 0) return absl::OkStatus();
  // Gone already (or meanwhile) is what the caller wants.
  auto link = GetLink(name);
  if (absl::IsNotFound(link.status())) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(op, ": ip link del exited with ",
                                          deleted->exit_code, ": ",
                                          TailOf(deleted->stderr_text, 2000)));
}

absl::StatusOr<std::vector<std::string>> IpCommandLinkBackend::ListLinks(
    const std::string& prefix) {
  auto result = Run({"ip", "-j", "link", "show"});
  if (!result.ok()) return Annotate(result.status(), "list links");
  auto json = ParseJson(result->stdout_text, "ip link show");
  if (!json.ok()) return Annotate(json.status(), "list links");
  std::vector<std::string> names;
  for (const auto& link : *json) {
    std::string name = link.is_object() ? JsonString(link, "ifname") : "";
    if (!name.empty() && absl::StartsWith(name, prefix)) names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::string> IpCommandLinkBackend::DefaultRouteInterface() {
  auto result = Run({"ip", "-4", "-j", "route", "show", "default"});
  if (!result.ok()) return Annotate(result.status(), "find default route");
  auto json = ParseJson(result->stdout_text, "ip route show default");
  if (!json.ok()) return Annotate(json.status(), "find default route");
  DefaultRouteChooser chooser;
  for (const auto& route : *json) {
    if (!route.is_object()) continue;
    std::string dev = JsonString(route, "dev");
    if (dev.empty()) {  // Multipath: the first next hop's device.
      auto hops = route.find("nexthops");
      if (hops != route.end() && hops->is_array() && !hops->empty() &&
          (*hops)[0].is_object()) {
        dev = JsonString((*hops)[0], "dev");
      }
    }
    auto it = route.find("metric");
    chooser.Offer(std::move(dev),
                  it != route.end() && it->is_number_integer() ? it->get<int64_t>() : 0);
  }
  return chooser.Result();
}

absl::StatusOr<std::vector<std::string>> IpCommandLinkBackend::ConnectedSubnets(
    const std::string& exclude_bridge) {
  auto result = Run({"ip", "-j", "-4", "addr", "show"});
  if (!result.ok()) return Annotate(result.status(), "list connected subnets");
  auto json = ParseJson(result->stdout_text, "ip addr show");
  if (!json.ok()) return Annotate(json.status(), "list connected subnets");
  ConnectedSubnetSet subnets(exclude_bridge);
  for (const auto& link : *json) {
    if (!link.is_object() || !subnets.Counts(JsonString(link, "ifname"))) continue;
    auto infos = link.find("addr_info");
    if (infos == link.end() || !infos->is_array()) continue;
    for (const auto& info : *infos) {
      if (!info.is_object() || JsonString(info, "family") != "inet") continue;
      auto ip = ParseIpv4(JsonString(info, "local"));
      auto len = info.find("prefixlen");
      if (!ip.ok() || len == info.end() || !len->is_number_integer()) continue;
      subnets.Offer(*ip, len->get<int>());
    }
  }
  return subnets.List();
}

absl::Status CheckBridgeArguments(const std::string& name, int prefix) {
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "bridge name"));
  if (prefix < 1 || prefix > 30) {
    return absl::InvalidArgumentError(
        absl::StrCat("ensure bridge ", name, ": prefix length ", prefix, " is not 1-30"));
  }
  return absl::OkStatus();
}

void DefaultRouteChooser::Offer(std::string dev, int64_t metric) {
  if (dev.empty()) return;  // blackhole/unreachable defaults.
  if (dev_.empty() || metric < metric_) {
    dev_ = std::move(dev);
    metric_ = metric;
  }
}

absl::StatusOr<std::string> DefaultRouteChooser::Result() const {
  if (dev_.empty()) {
    return absl::NotFoundError(
        "find default route: there is no ipv4 default route; set an uplink explicitly or "
        "add a default route");
  }
  return dev_;
}

bool ConnectedSubnetSet::Counts(const std::string& name) const {
  return !name.empty() && name != "lo" && name != exclude_bridge_ &&
         !absl::StartsWith(name, kTapPrefix);
}

void ConnectedSubnetSet::Offer(uint32_t ip, int prefix) {
  if (prefix >= 0 && prefix <= 32) subnets_.emplace(ip & PrefixToMask(prefix), prefix);
}

std::vector<std::string> ConnectedSubnetSet::List() const {
  std::vector<std::string> out;
  for (const auto& [network, prefix] : subnets_) out.push_back(CidrToString(network, prefix));
  return out;
}

}  // namespace smolvm::net
