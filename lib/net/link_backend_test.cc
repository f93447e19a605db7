#include "lib/net/link_backend.h"

#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/net/ip_pool.h"
#include "lib/net/netlink_link_backend.h"
#include "lib/net/netns_for_testing.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr uint32_t kGateway = 0x0ac80001;  // 10.200.0.1

// Runs each LinkBackend (GetParam(): "ip" or "netlink") inside a throwaway
// network namespace: the same cases hold for both.
class LinkBackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (std::string missing = ScopedNetns::MissingPrerequisite(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    auto netns = ScopedNetns::Create();
    ASSERT_THAT(netns, IsOk());
    netns_ = *std::move(netns);
    if (GetParam() == "netlink") {
      backend_ = std::make_unique<NetlinkLinkBackend>(netns_->name());
    } else {
      backend_ = std::make_unique<IpCommandLinkBackend>(netns_->prefix());
    }
  }

  std::string Exec(const std::vector<std::string>& argv) {
    auto out = netns_->Exec(argv);
    EXPECT_THAT(out, IsOk());
    return out.ok() ? *out : "";
  }

  nlohmann::json Link(const std::string& name) {
    auto json = nlohmann::json::parse(Exec({"ip", "-j", "-d", "link", "show", "dev", name}),
                                      nullptr, false);
    return json.is_array() && !json.empty() ? json[0] : nlohmann::json();
  }

  std::unique_ptr<ScopedNetns> netns_;
  std::unique_ptr<LinkBackend> backend_;
};

TEST_P(LinkBackendTest, EnsureBridgeIsIdempotent) {
  ASSERT_THAT(backend_->EnsureBridge("svbr0", kGateway, 24), IsOk());
  ASSERT_THAT(backend_->EnsureBridge("svbr0", kGateway, 24), IsOk());

  nlohmann::json link = Link("svbr0");
  EXPECT_EQ(link["linkinfo"]["info_kind"], "bridge");
  EXPECT_THAT(link["flags"].get<std::vector<std::string>>(), Contains("UP"));
  std::string addrs = Exec({"ip", "-4", "-o", "addr", "show", "dev", "svbr0"});
  EXPECT_THAT(addrs, HasSubstr("inet 10.200.0.1/24"));
  EXPECT_EQ(addrs.find("inet "), addrs.rfind("inet "));  // Added once.
  EXPECT_EQ(Exec({"sysctl", "-n", "net.ipv4.ip_forward"}), "1\n");
  EXPECT_EQ(Exec({"sysctl", "-n", "net.ipv4.conf.svbr0.route_localnet"}), "1\n");
}

TEST_P(LinkBackendTest, EnsureBridgeRefusesOtherKinds) {
  Exec({"ip", "link", "add", "svdummy", "type", "veth", "peer", "name", "svdummy1"});
  EXPECT_THAT(backend_->EnsureBridge("svdummy", kGateway, 24),
              StatusIs(absl::StatusCode::kFailedPrecondition, "ensure bridge svdummy"));
  EXPECT_THAT(backend_->EnsureBridge("bad name", kGateway, 24),
              StatusIs(absl::StatusCode::kInvalidArgument, "bridge name"));
}

TEST_P(LinkBackendTest, TapsAreIsolatedPortsOfTheBridge) {
  ASSERT_THAT(backend_->EnsureBridge("svbr0", kGateway, 24), IsOk());
  const std::string tap1 = TapNameFor(kGateway + 1);
  const std::string tap2 = TapNameFor(kGateway + 2);
  ASSERT_THAT(backend_->CreateTap(tap1, "svbr0"), IsOk());
  ASSERT_THAT(backend_->CreateTap(tap2, "svbr0"), IsOk());
  ASSERT_THAT(backend_->CreateTap(tap2, "svbr0"), IsOk());  // Idempotent.

  std::string ports = Exec({"bridge", "-d", "link", "show"});
  for (const std::string& tap : {tap1, tap2}) {
    nlohmann::json link = Link(tap);
    EXPECT_EQ(link["linkinfo"]["info_kind"], "tun") << tap;
    EXPECT_EQ(link["linkinfo"]["info_data"]["type"], "tap") << tap;
    EXPECT_EQ(link["linkinfo"]["info_data"]["persist"], true) << tap;
    EXPECT_EQ(link["master"], "svbr0") << tap;
    EXPECT_EQ(link["linkinfo"]["info_slave_data"]["isolated"], true) << tap;
    EXPECT_THAT(link["flags"].get<std::vector<std::string>>(), Contains("UP")) << tap;
    // The same, as `bridge -d link show` prints it.
    size_t at = ports.find(tap + ":");
    ASSERT_NE(at, std::string::npos) << ports;
    size_t next = ports.find("\n", ports.find("\n", at) + 1);
    std::string entry = ports.substr(at, next - at);
    EXPECT_THAT(entry, HasSubstr("master svbr0")) << entry;
    EXPECT_THAT(entry, HasSubstr("isolated on")) << entry;
  }

  // An existing TAP is brought back to its settings.
  Exec({"bridge", "link", "set", "dev", tap1, "isolated", "off"});
  Exec({"ip", "link", "set", "dev", tap1, "nomaster"});
  ASSERT_THAT(backend_->CreateTap(tap1, "svbr0"), IsOk());
  EXPECT_EQ(Link(tap1)["master"], "svbr0");
  EXPECT_EQ(Link(tap1)["linkinfo"]["info_slave_data"]["isolated"], true);

  auto listed = backend_->ListLinks("smv");
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, ElementsAre(tap1, tap2));
  listed = backend_->ListLinks("");
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, ElementsAre("lo", tap1, tap2, "svbr0"));

  ASSERT_THAT(backend_->DeleteLink(tap1), IsOk());
  ASSERT_THAT(backend_->DeleteLink(tap1), IsOk());  // Absent is fine.
  listed = backend_->ListLinks("smv");
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, ElementsAre(tap2));
}

TEST_P(LinkBackendTest, CreateTapCleansUpOnFailure) {
  // No such bridge: enslaving fails, and the new TAP is deleted again.
  EXPECT_THAT(backend_->CreateTap("smv0ac80009", "svnobridge"),
              StatusIs(absl::StatusCode::kInternal, "create tap smv0ac80009 on bridge svnobridge"));
  auto listed = backend_->ListLinks("smv");
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, IsEmpty());

  // Not a TAP: refused, left alone.
  ASSERT_THAT(backend_->EnsureBridge("svbr0", kGateway, 24), IsOk());
  EXPECT_THAT(backend_->CreateTap("svbr0", "svbr0"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "is not a tap"));
  listed = backend_->ListLinks("svbr0");
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(*listed, ElementsAre("svbr0"));
}

TEST_P(LinkBackendTest, DefaultRouteInterface) {
  EXPECT_THAT(backend_->DefaultRouteInterface(),
              StatusIs(absl::StatusCode::kNotFound, "no ipv4 default route"));

  Exec({"ip", "link", "add", "svup0", "type", "veth", "peer", "name", "svup1"});
  Exec({"ip", "addr", "add", "192.0.2.1/24", "dev", "svup0"});
  Exec({"ip", "link", "set", "svup0", "up"});
  Exec({"ip", "link", "set", "svup1", "up"});
  Exec({"ip", "route", "add", "default", "via", "192.0.2.2", "dev", "svup0", "metric", "50"});
  auto dev = backend_->DefaultRouteInterface();
  ASSERT_THAT(dev, IsOk());
  EXPECT_EQ(*dev, "svup0");

  // The lowest metric wins.
  Exec({"ip", "addr", "add", "198.51.100.1/24", "dev", "svup1"});
  Exec({"ip", "route", "add", "default", "via", "198.51.100.2", "dev", "svup1", "metric", "10"});
  dev = backend_->DefaultRouteInterface();
  ASSERT_THAT(dev, IsOk());
  EXPECT_EQ(*dev, "svup1");
}

TEST_P(LinkBackendTest, ConnectedSubnets) {
  auto subnets = backend_->ConnectedSubnets("svbr0");
  ASSERT_THAT(subnets, IsOk());
  EXPECT_THAT(*subnets, IsEmpty());  // Only lo, which is not a LAN.

  Exec({"ip", "link", "add", "svlan0", "type", "veth", "peer", "name", "svlan1"});
  Exec({"ip", "addr", "add", "192.0.2.77/24", "dev", "svlan0"});
  Exec({"ip", "addr", "add", "198.51.100.9/25", "dev", "svlan0"});
  Exec({"ip", "addr", "add", "192.0.2.78/24", "dev", "svlan1"});  // The same subnet again.
  Exec({"ip", "addr", "add", "203.0.113.5/32", "dev", "svlan1"});
  Exec({"ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "svlan1"});
  Exec({"ip", "addr", "add", "127.0.0.2/8", "dev", "lo"});
  // Ours: the bridge and the TAPs.
  ASSERT_THAT(backend_->EnsureBridge("svbr0", kGateway, 24), IsOk());
  const std::string tap = TapNameFor(kGateway + 1);
  ASSERT_THAT(backend_->CreateTap(tap, "svbr0"), IsOk());
  Exec({"ip", "addr", "add", "100.64.0.1/10", "dev", tap});

  subnets = backend_->ConnectedSubnets("svbr0");
  ASSERT_THAT(subnets, IsOk());
  EXPECT_THAT(*subnets, ElementsAre("192.0.2.0/24", "198.51.100.0/25", "203.0.113.5/32"));
  // Another bridge's subnet is a LAN like any other.
  subnets = backend_->ConnectedSubnets("svother");
  ASSERT_THAT(subnets, IsOk());
  EXPECT_THAT(*subnets, ElementsAre("10.200.0.0/24", "192.0.2.0/24", "198.51.100.0/25",
                                    "203.0.113.5/32"));
}

TEST_P(LinkBackendTest, DeleteLinkOfNothingIsOk) {
  EXPECT_THAT(backend_->DeleteLink("svnothing"), IsOk());
  EXPECT_THAT(backend_->DeleteLink("a/b"), StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(Backends, LinkBackendTest, ::testing::Values("ip", "netlink"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace smolvm::net
