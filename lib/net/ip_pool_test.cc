#include "lib/net/ip_pool.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;

// ParseIpv4 / ParseCidr: lib/base/ipv4_test.cc.

TEST(IpPoolTest, SubnetParse) {
  struct Case {
    std::string text;
    std::string error;  // "" = valid.
  };
  for (const Case& c : std::vector<Case>{
           {"10.200.0.0/24", ""},
           {"10.200.0.0/16", ""},
           {"10.200.0.8/29", ""},
           {"10.200.0.0/15", "prefix length must be 16-29"},
           {"10.200.0.0/30", "prefix length must be 16-29"},
           {"10.200.0.1/24", "did you mean 10.200.0.0/24?"},
           {"10.200.0.0", "want network/prefix"},
           {"10.200.0/24", "want network/prefix"},
           {"", "want network/prefix"},
       }) {
    auto subnet = Subnet::Parse(c.text);
    if (c.error.empty()) {
      ASSERT_THAT(subnet, IsOk()) << c.text;
      EXPECT_EQ(subnet->ToString(), c.text);
    } else {
      EXPECT_THAT(subnet, StatusIs(absl::StatusCode::kInvalidArgument, c.error)) << c.text;
    }
  }
}

TEST(IpPoolTest, SubnetAddresses) {
  auto subnet = Subnet::Parse("10.200.0.0/24");
  ASSERT_THAT(subnet, IsOk());
  EXPECT_EQ(IpToString(subnet->gateway()), "10.200.0.1");
  EXPECT_EQ(IpToString(subnet->broadcast()), "10.200.0.255");
  EXPECT_EQ(subnet->netmask_string(), "255.255.255.0");
  std::vector<uint32_t> hosts = subnet->HostAddresses();
  ASSERT_EQ(hosts.size(), 253u);
  EXPECT_EQ(IpToString(hosts.front()), "10.200.0.2");
  EXPECT_EQ(IpToString(hosts.back()), "10.200.0.254");
  EXPECT_TRUE(subnet->Contains(0x0ac80000));
  EXPECT_TRUE(subnet->Contains(0x0ac800ff));
  EXPECT_FALSE(subnet->Contains(0x0ac80100));
  EXPECT_FALSE(subnet->IsGuestAddress(subnet->gateway()));
  EXPECT_TRUE(subnet->IsGuestAddress(0x0ac80002));
  EXPECT_FALSE(subnet->IsGuestAddress(subnet->broadcast()));

  auto small = Subnet::Parse("192.168.7.8/29");
  ASSERT_THAT(small, IsOk());
  EXPECT_EQ(small->netmask_string(), "255.255.255.248");
  std::vector<std::string> names;
  for (uint32_t ip : small->HostAddresses()) names.push_back(IpToString(ip));
  EXPECT_THAT(names, ElementsAre("192.168.7.10", "192.168.7.11", "192.168.7.12",
                                 "192.168.7.13", "192.168.7.14"));

  auto big = Subnet::Parse("172.16.0.0/16");
  ASSERT_THAT(big, IsOk());
  EXPECT_EQ(big->netmask_string(), "255.255.0.0");
  EXPECT_EQ(big->HostAddresses().size(), 65533u);
}

TEST(IpPoolTest, PrefixToMask) {
  EXPECT_EQ(PrefixToMask(0), 0u);
  EXPECT_EQ(PrefixToMask(1), 0x80000000u);
  EXPECT_EQ(PrefixToMask(24), 0xffffff00u);
  EXPECT_EQ(PrefixToMask(32), 0xffffffffu);
}

TEST(IpPoolTest, NamesFromAddress) {
  struct Case {
    uint32_t ip;
    std::string tap;
    std::string mac;
  };
  for (const Case& c : std::vector<Case>{
           {0x0ac80005, "smv0ac80005", "02:53:0a:c8:00:05"},
           {0xc0a807fe, "smvc0a807fe", "02:53:c0:a8:07:fe"},
           {0, "smv00000000", "02:53:00:00:00:00"},
       }) {
    EXPECT_EQ(TapNameFor(c.ip), c.tap);
    EXPECT_EQ(MacFor(c.ip), c.mac);
    EXPECT_LE(TapNameFor(c.ip).size(), 15u);  // IFNAMSIZ - 1.
    EXPECT_EQ(AddressOfTap(TapNameFor(c.ip)), c.ip);
    EXPECT_THAT(ValidateInterfaceName(TapNameFor(c.ip), "tap"), IsOk());
  }
}

TEST(IpPoolTest, ValidateInterfaceName) {
  for (const char* good : {"smolbr0", "eth0", "br-1.2_x", "a", "abcdefghijklmno"}) {
    EXPECT_THAT(ValidateInterfaceName(good, "bridge name"), IsOk()) << good;
  }
  for (const char* bad : {"", "abcdefghijklmnop", "a b", "a/b", "a\"b", "a:b", "a*", "a\n"}) {
    EXPECT_THAT(ValidateInterfaceName(bad, "bridge name"),
                StatusIs(absl::StatusCode::kInvalidArgument, "invalid bridge name"))
        << bad;
  }
}

TEST(TapNameTest, OnlyOurNamesDecode) {
  for (const std::string name : {"smv", "smv0a7b00f", "smv0a7b00fe0", "smv0A7B00FE", "xyz0a7b00fe",
                                 "smvzzzzzzzz", "eth0"}) {
    EXPECT_EQ(AddressOfTap(name), std::nullopt) << name;
  }
  EXPECT_EQ(AddressOfTap("smv0a7b00fe"), 0x0a7b00feu);
}

}  // namespace
}  // namespace smolvm::net
