#include "lib/net/firewall.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/status_macros.h"
#include "lib/model/domain_rules.h"

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

// An IPv4 network: its address (host bits zero) and prefix length.
struct Cidr {
  uint32_t network = 0;
  int prefix = 0;
};

// "a.b.c.d/n", or the bare address for a /32.
std::string CidrText(const Cidr& cidr) {
  return cidr.prefix == 32 ? IpToString(cidr.network) : CidrToString(cidr.network, cidr.prefix);
}

// CIDRs in canonical form, by address, without entries that another entry
// already covers (nft rejects overlapping elements of an interval set).
// `what` prefixes the error ("egress allow_cidrs of vm X").
absl::StatusOr<std::vector<Cidr>> CheckCidrs(const std::string& what,
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
  std::vector<Cidr> out;
  for (const auto& [prefix, network] : kept) out.push_back({network, prefix});
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
  if ((state.dns_proxy_port == 0) != (state.dns_proxy_ip == 0)) {
    return absl::InvalidArgumentError("firewall dns_proxy_ip and dns_proxy_port go together");
  }
  CheckedGlobals globals;
  SMOLVM_ASSIGN_OR_RETURN(std::vector<Cidr> deny,
                          CheckCidrs("firewall deny_cidrs", state.deny_cidrs));
  for (const Cidr& cidr : deny) globals.deny.push_back(CidrText(cidr));
  globals.output_dnat_ips.insert(state.output_dnat_ips.begin(), state.output_dnat_ips.end());
  return globals;
}

// A VM entry that passed every check, with canonical fields.
struct CheckedVm {
  VmFirewallEntry vm;
  std::string mac;
  std::vector<Cidr> allow;  // kRestricted: canonical allow_cidrs.
  std::vector<Cidr> deny;   // Canonical deny_cidrs.
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
  if (vm.egress.mode != EgressMode::kOff) {
    SMOLVM_ASSIGN_OR_RETURN(
        checked.deny,
        CheckCidrs(absl::StrCat("egress deny_cidrs of vm ", vm.vm_id), vm.egress.deny_cidrs));
  }
  if (HasDomainRules(vm.egress) && state.dns_proxy_port == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, ": egress domain rules need the daemon's resolver, and it is not running"));
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

// The named sets and maps that hold every VM's state, in the order the
// scripts list them. Per-VM state lives only in their elements, never in
// chains or rules of its own: libnftables 1.0.6 reads every chain of the
// table (and each anonymous set of a rule) before each transaction, so
// anything per VM there would make one VM's change cost more with every
// VM; elements of named sets are not read. All of them are hash sets:
// adding or deleting an element of a concatenated interval set (pipapo)
// costs the kernel time in proportion to the whole set (measured: ~20 ms
// per deleted element at 3,000 elements), so restricted egress is one hash
// set per prefix length instead (allow_<n>: guest . network of a /n).
enum SetId {
  kL2Ip,                    // TAP . MAC . address: IPv4 a TAP may send.
  kL2Arp,                   // TAP . MAC . MAC . address: ARP a TAP may send.
  kTaps,                    // Every TAP listed: anything else from it is dropped.
  kEgressOpen,              // Guests with open egress.
  kAllow0,                  // allow_0 .. allow_32: kAllow0 + prefix length.
  kVmDeny0 = kAllow0 + 33,  // vm_deny_0 .. vm_deny_32: a VM's deny_cidrs, the same way.
  kIngress = kVmDeny0 + 33, // Guest . protocol . guest port of each forward.
  kDnatAddr,                // Host address . protocol . host port : guest . port.
  kDnatAny,                 // The same for 0.0.0.0 forwards, without the address.
  kOutAddr,                 // dnat_addr / dnat_any for connections made on the host.
  kOutAny,
  kDnsFiltered,             // Guests with domain rules: their DNS goes to the resolver.
  kDnsAllow,                // Guest . address learned from DNS (dynamic, not rendered).
  kDnsActive,               // The same, for as long as an open connection uses it.
};

struct SetSpec {
  const char* family;
  const char* kind;  // "set" or "map".
  std::string name;
  const char* type;
  const char* extra = "";  // More of the set's declaration (flags, size).
};

// By SetId.
const std::vector<SetSpec>& Sets() {
  static const auto* const sets = [] {
    static constexpr char kForwardMap[] =
        "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service";
    static constexpr char kAnyForwardMap[] = "inet_proto . inet_service : ipv4_addr . inet_service";
    auto* out = new std::vector<SetSpec>{
        {"bridge", "set", "l2_ip", "ifname . ether_addr . ipv4_addr"},
        {"bridge", "set", "l2_arp", "ifname . ether_addr . ether_addr . ipv4_addr"},
        {"bridge", "set", "taps", "ifname"},
        {"inet", "set", "egress_open", "ipv4_addr"}};
    for (const char* name : {"allow_", "vm_deny_"}) {
      for (int prefix = 0; prefix <= 32; ++prefix) {
        out->push_back({"inet", "set", absl::StrCat(name, prefix), "ipv4_addr . ipv4_addr"});
      }
    }
    out->insert(out->end(), {{"inet", "set", "ingress", "ipv4_addr . inet_proto . inet_service"},
                             {"inet", "map", "dnat_addr", kForwardMap},
                             {"inet", "map", "dnat_any", kAnyForwardMap},
                             {"inet", "map", "out_addr", kForwardMap},
                             {"inet", "map", "out_any", kAnyForwardMap},
                             {"inet", "set", "dns_filtered", "ipv4_addr"},
                             // Filled by the resolver and the packet path,
                             // with a timeout each; bounded (see kMaxLearned).
                             {"inet", "set", "dns_allow", "ipv4_addr . ipv4_addr",
                              "flags timeout\n    size 262144"},
                             {"inet", "set", "dns_active", "ipv4_addr . ipv4_addr",
                              "flags dynamic, timeout\n    size 262144"}});
    return out;
  }();
  return *sets;
}

// One element of a VM in one of the sets or maps.
struct Element {
  SetId set;
  std::string key;
  std::string value;  // Maps: the data; sets: "".
  std::string vm_id;  // For its comment.
};

bool operator<(const Element& a, const Element& b) {
  return std::tie(a.set, a.key, a.value, a.vm_id) < std::tie(b.set, b.key, b.value, b.vm_id);
}

// Everything a VM holds in the tables, sorted by set. A set, so that two
// forwards to the same guest port give one element of `ingress` (and a
// change deletes it only when neither is left).
using VmElements = std::set<Element>;

// The elements of one checked VM (everything in it is valid).
VmElements RenderVm(const CheckedGlobals& globals, const CheckedVm& checked) {
  const VmFirewallEntry& vm = checked.vm;
  const std::string& mac = checked.mac;
  const std::string ip = IpToString(vm.ip);
  const std::string tap = Quoted(vm.tap);
  VmElements out;
  auto add = [&](SetId set, std::string key, std::string value = "") {
    out.insert({set, std::move(key), std::move(value), vm.vm_id});
  };

  // Layer 2: the TAP speaks IPv4 and ARP as its VM only.
  add(kL2Ip, absl::StrCat(tap, " . ", mac, " . ", ip));
  add(kL2Arp, absl::StrCat(tap, " . ", mac, " . ", mac, " . ", ip));
  add(kTaps, tap);

  // Egress (see the forward chain in RenderScript for the order of the
  // checks): off is the absence of elements, as is restricted to nothing.
  switch (vm.egress.mode) {
    case EgressMode::kOpen:
      add(kEgressOpen, ip);
      break;
    case EgressMode::kOff:
      break;
    case EgressMode::kRestricted:
      // Canonical (CheckCidrs): the guest and the network address, in
      // the set of the prefix length.
      for (const Cidr& cidr : checked.allow) {
        add(static_cast<SetId>(kAllow0 + cidr.prefix),
            absl::StrCat(ip, " . ", IpToString(cidr.network)));
      }
      break;
  }
  if (HasDomainRules(vm.egress)) add(kDnsFiltered, ip);
  for (const Cidr& cidr : checked.deny) {
    add(static_cast<SetId>(kVmDeny0 + cidr.prefix),
        absl::StrCat(ip, " . ", IpToString(cidr.network)));
  }

  for (const Forward& f : checked.forwards) {
    const std::string key =
        f.any_host_ip ? absl::StrCat(f.protocol, " . ", f.host_port)
                      : absl::StrCat(IpToString(f.host_ip), " . ", f.protocol, " . ", f.host_port);
    const std::string target = absl::StrCat(ip, " . ", f.guest_port);
    add(f.any_host_ip ? kDnatAny : kDnatAddr, key, target);
    // Connections made on the host only to the addresses the port policy
    // allows: elsewhere a forward must not capture the host's own traffic
    // (a tenant's 0.0.0.0 forward would take 127.0.0.1:PORT).
    if (globals.output_dnat_ips.count(f.host_ip) != 0) {
      add(f.any_host_ip ? kOutAny : kOutAddr, key, target);
    }
    add(kIngress, absl::StrCat(ip, " . ", f.protocol, " . ", f.guest_port));
  }
  return out;
}

// The nft commands on tables `table` that add (else delete) `elements`,
// sorted by set: one command per set.
std::string ElementCommands(const std::string& table, bool add,
                            const std::vector<Element>& elements) {
  std::string out;
  for (auto it = elements.begin(); it != elements.end();) {
    const SetSpec& spec = Sets()[it->set];
    absl::StrAppend(&out, add ? "add" : "delete", " element ", spec.family, " ", table, " ",
                    spec.name, " { ");
    const SetId set = it->set;
    for (const char* sep = ""; it != elements.end() && it->set == set; ++it, sep = ", ") {
      absl::StrAppend(&out, sep, it->key);
      // A delete names the key only.
      if (add) {
        absl::StrAppend(&out, " comment \"vm ", it->vm_id, "\"");
        if (!it->value.empty()) absl::StrAppend(&out, " : ", it->value);
      }
    }
    absl::StrAppend(&out, " }\n");
  }
  return out;
}

// The script that replaces both tables: the chains, the sets and maps,
// then `elements` (sorted by set).
std::string RenderScript(const FirewallState& state, const CheckedGlobals& globals,
                         const std::vector<Element>& elements) {
  const std::string br = Quoted(state.bridge);
  const std::string subnet = state.subnet.ToString();
  std::string out = absl::StrCat(
      "#!/usr/sbin/nft -f\n"
      "# Generated by smolvmd for bridge ", state.bridge, " (", subnet,
      "). Replaced as a whole at startup, then changed per VM: do not edit.\n\n");
  auto chain = [&out](const std::string& name, const std::string& hook,
                      const std::vector<std::string>& rules) {
    absl::StrAppend(&out, "  chain ", name, " {\n    ", hook, "\n");
    for (const std::string& rule : rules) absl::StrAppend(&out, "    ", rule, "\n");
    absl::StrAppend(&out, "  }\n");
  };
  auto sets = [&out](const char* family) {
    for (const SetSpec& spec : Sets()) {
      if (std::string(spec.family) != family) continue;
      absl::StrAppend(&out, "  ", spec.kind, " ", spec.name, " {\n    type ", spec.type, "\n",
                      *spec.extra ? absl::StrCat("    ", spec.extra, "\n") : "", "  }\n");
    }
  };
  // "add" then "delete" makes the delete succeed whether or not the table
  // existed; the whole file is one transaction.
  absl::StrAppend(&out, "add table bridge ", state.table, "\n", "delete table bridge ", state.table,
                  "\n", "table bridge ", state.table, " {\n");
  sets("bridge");
  std::vector<std::string> bridge_rules = {
      "iifname . ether saddr . ip saddr @l2_ip accept",
      "iifname . ether saddr . arp saddr ether . arp saddr ip @l2_arp accept",
      // Anything else a VM's TAP sends.
      "iifname @taps drop"};
  // Ports of the bridge that no VM owns (yet, or any more, or whose entry
  // was rejected) send nothing.
  if (!state.tap_prefix.empty()) {
    bridge_rules.push_back(absl::StrCat("iifname \"", state.tap_prefix, "*\" drop"));
  }
  chain("prerouting", "type filter hook prerouting priority filter; policy accept;", bridge_rules);
  absl::StrAppend(&out, "}\n\n");

  absl::StrAppend(&out, "add table inet ", state.table, "\n", "delete table inet ", state.table,
                  "\n", "table inet ", state.table, " {\n");
  sets("inet");
  // Destinations no guest reaches (deny_cidrs).
  if (!globals.deny.empty()) {
    absl::StrAppend(&out, "  set deny {\n    type ipv4_addr\n    flags interval\n    elements = { ",
                    absl::StrJoin(globals.deny, ", "), " }\n  }\n");
  }
  const std::string from_guests = absl::StrCat("iifname ", br, " ");
  std::vector<std::string> forward = {
      // Replies pass; original-direction packets are judged one by one, so
      // a narrowed policy stops at once what a guest sends on connections
      // already open (a peer's replies on them still arrive until the
      // connection ends). Related packets (ICMP errors) only as replies: a
      // guest's own are judged as its egress, else an "off" guest could
      // send data out in ICMP errors about an old flow.
      "ct state established ct direction reply accept",
      "ct state related ct direction reply accept",
      // From the guests, by ip saddr: the bridge table vouches for the
      // source address (iifname is the bridge here, not the TAP). Never
      // other VMs (also not routed via the gateway), never the gateway; the
      // host's other addresses are guarded by chain input.
      absl::StrCat(from_guests, "ip daddr ", subnet, " drop")};
  // The destination masked to each prefix length, narrowest first (the
  // likeliest: single hosts), looked up with the guest in a per-prefix set.
  auto by_prefix = [&](const char* set, const char* verdict) {
    for (int prefix = 32; prefix >= 0; --prefix) {
      forward.push_back(
          absl::StrCat(from_guests, "ip saddr . ip daddr",
                       prefix == 32 ? "" : absl::StrCat(" & ", IpToString(PrefixToMask(prefix))),
                       " @", set, prefix, " ", verdict));
    }
  };
  // A VM's own deny list, before anything of it is accepted (the resolver
  // too: a VM may cut DNS as a way out).
  by_prefix("vm_deny_", "drop");
  // The DNS of VMs with domain rules goes to the daemon's resolver (nat
  // prerouting); DNS over TLS or QUIC would go around it.
  if (state.dns_proxy_port != 0) {
    forward.push_back(absl::StrCat(from_guests,
                                   "ip saddr @dns_filtered meta l4proto { tcp, udp } th dport 853 "
                                   "drop"));
  }
  // The resolver, for open egress only, even inside a range the operator
  // denies.
  if (state.dns != 0) {
    for (const char* proto : {"udp", "tcp"}) {
      forward.push_back(absl::StrCat(from_guests, "ip saddr @egress_open ip daddr ",
                                     IpToString(state.dns), " ", proto, " dport 53 accept"));
    }
  }
  // Closed whatever the mode: a restricted VM's allow list cannot open
  // what the operator denies.
  if (!globals.deny.empty()) forward.push_back(absl::StrCat(from_guests, "ip daddr @deny drop"));
  forward.push_back(absl::StrCat(from_guests, "ip saddr @egress_open accept"));
  // Restricted.
  by_prefix("allow_", "accept");
  if (state.dns_proxy_port != 0) {
    // Addresses of allowed names: a new connection needs an answer that
    // has not expired; a connection opened in time goes on while it is
    // used (dns_active, refreshed by its packets).
    // The update and the accept are separate rules: an update that fails
    // (the set full) ends its rule, and must not end the accept with it.
    const std::string refresh = absl::StrCat("update @dns_active { ip saddr . ip daddr timeout ",
                                             kLearnedIdleSeconds, "s }");
    for (const std::string match : {"ip saddr . ip daddr @dns_allow",
                                    "ct state established ip saddr . ip daddr @dns_active"}) {
      forward.push_back(absl::StrCat(from_guests, match, " ", refresh));
      forward.push_back(absl::StrCat(from_guests, match, " accept"));
    }
  }
  forward.push_back(absl::StrCat(from_guests, "drop"));
  // Only forwarded (DNATed) connections reach a guest, and only on the
  // forwarded ports.
  forward.push_back(absl::StrCat("oifname ", br,
                                 " ct status dnat ip daddr . meta l4proto . th dport @ingress "
                                 "accept"));
  forward.push_back(absl::StrCat("oifname ", br, " drop"));
  chain("forward", "type filter hook forward priority filter; policy accept;", forward);
  std::vector<std::string> input = {
      absl::StrCat(from_guests, "ct state established ct direction reply accept"),
      absl::StrCat(from_guests, "ct state related accept")};
  if (state.dns_proxy_port != 0) {
    // The resolver, for the guests whose DNS is sent to it.
    input.push_back(absl::StrCat(from_guests, "ip saddr @dns_filtered ip daddr ",
                                 IpToString(state.dns_proxy_ip), " meta l4proto { tcp, udp } ",
                                 "th dport ", state.dns_proxy_port, " accept"));
  }
  input.push_back(absl::StrCat(from_guests, "drop"));
  chain("input", "type filter hook input priority filter; policy accept;", input);
  // A key that no element holds leaves the packet alone.
  auto dnat = [](const char* addr_map, const char* any_map) {
    return std::vector<std::string>{
        absl::StrCat("dnat ip to ip daddr . meta l4proto . th dport map @", addr_map),
        absl::StrCat("meta nfproto ipv4 fib daddr type local ",
                     "dnat ip to meta l4proto . th dport map @", any_map)};
  };
  std::vector<std::string> prerouting;
  if (state.dns_proxy_port != 0) {
    // Whatever resolver a VM with domain rules asks, the daemon's answers.
    prerouting.push_back(absl::StrCat(
        from_guests, "ip saddr @dns_filtered meta l4proto { tcp, udp } th dport 53 dnat ip to ",
        IpToString(state.dns_proxy_ip), ":", state.dns_proxy_port));
  }
  for (std::string& rule : dnat("dnat_addr", "dnat_any")) prerouting.push_back(std::move(rule));
  chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", prerouting);
  // Connections made on the host itself (to 127.0.0.1 or a local address).
  chain("output", "type nat hook output priority -100; policy accept;",
        dnat("out_addr", "out_any"));
  std::vector<std::string> snat;
  if (!state.uplink.empty()) {
    snat.push_back(
        absl::StrCat("ip saddr ", subnet, " oifname ", Quoted(state.uplink), " masquerade"));
  }
  // Forwarded connections reach the guest from the gateway address, so that
  // replies come back through us (a 127.0.0.1 source could not be answered).
  snat.push_back(absl::StrCat("oifname ", br, " ct status dnat masquerade"));
  chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", snat);
  absl::StrAppend(&out, "}\n");
  absl::StrAppend(&out, ElementCommands(state.table, /*add=*/true, elements));
  return out;
}

// The globals a per-VM change must find unchanged.
bool SameGlobals(const FirewallState& a, const FirewallState& b) {
  return std::tie(a.table, a.bridge, a.subnet.network, a.subnet.prefix, a.uplink, a.tap_prefix,
                  a.deny_cidrs, a.output_dnat_ips, a.dns, a.dns_proxy_ip, a.dns_proxy_port) ==
         std::tie(b.table, b.bridge, b.subnet.network, b.subnet.prefix, b.uplink, b.tap_prefix,
                  b.deny_cidrs, b.output_dnat_ips, b.dns, b.dns_proxy_ip, b.dns_proxy_port);
}

}  // namespace

struct NftRuleset::Impl {
  FirewallState globals;  // The state without its vms.
  CheckedGlobals checked_globals;
  std::map<std::string, std::pair<CheckedVm, VmElements>> vms;  // By vm_id.
  Taken taken;
  bool any_rejected = false;
  // The change RenderVmChange rendered: vm_id and its new entry, if any.
  std::string pending_id;
  std::optional<std::pair<CheckedVm, VmElements>> pending;
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
  std::vector<Element> elements;
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
    VmElements vm_elements = RenderVm(r.checked_globals, *checked);
    elements.insert(elements.end(), vm_elements.begin(), vm_elements.end());
    r.vms.emplace(vm.vm_id, std::make_pair(*std::move(checked), std::move(vm_elements)));
  }
  r.any_rejected = !ruleset.rejected_.empty();
  std::sort(elements.begin(), elements.end());  // By set.
  ruleset.script_ = RenderScript(state, r.checked_globals, elements);
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
      VmElements vm_elements = RenderVm(r.checked_globals, *checked);
      r.pending.emplace(*std::move(checked), std::move(vm_elements));
    } else {
      change.rejected = checked.status();
    }
  }
  // Whatever changed (policy, forwards, address, TAP): the elements that
  // differ go, then the new ones come, in one transaction.
  const VmElements none;
  auto installed = r.vms.find(vm_id);
  const VmElements& before = installed == r.vms.end() ? none : installed->second.second;
  const VmElements& after = r.pending ? r.pending->second : none;
  std::vector<Element> gone, added;
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(),
                      std::back_inserter(gone));
  std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                      std::back_inserter(added));
  change.script = absl::StrCat(ElementCommands(r.globals.table, /*add=*/false, gone),
                               ElementCommands(r.globals.table, /*add=*/true, added));
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

namespace smolvm::net {

std::string RenderLearnedScript(const std::string& table, uint32_t guest,
                                const std::string& vm_id,
                                const std::vector<LearnedAddress>& addresses) {
  if (addresses.empty()) return "";
  const std::string prefix = absl::StrCat(" element inet ", table, " dns_allow { ");
  std::string adds, deletes;
  for (const LearnedAddress& a : addresses) {
    const std::string key = absl::StrCat(IpToString(guest), " . ", IpToString(a.ip));
    const uint32_t timeout = std::clamp(a.ttl, kLearnedMinSeconds, kLearnedMaxSeconds);
    // add, delete, add: the delete finds the element whether or not it was
    // there, and the last add starts a fresh timeout.
    absl::StrAppend(&adds, "add", prefix, key, " timeout ", timeout, "s comment \"vm ", vm_id,
                    "\" }\n");
    absl::StrAppend(&deletes, "delete", prefix, key, " }\n");
  }
  return absl::StrCat(adds, deletes, adds);
}

std::string RenderForgetScript(const std::string& table, uint32_t guest,
                               const std::vector<uint32_t>& addresses) {
  std::string out;
  for (const char* set : {"dns_allow", "dns_active"}) {
    for (uint32_t ip : addresses) {
      const std::string element = absl::StrCat(" element inet ", table, " ", set, " { ",
                                                IpToString(guest), " . ", IpToString(ip));
      // Adding first makes the delete succeed whether or not it was there
      // (or timed out meanwhile).
      absl::StrAppend(&out, "add", element, " timeout 1s }\n", "delete", element, " }\n");
    }
  }
  return out;
}

}  // namespace smolvm::net
