// Networking end to end, inside the test's own namespaces (see
// test_daemon.h): real bridge, TAPs, nftables and NAT; an "internet"
// namespace with HTTP servers on 203.0.113.5 and 203.0.113.6. Checks are
// made from inside real guests through the agent. The daemon's port policy
// is widened to 0.0.0.0 here (the default is 127.0.0.1 only) to test
// forwards reached from outside the host; network_policy_test.cc covers the
// default policies.
#include <signal.h>

#include <algorithm>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/connection.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

std::string Url(const std::string& ip) { return absl::StrCat("http://", ip, ":8080/hello.txt"); }

class NetworkTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    auto s = daemon_->Start({}, "[ports]\nhost_ips = [\"127.0.0.1\", \"0.0.0.0\"]\n");
    ASSERT_TRUE(s.ok()) << s;
  }
  static void TearDownTestSuite() { delete daemon_; }

  static absl::StatusOr<SmolVM> Boot(const std::string& id, v1::EgressPolicy egress = {}) {
    v1::VMConfig config;
    config.set_vm_id(id);
    config.set_memory_mib(192);
    config.set_vcpu_count(1);
    *config.mutable_egress() = egress;
    SmolVM vm(config, daemon_->client_options());
    if (auto st = vm.start(); !st.ok()) return st;
    return vm;
  }
  // True if the guest fetched the internet page from `ip`. On failure,
  // `why` gets the details.
  static bool Fetch(SmolVM& vm, const std::string& ip, std::string* why = nullptr) {
    // busybox wget's own -T timeout crashes in Debian's static busybox, so
    // the guest's `timeout` bounds it instead.
    auto r = vm.run(absl::StrCat("timeout 5 wget -q -O - ", Url(ip)));
    bool ok = r.ok() && r->exit_code == 0 && r->stdout_text == "hello from the internet\n";
    if (!ok && why) {
      *why = r.ok() ? absl::StrCat("exit ", r->exit_code, ": ", r->stdout_text, r->stderr_text)
                    : std::string(r.status().message());
      auto diag = vm.run(absl::StrCat("ip addr show eth0; ip route; ip neigh"));
      if (diag.ok()) *why += "\n" + diag->stdout_text;
    }
    return ok;
  }
  // True if the guest can open a TCP connection to ip:port.
  static bool Connects(SmolVM& vm, const std::string& ip, int port) {
    auto r = vm.run(absl::StrCat("echo | nc -w 2 ", ip, " ", port, " >/dev/null 2>&1"));
    return r.ok() && r->exit_code == 0;
  }
  static std::string HostLinks() {
    return daemon_->InNetns(daemon_->NetnsHost(), "ip -o link show").second;
  }
  static std::string Ruleset() {
    return daemon_->InNetns(daemon_->NetnsHost(), "nft list ruleset").second;
  }
  static TestDaemon* daemon_;
};
TestDaemon* NetworkTest::daemon_ = nullptr;

TEST_F(NetworkTest, TopologyIsolationForwardsPoliciesRestoreAndClones) {
  ClientOptions opts = daemon_->client_options();
  Connection conn(opts);

  // --- An open VM reaches the internet through NAT and gets a derived identity.
  auto open = Boot("net-open");
  ASSERT_TRUE(open.ok()) << open.status() << daemon_->DaemonLog();
  const v1::NetworkConfig net = open->info().network();
  EXPECT_TRUE(absl::StartsWith(net.guest_ip(), "10.123.0.")) << net.guest_ip();
  EXPECT_EQ(net.gateway_ip(), "10.123.0.1");
  EXPECT_EQ(net.netmask(), "255.255.255.0");
  EXPECT_TRUE(absl::StartsWith(net.guest_mac(), "02:53:0a:7b:00:")) << net.guest_mac();
  EXPECT_TRUE(absl::StartsWith(net.tap_device(), "smv")) << net.tap_device();
  EXPECT_NE(HostLinks().find(net.tap_device()), std::string::npos);
  auto addr = open->run("ip -o addr show eth0; cat /sys/class/net/eth0/address");
  ASSERT_TRUE(addr.ok());
  EXPECT_NE(addr->stdout_text.find(net.guest_ip() + "/24"), std::string::npos) << addr->stdout_text;
  EXPECT_NE(addr->stdout_text.find(net.guest_mac()), std::string::npos) << addr->stdout_text;
  EXPECT_TRUE(Fetch(*open, TestDaemon::kInternetIp)) << Ruleset();
  EXPECT_TRUE(Fetch(*open, TestDaemon::kOtherInternetIp));

  // --- Egress off and restricted.
  v1::EgressPolicy off;
  off.set_mode(v1::EgressPolicy::EGRESS_OFF);
  auto closed = Boot("net-off", off);
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_FALSE(Fetch(*closed, TestDaemon::kInternetIp));
  v1::EgressPolicy restricted;
  restricted.set_mode(v1::EgressPolicy::EGRESS_RESTRICTED);
  restricted.add_allow_cidrs(absl::StrCat(TestDaemon::kInternetIp, "/32"));
  auto limited = Boot("net-limited", restricted);
  ASSERT_TRUE(limited.ok()) << limited.status();
  EXPECT_TRUE(Fetch(*limited, TestDaemon::kInternetIp));
  EXPECT_FALSE(Fetch(*limited, TestDaemon::kOtherInternetIp));

  // --- Isolation: not another VM, not the host's own addresses.
  const std::string off_ip = closed->info().network().guest_ip();
  // A listener that stays up (busybox httpd; Debian's busybox nc has no -k),
  // proven reachable from inside its own VM before the negative checks.
  auto listener = closed->run("mkdir -p /tmp/www && httpd -p 7000 -h /tmp/www");
  ASSERT_TRUE(listener.ok() && listener->exit_code == 0);
  ASSERT_TRUE(Connects(*closed, "127.0.0.1", 7000)) << "positive control: the listener is down";
  EXPECT_FALSE(Connects(*open, off_ip, 7000));
  auto ping = open->run(absl::StrCat("ping -c 1 -W 2 ", off_ip));
  ASSERT_TRUE(ping.ok());
  EXPECT_NE(ping->exit_code, 0) << "a VM reached another VM";
  // A host listener on every address of the host namespace (ended below,
  // by pid), reachable from the host itself on both addresses.
  // (httpd exits at once if its -h dir is missing; an empty one in the
  // test's own dir, removed with it.)
  const std::string www = daemon_->run_dir() + "/../host-www";
  auto host_listener = daemon_->InNetns(
      daemon_->NetnsHost(),
      absl::StrCat("mkdir -p ", www, " && { busybox httpd -f -p 9000 -h ", www,
                   " >/dev/null 2>&1 & echo $!; }"));
  pid_t host_listener_pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(host_listener.second),
                               &host_listener_pid))
      << host_listener.second;
  absl::Cleanup end_listener = [host_listener_pid] { kill(host_listener_pid, SIGKILL); };
  for (const std::string ip : {"10.123.0.1", TestDaemon::kHostUplinkIp}) {
    auto control = daemon_->InNetns(
        daemon_->NetnsHost(),
        absl::StrCat("for i in 1 2 3 4 5 6 7 8 9 10; do echo | timeout 2 busybox nc ", ip,
                     " 9000 >/dev/null 2>&1 && echo connected && break; sleep 0.2; done"));
    ASSERT_TRUE(absl::StrContains(control.second, "connected"))
        << "positive control: the host listener on " << ip << " is down";
  }
  EXPECT_FALSE(Connects(*open, "10.123.0.1", 9000)) << "a VM reached the bridge address";
  EXPECT_FALSE(Connects(*open, TestDaemon::kHostUplinkIp, 9000)) << "a VM reached the host";

  // --- Port forwards from the host side (loopback and all addresses).
  ASSERT_TRUE(open->run("mkdir -p /root/www && echo guest-page > /root/www/index.html && "
                        "httpd -p 8000 -h /root/www").ok());
  v1::ExposePortRequest expose;
  expose.set_vm_id("net-open");
  expose.mutable_forward()->set_host_port(18080);
  expose.mutable_forward()->set_guest_port(8000);
  auto exposed = conn.Call(&v1::VmService::Stub::ExposePort, expose);
  ASSERT_TRUE(exposed.ok()) << exposed.status();
  ASSERT_EQ(exposed->network().port_forwards_size(), 1);
  EXPECT_EQ(exposed->network().port_forwards(0).host_ip(), "127.0.0.1");
  auto local = daemon_->InNetns(daemon_->NetnsHost(),
                                "timeout 5 busybox wget -q -O - http://127.0.0.1:18080/");
  EXPECT_EQ(local.second, "guest-page\n") << Ruleset();
  expose.mutable_forward()->set_host_ip("0.0.0.0");
  expose.mutable_forward()->set_host_port(18081);
  ASSERT_TRUE(conn.Call(&v1::VmService::Stub::ExposePort, expose).ok());
  auto remote = daemon_->InNetns(daemon_->NetnsInternet(),
                                 absl::StrCat("timeout 5 busybox wget -q -O - http://",
                                              TestDaemon::kHostUplinkIp, ":18081/"));
  EXPECT_EQ(remote.second, "guest-page\n");
  auto dup = conn.Call(&v1::VmService::Stub::ExposePort, expose);
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists) << dup.status();
  v1::UnexposePortRequest unexpose;
  unexpose.set_vm_id("net-open");
  unexpose.set_host_port(18080);
  ASSERT_TRUE(conn.Call(&v1::VmService::Stub::UnexposePort, unexpose).ok());
  auto gone = daemon_->InNetns(daemon_->NetnsHost(),
                               "timeout 3 busybox wget -q -O - http://127.0.0.1:18080/");
  EXPECT_NE(gone.first, 0);

  // --- Restore into its own identity keeps IP/MAC/TAP and the policy.
  const v1::NetworkConfig limited_net = limited->info().network();
  auto snap = limited->snapshot("net-limited-snap");
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->network_config().guest_ip(), limited_net.guest_ip());
  ASSERT_TRUE(limited->close().ok());
  EXPECT_EQ(HostLinks().find(limited_net.tap_device()), std::string::npos);
  auto back = SmolVM::from_snapshot("net-limited-snap", true, "", opts);
  ASSERT_TRUE(back.ok()) << back.status() << daemon_->DaemonLog();
  EXPECT_EQ(back->info().network().guest_ip(), limited_net.guest_ip());
  EXPECT_EQ(back->info().network().guest_mac(), limited_net.guest_mac());
  EXPECT_EQ(back->info().network().tap_device(), limited_net.tap_device());
  EXPECT_EQ(back->info().network().egress().mode(), v1::EgressPolicy::EGRESS_RESTRICTED);
  EXPECT_TRUE(Fetch(*back, TestDaemon::kInternetIp)) << "restored guest lost its uplink";
  EXPECT_FALSE(Fetch(*back, TestDaemon::kOtherInternetIp)) << "policy lost across restore";

  // --- Clones: N distinct identities, all reaching the server at once.
  auto src_snap = open->snapshot("net-open-snap", /*resume_source=*/true);
  ASSERT_TRUE(src_snap.ok()) << src_snap.status();
  v1::ForkSnapshotRequest fork;
  fork.set_snapshot_id("net-open-snap");
  fork.set_count(3);
  fork.set_resume_vm(true);
  fork.set_vm_id_prefix("clone");
  auto forked = conn.Call(&v1::SnapshotService::Stub::ForkSnapshot, fork);
  ASSERT_TRUE(forked.ok()) << forked.status();
  ASSERT_EQ(forked->results_size(), 3);
  std::set<std::string> ips = {net.guest_ip()}, macs = {net.guest_mac()}, taps = {net.tap_device()};
  std::vector<SmolVM> clones;
  for (const auto& r : forked->results()) {
    ASSERT_EQ(r.error_code(), 0) << r.vm_id() << ": " << r.error_message();
    ips.insert(r.vm().network().guest_ip());
    macs.insert(r.vm().network().guest_mac());
    taps.insert(r.vm().network().tap_device());
    auto h = SmolVM::attach(r.vm_id(), opts);
    ASSERT_TRUE(h.ok());
    auto a = h->run("ip -o addr show eth0; cat /sys/class/net/eth0/address");
    ASSERT_TRUE(a.ok());
    EXPECT_NE(a->stdout_text.find(r.vm().network().guest_ip() + "/24"), std::string::npos)
        << r.vm_id() << ": " << a->stdout_text;
    EXPECT_NE(a->stdout_text.find(r.vm().network().guest_mac()), std::string::npos)
        << a->stdout_text;
    clones.push_back(*std::move(h));
  }
  EXPECT_EQ(ips.size(), 4u);
  EXPECT_EQ(macs.size(), 4u);
  EXPECT_EQ(taps.size(), 4u);
  std::vector<std::thread> fetchers;
  std::vector<int> fetched(clones.size() + 1, 0);
  std::vector<std::string> why(clones.size() + 1);
  for (size_t i = 0; i < clones.size(); ++i) {
    fetchers.emplace_back(
        [&, i] { fetched[i] = Fetch(clones[i], TestDaemon::kInternetIp, &why[i]); });
  }
  fetchers.emplace_back(
      [&] { fetched.back() = Fetch(*open, TestDaemon::kInternetIp, &why.back()); });
  for (auto& t : fetchers) t.join();
  for (size_t i = 0; i < fetched.size(); ++i) {
    EXPECT_TRUE(fetched[i]) << "fetcher " << i << ": " << why[i] << Ruleset();
  }

  // --- Nothing left behind once the VMs are gone.
  for (auto& c : clones) EXPECT_TRUE(c.close().ok());
  EXPECT_TRUE(open->close().ok());
  EXPECT_TRUE(closed->close().ok());
  EXPECT_TRUE(back->close().ok());
  EXPECT_EQ(HostLinks().find(": smv"), std::string::npos) << HostLinks();
  std::string rules = Ruleset();
  EXPECT_EQ(rules.find("10.123.0.2 "), std::string::npos) << rules;
  EXPECT_EQ(rules.find("comment \"vm "), std::string::npos) << rules;  // No VM's elements.
  EXPECT_EQ(rules.find("18081"), std::string::npos) << rules;
  // Addresses were released: a new VM gets the first address again.
  auto again = Boot("net-again");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->info().network().guest_ip(), "10.123.0.2");
  EXPECT_TRUE(again->close().ok());
}

}  // namespace
}  // namespace smolvm::testing
