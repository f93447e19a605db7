#include "lib/net/firewall.h"

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/net/netns_for_testing.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
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
  std::string chain = ChainOf(*script, "bridge", "prerouting");
  EXPECT_THAT(chain, HasSubstr("type filter hook prerouting priority filter; policy accept;"));
  EXPECT_THAT(chain, HasSubstr("iifname \"smv0ac80002\" ether saddr 02:53:0a:c8:00:02 "
                               "ip saddr 10.200.0.2 accept comment \"vm vm-a\""));
  EXPECT_THAT(chain, HasSubstr("iifname \"smv0ac80002\" ether saddr 02:53:0a:c8:00:02 "
                               "arp saddr ether 02:53:0a:c8:00:02 arp saddr ip 10.200.0.2 "
                               "accept"));
  EXPECT_THAT(chain, HasSubstr("iifname \"smv0ac80002\" drop"));
  EXPECT_THAT(chain, HasSubstr("iifname \"smv0ac80003\" drop"));
  // TAPs nobody owns, last.
  EXPECT_TRUE(absl::EndsWith(chain, "    iifname \"smv*\" drop")) << chain;

  FirewallState state = TwoVms();
  state.tap_prefix = "";
  state.vms[0].mac = "02:AA:BB:CC:DD:EE";
  script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  EXPECT_THAT(*script, Not(HasSubstr("\"smv*\"")));
  EXPECT_THAT(*script, HasSubstr("ether saddr 02:aa:bb:cc:dd:ee ip saddr 10.200.0.2"));
}

TEST(RenderNftRulesetTest, ForwardChainPolicesOnlyTheBridge) {
  auto script = RenderNftRuleset(TwoVms());
  ASSERT_THAT(script, IsOk());
  std::string chain = ChainOf(*script, "inet", "forward");
  EXPECT_THAT(chain, HasSubstr("type filter hook forward priority filter; policy accept;\n"
                               "    ct state established ct direction reply accept\n"
                               "    ct state related accept\n"
                               "    iifname \"smolbr0\" ip saddr 10.200.0.2 jump egress_0ac80002"
                               " comment \"vm vm-a\"\n"
                               "    iifname \"smolbr0\" ip saddr 10.200.0.3 jump egress_0ac80003"
                               " comment \"vm vm-b\"\n"
                               "    iifname \"smolbr0\" drop\n"
                               "    oifname \"smolbr0\" drop"));
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

  const std::string isolate = "    ip daddr 10.200.0.0/24 drop\n";
  EXPECT_EQ(ChainOf(*script, "inet", "egress_0ac80002"),
            "  chain egress_0ac80002 {\n" + isolate + "    accept");
  EXPECT_EQ(ChainOf(*script, "inet", "egress_0ac80003"),
            "  chain egress_0ac80003 {\n" + isolate + "    drop");
  // Canonical, de-duplicated, covered ranges dropped.
  EXPECT_EQ(ChainOf(*script, "inet", "egress_0ac80004"),
            "  chain egress_0ac80004 {\n" + isolate +
                "    ip daddr { 8.8.8.8, 10.0.0.0/8, 192.168.1.0/24 } accept\n    drop");
  EXPECT_EQ(ChainOf(*script, "inet", "egress_0ac80005"),
            "  chain egress_0ac80005 {\n" + isolate + "    drop");
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
  state.vms[1].forwards.push_back({"0.0.0.0", 5353, 53, "udp"});
  auto script = RenderNftRuleset(state);
  ASSERT_THAT(script, IsOk());
  const std::string dnat1 =
      "ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.200.0.2:80 comment \"vm vm-a\"";
  const std::string dnat2 =
      "meta nfproto ipv4 fib daddr type local udp dport 5353 dnat ip to 10.200.0.3:53 "
      "comment \"vm vm-b\"";
  for (const char* chain : {"prerouting", "output"}) {
    EXPECT_THAT(ChainOf(*script, "inet", chain), HasSubstr(dnat1)) << chain;
    EXPECT_THAT(ChainOf(*script, "inet", chain), HasSubstr(dnat2)) << chain;
  }
  EXPECT_THAT(ChainOf(*script, "inet", "prerouting"),
              HasSubstr("type nat hook prerouting priority dstnat; policy accept;"));
  EXPECT_THAT(ChainOf(*script, "inet", "output"),
              HasSubstr("type nat hook output priority -100; policy accept;"));
  std::string forward = ChainOf(*script, "inet", "forward");
  EXPECT_THAT(forward, HasSubstr("oifname \"smolbr0\" ip daddr 10.200.0.2 tcp dport 80 "
                                 "ct status dnat accept"));
  EXPECT_THAT(forward, HasSubstr("oifname \"smolbr0\" ip daddr 10.200.0.3 udp dport 53 "
                                 "ct status dnat accept"));
  // The accepts come before the bridge's catch-all drop.
  EXPECT_LT(forward.find("tcp dport 80"), forward.find("oifname \"smolbr0\" drop"));
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
  EXPECT_THAT(*script, Not(HasSubstr("egress_")));
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
    firewall_ = std::make_unique<NftFirewall>(netns_->prefix());
  }

  std::string ListTable(const std::string& family) {
    auto listed = netns_->Exec({"nft", "list", "table", family, "smolvmd"});
    return listed.ok() ? *listed : "";
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

  ASSERT_THAT(firewall_->Apply(state), IsOk());
  std::string first = ListTable("inet");
  for (const char* chain : {"chain forward", "chain input", "chain prerouting",
                            "chain output", "chain postrouting", "chain egress_0ac80002",
                            "chain egress_0ac80003", "chain egress_0ac80004"}) {
    EXPECT_THAT(first, HasSubstr(chain));
  }
  EXPECT_THAT(first, HasSubstr("dnat ip to 10.200.0.2:80"));
  EXPECT_THAT(ListTable("bridge"), HasSubstr("arp saddr ip 10.200.0.2"));

  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_EQ(ListTable("inet"), first);  // Replaced, not appended to.

  // A smaller state replaces the larger one.
  state.vms.pop_back();
  ASSERT_THAT(firewall_->Apply(state), IsOk());
  EXPECT_THAT(ListTable("inet"), Not(HasSubstr("egress_0ac80004")));

  // An invalid state never reaches nft: the rules in force stay.
  FirewallState bad = state;
  bad.vms[0].egress = {EgressMode::kRestricted, {"300.1.1.1/8"}};
  EXPECT_THAT(firewall_->Apply(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ListTable("inet"), HasSubstr("chain egress_0ac80002"));

  ASSERT_THAT(firewall_->Remove("smolvmd"), IsOk());
  auto tables = netns_->Exec({"nft", "list", "tables"});
  ASSERT_THAT(tables, IsOk());
  EXPECT_THAT(*tables, Not(HasSubstr("smolvmd")));
  EXPECT_THAT(firewall_->Remove("smolvmd"), IsOk());  // Absent is fine.
}

TEST_F(NftFirewallTest, FailuresNameTheTableAndCarryStderr) {
  // nft cannot be found: the error says what failed and why.
  NftFirewall broken({"ip", "netns", "exec", netns_->name(), "env", "PATH=/nonexistent"});
  absl::Status status = broken.Apply(TwoVms());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kInternal, "apply firewall table smolvmd"));
  EXPECT_THAT(status.message(), HasSubstr("nft"));
  EXPECT_THAT(status.message(), HasSubstr("No such file or directory"));
}

}  // namespace
}  // namespace smolvm::net
