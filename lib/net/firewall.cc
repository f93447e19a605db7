#include "lib/net/firewall.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>
#include <tuple>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lib/base/file_util.h"  // JoinPath
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"

namespace smolvm::net {
namespace {

absl::Status ValidateTableName(const std::string& table) {
  bool ok = !table.empty() && table.size() <= 32 &&
            absl::ascii_isalpha(static_cast<unsigned char>(table[0]));
  for (char c : table) ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid nft table name \"", table,
        "\": want 1-32 characters of [A-Za-z0-9_], starting with a letter"));
  }
  return absl::OkStatus();
}

absl::Status ValidateVmId(const std::string& vm_id) {
  bool ok = !vm_id.empty() && vm_id.size() <= 64;
  for (char c : vm_id) {
    ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' ||
                c == '-');
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "firewall entry vm_id \"", vm_id, "\": want 1-64 characters of [A-Za-z0-9_.-]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateMac(const std::string& mac) {
  bool ok = mac.size() == 17;
  for (size_t i = 0; ok && i < mac.size(); ++i) {
    ok = i % 3 == 2 ? mac[i] == ':' : absl::ascii_isxdigit(static_cast<unsigned char>(mac[i]));
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid mac \"", mac, "\": want six hex octets like 02:53:0a:c8:00:05"));
  }
  return absl::OkStatus();
}

// A forward with validated, canonical fields.
struct Forward {
  bool any_host_ip = false;  // host_ip 0.0.0.0: every local address.
  uint32_t host_ip = 0;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  std::string protocol;  // "tcp" | "udp"
};

absl::StatusOr<Forward> CheckForward(const std::string& vm_id, const PortForward& pf) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("port forward ", pf.host_ip, ":",
                                                   pf.host_port, " of vm ", vm_id, ": ", why));
  };
  Forward f;
  f.protocol = absl::AsciiStrToLower(pf.protocol);
  if (f.protocol != "tcp" && f.protocol != "udp") {
    return invalid(absl::StrCat("protocol \"", pf.protocol, "\" is not tcp or udp"));
  }
  if (pf.host_port < 1 || pf.host_port > 65535) return invalid("host_port must be 1-65535");
  if (pf.guest_port < 1 || pf.guest_port > 65535) return invalid("guest_port must be 1-65535");
  auto host_ip = ParseIpv4(pf.host_ip);
  if (!host_ip.ok()) return invalid(host_ip.status().message());
  f.any_host_ip = *host_ip == 0;
  f.host_ip = *host_ip;
  f.host_port = pf.host_port;
  f.guest_port = pf.guest_port;
  return f;
}

bool Overlaps(const Forward& a, const Forward& b) {
  return a.protocol == b.protocol && a.host_port == b.host_port &&
         (a.host_ip == b.host_ip || a.any_host_ip || b.any_host_ip);
}

// CIDRs in canonical form, without entries that another entry already
// covers (older nft rejects overlapping elements of an anonymous set).
// `what` prefixes the error ("egress allow_cidrs of vm X").
absl::StatusOr<std::vector<std::string>> CheckCidrs(const std::string& what,
                                                    const std::vector<std::string>& cidrs) {
  std::vector<std::pair<int, uint32_t>> parsed;  // (prefix, network): widest first.
  for (const std::string& text : cidrs) {
    auto cidr = ParseCidr(text);
    if (!cidr.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", cidr.status().message()));
    }
    parsed.emplace_back(cidr->second, cidr->first);
  }
  std::sort(parsed.begin(), parsed.end());
  std::vector<std::pair<int, uint32_t>> kept;
  for (const auto& [prefix, network] : parsed) {
    bool covered = false;
    for (const auto& [kept_prefix, kept_network] : kept) {
      covered = covered || (network & PrefixToMask(kept_prefix)) == kept_network;
    }
    if (!covered) kept.emplace_back(prefix, network);
  }
  std::sort(kept.begin(), kept.end(), [](const auto& a, const auto& b) {
    return std::tie(a.second, a.first) < std::tie(b.second, b.first);
  });
  std::vector<std::string> out;
  for (const auto& [prefix, network] : kept) {
    out.push_back(prefix == 32 ? IpToString(network) : CidrToString(network, prefix));
  }
  return out;
}

std::string Quoted(const std::string& s) { return absl::StrCat("\"", s, "\""); }

// What the rules of the whole ruleset need, checked.
struct CheckedGlobals {
  std::vector<std::string> deny;  // Canonical deny_cidrs.
  std::set<uint32_t> output_dnat_ips;
};

absl::StatusOr<CheckedGlobals> CheckGlobals(const FirewallState& state) {
  SMOLVM_RETURN_IF_ERROR(ValidateTableName(state.table));
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(state.bridge, "bridge name"));
  if (!state.uplink.empty()) {
    SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(state.uplink, "uplink name"));
  }
  if (!state.tap_prefix.empty()) {
    SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(state.tap_prefix, "tap prefix"));
  }
  if (state.subnet.prefix < Subnet::kMinPrefix || state.subnet.prefix > Subnet::kMaxPrefix ||
      (state.subnet.network & ~state.subnet.mask()) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "firewall subnet ", state.subnet.ToString(), " is not a valid vm subnet"));
  }
  CheckedGlobals globals;
  SMOLVM_ASSIGN_OR_RETURN(globals.deny, CheckCidrs("firewall deny_cidrs", state.deny_cidrs));
  globals.output_dnat_ips.insert(state.output_dnat_ips.begin(), state.output_dnat_ips.end());
  return globals;
}

// A VM entry that passed every check, with canonical fields.
struct CheckedVm {
  const VmFirewallEntry* vm = nullptr;
  std::string mac;
  std::vector<std::string> allow;  // kRestricted: canonical allow_cidrs.
  std::vector<Forward> forwards;
};

// What the entries accepted so far hold.
struct Taken {
  std::set<uint32_t> ips;
  std::set<std::string> taps;
  std::vector<Forward> forwards;
};

// Checks one VM entry against the state and the entries accepted before it.
absl::StatusOr<CheckedVm> CheckVm(const FirewallState& state, const VmFirewallEntry& vm,
                                  const Taken& taken) {
  SMOLVM_RETURN_IF_ERROR(ValidateVmId(vm.vm_id));
  const std::string where = absl::StrCat("firewall entry of vm ", vm.vm_id);
  if (absl::Status s = ValidateInterfaceName(vm.tap, "tap name"); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
  }
  if (!state.subnet.IsGuestAddress(vm.ip)) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ip ", IpToString(vm.ip),
                                                   " is not a guest address of ",
                                                   state.subnet.ToString()));
  }
  if (taken.ips.count(vm.ip) != 0 || taken.taps.count(vm.tap) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ip ", IpToString(vm.ip), " or tap ", vm.tap, " is used twice"));
  }
  CheckedVm checked;
  checked.vm = &vm;
  checked.mac = vm.mac.empty() ? MacFor(vm.ip) : absl::AsciiStrToLower(vm.mac);
  if (absl::Status s = ValidateMac(checked.mac); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
  }
  if (vm.egress.mode == EgressMode::kRestricted) {
    SMOLVM_ASSIGN_OR_RETURN(
        checked.allow,
        CheckCidrs(absl::StrCat("egress allow_cidrs of vm ", vm.vm_id), vm.egress.allow_cidrs));
  }
  for (const PortForward& pf : vm.forwards) {
    SMOLVM_ASSIGN_OR_RETURN(Forward f, CheckForward(vm.vm_id, pf));
    bool clash = std::any_of(taken.forwards.begin(), taken.forwards.end(),
                             [&](const Forward& o) { return Overlaps(o, f); }) ||
                 std::any_of(checked.forwards.begin(), checked.forwards.end(),
                             [&](const Forward& o) { return Overlaps(o, f); });
    if (clash) {
      return absl::AlreadyExistsError(absl::StrCat(
          "port forward ", pf.host_ip, ":", f.host_port, "/", f.protocol, " of vm ", vm.vm_id,
          ": the host port is forwarded already"));
    }
    checked.forwards.push_back(std::move(f));
  }
  return checked;
}

// The script of checked globals and VMs (everything in it is valid).
std::string RenderScript(const FirewallState& state, const CheckedGlobals& globals,
                         const std::vector<CheckedVm>& vms) {
  const std::string br = Quoted(state.bridge);
  const std::string subnet = state.subnet.ToString();
  std::vector<std::string> bridge_rules;  // table bridge, chain prerouting.
  std::vector<std::string> dnat_rules;    // nat prerouting.
  std::vector<std::string> output_rules;  // nat output.
  std::vector<std::string> from_bridge;   // forward, iifname BR.
  std::vector<std::string> to_bridge;     // forward, oifname BR.
  std::vector<std::pair<std::string, std::vector<std::string>>> egress_chains;

  for (const CheckedVm& checked : vms) {
    const VmFirewallEntry& vm = *checked.vm;
    const std::string& mac = checked.mac;
    const std::string ip = IpToString(vm.ip);
    const std::string tap = Quoted(vm.tap);
    const std::string comment = absl::StrCat(" comment \"vm ", vm.vm_id, "\"");

    // Layer 2: the TAP speaks IPv4 and ARP as its VM only.
    bridge_rules.push_back(absl::StrCat("iifname ", tap, " ether saddr ", mac, " ip saddr ",
                                        ip, " accept", comment));
    bridge_rules.push_back(absl::StrCat("iifname ", tap, " ether saddr ", mac,
                                        " arp saddr ether ", mac, " arp saddr ip ", ip,
                                        " accept", comment));
    bridge_rules.push_back(absl::StrCat("iifname ", tap, " drop", comment));

    // Layer 3 egress. The bridge table vouches for the source address, so
    // ip saddr identifies the VM (iifname is the bridge here, not the TAP).
    const std::string chain = EgressChainName(vm.ip);
    from_bridge.push_back(
        absl::StrCat("iifname ", br, " ip saddr ", ip, " jump ", chain, comment));
    std::vector<std::string> egress = {
        // Never other VMs (also not routed via the gateway), never the
        // gateway; the host's other addresses are guarded by chain input.
        absl::StrCat("ip daddr ", subnet, " drop"),
    };
    // Closed whatever the mode: a restricted VM's allow list cannot open
    // what the operator denies.
    if (state.dns != 0 && vm.egress.mode == EgressMode::kOpen) {
      for (const char* proto : {"udp", "tcp"}) {
        egress.push_back(
            absl::StrCat("ip daddr ", IpToString(state.dns), " ", proto, " dport 53 accept"));
      }
    }
    if (!globals.deny.empty()) {
      egress.push_back(absl::StrCat("ip daddr { ", absl::StrJoin(globals.deny, ", "), " } drop"));
    }
    switch (vm.egress.mode) {
      case EgressMode::kOpen:
        egress.push_back("accept");
        break;
      case EgressMode::kOff:
        egress.push_back("drop");
        break;
      case EgressMode::kRestricted:
        if (!checked.allow.empty()) {
          egress.push_back(
              absl::StrCat("ip daddr { ", absl::StrJoin(checked.allow, ", "), " } accept"));
        }
        egress.push_back("drop");
        break;
    }
    egress_chains.emplace_back(chain, std::move(egress));

    for (const Forward& f : checked.forwards) {
      const std::string match =
          f.any_host_ip ? "meta nfproto ipv4 fib daddr type local"
                        : absl::StrCat("ip daddr ", IpToString(f.host_ip));
      std::string dnat = absl::StrCat(match, " ", f.protocol, " dport ", f.host_port,
                                      " dnat ip to ", ip, ":", f.guest_port, comment);
      // Connections made on the host only to the addresses the port policy
      // allows: elsewhere a forward must not capture the host's own
      // traffic (a tenant's 0.0.0.0 forward would take 127.0.0.1:PORT).
      if (globals.output_dnat_ips.count(f.host_ip) != 0) output_rules.push_back(dnat);
      dnat_rules.push_back(std::move(dnat));
      to_bridge.push_back(absl::StrCat("oifname ", br, " ip daddr ", ip, " ", f.protocol,
                                       " dport ", f.guest_port, " ct status dnat accept",
                                       comment));
    }
  }
  // Ports of the bridge that no VM owns (yet, or any more, or whose entry
  // was rejected) send nothing.
  if (!state.tap_prefix.empty()) {
    bridge_rules.push_back(absl::StrCat("iifname \"", state.tap_prefix, "*\" drop"));
  }
  from_bridge.push_back(absl::StrCat("iifname ", br, " drop"));
  to_bridge.push_back(absl::StrCat("oifname ", br, " drop"));

  // Rendering.
  std::string out = absl::StrCat(
      "#!/usr/sbin/nft -f\n"
      "# Generated by smolvmd for bridge ", state.bridge, " (", subnet,
      "). Replaced as a whole on every change: do not edit.\n\n");
  auto chain = [&out](const std::string& name, const std::string& hook,
                      const std::vector<std::string>& rules) {
    absl::StrAppend(&out, "  chain ", name, " {\n");
    if (!hook.empty()) absl::StrAppend(&out, "    ", hook, "\n");
    for (const std::string& rule : rules) absl::StrAppend(&out, "    ", rule, "\n");
    absl::StrAppend(&out, "  }\n");
  };
  // "add" then "delete" makes the delete succeed whether or not the table
  // existed; the whole file is one transaction.
  absl::StrAppend(&out, "add table bridge ", state.table, "\n", "delete table bridge ",
                  state.table, "\n", "table bridge ", state.table, " {\n");
  chain("prerouting", "type filter hook prerouting priority filter; policy accept;",
        bridge_rules);
  absl::StrAppend(&out, "}\n\n");

  absl::StrAppend(&out, "add table inet ", state.table, "\n", "delete table inet ",
                  state.table, "\n", "table inet ", state.table, " {\n");
  std::vector<std::string> forward = {
      // Replies always pass; original-direction packets are judged one by
      // one, so a policy change also stops connections already open.
      "ct state established ct direction reply accept",
      "ct state related accept",
  };
  forward.insert(forward.end(), from_bridge.begin(), from_bridge.end());
  forward.insert(forward.end(), to_bridge.begin(), to_bridge.end());
  chain("forward", "type filter hook forward priority filter; policy accept;", forward);
  for (const auto& [name, rules] : egress_chains) chain(name, "", rules);
  chain("input", "type filter hook input priority filter; policy accept;",
        {absl::StrCat("iifname ", br, " ct state established ct direction reply accept"),
         absl::StrCat("iifname ", br, " ct state related accept"),
         absl::StrCat("iifname ", br, " drop")});
  chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", dnat_rules);
  // Connections made on the host itself (to 127.0.0.1 or a local address).
  chain("output", "type nat hook output priority -100; policy accept;", output_rules);
  std::vector<std::string> snat;
  if (!state.uplink.empty()) {
    snat.push_back(absl::StrCat("ip saddr ", subnet, " oifname ", Quoted(state.uplink),
                                " masquerade"));
  }
  // Forwarded connections reach the guest from the gateway address, so that
  // replies come back through us (a 127.0.0.1 source could not be answered).
  snat.push_back(absl::StrCat("oifname ", br, " ct status dnat masquerade"));
  chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", snat);
  absl::StrAppend(&out, "}\n");
  return out;
}

}  // namespace

std::string EgressChainName(uint32_t ip) { return absl::StrFormat("egress_%08x", ip); }

absl::StatusOr<RenderedRuleset> RenderNftRulesetLenient(const FirewallState& state) {
  SMOLVM_ASSIGN_OR_RETURN(CheckedGlobals globals, CheckGlobals(state));
  RenderedRuleset rendered;
  std::vector<CheckedVm> accepted;
  Taken taken;
  for (const VmFirewallEntry& vm : state.vms) {
    absl::StatusOr<CheckedVm> checked = CheckVm(state, vm, taken);
    if (!checked.ok()) {
      rendered.rejected.emplace(vm.vm_id, checked.status());
      continue;
    }
    taken.ips.insert(vm.ip);
    taken.taps.insert(vm.tap);
    taken.forwards.insert(taken.forwards.end(), checked->forwards.begin(),
                          checked->forwards.end());
    accepted.push_back(*std::move(checked));
  }
  rendered.script = RenderScript(state, globals, accepted);
  return rendered;
}

absl::StatusOr<std::string> RenderNftRuleset(const FirewallState& state) {
  SMOLVM_ASSIGN_OR_RETURN(RenderedRuleset rendered, RenderNftRulesetLenient(state));
  // The first rejected entry in the state's order.
  for (const VmFirewallEntry& vm : state.vms) {
    if (auto it = rendered.rejected.find(vm.vm_id); it != rendered.rejected.end()) {
      return it->second;
    }
  }
  return std::move(rendered.script);
}

NftFirewall::NftFirewall(std::vector<std::string> command_prefix, std::string temp_dir)
    : command_prefix_(std::move(command_prefix)), temp_dir_(std::move(temp_dir)) {}

absl::Status NftFirewall::RunScript(const std::string& script, const std::string& what) const {
  std::string path = JoinPath(temp_dir_, "smolvmd-nft-XXXXXX");
  int fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(what, ": create ", path));
  }
  absl::Cleanup remove = [&path] { unlink(path.c_str()); };
  // A scratch file read once by nft: no fsync needed.
  size_t written = 0;
  while (written < script.size()) {
    ssize_t n = write(fd, script.data() + written, script.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status status = absl::ErrnoToStatus(errno, absl::StrCat(what, ": write ", path));
      close(fd);
      return status;
    }
    written += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(what, ": close ", path));
  }
  std::vector<std::string> argv = command_prefix_;
  argv.insert(argv.end(), {"nft", "-f", path});
  SubprocessOptions options;
  options.timeout = absl::Seconds(60);
  if (auto result = RunChecked(argv, options); !result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(what, ": ", result.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, absl::Status>> NftFirewall::Apply(
    const FirewallState& state) {
  SMOLVM_ASSIGN_OR_RETURN(RenderedRuleset rendered, RenderNftRulesetLenient(state));
  SMOLVM_RETURN_IF_ERROR(
      RunScript(rendered.script, absl::StrCat("apply firewall table ", state.table)));
  return std::move(rendered.rejected);
}

absl::Status NftFirewall::Remove(const std::string& table) {
  SMOLVM_RETURN_IF_ERROR(ValidateTableName(table));
  std::string script;
  for (const char* family : {"inet", "bridge"}) {
    absl::StrAppend(&script, "add table ", family, " ", table, "\ndelete table ", family, " ",
                    table, "\n");
  }
  return RunScript(script, absl::StrCat("remove firewall table ", table));
}

}  // namespace smolvm::net
