// The firewall and the links together, with real packets: a "host" network
// namespace with the bridge and the rules, one namespace per "VM" (a veth
// pair stands in for the TAP, under the TAP's name and with the VM's MAC),
// and an "uplink" namespace playing the internet. Checks what the ruleset
// promises in firewall.h: isolation, egress modes, anti-spoofing, NAT and
// port forwards.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/ipv4.h"
#include "lib/base/unique_fd.h"
#include "lib/net/firewall.h"
#include "lib/net/ip_pool.h"
#include "lib/net/link_backend.h"
#include "lib/net/netlink_link_backend.h"
#include "lib/net/nft_firewall.h"
#include "lib/net/netns_for_testing.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;

constexpr uint32_t kVmA = 0x0ac80002;  // 10.200.0.2
constexpr uint32_t kVmB = 0x0ac80003;  // 10.200.0.3
constexpr char kBridge[] = "svbr0";
constexpr char kUplink[] = "svup0";
constexpr char kHostUplinkIp[] = "192.0.2.1";
constexpr char kRemote1[] = "198.51.100.1";  // In the uplink namespace.
constexpr char kRemote2[] = "198.51.100.2";

// A socket created in network namespace `netns` (it stays there).
absl::StatusOr<UniqueFd> SocketIn(const std::string& netns, int type) {
  int fd = -1;
  int error = 0;
  // setns() changes the calling thread's namespace only: do it in a thread
  // of its own.
  std::thread([&] {
    int ns = open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) != 0) {
      error = errno;
    } else {
      fd = socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0) error = errno;
    }
    if (ns >= 0) close(ns);
  }).join();
  if (fd < 0) return absl::ErrnoToStatus(error, absl::StrCat("socket in netns ", netns));
  return UniqueFd(fd);
}

absl::StatusOr<UniqueFd> TcpSocketIn(const std::string& netns) {
  return SocketIn(netns, SOCK_STREAM);
}

sockaddr_in Address(const std::string& ip, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  return addr;
}

absl::StatusOr<UniqueFd> Listen(const ScopedNetns& netns, int port) {
  auto fd = TcpSocketIn(netns.name());
  if (!fd.ok()) return fd.status();
  int one = 1;
  setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr = Address("0.0.0.0", port);
  if (bind(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd->get(), 16) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("listen on ", port));
  }
  return fd;
}

// Connects from `netns` (from source address `source` if set) and waits up
// to `timeout_ms` for the handshake. OK if it completed.
absl::Status Connect(const ScopedNetns& netns, const std::string& ip, int port,
                     const std::string& source = "", int timeout_ms = 400) {
  auto fd = TcpSocketIn(netns.name());
  if (!fd.ok()) return fd.status();
  if (!source.empty()) {
    sockaddr_in src = Address(source, 0);
    if (bind(fd->get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
      return absl::ErrnoToStatus(errno, "bind " + source);
    }
  }
  sockaddr_in addr = Address(ip, port);
  if (connect(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 &&
      errno != EINPROGRESS) {
    return absl::ErrnoToStatus(errno, "connect");
  }
  pollfd p{fd->get(), POLLOUT, 0};
  if (poll(&p, 1, timeout_ms) != 1) return absl::DeadlineExceededError("connect timed out");
  int error = 0;
  socklen_t len = sizeof(error);
  getsockopt(fd->get(), SOL_SOCKET, SO_ERROR, &error, &len);
  if (error != 0) return absl::ErrnoToStatus(error, "connect");
  return absl::OkStatus();
}

// A UDP socket bound to 0.0.0.0:`port` in `netns`.
absl::StatusOr<UniqueFd> UdpReceiver(const ScopedNetns& netns, int port) {
  auto fd = SocketIn(netns.name(), SOCK_DGRAM);
  if (!fd.ok()) return fd.status();
  sockaddr_in addr = Address("0.0.0.0", port);
  if (bind(fd->get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("bind udp ", port));
  }
  return fd;
}

// Sends one datagram from `netns` (from address `source`) to ip:port and
// returns the source address `receiver` saw it from, or "" if it did not
// arrive. One-way, so unlike a TCP handshake it shows whether the packet
// itself passed, whatever happens to replies.
std::string UdpArrivesFrom(const ScopedNetns& netns, const std::string& source,
                           const std::string& ip, int port, const UniqueFd& receiver,
                           int timeout_ms = 500) {
  auto fd = SocketIn(netns.name(), SOCK_DGRAM);
  if (!fd.ok()) return "<socket failed>";
  sockaddr_in src = Address(source, 0);
  if (bind(fd->get(), reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
    return "<bind failed>";
  }
  sockaddr_in dst = Address(ip, port);
  // Twice, in case the first is lost while ARP resolves; a wait for a
  // datagram that should arrive must outlast ARP retries (1 s apart).
  for (int i = 0; i < 2; ++i) {
    sendto(fd->get(), "x", 1, 0, reinterpret_cast<sockaddr*>(&dst), sizeof(dst));
  }
  pollfd p{receiver.get(), POLLIN, 0};
  if (poll(&p, 1, timeout_ms) != 1) return "";
  sockaddr_in peer{};
  socklen_t len = sizeof(peer);
  char buf[16];
  std::string from;
  // Drain, so the next call starts clean.
  while (recvfrom(receiver.get(), buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&peer),
                  &len) > 0) {
    from = IpToString(ntohl(peer.sin_addr.s_addr));
    len = sizeof(peer);
    usleep(50 * 1000);
  }
  return from;
}

// The source address of the next connection accepted on `listener`.
std::string AcceptedFrom(const UniqueFd& listener) {
  pollfd p{listener.get(), POLLIN, 0};
  if (poll(&p, 1, 2000) != 1) return "<nothing accepted>";
  sockaddr_in peer{};
  socklen_t len = sizeof(peer);
  UniqueFd conn(accept4(listener.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
  if (!conn.valid()) return "<accept failed>";
  return IpToString(ntohl(peer.sin_addr.s_addr));
}

// GetParam(): after the first Apply, changes of single VMs go in with
// ApplyVm ("incremental") or with a whole Apply ("full").
class FirewallTrafficTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (std::string missing = ScopedNetns::MissingPrerequisite(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    for (auto* netns : {&host_, &vm_a_, &vm_b_, &internet_}) {
      auto created = ScopedNetns::Create();
      ASSERT_THAT(created, IsOk());
      *netns = *std::move(created);
    }
    subnet_ = *Subnet::Parse("10.200.0.0/24");
    NetlinkLinkBackend links(host_->name());
    ASSERT_THAT(links.EnsureBridge(kBridge, subnet_.gateway(), subnet_.prefix), IsOk());
    ASSERT_NO_FATAL_FAILURE(AddVm(*vm_a_, kVmA));
    ASSERT_NO_FATAL_FAILURE(AddVm(*vm_b_, kVmB));

    // The uplink: the "internet" holds two remote addresses and, to try
    // reaching guests directly, a route to the VM subnet via the host.
    Host({"ip", "link", "add", kUplink, "type", "veth", "peer", "name", "eth0", "netns",
          internet_->name()});
    Host({"ip", "addr", "add", absl::StrCat(kHostUplinkIp, "/24"), "dev", kUplink});
    Host({"ip", "link", "set", kUplink, "up"});
    Host({"ip", "route", "add", "default", "via", "192.0.2.2"});
    In(*internet_, {"ip", "addr", "add", "192.0.2.2/24", "dev", "eth0"});
    In(*internet_, {"ip", "link", "set", "eth0", "up"});
    In(*internet_, {"ip", "addr", "add", absl::StrCat(kRemote1, "/32"), "dev", "lo"});
    In(*internet_, {"ip", "addr", "add", absl::StrCat(kRemote2, "/32"), "dev", "lo"});
    In(*internet_, {"ip", "route", "add", subnet_.ToString(), "via", kHostUplinkIp});
    auto uplink = links.DefaultRouteInterface();
    ASSERT_THAT(uplink, IsOk());
    EXPECT_EQ(*uplink, kUplink);

    state_.bridge = kBridge;
    state_.subnet = subnet_;
    state_.uplink = *uplink;
    state_.vms = {Entry("vm-a", kVmA, EgressMode::kOpen), Entry("vm-b", kVmB, EgressMode::kOpen)};
    auto firewall = NftFirewall::Create(host_->name());
    ASSERT_THAT(firewall, IsOk());
    firewall_ = *std::move(firewall);
  }

  // Applies a change of the VMs `ids` in state_ (an id state_ no longer
  // lists: that VM is gone): one ApplyVm each when incremental and the
  // globals are those applied, else (or when `global`) the whole state.
  void Changed(const std::vector<std::string>& ids, bool global = false) {
    if (GetParam() == "full" || global) {
      ASSERT_FALSE(GetParam() == "incremental" && firewall_->AcceptsVmChanges(state_))
          << "a global change must not pass for a per-vm one";
      return Apply();
    }
    ASSERT_TRUE(firewall_->AcceptsVmChanges(state_));
    for (const std::string& id : ids) {
      auto rejected = firewall_->ApplyVm(state_, id);
      ASSERT_THAT(rejected, IsOk());
      ASSERT_TRUE(rejected->empty()) << rejected->begin()->second;
    }
  }

  // Applies state_, which must have no rejected entries.
  void Apply() {
    auto rejected = firewall_->Apply(state_);
    ASSERT_THAT(rejected, IsOk());
    ASSERT_TRUE(rejected->empty()) << rejected->begin()->second;
  }

  void In(const ScopedNetns& netns, const std::vector<std::string>& argv) {
    ASSERT_THAT(netns.Exec(argv), IsOk());
  }
  void Host(const std::vector<std::string>& argv) { In(*host_, argv); }

  // A VM: a veth named like its TAP, an isolated port of the bridge, the
  // other end in `netns` as eth0 with the VM's MAC and address.
  void AddVm(const ScopedNetns& netns, uint32_t ip) {
    const std::string tap = TapNameFor(ip);
    Host({"ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns",
          netns.name()});
    Host({"ip", "link", "set", "dev", tap, "master", kBridge});
    Host({"bridge", "link", "set", "dev", tap, "isolated", "on"});
    Host({"ip", "link", "set", "dev", tap, "up"});
    In(netns, {"ip", "link", "set", "eth0", "address", MacFor(ip)});
    In(netns, {"ip", "addr", "add", CidrToString(ip, subnet_.prefix), "dev", "eth0"});
    In(netns, {"ip", "link", "set", "eth0", "up"});
    In(netns, {"ip", "route", "add", "default", "via", IpToString(subnet_.gateway())});
  }

  static VmFirewallEntry Entry(const std::string& id, uint32_t ip, EgressMode mode) {
    VmFirewallEntry vm;
    vm.vm_id = id;
    vm.tap = TapNameFor(ip);
    vm.ip = ip;
    vm.egress.mode = mode;
    return vm;
  }

  std::unique_ptr<ScopedNetns> host_, vm_a_, vm_b_, internet_;
  Subnet subnet_;
  FirewallState state_;
  std::unique_ptr<NftFirewall> firewall_;
};

TEST_P(FirewallTrafficTest, IsolationAndEgress) {
  state_.vms[1].egress.mode = EgressMode::kOff;
  ASSERT_NO_FATAL_FAILURE(Apply());
  auto remote = Listen(*internet_, 7000);
  auto on_b = Listen(*vm_b_, 7001);
  auto on_host = Listen(*host_, 7002);
  auto on_a = Listen(*vm_a_, 7003);
  ASSERT_THAT(remote, IsOk());
  ASSERT_THAT(on_b, IsOk());
  ASSERT_THAT(on_host, IsOk());
  ASSERT_THAT(on_a, IsOk());

  // Open egress, masqueraded behind the uplink address.
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  // Egress off.
  EXPECT_FALSE(Connect(*vm_b_, kRemote1, 7000).ok());
  // No VM to VM, no VM to the host (gateway or any other host address).
  EXPECT_FALSE(Connect(*vm_a_, IpToString(kVmB), 7001).ok());
  EXPECT_FALSE(Connect(*vm_a_, IpToString(subnet_.gateway()), 7002).ok());
  EXPECT_FALSE(Connect(*vm_a_, kHostUplinkIp, 7002).ok());
  // The host reaches a guest (its replies pass chain input).
  EXPECT_THAT(Connect(*host_, IpToString(kVmA), 7003, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_a), IpToString(subnet_.gateway()));
  // Nobody outside reaches a guest without a forward.
  EXPECT_FALSE(Connect(*internet_, IpToString(kVmA), 7003).ok());

  // Restricted egress: only the allowed destinations.
  state_.vms[0].egress = {EgressMode::kRestricted, {absl::StrCat(kRemote1, "/32")}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  EXPECT_FALSE(Connect(*vm_a_, kRemote2, 7000).ok());

  // Denied destinations stay closed in every mode, also when a restricted
  // VM's allow list names them.
  state_.deny_cidrs = {absl::StrCat(kRemote2, "/32")};
  state_.vms[0].egress = {EgressMode::kRestricted, {"198.51.100.0/24"}};
  state_.vms[1].egress = {EgressMode::kOpen, {}};
  ASSERT_NO_FATAL_FAILURE(Changed({}, /*global=*/true));
  EXPECT_FALSE(Connect(*vm_a_, kRemote2, 7000).ok());
  EXPECT_FALSE(Connect(*vm_b_, kRemote2, 7000).ok());
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  EXPECT_THAT(Connect(*vm_b_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  state_.deny_cidrs.clear();
  state_.vms[1].egress = {EgressMode::kOff, {}};

  // Without an uplink nothing is masqueraded (this "internet" happens to
  // have a route back to the VM subnet).
  state_.vms[0].egress = {EgressMode::kOpen, {}};
  state_.uplink = "";
  ASSERT_NO_FATAL_FAILURE(Changed({}, /*global=*/true));
  EXPECT_THAT(Connect(*vm_a_, kRemote2, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), IpToString(kVmA));
}

// A VM's own deny list: open egress minus some destinations, a hole in a
// restricted allow list, and changes of a running VM's policy (open -> off
// -> open) that take effect for the next packet, also of an open connection.
TEST_P(FirewallTrafficTest, PerVmDenyListsAndLiveChanges) {
  ASSERT_NO_FATAL_FAILURE(Apply());
  auto remote = Listen(*internet_, 7000);
  ASSERT_THAT(remote, IsOk());

  state_.vms[0].egress = {EgressMode::kOpen, {}, {absl::StrCat(kRemote2, "/32")}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  EXPECT_FALSE(Connect(*vm_a_, kRemote2, 7000).ok());
  // Only vm-a's: vm-b (open, no deny list) reaches both.
  EXPECT_THAT(Connect(*vm_b_, kRemote2, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);

  // Restricted to a /24 with a /32 hole in it.
  state_.vms[0].egress = {EgressMode::kRestricted, {"198.51.100.0/24"},
                          {absl::StrCat(kRemote2, "/32")}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  EXPECT_FALSE(Connect(*vm_a_, kRemote2, 7000).ok());

  // Open -> off -> open while running: the next connection follows.
  state_.vms[0].egress = {EgressMode::kOff, {}, {}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_FALSE(Connect(*vm_a_, kRemote1, 7000).ok());
  state_.vms[0].egress = {EgressMode::kOpen, {}, {}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);
  EXPECT_THAT(Connect(*vm_a_, kRemote2, 7000, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*remote), kHostUplinkIp);

  // The resolver (here kRemote1) is open to open-egress guests even inside
  // the operator's deny list, but a VM's own deny list closes it.
  auto resolver = Listen(*internet_, 53);
  ASSERT_THAT(resolver, IsOk());
  state_.dns = *ParseIpv4(kRemote1);
  state_.deny_cidrs = {absl::StrCat(kRemote1, "/32")};
  ASSERT_NO_FATAL_FAILURE(Changed({}, /*global=*/true));
  EXPECT_THAT(Connect(*vm_a_, kRemote1, 53, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*resolver), kHostUplinkIp);
  EXPECT_FALSE(Connect(*vm_a_, kRemote1, 7000).ok()) << "only port 53 of a denied resolver";
  state_.vms[0].egress = {EgressMode::kOpen, {}, {absl::StrCat(kRemote1, "/32")}};
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_FALSE(Connect(*vm_a_, kRemote1, 53).ok()) << "a VM's own deny list must close its DNS";
  EXPECT_THAT(Connect(*vm_b_, kRemote1, 53, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*resolver), kHostUplinkIp);
}

TEST_P(FirewallTrafficTest, Spoofing) {
  ASSERT_NO_FATAL_FAILURE(Apply());
  auto remote = UdpReceiver(*internet_, 7000);
  ASSERT_THAT(remote, IsOk());
  const std::string a = IpToString(kVmA), b = IpToString(kVmB);
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, a, kRemote1, 7000, *remote, 3000), kHostUplinkIp);

  // VM a sends as VM b (whose egress is open) or as an unassigned address.
  In(*vm_a_, {"ip", "addr", "add", b + "/32", "dev", "eth0"});
  In(*vm_a_, {"ip", "addr", "add", "10.200.0.9/32", "dev", "eth0"});
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, b, kRemote1, 7000, *remote), "");
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, "10.200.0.9", kRemote1, 7000, *remote), "");
  // The real b.
  EXPECT_EQ(UdpArrivesFrom(*vm_b_, b, kRemote1, 7000, *remote, 3000), kHostUplinkIp);
  // Its own address, but another MAC.
  In(*vm_a_, {"ip", "link", "set", "eth0", "address", "02:53:0a:c8:00:77"});
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, a, kRemote1, 7000, *remote), "");
  In(*vm_a_, {"ip", "link", "set", "eth0", "address", MacFor(kVmA)});
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, a, kRemote1, 7000, *remote, 3000), kHostUplinkIp);

  // A port no VM owns (a TAP whose rules are not in yet) sends nothing,
  // also not with a listed VM's address.
  auto rogue = ScopedNetns::Create();
  ASSERT_THAT(rogue, IsOk());
  const uint32_t kRogue = 0x0ac80009;
  ASSERT_NO_FATAL_FAILURE(AddVm(**rogue, kRogue));
  EXPECT_EQ(UdpArrivesFrom(**rogue, IpToString(kRogue), kRemote1, 7000, *remote), "");
  In(**rogue, {"ip", "addr", "add", b + "/32", "dev", "eth0"});
  EXPECT_EQ(UdpArrivesFrom(**rogue, b, kRemote1, 7000, *remote), "");
  // Once listed, it works.
  state_.vms.push_back(Entry("vm-c", kRogue, EgressMode::kOpen));
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-c"}));
  EXPECT_EQ(UdpArrivesFrom(**rogue, IpToString(kRogue), kRemote1, 7000, *remote, 3000),
            kHostUplinkIp);
}

TEST_P(FirewallTrafficTest, PortForwards) {
  state_.vms[0].forwards.push_back({"127.0.0.1", 8080, 80, "tcp"});
  state_.vms[1].forwards.push_back({"0.0.0.0", 8081, 80, "tcp"});
  ASSERT_NO_FATAL_FAILURE(Apply());
  auto on_a = Listen(*vm_a_, 80);
  auto on_b = Listen(*vm_b_, 80);
  ASSERT_THAT(on_a, IsOk());
  ASSERT_THAT(on_b, IsOk());
  const std::string gateway = IpToString(subnet_.gateway());

  // Connections made on the host are forwarded only for the host addresses
  // listed in output_dnat_ips; from outside, 0.0.0.0 works regardless.
  EXPECT_FALSE(Connect(*host_, "127.0.0.1", 8080).ok());
  EXPECT_FALSE(Connect(*host_, "127.0.0.1", 8081).ok());
  EXPECT_THAT(Connect(*internet_, kHostUplinkIp, 8081, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_b), gateway);
  state_.output_dnat_ips = {0x7f000001, 0};
  ASSERT_NO_FATAL_FAILURE(Changed({}, /*global=*/true));

  // 127.0.0.1 on the host (needs route_localnet and the masquerade).
  EXPECT_THAT(Connect(*host_, "127.0.0.1", 8080, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_a), gateway);
  // ... and only there.
  EXPECT_FALSE(Connect(*internet_, kHostUplinkIp, 8080).ok());

  // 0.0.0.0: every host address, from the host and from outside.
  EXPECT_THAT(Connect(*host_, "127.0.0.1", 8081, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_b), gateway);
  EXPECT_THAT(Connect(*host_, kHostUplinkIp, 8081, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_b), gateway);
  EXPECT_THAT(Connect(*internet_, kHostUplinkIp, 8081, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_b), gateway);

  // Only the forwarded port: not the guest directly, not via the gateway
  // from another VM.
  EXPECT_FALSE(Connect(*internet_, IpToString(kVmB), 80).ok());
  EXPECT_FALSE(Connect(*vm_a_, gateway, 8081).ok());
  EXPECT_FALSE(Connect(*vm_a_, kHostUplinkIp, 8081).ok());

  // Removing the forward closes the port.
  state_.vms[1].forwards.clear();
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-b"}));
  EXPECT_FALSE(Connect(*internet_, kHostUplinkIp, 8081).ok());
  // ... and adding one opens it (from outside: 0 is listed for output).
  state_.vms[0].forwards.push_back({"0.0.0.0", 8082, 80, "tcp"});
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  EXPECT_THAT(Connect(*internet_, kHostUplinkIp, 8082, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_a), gateway);
  EXPECT_THAT(Connect(*host_, "127.0.0.1", 8082, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_a), gateway);
  EXPECT_THAT(Connect(*host_, "127.0.0.1", 8080, "", 3000), IsOk());  // The first stays.
  EXPECT_EQ(AcceptedFrom(*on_a), gateway);
}

// A VM that goes loses everything at once (its port sends nothing, its
// forwards close); the others are untouched; when it comes back (under
// another address too) it works again.
TEST_P(FirewallTrafficTest, VmsComeAndGo) {
  state_.vms[0].forwards.push_back({"0.0.0.0", 8080, 80, "tcp"});
  state_.vms[1].forwards.push_back({"0.0.0.0", 8081, 80, "tcp"});
  ASSERT_NO_FATAL_FAILURE(Apply());
  auto remote = UdpReceiver(*internet_, 7000);
  ASSERT_THAT(remote, IsOk());
  auto on_b = Listen(*vm_b_, 80);
  ASSERT_THAT(on_b, IsOk());
  const std::string a = IpToString(kVmA), b = IpToString(kVmB);
  EXPECT_EQ(UdpArrivesFrom(*vm_b_, b, kRemote1, 7000, *remote, 3000), kHostUplinkIp);

  const VmFirewallEntry vm_b = state_.vms[1];
  state_.vms.pop_back();
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-b"}));
  EXPECT_EQ(UdpArrivesFrom(*vm_b_, b, kRemote1, 7000, *remote), "");
  EXPECT_FALSE(Connect(*internet_, kHostUplinkIp, 8081).ok());
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, a, kRemote1, 7000, *remote, 3000), kHostUplinkIp);
  for (const char* family : {"inet", "bridge"}) {
    auto listed = host_->Exec({"nft", "list", "table", family, "smolvmd"});
    ASSERT_THAT(listed, IsOk());
    // Every element names its VM.
    EXPECT_THAT(*listed, ::testing::Not(::testing::HasSubstr("\"vm vm-b\""))) << *listed;
    EXPECT_THAT(*listed, ::testing::Not(::testing::HasSubstr(b + " "))) << *listed;
    EXPECT_THAT(*listed, ::testing::HasSubstr("\"vm vm-a\"")) << *listed;
  }

  state_.vms.push_back(vm_b);
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-b"}));
  EXPECT_EQ(UdpArrivesFrom(*vm_b_, b, kRemote1, 7000, *remote, 3000), kHostUplinkIp);
  EXPECT_THAT(Connect(*internet_, kHostUplinkIp, 8081, "", 3000), IsOk());
  EXPECT_EQ(AcceptedFrom(*on_b), IpToString(subnet_.gateway()));

  // vm-b moves to vm-a's TAP and address after vm-a went (a restore into
  // another identity): one change each.
  state_.vms.erase(state_.vms.begin());
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-a"}));
  state_.vms[0].ip = kVmA;
  state_.vms[0].tap = TapNameFor(kVmA);
  ASSERT_NO_FATAL_FAILURE(Changed({"vm-b"}));
  EXPECT_EQ(UdpArrivesFrom(*vm_a_, a, kRemote1, 7000, *remote, 3000), kHostUplinkIp);
  EXPECT_EQ(UdpArrivesFrom(*vm_b_, b, kRemote1, 7000, *remote), "");
}

INSTANTIATE_TEST_SUITE_P(Changes, FirewallTrafficTest,
                         ::testing::Values("full", "incremental"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace smolvm::net
