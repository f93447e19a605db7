#include "lib/base/ipv4.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

TEST(Ipv4Test, ParseIpv4RoundTrips) {
  for (const auto& [text, ip] : std::vector<std::pair<std::string, uint32_t>>{
           {"10.200.0.5", 0x0ac80005},
           {"0.0.0.0", 0},
           {"255.255.255.255", 0xffffffff},
           {"127.0.0.1", 0x7f000001},
           {"100.64.0.10", 0x6440000a},
       }) {
    auto parsed = ParseIpv4(text);
    ASSERT_THAT(parsed, IsOk()) << text;
    EXPECT_EQ(*parsed, ip) << text;
    // Whatever parses renders back to the same text.
    EXPECT_EQ(IpToString(*parsed), text);
  }
}

TEST(Ipv4Test, ParseIpv4RefusesAnythingElse) {
  for (const std::string& text : std::vector<std::string>{
           "", "1.2.3", "1.2.3.4.5", "1.2.3.256", "1.2.3.-1", "1.2.3.+1", "1..3.4",
           "1.2.3.4.", ".1.2.3.4", " 1.2.3.4", "1.2.3.4 ", "1.2.3. 4", "01.2.3.4",
           "010.0.0.1", "1.2.3.00", "1.2.3.0x1", "1.2.3.4/32", "0x7f000001", "2130706433",
           "1.2.3.1000", "localhost", "::1", std::string("1.2.3.4\0", 8), "1.2.3.4\n",
           "\xef\xbc\x91.2.3.4",  // A fullwidth digit.
       }) {
    EXPECT_THAT(ParseIpv4(text),
                StatusIs(absl::StatusCode::kInvalidArgument, "four decimal octets"))
        << text;
  }
}

TEST(Ipv4Test, ParseCidr) {
  struct Case {
    std::string text;
    uint32_t network;
    int prefix;
  };
  for (const Case& c : std::vector<Case>{
           {"1.2.3.4/32", 0x01020304, 32},
           {"1.2.3.4", 0x01020304, 32},
           {"10.1.2.3/8", 0x0a000000, 8},  // Host bits masked off.
           {"0.0.0.0/0", 0, 0},
           {"192.168.1.0/24", 0xc0a80100, 24},
           {"169.254.0.0/16", 0xa9fe0000, 16},
       }) {
    auto cidr = ParseCidr(c.text);
    ASSERT_THAT(cidr, IsOk()) << c.text;
    EXPECT_EQ(cidr->first, c.network) << c.text;
    EXPECT_EQ(cidr->second, c.prefix) << c.text;
    // The canonical form parses to the same thing.
    auto again = ParseCidr(CidrToString(cidr->first, cidr->second));
    ASSERT_THAT(again, IsOk());
    EXPECT_EQ(*again, *cidr);
  }
}

TEST(Ipv4Test, ParseCidrRefusesAnythingElse) {
  for (const std::string& text : std::vector<std::string>{
           "1.2.3.4/33", "1.2.3.4/", "1.2.3.4/-1", "1.2.3.4/+8", "/+8", "1.2.3.4/ 8",
           "1.2.3.4/8 ", " 1.2.3.4/8", "1.2.3.4 /8", "1.2.3.4/08", "1.2.3.4/100",
           "1.2.3.4/8/8", "1.2.3/8", "/8", "010.0.0.0/8", "example.com/32",
           "1.2.3.4/0x8", "1.2.3.4 } accept; #",
       }) {
    EXPECT_THAT(ParseCidr(text), StatusIs(absl::StatusCode::kInvalidArgument, "parse cidr"))
        << text;
  }
  // The message shows the text, escaped.
  EXPECT_THAT(ParseCidr("1.2.3.4/33"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 "\"1.2.3.4/33\": the prefix length must"));
  EXPECT_THAT(ParseCidr("1.2.3.4/\n"),
              StatusIs(absl::StatusCode::kInvalidArgument, "\"1.2.3.4/\\n\""));
}

TEST(Ipv4Test, PrefixToMask) {
  EXPECT_EQ(PrefixToMask(0), 0u);
  EXPECT_EQ(PrefixToMask(1), 0x80000000u);
  EXPECT_EQ(PrefixToMask(24), 0xffffff00u);
  EXPECT_EQ(PrefixToMask(31), 0xfffffffeu);
  EXPECT_EQ(PrefixToMask(32), 0xffffffffu);
  EXPECT_EQ(CidrToString(0x0a000000, 8), "10.0.0.0/8");
}

}  // namespace
}  // namespace smolvm::net
