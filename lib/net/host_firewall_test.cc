#include "lib/net/host_firewall.h"

#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/subprocess.h"
#include "lib/net/netns_for_testing.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr char kBridge[] = "svbr0";
constexpr char kAcceptIn[] = "-A DOCKER-USER -i svbr0 -m comment --comment smolvmd -j ACCEPT";
constexpr char kAcceptOut[] = "-A DOCKER-USER -o svbr0 -m comment --comment smolvmd -j ACCEPT";

// A stand-in for firewall-cmd, so that no test ever reaches a real
// firewalld (it listens on the system bus, which no network namespace
// separates). Its state is files in its directory: "running", "zone"
// (the bridge's runtime zone), "permanent" (in trusted permanently); every
// call is appended to "calls".
constexpr char kFakeFirewallCmd[] = R"sh(#!/bin/sh
d=$(dirname "$0")
echo "$*" >> "$d/calls"
case "$*" in
  --state)
    if [ -e "$d/running" ]; then echo running; exit 0; fi
    echo "not running"; exit 252;;
  --get-zone-of-interface=*)
    if [ -e "$d/zone" ]; then cat "$d/zone"; exit 0; fi
    echo "no zone"; exit 2;;
  "--zone=trusted --query-interface="*)
    if [ "$(cat "$d/zone" 2>/dev/null)" = trusted ]; then echo yes; exit 0; fi
    echo no; exit 1;;
  "--permanent --zone=trusted --query-interface="*)
    if [ -e "$d/permanent" ]; then echo yes; exit 0; fi
    echo no; exit 1;;
  "--zone=trusted --add-interface="*)
    echo trusted > "$d/zone"; echo success;;
  "--zone=trusted --remove-interface="*)
    rm -f "$d/zone"; echo success;;
  *) echo "unexpected: $*" >&2; exit 99;;
esac
)sh";

// The machine's own iptables rules (read only), to show they stay as they are.
std::string RootRules() {
  auto listed = RunSubprocess({"iptables", "-w", "10", "-S"});
  return listed.ok() ? absl::StrCat(listed->exit_code, ":", listed->stdout_text) : "error";
}

class HostFirewallTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = ScopedNetns::MissingPrerequisite(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    auto found = RunSubprocess({"sh", "-c", "command -v iptables"});
    if (!found.ok() || found->exit_code != 0) GTEST_SKIP() << "needs iptables";
    root_rules_ = RootRules();
    auto netns = ScopedNetns::Create();
    ASSERT_THAT(netns, IsOk());
    netns_ = *std::move(netns);
    bin_ = temp_.path();
    ASSERT_THAT(WriteFileAtomic(bin_ + "/firewall-cmd", kFakeFirewallCmd, 0755), IsOk());
    firewall_ = MakeFirewall(bin_ + ":/usr/sbin:/usr/bin:/sbin:/bin");
  }

  void TearDown() override {
    if (!root_rules_.empty()) {
      EXPECT_EQ(RootRules(), root_rules_) << "the machine's own iptables rules changed";
    }
  }

  std::unique_ptr<IptablesHostFirewall> MakeFirewall(const std::string& path) {
    std::vector<std::string> prefix = netns_->prefix();
    prefix.insert(prefix.end(), {"env", "PATH=" + path});
    return std::make_unique<IptablesHostFirewall>(prefix);
  }

  void Iptables(std::vector<std::string> args) {
    args.insert(args.begin(), {"iptables", "-w", "10"});
    ASSERT_THAT(netns_->Exec(args), IsOk());
  }

  // The rules of `chain` ("-A ..." lines) in the namespace.
  std::vector<std::string> Rules(const std::string& chain) {
    auto listed = netns_->Exec({"iptables", "-w", "10", "-S", chain});
    EXPECT_THAT(listed, IsOk());
    std::vector<std::string> rules;
    for (absl::string_view line : absl::StrSplit(listed.ok() ? *listed : "", '\n')) {
      if (absl::StartsWith(line, "-A ")) rules.emplace_back(line);
    }
    return rules;
  }

  std::string Calls() {
    auto calls = ReadFileToString(bin_ + "/calls");
    return calls.ok() ? *calls : "";
  }

  std::string root_rules_;
  smolvm_testing::TempDir temp_{"smolvm-host-fw-test"};
  std::string bin_;
  std::unique_ptr<ScopedNetns> netns_;
  std::unique_ptr<IptablesHostFirewall> firewall_;
};

TEST_F(HostFirewallTest, DockerUserGetsTheRules) {
  // What Docker sets up.
  Iptables({"-P", "FORWARD", "DROP"});
  Iptables({"-N", "DOCKER-USER"});
  Iptables({"-A", "DOCKER-USER", "-j", "RETURN"});
  Iptables({"-A", "FORWARD", "-j", "DOCKER-USER"});

  auto did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "iptables: added accept rules for bridge svbr0 in chain DOCKER-USER (docker)");
  EXPECT_THAT(Rules("DOCKER-USER"), ElementsAre(kAcceptIn, kAcceptOut, "-A DOCKER-USER -j RETURN"));
  EXPECT_THAT(Rules("FORWARD"), ElementsAre("-A FORWARD -j DOCKER-USER"));

  // Twice is a no-op.
  did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_THAT(*did, HasSubstr("kept accept rules"));
  EXPECT_THAT(Rules("DOCKER-USER"), ElementsAre(kAcceptIn, kAcceptOut, "-A DOCKER-USER -j RETURN"));

  // Remove takes exactly ours, duplicates too.
  Iptables({"-A", "DOCKER-USER", "-i", kBridge, "-m", "comment", "--comment", "smolvmd", "-j",
            "ACCEPT"});
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_THAT(Rules("DOCKER-USER"), ElementsAre("-A DOCKER-USER -j RETURN"));
  EXPECT_THAT(Rules("FORWARD"), ElementsAre("-A FORWARD -j DOCKER-USER"));
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  // Firewalld was asked whether it runs, nothing more.
  EXPECT_THAT(Calls(), HasSubstr("--state"));
  EXPECT_THAT(Calls(), Not(HasSubstr("interface")));
}

TEST_F(HostFirewallTest, ForwardDropGetsTheRulesOnTop) {
  Iptables({"-P", "FORWARD", "DROP"});
  Iptables({"-A", "FORWARD", "-i", "eth9", "-j", "ACCEPT"});

  auto did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did,
            "iptables: added accept rules for bridge svbr0 in chain FORWARD (its policy is DROP)");
  EXPECT_THAT(Rules("FORWARD"),
              ElementsAre("-A FORWARD -i svbr0 -m comment --comment smolvmd -j ACCEPT",
                          "-A FORWARD -o svbr0 -m comment --comment smolvmd -j ACCEPT",
                          "-A FORWARD -i eth9 -j ACCEPT"));
  ASSERT_THAT(firewall_->Ensure(kBridge), IsOk());
  EXPECT_EQ(Rules("FORWARD").size(), 3u);

  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_THAT(Rules("FORWARD"), ElementsAre("-A FORWARD -i eth9 -j ACCEPT"));
}

TEST_F(HostFirewallTest, CatchAllRejectCountsAsDropping) {
  Iptables({"-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited"});
  auto did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_THAT(*did, HasSubstr("chain FORWARD (it ends in a catch-all drop)"));
  EXPECT_EQ(Rules("FORWARD").size(), 3u);
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_EQ(Rules("FORWARD").size(), 1u);
}

TEST_F(HostFirewallTest, AcceptingHostNeedsNothing) {
  auto did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "");
  EXPECT_THAT(Rules("FORWARD"), IsEmpty());
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
}

TEST_F(HostFirewallTest, WithoutIptablesThereIsNothingToDo) {
  auto firewall = MakeFirewall(bin_);  // Only the fake firewall-cmd.
  auto did = firewall->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "iptables not installed: nothing to do");
  EXPECT_THAT(firewall->Remove(kBridge), IsOk());
  // Neither iptables nor firewall-cmd at all.
  firewall = MakeFirewall("/nonexistent");
  did = firewall->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "iptables not installed: nothing to do");
  EXPECT_THAT(firewall->Remove(kBridge), IsOk());
}

TEST_F(HostFirewallTest, FirewalldTrustsTheBridgeAtRuntime) {
  ASSERT_THAT(WriteFileAtomic(bin_ + "/running", ""), IsOk());
  auto did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "firewalld: added bridge svbr0 to zone trusted (runtime only)");
  EXPECT_EQ(*ReadFileToString(bin_ + "/zone"), "trusted\n");
  did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "firewalld: bridge svbr0 is in zone trusted");
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_FALSE(PathExists(bin_ + "/zone"));
  std::vector<std::string> parts = absl::StrSplit(Calls(), "--add-interface");
  EXPECT_EQ(parts.size(), 2u) << Calls();  // Added once.

  // Trusted in the permanent configuration: the operator's, kept.
  ASSERT_THAT(WriteFileAtomic(bin_ + "/zone", "trusted\n"), IsOk());
  ASSERT_THAT(WriteFileAtomic(bin_ + "/permanent", ""), IsOk());
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_TRUE(PathExists(bin_ + "/zone"));

  // In another zone: left there.
  ASSERT_THAT(WriteFileAtomic(bin_ + "/zone", "internal\n"), IsOk());
  did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did, "firewalld: bridge svbr0 is in zone internal (left as configured)");
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
  EXPECT_EQ(*ReadFileToString(bin_ + "/zone"), "internal\n");

  // Together with iptables.
  ASSERT_EQ(unlink((bin_ + "/zone").c_str()), 0);
  Iptables({"-P", "FORWARD", "DROP"});
  did = firewall_->Ensure(kBridge);
  ASSERT_THAT(did, IsOk());
  EXPECT_EQ(*did,
            "iptables: added accept rules for bridge svbr0 in chain FORWARD (its policy is DROP); "
            "firewalld: added bridge svbr0 to zone trusted (runtime only)");
  ASSERT_THAT(firewall_->Remove(kBridge), IsOk());
}

TEST_F(HostFirewallTest, RefusesBadBridgeNames) {
  EXPECT_THAT(firewall_->Ensure("br0 -j DROP"),
              StatusIs(absl::StatusCode::kInvalidArgument, "bridge name"));
  EXPECT_THAT(firewall_->Remove(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace smolvm::net
