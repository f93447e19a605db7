#include "lib/net/firewall.h"

#include <functional>
#include <map>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/net/netns_for_testing.h"
#include "lib/net/nft_firewall.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint32_t kVm1 = 0x0ac80002;  // 10.200.0.2
constexpr uint32_t kVm2 = 0x0ac80003;  // 10.200.0.3

VmFirewallEntry Vm(const std::string& id, uint32_t ip, EgressMode mode) {
  VmFirewallEntry vm;
  vm.vm_id = id;
  vm.tap = TapNameFor(ip);
  vm.ip = ip;
  vm.egress.mode = mode;
  return vm;
}

FirewallState TwoVms() {
  FirewallState state;
  state.bridge = "smolbr0";
  state.subnet = *Subnet::Parse("10.200.0.0/24");
  state.uplink = "eth0";
  state.vms.push_back(Vm("vm-a", kVm1, EgressMode::kOpen));
  state.vms.push_back(Vm("vm-b", kVm2, EgressMode::kOff));
  return state;
}

// The lines of chain `name` of table `family`, between its "{" and "}".
std::string ChainOf(const std::string& script, const std::string& family,
                    const std::string& name) {
  size_t table = script.find("table " + family + " smolvmd {");
  if (table == std::string::npos) return "";
  size_t start = script.find("  chain " + name + " {\n", table);
  if (start == std::string::npos) return "";
  size_t end = script.find("\n  }\n", start);
  return script.substr(start, end - start);
}

// The elements that `script` adds to set or map `name` of table `family`
// (with their comments), whatever their order.
std::set<std::string> ElementsOf(const std::string& script, const std::string& family,
                                 const std::string& name) {
  std::set<std::string> out;
  const std::string prefix = "add element " + family + " smolvmd " + name + " { ";
  for (absl::string_view line : absl::StrSplit(script, '\n')) {
    if (!absl::ConsumePrefix(&line, prefix) || !absl::ConsumeSuffix(&line, " }")) continue;
    for (absl::string_view element : absl::StrSplit(line, ", ")) out.emplace(element);
  }
  return out;
}

TEST(RenderNftRulesetTest, ReplacesBothTablesAtomically) {
  auto script = RenderNftRuleset(TwoVms());
  ASSERT_THAT(script, IsOk());
  for (const char* family : {"inet", "bridge"}) {
    std::string f = family;
    EXPECT_THAT(*script, HasSubstr("add table " + f + " smolvmd\ndelete table " + f +
                                   " smolvmd\ntable " + f + " smolvmd {\n"));
  }
}

TEST(RenderNftRulesetTest, AntiSpoofingInTheBridgeTable) {
  auto script = RenderNftRuleset(TwoVms());
  ASSERT_THAT(script, IsOk());
  // What each TAP may send, by set; anything else from a listed TAP, and
  // everything from TAPs nobody owns, is dropped.
  EXPECT_EQ(ChainOf(*script, "bridge", "prerouting"),
            "  chain prerouting {\n"
            "    type filter hook prerouting priority filter; policy accept;\n"
            "    iifname . ether saddr . ip saddr @l2_ip accept\n"
            "    iifname . ether saddr . arp saddr ether . arp saddr ip @l2_arp accept\n"
            "    iifname @taps drop\n"
            "    iifname \"smv*\" drop");
  EXPECT_EQ(ElementsOf(*script, "bridge", "l2_ip"),
            (std::set<std::string>{
                "\"smv0ac80002\" . 02:53:0a:c8:00:02 . 10.200.0.2 comment \"vm vm-a\"",
                "\"smv0ac80003\" . 02:53:0a:c8:00:03 . 10.200.0.3 comment \"vm vm-b\""}));
  EXPECT_EQ(ElementsOf(*script, "bridge", "l2_arp"),
            (std::set<std::string>{"\"smv0ac80002\" . 02:53:0a:c8:00:02 . 02:53:0a:c8:00:02 . "
                                   "10.200.0.2 comment \"vm vm-a\"",
                                   "\"smv0ac80003\" . 02:53:0a:c8:00:03 . 02:53:0a:c8:00:03 . "
                                   "10.200.0.3 comment \"vm vm-b\""}));
  EXPECT_EQ(ElementsOf(*script, "bridge", "taps"),
            (std::set<std::string>{"\"smv0ac80002\" comment \"vm vm-a\"",
                                   "\"smv0ac80003\" comment \"vm vm-b\""}));
  // No rules, no chains per VM.
  EXPECT_THAT(*script, Not(HasSubstr("jump")));
  EXPECT_THAT(*script, Not(HasSubstr("add rule")));
  EXPECT_THAT(*script, Not(HasSubstr("add chain")));

  FirewallState state = TwoVms();
  state.tap_prefix = "";
  state.vms[0].mac = "02:AA:BB:CC:DD:EE";
  script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("\"smv*\"")));
  EXPECT_THAT(ElementsOf(*script, "bridge", "l2_ip"),
              Contains("\"smv0ac80002\" . 02:aa:bb:cc:dd:ee . 10.200.0.2 comment \"vm vm-a\""));
  EXPECT_THAT(ElementsOf(*script, "bridge", "l2_arp"),
              Contains("\"smv0ac80002\" . 02:aa:bb:cc:dd:ee . 02:aa:bb:cc:dd:ee . 10.200.0.2 "
                       "comment \"vm vm-a\""));
}

TEST(RenderNftRulesetTest, ForwardChainPolicesOnlyTheBridge) {
  auto script = RenderNftRuleset(TwoVms());
  ASSERT_THAT(script, IsOk());
  const std::string chain = ChainOf(*script, "inet", "forward");
  EXPECT_TRUE(absl::StartsWith(
      chain,
      "  chain forward {\n"
      "    type filter hook forward priority filter; policy accept;\n"
      "    ct state established ct direction reply accept\n"
      "    ct state related ct direction reply accept\n"
      "    iifname \"smolbr0\" ip daddr 10.200.0.0/24 drop\n"
      // A VM's own deny list, by prefix length, before any of its accepts.
      "    iifname \"smolbr0\" ip saddr . ip daddr @vm_deny_32 drop\n"
      "    iifname \"smolbr0\" ip saddr . ip daddr & 255.255.255.254 @vm_deny_31 drop\n"))
      << chain;
  EXPECT_THAT(chain,
              HasSubstr("    iifname \"smolbr0\" ip saddr . ip daddr & 0.0.0.0 @vm_deny_0 drop\n"
                        "    iifname \"smolbr0\" ip saddr @egress_open accept\n"
                        "    iifname \"smolbr0\" ip saddr . ip daddr @allow_32 accept\n"
                        "    iifname \"smolbr0\" ip saddr . ip daddr & 255.255.255.254 @allow_31 "
                        "accept\n"))
      << chain;
  // Restricted egress: one lookup per prefix length, the masked
  // destination in the set of that length.
  int lookups = 0;
  for (absl::string_view line : absl::StrSplit(chain, '\n')) {
    lookups += absl::StrContains(line, "@allow_") ? 1 : 0;
  }
  EXPECT_EQ(lookups, 33);
  EXPECT_THAT(chain, HasSubstr("    iifname \"smolbr0\" ip saddr . ip daddr & 255.255.0.0 "
                               "@allow_16 accept\n"));
  EXPECT_TRUE(absl::EndsWith(
      chain,
      "    iifname \"smolbr0\" ip saddr . ip daddr & 0.0.0.0 @allow_0 accept\n"
      "    iifname \"smolbr0\" drop\n"
      "    oifname \"smolbr0\" ct status dnat ip daddr . meta l4proto . th dport @ingress "
      "accept\n"
      "    oifname \"smolbr0\" drop"))
      << chain;
  // vm-a is open, vm-b (off) has no egress element.
  EXPECT_EQ(ElementsOf(*script, "inet", "egress_open"),
            (std::set<std::string>{"10.200.0.2 comment \"vm vm-a\""}));
  EXPECT_THAT(*script, Not(HasSubstr("add element inet smolvmd allow_")));
  EXPECT_THAT(*script, HasSubstr("  set allow_24 {\n    type ipv4_addr . ipv4_addr\n  }\n"));
}

TEST(RenderNftRulesetTest, EgressModes) {
  FirewallState state = TwoVms();
  VmFirewallEntry restricted = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  restricted.egress.allow_cidrs = {"8.8.8.8/32", "192.168.1.7/24", "10.0.0.0/8",
                                   "10.1.0.0/16", "8.8.8.8"};
  state.vms.push_back(restricted);
  state.vms.push_back(Vm("vm-d", 0x0ac80005, EgressMode::kRestricted));  // Nothing allowed.
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());

  // Open: vm-a only; off (vm-b) and restricted to nothing (vm-d): no
  // element anywhere, so they fall to the drop.
  EXPECT_EQ(ElementsOf(*script, "inet", "egress_open"),
            (std::set<std::string>{"10.200.0.2 comment \"vm vm-a\""}));
  // Canonical, de-duplicated, covered ranges dropped; each network in the
  // set of its prefix length.
  EXPECT_EQ(ElementsOf(*script, "inet", "allow_32"),
            (std::set<std::string>{"10.200.0.4 . 8.8.8.8 comment \"vm vm-c\""}));
  EXPECT_EQ(ElementsOf(*script, "inet", "allow_8"),
            (std::set<std::string>{"10.200.0.4 . 10.0.0.0 comment \"vm vm-c\""}));
  EXPECT_EQ(ElementsOf(*script, "inet", "allow_24"),
            (std::set<std::string>{"10.200.0.4 . 192.168.1.0 comment \"vm vm-c\""}));
  EXPECT_EQ(ElementsOf(*script, "inet", "allow_16"), std::set<std::string>{});
  EXPECT_THAT(*script, Not(HasSubstr("10.200.0.5 . ")));  // vm-d: none.
}

TEST(RenderNftRulesetTest, InputChainShutsTheHost) {
  auto script = RenderNftRuleset(TwoVms());
  ASSERT_THAT(script, IsOk());
  EXPECT_EQ(ChainOf(*script, "inet", "input"),
            "  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            "    iifname \"smolbr0\" ct state established ct direction reply accept\n"
            "    iifname \"smolbr0\" ct state related accept\n"
            "    iifname \"smolbr0\" drop");
}

TEST(RenderNftRulesetTest, PortForwards) {
  FirewallState state = TwoVms();
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  state.vms[0].forwards.push_back({"192.0.2.7", 8080, 80, "tcp"});  // The same guest port.
  state.vms[1].forwards.push_back({"0.0.0.0", 5353, 53, "udp"});
  state.output_dnat_ips = {0x7f000001};  // 127.0.0.1
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  // DNAT through the maps keyed by the forwards.
  EXPECT_EQ(ChainOf(*script, "inet", "prerouting"),
            "  chain prerouting {\n"
            "    type nat hook prerouting priority dstnat; policy accept;\n"
            "    dnat ip to ip daddr . meta l4proto . th dport map @dnat_addr\n"
            "    meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map "
            "@dnat_any");
  EXPECT_EQ(ChainOf(*script, "inet", "output"),
            "  chain output {\n"
            "    type nat hook output priority -100; policy accept;\n"
            "    dnat ip to ip daddr . meta l4proto . th dport map @out_addr\n"
            "    meta nfproto ipv4 fib daddr type local dnat ip to meta l4proto . th dport map "
            "@out_any");
  EXPECT_THAT(*script, HasSubstr("  map dnat_addr {\n    type ipv4_addr . inet_proto . "
                                 "inet_service : ipv4_addr . inet_service\n  }\n"));
  EXPECT_THAT(*script, HasSubstr("  map dnat_any {\n    type inet_proto . inet_service : "
                                 "ipv4_addr . inet_service\n  }\n"));
  EXPECT_EQ(ElementsOf(*script, "inet", "dnat_addr"),
            (std::set<std::string>{
                "127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80",
                "192.0.2.7 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80"}));
  EXPECT_EQ(ElementsOf(*script, "inet", "dnat_any"),
            (std::set<std::string>{"udp . 5353 comment \"vm vm-b\" : 10.200.0.3 . 53"}));
  // Connections made on the host: only to the listed addresses.
  EXPECT_EQ(ElementsOf(*script, "inet", "out_addr"),
            (std::set<std::string>{
                "127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80"}));
  EXPECT_THAT(*script, Not(HasSubstr("smolvmd out_any {")));
  // Only DNATed connections reach the guests, on the forwarded ports (two
  // forwards to one port: one element).
  EXPECT_EQ(ElementsOf(*script, "inet", "ingress"),
            (std::set<std::string>{"10.200.0.2 . tcp . 80 comment \"vm vm-a\"",
                                   "10.200.0.3 . udp . 53 comment \"vm vm-b\""}));
}

TEST(RenderNftRulesetTest, OutputDnatFollowsTheListedHostAddresses) {
  FirewallState state = TwoVms();
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  state.vms[0].forwards.push_back({"192.0.2.7", 8080, 80, "tcp"});
  state.vms[1].forwards.push_back({"0.0.0.0", 5353, 53, "udp"});
  // The out_* map elements.
  auto output_of = [&](std::vector<uint32_t> ips) {
    state.output_dnat_ips = std::move(ips);
    auto script = RenderNftRuleset(state);
    EXPECT_THAT(script, IsOk());
    std::string out;
    for (absl::string_view line : absl::StrSplit(script.ok() ? *script : "", '\n')) {
      if (absl::StartsWith(line, "add element inet smolvmd out_")) absl::StrAppend(&out, line, "\n");
    }
    return out;
  };
  // None listed: no output DNAT at all; prerouting is unaffected.
  EXPECT_EQ(output_of({}), "");
  // 0.0.0.0 forwards only when 0 is listed; a listed 0 does not make other
  // addresses' forwards capture the host's traffic.
  EXPECT_EQ(output_of({0}),
            "add element inet smolvmd out_any { udp . 5353 comment \"vm vm-b\" : 10.200.0.3 . "
            "53 }\n");
  EXPECT_EQ(output_of({0xc0000207, 0x7f000001}),
            "add element inet smolvmd out_addr { 127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : "
            "10.200.0.2 . 80, 192.0.2.7 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80 }\n");
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, HasSubstr("dnat_any { udp . 5353 comment \"vm vm-b\" : 10.200.0.3 . 53 }"));
}

TEST(RenderNftRulesetTest, DenyCidrsCloseEveryEgressMode) {
  FirewallState state = TwoVms();
  VmFirewallEntry restricted = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  restricted.egress.allow_cidrs = {"169.254.169.254", "8.8.8.8"};
  state.vms.push_back(restricted);
  state.deny_cidrs = {"169.254.0.0/16", "192.168.1.77/24", "169.254.169.254", "10.9.9.9"};
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  // Canonical, covered entries dropped, in one set, dropped after the VM
  // subnet (and the VMs' own deny lists) and before any egress (open or
  // allowed) is accepted.
  EXPECT_THAT(*script, HasSubstr("  set deny {\n    type ipv4_addr\n    flags interval\n"
                                 "    elements = { 10.9.9.9, 169.254.0.0/16, 192.168.1.0/24 }\n"
                                 "  }\n"));
  EXPECT_THAT(ChainOf(*script, "inet", "forward"),
              HasSubstr("    iifname \"smolbr0\" ip saddr . ip daddr & 0.0.0.0 @vm_deny_0 drop\n"
                        "    iifname \"smolbr0\" ip daddr @deny drop\n"
                        "    iifname \"smolbr0\" ip saddr @egress_open accept\n"));
  // The allow list holds what it names; the deny rule before it wins.
  EXPECT_EQ(ElementsOf(*script, "inet", "allow_32"),
            (std::set<std::string>{"10.200.0.4 . 8.8.8.8 comment \"vm vm-c\"",
                                   "10.200.0.4 . 169.254.169.254 comment \"vm vm-c\""}));
  // Without deny_cidrs, no deny set or rule.
  state.deny_cidrs.clear();
  script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("set deny")));
  EXPECT_THAT(*script, Not(HasSubstr("@deny")));

  // A bad deny entry is the operator's: nothing is rendered.
  for (const char* bad : {"169.254.0.0/33", "010.0.0.0/8", " 1.2.3.4", "fe80::/10"}) {
    state.deny_cidrs = {bad};
    EXPECT_THAT(RenderNftRulesetLenient(state),
                StatusIs(absl::StatusCode::kInvalidArgument, "firewall deny_cidrs"))
        << bad;
  }
}

TEST(RenderNftRulesetTest, ResolverForOpenEgressOnlyEvenWhenDenied) {
  FirewallState state = TwoVms();
  state.dns = 0xc0a80135;  // 192.168.1.53
  state.deny_cidrs = {"192.168.0.0/16"};
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  // Past the subnet drop (no VM reaches another through it) and the VMs'
  // own deny lists (a VM may cut its DNS), before the operator's deny
  // drop, and only for the guests in egress_open.
  const std::string chain = ChainOf(*script, "inet", "forward");
  EXPECT_LT(chain.find("ip daddr 10.200.0.0/24 drop"), chain.find("@vm_deny_32 drop")) << chain;
  EXPECT_THAT(chain,
              HasSubstr("    iifname \"smolbr0\" ip saddr . ip daddr & 0.0.0.0 @vm_deny_0 drop\n"
                        "    iifname \"smolbr0\" ip saddr @egress_open ip daddr 192.168.1.53 "
                        "udp dport 53 accept\n"
                        "    iifname \"smolbr0\" ip saddr @egress_open ip daddr 192.168.1.53 "
                        "tcp dport 53 accept\n"
                        "    iifname \"smolbr0\" ip daddr @deny drop\n"));
  state.dns = 0;
  script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("dport 53")));
}

// VMs with domain rules: their DNS to any address goes to the resolver,
// which alone the input chain lets them reach; DNS over TLS/QUIC is
// dropped; what the resolver learned opens new connections, and keeps
// open ones going, after every drop and before the final one.
FirewallState WithDomainRules() {
  FirewallState state = TwoVms();
  state.dns_proxy_ip = 0x0ac80001;  // The gateway.
  state.dns_proxy_port = 5300;
  state.deny_cidrs = {"192.168.0.0/16"};
  VmFirewallEntry vm = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  vm.egress.allow_domains = {"pypi.org"};
  state.vms.push_back(vm);
  return state;
}

TEST(RenderNftRulesetTest, DomainRulesSendDnsToTheResolver) {
  FirewallState state = WithDomainRules();
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(ElementsOf(*script, "inet", "dns_filtered"),
              ElementsAre("10.200.0.4 comment \"vm vm-c\""));
  EXPECT_THAT(ChainOf(*script, "inet", "prerouting"),
              HasSubstr("iifname \"smolbr0\" ip saddr @dns_filtered meta l4proto { tcp, udp } "
                        "th dport 53 dnat ip to 10.200.0.1:5300\n"));
  const std::string input = ChainOf(*script, "inet", "input");
  EXPECT_LT(input.find("ip saddr @dns_filtered ip daddr 10.200.0.1 meta l4proto { tcp, udp } "
                       "th dport 5300 accept"),
            input.find("iifname \"smolbr0\" drop"))
      << input;
  const std::string forward = ChainOf(*script, "inet", "forward");
  const size_t dot = forward.find("ip saddr @dns_filtered meta l4proto { tcp, udp } th dport 853 drop");
  const size_t learned =
      forward.find("ip saddr . ip daddr @dns_allow update @dns_active { ip saddr . ip daddr "
                   "timeout 300s }\n");
  const size_t active = forward.find(
      "ct state established ip saddr . ip daddr @dns_active update @dns_active");
  // Accepts of their own, after the updates (a full set fails an update).
  EXPECT_LT(learned, forward.find("ip saddr . ip daddr @dns_allow accept"));
  EXPECT_LT(active, forward.find("ct state established ip saddr . ip daddr @dns_active accept"));
  ASSERT_NE(dot, std::string::npos) << forward;
  ASSERT_NE(learned, std::string::npos) << forward;
  ASSERT_NE(active, std::string::npos) << forward;
  EXPECT_LT(forward.find("@vm_deny_0 drop"), dot);
  EXPECT_LT(forward.find("ip daddr @deny drop"), learned) << "the operator's deny comes first";
  EXPECT_LT(forward.find("@allow_0 accept"), learned);
  EXPECT_LT(active, forward.find("iifname \"smolbr0\" drop\n")) << forward;
  EXPECT_THAT(*script, HasSubstr("set dns_allow {\n    type ipv4_addr . ipv4_addr\n    flags timeout"));

  // Without a resolver a VM with domain rules is left out (its TAP sends
  // nothing), not opened or let around the rules; others are unaffected.
  state.dns_proxy_ip = 0;
  state.dns_proxy_port = 0;
  auto lenient = RenderNftRulesetLenient(state);
  ASSERT_THAT(lenient, IsOk());
  ASSERT_EQ(lenient->rejected.size(), 1u);
  EXPECT_THAT(lenient->rejected.at("vm-c"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "resolver"));
  EXPECT_THAT(lenient->script, Not(HasSubstr("dns_filtered drop")));
  EXPECT_THAT(lenient->script, Not(HasSubstr("dnat ip to 10.200.0.1")));
  // Half a resolver is a bad global setting.
  state.dns_proxy_port = 53;
  EXPECT_THAT(RenderNftRuleset(state), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RenderLearnedScriptTest, RefreshesAndClampsTimeouts) {
  EXPECT_EQ(RenderLearnedScript("smolvmd", 0x0ac80004, "vm-c", {}), "");
  const std::string add0 =
      "add element inet smolvmd dns_allow { 10.200.0.4 . 1.2.3.4 timeout 60s comment "
      "\"vm vm-c\" }\n";
  const std::string add1 =
      "add element inet smolvmd dns_allow { 10.200.0.4 . 5.6.7.8 timeout 3600s comment "
      "\"vm vm-c\" }\n";
  EXPECT_EQ(RenderLearnedScript("smolvmd", 0x0ac80004, "vm-c",
                                {{0x01020304, 0}, {0x05060708, 86400}}),
            add0 + add1 +
                "delete element inet smolvmd dns_allow { 10.200.0.4 . 1.2.3.4 }\n"
                "delete element inet smolvmd dns_allow { 10.200.0.4 . 5.6.7.8 }\n" +
                add0 + add1);
  EXPECT_EQ(RenderLearnedScript("smolvmd", 0x0ac80004, "vm-c", {{0x01020304, 120}}),
            absl::StrReplaceAll(add0 + "delete element inet smolvmd dns_allow { 10.200.0.4 . "
                                       "1.2.3.4 }\n" + add0,
                                {{"timeout 60s", "timeout 120s"}}));
  EXPECT_EQ(RenderForgetScript("smolvmd", 0x0ac80004, {}), "");
  EXPECT_EQ(RenderForgetScript("smolvmd", 0x0ac80004, {0x01020304}),
            "add element inet smolvmd dns_allow { 10.200.0.4 . 1.2.3.4 timeout 1s }\n"
            "delete element inet smolvmd dns_allow { 10.200.0.4 . 1.2.3.4 }\n"
            "add element inet smolvmd dns_active { 10.200.0.4 . 1.2.3.4 timeout 1s }\n"
            "delete element inet smolvmd dns_active { 10.200.0.4 . 1.2.3.4 }\n");
}

TEST(RenderNftRulesetTest, BadEntriesAreLeftOutAndReported) {
  FirewallState state = TwoVms();
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  VmFirewallEntry bad_cidr = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  bad_cidr.egress.allow_cidrs = {"1.2.3.4/33"};
  VmFirewallEntry same_ip = Vm("vm-d", kVm1, EgressMode::kOpen);  // vm-a's address.
  same_ip.tap = "smvother";
  VmFirewallEntry same_port = Vm("vm-e", 0x0ac80006, EgressMode::kOpen);
  same_port.forwards.push_back({"0.0.0.0", 8080, 81, "tcp"});  // vm-a forwards it.
  VmFirewallEntry own_clash = Vm("vm-f", 0x0ac80007, EgressMode::kOpen);
  own_clash.forwards = {{"127.0.0.1", 9000, 80, "udp"}, {"127.0.0.1", 9000, 81, "udp"}};
  VmFirewallEntry bad_mac = Vm("vm-g", 0x0ac80008, EgressMode::kOpen);
  bad_mac.mac = "zz:53:0a:c8:00:08";
  VmFirewallEntry good = Vm("vm-h", 0x0ac80009, EgressMode::kOpen);
  good.forwards.push_back({"127.0.0.1", 9000, 80, "udp"});  // vm-f's was not taken.
  for (auto* vm : {&bad_cidr, &same_ip, &same_port, &own_clash, &bad_mac, &good}) {
    state.vms.push_back(*vm);
  }

  auto rendered = RenderNftRulesetLenient(state);
  ASSERT_THAT(rendered, IsOk());
  const auto& rejected = rendered->rejected;
  EXPECT_EQ(rejected.size(), 5u);
  EXPECT_THAT(rejected.at("vm-c"),
              StatusIs(absl::StatusCode::kInvalidArgument, "egress allow_cidrs of vm vm-c"));
  EXPECT_THAT(rejected.at("vm-d"), StatusIs(absl::StatusCode::kInvalidArgument, "used twice"));
  EXPECT_THAT(rejected.at("vm-e"),
              StatusIs(absl::StatusCode::kAlreadyExists, "0.0.0.0:8080/tcp of vm vm-e"));
  EXPECT_THAT(rejected.at("vm-f"),
              StatusIs(absl::StatusCode::kAlreadyExists, "127.0.0.1:9000/udp of vm vm-f"));
  EXPECT_THAT(rejected.at("vm-g"), StatusIs(absl::StatusCode::kInvalidArgument, "invalid mac"));

  // The others are rendered in full; nothing of the rejected ones is.
  const std::string& script = rendered->script;
  EXPECT_EQ(ElementsOf(script, "bridge", "taps"),
            (std::set<std::string>{"\"smv0ac80002\" comment \"vm vm-a\"",
                                   "\"smv0ac80003\" comment \"vm vm-b\"",
                                   "\"smv0ac80009\" comment \"vm vm-h\""}));
  EXPECT_EQ(ElementsOf(script, "inet", "egress_open"),
            (std::set<std::string>{"10.200.0.2 comment \"vm vm-a\"",
                                   "10.200.0.9 comment \"vm vm-h\""}));
  for (const char* id : {"vm-c", "vm-d", "vm-e", "vm-f", "vm-g"}) {
    EXPECT_THAT(script, Not(HasSubstr(std::string("\"vm ") + id + "\""))) << id;
  }
  for (const char* ip : {"10.200.0.4 ", "10.200.0.6 ", "10.200.0.7 ", "10.200.0.8 "}) {
    EXPECT_THAT(script, Not(HasSubstr(ip))) << ip;
  }
  EXPECT_EQ(ElementsOf(script, "inet", "dnat_addr"),
            (std::set<std::string>{
                "127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80",
                "127.0.0.1 . udp . 9000 comment \"vm vm-h\" : 10.200.0.9 . 80"}));
  // Rejected VMs' TAPs fall through to the catch-all drop.
  EXPECT_TRUE(absl::EndsWith(ChainOf(script, "bridge", "prerouting"),
                             "    iifname \"smv*\" drop"));

  // The strict render fails with the first rejected entry.
  EXPECT_THAT(RenderNftRuleset(state),
              StatusIs(absl::StatusCode::kInvalidArgument, "egress allow_cidrs of vm vm-c"));
  // Global problems fail the lenient render too.
  state.bridge = "bad bridge";
  EXPECT_THAT(RenderNftRulesetLenient(state),
              StatusIs(absl::StatusCode::kInvalidArgument, "invalid bridge name"));
}

TEST(RenderNftRulesetTest, Masquerade) {
  FirewallState state = TwoVms();
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_EQ(ChainOf(*script, "inet", "postrouting"),
            "  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            "    ip saddr 10.200.0.0/24 oifname \"eth0\" masquerade\n"
            "    oifname \"smolbr0\" ct status dnat masquerade");
  state.uplink = "";
  script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("ip saddr 10.200.0.0/24 oifname")));
  EXPECT_THAT(*script, HasSubstr("oifname \"smolbr0\" ct status dnat masquerade"));
}

TEST(RenderNftRulesetTest, NoVms) {
  FirewallState state = TwoVms();
  state.vms.clear();
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("add element")));
  EXPECT_THAT(*script, HasSubstr("iifname \"smolbr0\" drop"));
}

TEST(RenderNftRulesetTest, RejectsWhatNftMustNotSee) {
  struct Case {
    std::string label;
    std::function<void(FirewallState&)> mutate;
    absl::StatusCode code;
    std::string message;
  };
  using C = absl::StatusCode;
  const std::vector<Case> cases = {
      {"bad cidr", [](FirewallState& s) {
         s.vms[0].egress = {EgressMode::kRestricted, {"1.2.3.4/33"}};
       }, C::kInvalidArgument, "egress allow_cidrs of vm vm-a"},
      {"hostname cidr", [](FirewallState& s) {
         s.vms[0].egress = {EgressMode::kRestricted, {"example.com"}};
       }, C::kInvalidArgument, "example.com"},
      {"injection in cidr", [](FirewallState& s) {
         s.vms[0].egress = {EgressMode::kRestricted, {"1.2.3.4 } accept; #"}};
       }, C::kInvalidArgument, "vm-a"},
      {"protocol", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"127.0.0.1", 80, 80, "sctp"});
       }, C::kInvalidArgument, "protocol \"sctp\""},
      {"host port", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"127.0.0.1", 0, 80, "tcp"});
       }, C::kInvalidArgument, "host_port"},
      {"guest port", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"127.0.0.1", 80, 70000, "tcp"});
       }, C::kInvalidArgument, "guest_port"},
      {"host ip", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"localhost", 80, 80, "tcp"});
       }, C::kInvalidArgument, "localhost"},
      {"same host port", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"127.0.0.1", 80, 80, "tcp"});
         s.vms[1].forwards.push_back({"127.0.0.1", 80, 81, "tcp"});
       }, C::kAlreadyExists, "127.0.0.1:80/tcp of vm vm-b"},
      {"any address overlaps", [](FirewallState& s) {
         s.vms[0].forwards.push_back({"127.0.0.1", 80, 80, "tcp"});
         s.vms[1].forwards.push_back({"0.0.0.0", 80, 81, "tcp"});
       }, C::kAlreadyExists, "0.0.0.0:80/tcp"},
      {"ip outside subnet", [](FirewallState& s) { s.vms[0].ip = 0x0ac90002; },
       C::kInvalidArgument, "not a guest address of 10.200.0.0/24"},
      {"gateway ip", [](FirewallState& s) { s.vms[0].ip = 0x0ac80001; },
       C::kInvalidArgument, "10.200.0.1 is not a guest address"},
      {"duplicate ip", [](FirewallState& s) { s.vms[1].ip = kVm1; },
       C::kInvalidArgument, "used twice"},
      {"duplicate tap", [](FirewallState& s) { s.vms[1].tap = s.vms[0].tap; },
       C::kInvalidArgument, "used twice"},
      {"tap name", [](FirewallState& s) { s.vms[0].tap = "tap\"; flush ruleset"; },
       C::kInvalidArgument, "invalid tap name"},
      {"vm id", [](FirewallState& s) { s.vms[0].vm_id = "a\"b"; },
       C::kInvalidArgument, "vm_id"},
      {"mac", [](FirewallState& s) { s.vms[0].mac = "02:53:0a"; },
       C::kInvalidArgument, "invalid mac"},
      {"bridge", [](FirewallState& s) { s.bridge = ""; }, C::kInvalidArgument,
       "invalid bridge name"},
      {"uplink", [](FirewallState& s) { s.uplink = "eth 0"; }, C::kInvalidArgument,
       "invalid uplink name"},
      {"table", [](FirewallState& s) { s.table = "smol-vmd"; }, C::kInvalidArgument,
       "table name"},
      {"subnet", [](FirewallState& s) { s.subnet = {0x0ac80001, 24}; }, C::kInvalidArgument,
       "subnet"},
  };
  for (const Case& c : cases) {
    FirewallState state = TwoVms();
    c.mutate(state);
    EXPECT_THAT(RenderNftRuleset(state), StatusIs(c.code, c.message)) << c.label;
  }
}

// Applies rendered rulesets for real, in a throwaway network namespace.
class NftFirewallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = ScopedNetns::MissingPrerequisite(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    auto netns = ScopedNetns::Create();
    ASSERT_THAT(netns, IsOk());
    netns_ = *std::move(netns);
    auto firewall = NftFirewall::Create(netns_->name());
    ASSERT_THAT(firewall, IsOk());
    firewall_ = *std::move(firewall);
  }

  std::string ListTable(const std::string& family) {
    auto listed = netns_->Exec({"nft", "list", "table", family, "smolvmd"});
    return listed.ok() ? *listed : "";
  }

  // Both tables as "<block>: <line>" entries, map elements one by one:
  // equal for equal rules whatever order they were added in.
  std::multiset<std::string> Normalized() {
    std::multiset<std::string> out;
    for (const char* family : {"bridge", "inet"}) {
      std::string block;
      for (absl::string_view line : absl::StrSplit(ListTable(family), '\n')) {
        line = absl::StripAsciiWhitespace(line);
        if (absl::EndsWith(line, "{") && !absl::StartsWith(line, "elements")) {
          block = absl::StrCat(family, " ", line);
          continue;
        }
        absl::ConsumePrefix(&line, "elements = {");
        absl::ConsumeSuffix(&line, "}");
        for (absl::string_view part : absl::StrSplit(line, ',', absl::SkipWhitespace())) {
          out.insert(absl::StrCat(block, ": ", absl::StripAsciiWhitespace(part)));
        }
      }
    }
    return out;
  }

  std::unique_ptr<ScopedNetns> netns_;
  std::unique_ptr<NftFirewall> firewall_;
};

TEST_F(NftFirewallTest, AppliesIdempotentlyAndRemoves) {
  FirewallState state = TwoVms();
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  state.vms[1].forwards.push_back({"0.0.0.0", 5353, 53, "udp"});
  VmFirewallEntry restricted = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  restricted.egress.allow_cidrs = {"8.8.8.8", "10.0.0.0/8"};
  state.vms.push_back(restricted);

  auto applied = firewall_->Apply(state);
  ASSERT_THAT(applied, IsOk());
  EXPECT_TRUE(applied->empty());
  std::string first = ListTable("inet");
  for (const char* block : {"chain forward", "chain input", "chain prerouting",
                            "chain output", "chain postrouting", "set egress_open",
                            "set allow_8", "set ingress", "map dnat_addr"}) {
    EXPECT_THAT(first, HasSubstr(block));
  }
  EXPECT_THAT(first, HasSubstr("10.200.0.4 . 10.0.0.0 comment \"vm vm-c\""));
  EXPECT_THAT(first, HasSubstr("127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80"));
  EXPECT_THAT(ListTable("bridge"),
              HasSubstr("\"smv0ac80002\" . 02:53:0a:c8:00:02 . 02:53:0a:c8:00:02 . 10.200.0.2"));

  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_EQ(ListTable("inet"), first);  // Replaced, not appended to.

  // A smaller state replaces the larger one.
  state.vms.pop_back();
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("10.200.0.4")));

  // A bad entry never reaches nft, and does not hold back the others.
  FirewallState bad = state;
  bad.vms[0].egress = {EgressMode::kRestricted, {"300.1.1.1/8"}};
  bad.vms[1].egress = {EgressMode::kOpen, {}};
  auto rejected = firewall_->Apply(bad);
  ASSERT_THAT(rejected, IsOk());
  ASSERT_EQ(rejected->size(), 1u);
  EXPECT_THAT(rejected->at("vm-a"), StatusIs(absl::StatusCode::kInvalidArgument, "300.1.1.1"));
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("10.200.0.2")));
  EXPECT_THAT(ListTable("inet"), HasSubstr("10.200.0.3 comment \"vm vm-b\""));
  EXPECT_THAT(ListTable("bridge"), Not(HasSubstr("10.200.0.2")));

  // A bad global setting fails the whole apply: the rules in force stay.
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  std::string before = ListTable("inet");
  bad = state;
  bad.deny_cidrs = {"169.254.0.0/99"};
  EXPECT_THAT(firewall_->Apply(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(ListTable("inet"), before);

  // What nft sees of deny_cidrs and output DNAT.
  state.deny_cidrs = {"169.254.0.0/16", "192.168.0.0/16"};
  state.output_dnat_ips = {0x7f000001};
  auto with_deny = firewall_->Apply(state);
  ASSERT_THAT(with_deny, IsOk());
  EXPECT_TRUE(with_deny->empty());
  std::string listed = ListTable("inet");
  EXPECT_THAT(listed, HasSubstr("elements = { 169.254.0.0/16, 192.168.0.0/16 }"));
  EXPECT_THAT(listed, HasSubstr("ip daddr @deny drop"));
  size_t output = listed.find("map out_addr {");
  ASSERT_NE(output, std::string::npos) << listed;
  std::string output_map = listed.substr(output, listed.find("}", output) - output);
  EXPECT_THAT(output_map,
              HasSubstr("127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : 10.200.0.2 . 80"));
  EXPECT_THAT(output_map, Not(HasSubstr("5353")));

  ASSERT_THAT(firewall_->Remove("smolvmd"), IsOk());
  auto tables = netns_->Exec({"nft", "list", "tables"});
  ASSERT_THAT(tables, IsOk());
  EXPECT_THAT(*tables, Not(HasSubstr("smolvmd")));
  EXPECT_THAT(firewall_->Remove("smolvmd"), IsOk());  // Absent is fine.
}

TEST_F(NftFirewallTest, LearnedAddressesComeAndGo) {
  FirewallState state = WithDomainRules();
  auto applied = firewall_->Apply(state);
  ASSERT_THAT(applied, IsOk());
  EXPECT_TRUE(applied->empty());
  auto dns_set = [&](const char* name) {
    auto listed = netns_->Exec({"nft", "list", "set", "inet", "smolvmd", name});
    return listed.ok() ? *listed : listed.status().ToString();
  };
  const uint32_t guest = 0x0ac80004;
  ASSERT_THAT(firewall_->AllowLearned("smolvmd", guest, "vm-c", {{0x5db8d822, 30}}), IsOk());
  // Again, as a refresh of the same answer: no error for the element there.
  ASSERT_THAT(firewall_->AllowLearned("smolvmd", guest, "vm-c", {{0x5db8d822, 600}}), IsOk());
  EXPECT_THAT(dns_set("dns_allow"), HasSubstr("10.200.0.4 . 93.184.216.34 timeout 10m"));
  // A VM change with learned elements in place, then forgetting (twice:
  // what is gone already is no error).
  state.vms[0].egress.mode = EgressMode::kOff;
  ASSERT_TRUE(firewall_->AcceptsVmChanges(state));
  ASSERT_THAT(firewall_->ApplyVm(state, "vm-a"), IsOk());
  ASSERT_THAT(firewall_->ForgetLearned("smolvmd", guest, {0x5db8d822, 0x01020304}), IsOk());
  ASSERT_THAT(firewall_->ForgetLearned("smolvmd", guest, {0x5db8d822}), IsOk());
  EXPECT_THAT(dns_set("dns_allow"), Not(HasSubstr("93.184.216.34")));
  EXPECT_THAT(dns_set("dns_active"), Not(HasSubstr("93.184.216.34")));
  EXPECT_THAT(firewall_->AllowLearned("bad name!", guest, "vm-c", {{1, 1}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(NftFirewallTest, FailuresNameTheTableAndCarryNftsMessage) {
  FirewallState state = TwoVms();
  EXPECT_FALSE(firewall_->AcceptsVmChanges(state));  // Nothing applied yet.
  EXPECT_THAT(firewall_->ApplyVm(state, "vm-a"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "apply the whole state"));
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_TRUE(firewall_->AcceptsVmChanges(state));

  // Someone deleted our table: the change fails with nft's reason, and
  // until the next Apply no change is taken.
  ASSERT_THAT(netns_->Exec({"nft", "delete", "table", "inet", "smolvmd"}), IsOk());
  state.vms[0].egress.mode = EgressMode::kOff;
  absl::Status status = firewall_->ApplyVm(state, "vm-a").status();
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal,
                               "apply firewall rules of vm vm-a in table smolvmd"));
  EXPECT_THAT(status.message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(firewall_->AcceptsVmChanges(state));
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_TRUE(firewall_->AcceptsVmChanges(state));
  EXPECT_THAT(ListTable("inet"), HasSubstr("set egress_open"));
  EXPECT_THAT(ListTable("bridge"), HasSubstr("10.200.0.2 comment \"vm vm-a\""));
}

// Per-VM changes leave exactly the rules a whole Apply of the same state
// would.
TEST_F(NftFirewallTest, VmChangesEqualTheWholeRuleset) {
  FirewallState state = TwoVms();
  state.deny_cidrs = {"169.254.0.0/16"};
  state.output_dnat_ips = {0x7f000001, 0};
  state.dns = 0x0ac80001;
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  auto expect_same_as_whole = [&](const std::string& what) {
    std::multiset<std::string> incremental = Normalized();
    auto whole = NftFirewall::Create(netns_->name());
    ASSERT_THAT(whole, IsOk());
    ASSERT_THAT((*whole)->Apply(state), IsOk());
    EXPECT_EQ(incremental, Normalized()) << what;
    // Back to the incremental firewall's view (the same rules).
    ASSERT_THAT(firewall_->Apply(state), IsOk());
  };
  auto change = [&](const std::string& vm_id) {
    ASSERT_TRUE(firewall_->AcceptsVmChanges(state));
    auto rejected = firewall_->ApplyVm(state, vm_id);
    ASSERT_THAT(rejected, IsOk());
    EXPECT_TRUE(rejected->empty());
  };

  // Add a VM with forwards and a restricted egress.
  VmFirewallEntry c = Vm("vm-c", 0x0ac80004, EgressMode::kRestricted);
  c.egress.allow_cidrs = {"8.8.8.8", "10.0.0.0/8"};
  c.forwards = {{"0.0.0.0", 5353, 53, "udp"}, {"127.0.0.1", 9000, 90, "tcp"}};
  state.vms.push_back(c);
  change("vm-c");
  expect_same_as_whole("add");
  // Change its policy and forwards.
  state.vms[2].egress = {EgressMode::kOpen, {}};
  state.vms[2].forwards = {{"127.0.0.1", 9001, 90, "tcp"}};
  change("vm-c");
  expect_same_as_whole("update");
  // Back to restricted with another allow list (several prefix lengths,
  // one shared with the next list); two forwards to one guest
  // port, then one of them goes (its ingress element stays) and the other
  // changes its guest port under the same key.
  state.vms[2].egress = {EgressMode::kRestricted, {"10.0.0.0/8", "1.2.3.0/24"}};
  state.vms[2].forwards = {{"127.0.0.1", 9001, 90, "tcp"}, {"0.0.0.0", 9002, 90, "tcp"}};
  change("vm-c");
  expect_same_as_whole("update restricted");
  state.vms[2].egress = {EgressMode::kRestricted, {"1.2.3.0/24", "9.9.9.9"}};
  state.vms[2].forwards = {{"0.0.0.0", 9002, 91, "tcp"}};
  change("vm-c");
  expect_same_as_whole("update restricted again");
  state.vms[2].forwards = {{"0.0.0.0", 9002, 90, "tcp"}, {"127.0.0.1", 9001, 90, "tcp"}};
  change("vm-c");
  expect_same_as_whole("forwards back");
  // Move it to another address (and TAP).
  state.vms[2].ip = 0x0ac80005;
  state.vms[2].tap = TapNameFor(0x0ac80005);
  change("vm-c");
  expect_same_as_whole("move");
  // Remove a VM, then applying its absence again changes nothing.
  state.vms.erase(state.vms.begin());
  change("vm-a");
  change("vm-a");
  expect_same_as_whole("remove");
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("10.200.0.2 ")));
  EXPECT_THAT(ListTable("bridge"), Not(HasSubstr("0ac80002")));
  // And the restricted one, whose allow elements go too.
  state.vms.pop_back();
  change("vm-c");
  expect_same_as_whole("remove restricted");
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("vm-c")));
  EXPECT_THAT(ListTable("bridge"), Not(HasSubstr("vm-c")));
}

TEST_F(NftFirewallTest, BadVmChangesAreReportedAndLeaveTheVmOut) {
  FirewallState state = TwoVms();
  state.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  // vm-b asks for vm-a's host port: rejected, its rules go.
  state.vms[1].forwards.push_back({"0.0.0.0", 8080, 81, "tcp"});
  auto rejected = firewall_->ApplyVm(state, "vm-b");
  ASSERT_THAT(rejected, IsOk());
  ASSERT_EQ(rejected->size(), 1u);
  EXPECT_THAT(rejected->at("vm-b"), StatusIs(absl::StatusCode::kAlreadyExists, "vm vm-b"));
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("10.200.0.3")));
  EXPECT_THAT(ListTable("bridge"), Not(HasSubstr("10.200.0.3")));
  EXPECT_THAT(ListTable("inet"), HasSubstr("127.0.0.1 . tcp . 8080 comment \"vm vm-a\" : "
                                           "10.200.0.2 . 80"));
  // A bad entry taking vm-a's address is rejected too, vm-a keeps its rules.
  VmFirewallEntry d = Vm("vm-d", kVm1, EgressMode::kOpen);
  d.tap = "smvother";
  state.vms.push_back(d);
  rejected = firewall_->ApplyVm(state, "vm-d");
  ASSERT_THAT(rejected, IsOk());
  EXPECT_THAT(rejected->at("vm-d"), StatusIs(absl::StatusCode::kInvalidArgument, "used twice"));
  EXPECT_THAT(ListTable("inet"), HasSubstr("10.200.0.2 comment \"vm vm-a\""));
  EXPECT_THAT(ListTable("bridge"), Not(HasSubstr("smvother")));
  // A VM left out of a whole Apply needs whole Applies from then on (it
  // may fit again when another VM goes).
  state.vms.pop_back();
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_FALSE(firewall_->AcceptsVmChanges(state));
}

TEST(NftRulesetTest, VmChangeScripts) {
  FirewallState state = TwoVms();
  auto ruleset = NftRuleset::Render(state);
  ASSERT_THAT(ruleset, IsOk());
  EXPECT_TRUE(ruleset->AcceptsVmChanges(state));
  FirewallState other = state;
  other.uplink = "eth1";
  EXPECT_FALSE(ruleset->AcceptsVmChanges(other));

  // Add: only elements, one command per set.
  VmFirewallEntry c = Vm("vm-c", 0x0ac80004, EgressMode::kOff);
  c.forwards = {{"127.0.0.1", 8080, 80, "tcp"}};
  NftRuleset::VmChange add = ruleset->RenderVmChange("vm-c", &c);
  ASSERT_THAT(add.rejected, IsOk());
  EXPECT_EQ(add.script,
            "add element bridge smolvmd l2_ip { \"smv0ac80004\" . 02:53:0a:c8:00:04 . "
            "10.200.0.4 comment \"vm vm-c\" }\n"
            "add element bridge smolvmd l2_arp { \"smv0ac80004\" . 02:53:0a:c8:00:04 . "
            "02:53:0a:c8:00:04 . 10.200.0.4 comment \"vm vm-c\" }\n"
            "add element bridge smolvmd taps { \"smv0ac80004\" comment \"vm vm-c\" }\n"
            "add element inet smolvmd ingress { 10.200.0.4 . tcp . 80 comment \"vm vm-c\" }\n"
            "add element inet smolvmd dnat_addr { 127.0.0.1 . tcp . 8080 comment \"vm vm-c\" : "
            "10.200.0.4 . 80 }\n");
  ruleset->CommitVmChange();

  // Update: the elements that differ go, then the new ones come.
  c.egress.mode = EgressMode::kOpen;
  c.forwards = {{"127.0.0.1", 8081, 80, "tcp"}};
  NftRuleset::VmChange update = ruleset->RenderVmChange("vm-c", &c);
  ASSERT_THAT(update.rejected, IsOk());
  EXPECT_EQ(update.script,
            "delete element inet smolvmd dnat_addr { 127.0.0.1 . tcp . 8080 }\n"
            "add element inet smolvmd egress_open { 10.200.0.4 comment \"vm vm-c\" }\n"
            "add element inet smolvmd dnat_addr { 127.0.0.1 . tcp . 8081 comment \"vm vm-c\" : "
            "10.200.0.4 . 80 }\n");
  ruleset->CommitVmChange();
  // Nothing changed: nothing to do.
  EXPECT_EQ(ruleset->RenderVmChange("vm-c", &c).script, "");
  ruleset->CommitVmChange();

  // Restricted: the allow list's CIDRs (canonical) in the sets of their
  // prefix lengths, then only those that differ.
  c.egress = {EgressMode::kRestricted, {"8.8.8.8/32", "10.1.2.3/8"}};
  EXPECT_EQ(ruleset->RenderVmChange("vm-c", &c).script,
            "delete element inet smolvmd egress_open { 10.200.0.4 }\n"
            "add element inet smolvmd allow_8 { 10.200.0.4 . 10.0.0.0 comment \"vm vm-c\" }\n"
            "add element inet smolvmd allow_32 { 10.200.0.4 . 8.8.8.8 comment \"vm vm-c\" }\n");
  ruleset->CommitVmChange();
  c.egress = {EgressMode::kRestricted, {"10.0.0.0/8", "1.2.3.0/24"}};
  EXPECT_EQ(ruleset->RenderVmChange("vm-c", &c).script,
            "delete element inet smolvmd allow_32 { 10.200.0.4 . 8.8.8.8 }\n"
            "add element inet smolvmd allow_24 { 10.200.0.4 . 1.2.3.0 comment \"vm vm-c\" }\n");
  ruleset->CommitVmChange();

  // Another VM cannot take what vm-c holds now, but may take what it gave up.
  VmFirewallEntry d = Vm("vm-d", 0x0ac80005, EgressMode::kOpen);
  d.forwards = {{"0.0.0.0", 8081, 80, "tcp"}};
  EXPECT_THAT(ruleset->RenderVmChange("vm-d", &d).rejected,
              StatusIs(absl::StatusCode::kAlreadyExists, "vm vm-d"));
  d.forwards = {{"0.0.0.0", 8080, 80, "tcp"}};
  EXPECT_THAT(ruleset->RenderVmChange("vm-d", &d).rejected, IsOk());

  // Remove: every element, keys only.
  NftRuleset::VmChange remove = ruleset->RenderVmChange("vm-c", nullptr);
  EXPECT_EQ(remove.script,
            "delete element bridge smolvmd l2_ip { \"smv0ac80004\" . 02:53:0a:c8:00:04 . "
            "10.200.0.4 }\n"
            "delete element bridge smolvmd l2_arp { \"smv0ac80004\" . 02:53:0a:c8:00:04 . "
            "02:53:0a:c8:00:04 . 10.200.0.4 }\n"
            "delete element bridge smolvmd taps { \"smv0ac80004\" }\n"
            "delete element inet smolvmd allow_8 { 10.200.0.4 . 10.0.0.0 }\n"
            "delete element inet smolvmd allow_24 { 10.200.0.4 . 1.2.3.0 }\n"
            "delete element inet smolvmd ingress { 10.200.0.4 . tcp . 80 }\n"
            "delete element inet smolvmd dnat_addr { 127.0.0.1 . tcp . 8081 }\n");
  ruleset->CommitVmChange();
  EXPECT_EQ(ruleset->RenderVmChange("vm-c", nullptr).script, "");  // Gone already.
}

}  // namespace
}  // namespace smolvm::net
