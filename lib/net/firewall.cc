#include "lib/net/firewall.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "lib/base/status_macros.h"

namespace smolvm::net {
namespace {

}  // namespace

absl::Status ValidateNftTableName(const std::string& table) {
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

namespace {

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
  SMOLVM_RETURN_IF_ERROR(ValidateNftTableName(state.table));
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
  VmFirewallEntry vm;
  std::string mac;
  std::vector<std::string> allow;  // kRestricted: canonical allow_cidrs.
  std::vector<Forward> forwards;
};

// What the accepted entries hold, and whose it is (vm_id).
struct Taken {
  std::map<uint32_t, std::string> ips;
  std::map<std::string, std::string> taps;
  // (protocol, host port) -> the forwards of that port and their VMs.
  std::multimap<std::pair<std::string, uint32_t>, std::pair<Forward, std::string>> forwards;

  // Whether another VM than `self` holds a forward that overlaps `f`.
  bool ForwardClashes(const Forward& f, const std::string& self) const {
    auto [begin, end] = forwards.equal_range({f.protocol, f.host_port});
    return std::any_of(begin, end, [&](const auto& entry) {
      return entry.second.second != self && Overlaps(entry.second.first, f);
    });
  }
  void Add(const CheckedVm& vm) {
    ips.emplace(vm.vm.ip, vm.vm.vm_id);
    taps.emplace(vm.vm.tap, vm.vm.vm_id);
    for (const Forward& f : vm.forwards) {
      forwards.emplace(std::make_pair(f.protocol, f.host_port), std::make_pair(f, vm.vm.vm_id));
    }
  }
  void Erase(const CheckedVm& vm) {
    ips.erase(vm.vm.ip);
    taps.erase(vm.vm.tap);
    for (const Forward& f : vm.forwards) {
      auto [begin, end] = forwards.equal_range({f.protocol, f.host_port});
      for (auto it = begin; it != end;) {
        it = it->second.second == vm.vm.vm_id ? forwards.erase(it) : std::next(it);
      }
    }
  }
};

// Checks one VM entry against the state and the entries of the other VMs
// accepted before it (those of `vm.vm_id` itself do not count).
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
  auto held_by_other = [&vm](const auto& map, const auto& key) {
    auto it = map.find(key);
    return it != map.end() && it->second != vm.vm_id;
  };
  if (held_by_other(taken.ips, vm.ip) || held_by_other(taken.taps, vm.tap)) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": ip ", IpToString(vm.ip), " or tap ", vm.tap, " is used twice"));
  }
  CheckedVm checked;
  checked.vm = vm;
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
    bool clash = taken.ForwardClashes(f, vm.vm_id) ||
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

std::string ChainName(const char* kind, uint32_t ip) {
  return absl::StrFormat("%s_%08x", kind, ip);
}

// The vmap keys of one VM's forwards, per map, and its chains' rules.
struct VmRules {
  uint32_t ip = 0;
  std::string port_key;  // Map ports (bridge): the TAP.
  std::string ip_key;    // Maps egress and ingress: the guest address.
  // Maps of table inet keyed by a forward (dnat_addr, ...) -> keys.
  std::map<std::string, std::set<std::string>> forward_keys;
  std::vector<std::string> port, egress, ingress, dnat;  // Chains' rules.
};

constexpr const char* kForwardMaps[] = {"dnat_addr", "dnat_any", "out_addr", "out_any"};

// The rules of one checked VM (everything in it is valid).
VmRules RenderVm(const FirewallState& state, const CheckedGlobals& globals,
                 const CheckedVm& checked) {
  const VmFirewallEntry& vm = checked.vm;
  const std::string br = Quoted(state.bridge);
  const std::string& mac = checked.mac;
  const std::string ip = IpToString(vm.ip);
  const std::string tap = Quoted(vm.tap);
  const std::string comment = absl::StrCat(" comment \"vm ", vm.vm_id, "\"");
  VmRules rules;
  rules.ip = vm.ip;
  rules.port_key = tap;
  rules.ip_key = ip;
  for (const char* map : kForwardMaps) rules.forward_keys[map];

  // Layer 2: the TAP speaks IPv4 and ARP as its VM only.
  rules.port = {
      absl::StrCat("iifname ", tap, " ether saddr ", mac, " ip saddr ", ip, " accept", comment),
      absl::StrCat("iifname ", tap, " ether saddr ", mac, " arp saddr ether ", mac,
                   " arp saddr ip ", ip, " accept", comment),
      absl::StrCat("iifname ", tap, " drop", comment),
  };

  // Layer 3 egress, reached by ip saddr: the bridge table vouches for the
  // source address (iifname is the bridge here, not the TAP). Never other
  // VMs (also not routed via the gateway), never the gateway; the host's
  // other addresses are guarded by chain input.
  rules.egress = {absl::StrCat("ip daddr ", state.subnet.ToString(), " drop")};
  // Closed whatever the mode: a restricted VM's allow list cannot open
  // what the operator denies.
  if (state.dns != 0 && vm.egress.mode == EgressMode::kOpen) {
    for (const char* proto : {"udp", "tcp"}) {
      rules.egress.push_back(
          absl::StrCat("ip daddr ", IpToString(state.dns), " ", proto, " dport 53 accept"));
    }
  }
  // Named sets only, never anonymous ones in per-VM rules: libnftables
  // reads every set of the table before each change, so a set per VM would
  // make each change cost more with every VM.
  if (!globals.deny.empty()) rules.egress.push_back("ip daddr @deny drop");
  switch (vm.egress.mode) {
    case EgressMode::kOpen:
      rules.egress.push_back("accept");
      break;
    case EgressMode::kOff:
      rules.egress.push_back("drop");
      break;
    case EgressMode::kRestricted:
      for (const std::string& cidr : checked.allow) {
        rules.egress.push_back(absl::StrCat("ip daddr ", cidr, " accept"));
      }
      rules.egress.push_back("drop");
      break;
  }

  for (const Forward& f : checked.forwards) {
    const std::string match = f.any_host_ip ? "meta nfproto ipv4 fib daddr type local"
                                            : absl::StrCat("ip daddr ", IpToString(f.host_ip));
    rules.dnat.push_back(absl::StrCat(match, " ", f.protocol, " dport ", f.host_port,
                                      " dnat ip to ", ip, ":", f.guest_port, comment));
    const std::string key =
        f.any_host_ip ? absl::StrCat(f.protocol, " . ", f.host_port)
                      : absl::StrCat(IpToString(f.host_ip), " . ", f.protocol, " . ", f.host_port);
    rules.forward_keys[f.any_host_ip ? "dnat_any" : "dnat_addr"].insert(key);
    // Connections made on the host only to the addresses the port policy
    // allows: elsewhere a forward must not capture the host's own traffic
    // (a tenant's 0.0.0.0 forward would take 127.0.0.1:PORT).
    if (globals.output_dnat_ips.count(f.host_ip) != 0) {
      rules.forward_keys[f.any_host_ip ? "out_any" : "out_addr"].insert(key);
    }
    rules.ingress.push_back(absl::StrCat("oifname ", br, " ip daddr ", ip, " ", f.protocol,
                                         " dport ", f.guest_port, " ct status dnat accept",
                                         comment));
  }
  return rules;
}

// One chain of a VM: (family, chain, rules).
struct VmChain {
  const char* family;
  std::string name;
  const std::vector<std::string>* rules;
};

std::vector<VmChain> ChainsOf(const VmRules& r) {
  return {{"bridge", ChainName("port", r.ip), &r.port},
          {"inet", EgressChainName(r.ip), &r.egress},
          {"inet", ChainName("ingress", r.ip), &r.ingress},
          {"inet", ChainName("dnat", r.ip), &r.dnat}};
}

// One map element of a VM: (family, map, key, target chain).
struct VmElement {
  const char* family;
  std::string map;
  std::string key;
  std::string chain;
};

std::vector<VmElement> ElementsOf(const VmRules& r) {
  std::vector<VmElement> out = {{"bridge", "ports", r.port_key, ChainName("port", r.ip)},
                                {"inet", "egress", r.ip_key, EgressChainName(r.ip)},
                                {"inet", "ingress", r.ip_key, ChainName("ingress", r.ip)}};
  for (const auto& [map, keys] : r.forward_keys) {
    for (const std::string& key : keys) {
      out.push_back({"inet", map, key, ChainName("dnat", r.ip)});
    }
  }
  return out;
}

bool operator<(const VmElement& a, const VmElement& b) {
  return std::tie(a.family, a.map, a.key, a.chain) < std::tie(b.family, b.map, b.key, b.chain);
}

// nft commands, one per line, of a transaction on tables `table`.
class Commands {
 public:
  explicit Commands(std::string table) : table_(std::move(table)) {}
  void AddChain(const VmChain& c) { Line("add chain", c.family, c.name); }
  void FlushChain(const VmChain& c) { Line("flush chain", c.family, c.name); }
  void DeleteChain(const VmChain& c) { Line("delete chain", c.family, c.name); }
  void AddRules(const VmChain& c) {
    for (const std::string& rule : *c.rules) Line("add rule", c.family, c.name, " ", rule);
  }
  void AddElement(const VmElement& e) {
    Line("add element", e.family, e.map, " { ", e.key, " : jump ", e.chain, " }");
  }
  void DeleteElement(const VmElement& e) {
    Line("delete element", e.family, e.map, " { ", e.key, " }");
  }
  std::string& text() { return text_; }

 private:
  template <typename... Rest>
  void Line(const char* verb, const char* family, const std::string& object,
            const Rest&... rest) {
    absl::StrAppend(&text_, verb, " ", family, " ", table_, " ", object, rest..., "\n");
  }
  const std::string table_;
  std::string text_;
};

// Adds everything of a VM (its chains exist in neither table).
void AddVm(Commands& out, const VmRules& rules) {
  for (const VmChain& c : ChainsOf(rules)) {
    out.AddChain(c);
    out.AddRules(c);
  }
  for (const VmElement& e : ElementsOf(rules)) out.AddElement(e);
}

// Removes everything of a VM: the map elements first, so that nothing
// refers to its chains when they go.
void RemoveVm(Commands& out, const VmRules& rules) {
  for (const VmElement& e : ElementsOf(rules)) out.DeleteElement(e);
  for (const VmChain& c : ChainsOf(rules)) {
    out.FlushChain(c);
    out.DeleteChain(c);
  }
}

// Turns the rules `before` into `after` of the same address: chains
// flushed and refilled, only the map elements that differ changed.
void UpdateVm(Commands& out, const VmRules& before, const VmRules& after) {
  std::vector<VmElement> old_elements = ElementsOf(before), new_elements = ElementsOf(after);
  std::sort(old_elements.begin(), old_elements.end());
  std::sort(new_elements.begin(), new_elements.end());
  std::vector<VmElement> gone, added;
  std::set_difference(old_elements.begin(), old_elements.end(), new_elements.begin(),
                      new_elements.end(), std::back_inserter(gone));
  std::set_difference(new_elements.begin(), new_elements.end(), old_elements.begin(),
                      old_elements.end(), std::back_inserter(added));
  for (const VmElement& e : gone) out.DeleteElement(e);
  for (const VmChain& c : ChainsOf(after)) {
    out.FlushChain(c);
    out.AddRules(c);
  }
  for (const VmElement& e : added) out.AddElement(e);
}

// The script that replaces both tables: the base chains and maps, the
// chains of `vms`, then the map elements that lead to them.
std::string RenderScript(const FirewallState& state, const CheckedGlobals& globals,
                         const std::vector<VmRules>& vms) {
  const std::string br = Quoted(state.bridge);
  const std::string subnet = state.subnet.ToString();
  std::string out = absl::StrCat(
      "#!/usr/sbin/nft -f\n"
      "# Generated by smolvmd for bridge ", state.bridge, " (", subnet,
      "). Replaced as a whole at startup, then changed per VM: do not edit.\n\n");
  auto chain = [&out](const std::string& name, const std::string& hook,
                      const std::vector<std::string>& rules) {
    absl::StrAppend(&out, "  chain ", name, " {\n");
    if (!hook.empty()) absl::StrAppend(&out, "    ", hook, "\n");
    for (const std::string& rule : rules) absl::StrAppend(&out, "    ", rule, "\n");
    absl::StrAppend(&out, "  }\n");
  };
  auto map = [&out](const std::string& name, const std::string& type) {
    absl::StrAppend(&out, "  map ", name, " {\n    type ", type, " : verdict\n  }\n");
  };
  // "add" then "delete" makes the delete succeed whether or not the table
  // existed; the whole file is one transaction.
  absl::StrAppend(&out, "add table bridge ", state.table, "\n", "delete table bridge ",
                  state.table, "\n", "table bridge ", state.table, " {\n");
  map("ports", "ifname");
  std::vector<std::string> bridge_rules = {"iifname vmap @ports"};
  // Ports of the bridge that no VM owns (yet, or any more, or whose entry
  // was rejected) send nothing.
  if (!state.tap_prefix.empty()) {
    bridge_rules.push_back(absl::StrCat("iifname \"", state.tap_prefix, "*\" drop"));
  }
  chain("prerouting", "type filter hook prerouting priority filter; policy accept;",
        bridge_rules);
  for (const VmRules& vm : vms) chain(ChainName("port", vm.ip), "", vm.port);
  absl::StrAppend(&out, "}\n\n");

  absl::StrAppend(&out, "add table inet ", state.table, "\n", "delete table inet ",
                  state.table, "\n", "table inet ", state.table, " {\n");
  map("egress", "ipv4_addr");
  map("ingress", "ipv4_addr");
  for (const char* name : {"dnat_addr", "out_addr"}) {
    map(name, "ipv4_addr . inet_proto . inet_service");
  }
  for (const char* name : {"dnat_any", "out_any"}) map(name, "inet_proto . inet_service");
  // Destinations no guest reaches (deny_cidrs), for every egress chain.
  if (!globals.deny.empty()) {
    absl::StrAppend(&out, "  set deny {\n    type ipv4_addr\n    flags interval\n    elements = { ",
                    absl::StrJoin(globals.deny, ", "), " }\n  }\n");
  }
  chain("forward", "type filter hook forward priority filter; policy accept;",
        {// Replies always pass; original-direction packets are judged one by
         // one, so a policy change also stops connections already open.
         "ct state established ct direction reply accept", "ct state related accept",
         absl::StrCat("iifname ", br, " ip saddr vmap @egress"),
         absl::StrCat("iifname ", br, " drop"),
         // Only forwarded (DNATed) connections reach a guest.
         absl::StrCat("oifname ", br, " ip daddr vmap @ingress"),
         absl::StrCat("oifname ", br, " drop")});
  chain("input", "type filter hook input priority filter; policy accept;",
        {absl::StrCat("iifname ", br, " ct state established ct direction reply accept"),
         absl::StrCat("iifname ", br, " ct state related accept"),
         absl::StrCat("iifname ", br, " drop")});
  const std::string any_local = "meta nfproto ipv4 fib daddr type local meta l4proto . th dport";
  chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;",
        {"ip daddr . meta l4proto . th dport vmap @dnat_addr",
         absl::StrCat(any_local, " vmap @dnat_any")});
  // Connections made on the host itself (to 127.0.0.1 or a local address).
  chain("output", "type nat hook output priority -100; policy accept;",
        {"ip daddr . meta l4proto . th dport vmap @out_addr",
         absl::StrCat(any_local, " vmap @out_any")});
  std::vector<std::string> snat;
  if (!state.uplink.empty()) {
    snat.push_back(absl::StrCat("ip saddr ", subnet, " oifname ", Quoted(state.uplink),
                                " masquerade"));
  }
  // Forwarded connections reach the guest from the gateway address, so that
  // replies come back through us (a 127.0.0.1 source could not be answered).
  snat.push_back(absl::StrCat("oifname ", br, " ct status dnat masquerade"));
  chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", snat);
  for (const VmRules& vm : vms) {
    chain(EgressChainName(vm.ip), "", vm.egress);
    chain(ChainName("ingress", vm.ip), "", vm.ingress);
    chain(ChainName("dnat", vm.ip), "", vm.dnat);
  }
  absl::StrAppend(&out, "}\n");

  Commands elements(state.table);
  for (const VmRules& vm : vms) {
    for (const VmElement& e : ElementsOf(vm)) elements.AddElement(e);
  }
  absl::StrAppend(&out, elements.text());
  return out;
}

// The globals a per-VM change must find unchanged.
bool SameGlobals(const FirewallState& a, const FirewallState& b) {
  return std::tie(a.table, a.bridge, a.subnet.network, a.subnet.prefix, a.uplink, a.tap_prefix,
                  a.deny_cidrs, a.output_dnat_ips, a.dns) ==
         std::tie(b.table, b.bridge, b.subnet.network, b.subnet.prefix, b.uplink, b.tap_prefix,
                  b.deny_cidrs, b.output_dnat_ips, b.dns);
}

}  // namespace

std::string EgressChainName(uint32_t ip) { return ChainName("egress", ip); }

struct NftRuleset::Impl {
  FirewallState globals;  // The state without its vms.
  CheckedGlobals checked_globals;
  std::map<std::string, std::pair<CheckedVm, VmRules>> vms;  // By vm_id.
  Taken taken;
  bool any_rejected = false;
  // The change RenderVmChange rendered: vm_id and its new entry, if any.
  std::string pending_id;
  std::optional<std::pair<CheckedVm, VmRules>> pending;
};

NftRuleset::NftRuleset(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NftRuleset::NftRuleset(NftRuleset&&) noexcept = default;
NftRuleset& NftRuleset::operator=(NftRuleset&&) noexcept = default;
NftRuleset::~NftRuleset() = default;

absl::StatusOr<NftRuleset> NftRuleset::Render(const FirewallState& state) {
  auto impl = std::make_unique<Impl>();
  SMOLVM_ASSIGN_OR_RETURN(impl->checked_globals, CheckGlobals(state));
  impl->globals = state;
  impl->globals.vms.clear();
  NftRuleset ruleset(std::move(impl));
  Impl& r = *ruleset.impl_;
  std::vector<VmRules> rendered;
  for (const VmFirewallEntry& vm : state.vms) {
    absl::StatusOr<CheckedVm> checked = CheckVm(state, vm, r.taken);
    if (checked.ok() && r.vms.count(vm.vm_id) != 0) {
      checked = absl::InvalidArgumentError(
          absl::StrCat("firewall entry of vm ", vm.vm_id, ": vm_id is used twice"));
    }
    if (!checked.ok()) {
      ruleset.rejected_.emplace(vm.vm_id, checked.status());
      continue;
    }
    r.taken.Add(*checked);
    VmRules rules = RenderVm(state, r.checked_globals, *checked);
    rendered.push_back(rules);
    r.vms.emplace(vm.vm_id, std::make_pair(*std::move(checked), std::move(rules)));
  }
  r.any_rejected = !ruleset.rejected_.empty();
  ruleset.script_ = RenderScript(state, r.checked_globals, rendered);
  return ruleset;
}

bool NftRuleset::AcceptsVmChanges(const FirewallState& state) const {
  return !impl_->any_rejected && SameGlobals(impl_->globals, state);
}

NftRuleset::VmChange NftRuleset::RenderVmChange(const std::string& vm_id,
                                                const VmFirewallEntry* desired) {
  Impl& r = *impl_;
  VmChange change;
  r.pending_id = vm_id;
  r.pending.reset();
  if (desired != nullptr) {
    absl::StatusOr<CheckedVm> checked = CheckVm(r.globals, *desired, r.taken);
    if (checked.ok() && desired->vm_id != vm_id) {
      checked = absl::InvalidArgumentError(absl::StrCat(
          "firewall entry of vm ", desired->vm_id, ": applied as the entry of vm ", vm_id));
    }
    if (checked.ok()) {
      VmRules rules = RenderVm(r.globals, r.checked_globals, *checked);
      r.pending.emplace(*std::move(checked), std::move(rules));
    } else {
      change.rejected = checked.status();
    }
  }
  auto installed = r.vms.find(vm_id);
  const VmRules* before = installed == r.vms.end() ? nullptr : &installed->second.second;
  const VmRules* after = r.pending ? &r.pending->second : nullptr;
  Commands out(r.globals.table);
  if (before != nullptr && after != nullptr && before->ip == after->ip) {
    UpdateVm(out, *before, *after);
  } else {
    if (before != nullptr) RemoveVm(out, *before);
    if (after != nullptr) AddVm(out, *after);
  }
  change.script = std::move(out.text());
  return change;
}

void NftRuleset::CommitVmChange() {
  Impl& r = *impl_;
  if (auto it = r.vms.find(r.pending_id); it != r.vms.end()) {
    r.taken.Erase(it->second.first);
    r.vms.erase(it);
  }
  if (r.pending) {
    r.taken.Add(r.pending->first);
    r.vms.emplace(r.pending_id, *std::move(r.pending));
  }
  r.pending.reset();
  r.pending_id.clear();
}

absl::StatusOr<RenderedRuleset> RenderNftRulesetLenient(const FirewallState& state) {
  SMOLVM_ASSIGN_OR_RETURN(NftRuleset ruleset, NftRuleset::Render(state));
  return RenderedRuleset{ruleset.script(), ruleset.rejected()};
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

}  // namespace smolvm::net
