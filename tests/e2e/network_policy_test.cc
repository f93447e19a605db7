// Host-facing network policy end to end, in the test's own namespaces
// (test_daemon.h): address spellings that must never reach the firewall,
// the default egress (no link-local metadata, no LAN), the port policy for
// forwards (addresses, range, ports held by host processes), and Docker's
// FORWARD DROP policy in the host namespace.
//
// PolicyTest: one daemon with the default policies; a tenant (a real user
// made by the test) boots one VM. DockerCoexistence: a daemon started after
// Docker's iptables set-up was put into its host namespace, with
// egress_allow_lan = true; one VM boots, a second is restored from it.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/connection.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_daemon.h"
#include "tests/e2e/test_users.h"

namespace smolvm::testing {
namespace {

using nlohmann::json;

std::string Url(const std::string& ip) { return absl::StrCat("http://", ip, ":8080/hello.txt"); }

// A command the guest runs to fetch the internet page from `ip`. busybox
// wget's own -T timeout crashes in Debian's static busybox, so the guest's
// `timeout` bounds it.
std::vector<std::string> FetchCommand(const std::string& ip) {
  return {"sh", "-c", absl::StrCat("timeout 5 wget -q -O - ", Url(ip))};
}
constexpr char kPage[] = "hello from the internet\n";

// Fetches the page from the host namespace itself (the control: the
// address answers, so a guest that cannot reach it is being stopped).
bool HostFetches(const TestDaemon& d, const std::string& ip) {
  auto r = d.InNetns(d.NetnsHost(), absl::StrCat("timeout 5 busybox wget -q -O - ", Url(ip)));
  return r.first == 0 && r.second == kPage;
}

// A process started in namespace `netns`, ended (by pid) on destruction.
class NetnsProcess {
 public:
  NetnsProcess(const std::string& netns, const std::vector<std::string>& argv) {
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<std::string> args = {"ip", "netns", "exec", netns};
      args.insert(args.end(), argv.begin(), argv.end());
      std::vector<char*> cargv;
      for (auto& a : args) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      execvp("ip", cargv.data());
      _exit(127);
    }
  }
  ~NetnsProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // `ip netns exec` execs the command in place: this is its pid.
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// A process started in the host namespace.
class HostProcess : public NetnsProcess {
 public:
  HostProcess(const TestDaemon& d, const std::vector<std::string>& argv)
      : NetnsProcess(d.NetnsHost(), argv) {}
};

class PolicyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto users = TestUsers::Create(1, 0);
    ASSERT_TRUE(users.ok()) << users.status();
    users_ = users->release();
    daemon_ = new TestDaemon();
    // Guests' resolver (and the domain rules' upstream): DomainRules runs a
    // DNS server there.
    auto s = daemon_->Start(
        {"--socket-group", users_->group(), "--dns", TestDaemon::kInternetIp});
    ASSERT_TRUE(s.ok()) << s;
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete users_;
  }
  void SetUp() override {
    if (!ready_) FAIL() << "suite set-up failed (see above)";
  }
  static RunAs Tenant() { return RunAs{users_->user(0).uid, users_->user(0).gid}; }
  static ProcResult Ctl(const std::vector<std::string>& args) {
    return daemon_->Ctl(args, Tenant());
  }
  // Boots the tenant's VMs once, for the tests that need them, at once:
  // kVm (default egress) and kRestrictedVm (restricted to 203.0.113.6 and,
  // in vain, the metadata address).
  static void BootVm() {
    if (booted_) return;
    ProcResult open, restricted;
    std::thread a([&] {
      open = Ctl({"vm", "create", "--id", kVm, "--vcpus", "1", "--memory-mib", "192"});
    });
    std::thread b([&] {
      restricted = Ctl({"vm", "create", "--id", kRestrictedVm, "--vcpus", "1", "--memory-mib",
                        "192", "--allow", absl::StrCat(TestDaemon::kOtherInternetIp, "/32"),
                        "--allow", "169.254.0.0/16"});
    });
    a.join();
    b.join();
    ASSERT_EQ(open.exit_code, 0) << open.Describe() << daemon_->DaemonLog();
    ASSERT_EQ(restricted.exit_code, 0) << restricted.Describe() << daemon_->DaemonLog();
    booted_ = true;
  }
  static bool Fetches(const std::string& ip, std::string* why = nullptr,
                      const std::string& vm = kVm) {
    std::vector<std::string> args = {"vm", "exec", vm, "--"};
    for (const auto& a : FetchCommand(ip)) args.push_back(a);
    ProcResult r = Ctl(args);
    if (why) *why = r.Describe();
    return r.exit_code == 0 && r.out == kPage;
  }

  static constexpr char kVm[] = "pol-vm";
  static constexpr char kRestrictedVm[] = "pol-restricted";
  static TestUsers* users_;
  static TestDaemon* daemon_;
  static bool ready_, booted_;
};
TestUsers* PolicyTest::users_ = nullptr;
TestDaemon* PolicyTest::daemon_ = nullptr;
bool PolicyTest::ready_ = false;
bool PolicyTest::booted_ = false;

const std::vector<std::string> kBadSpellings = {
    "010.0.0.1", "/+8",        "1.2.3.4/33", " 1.2.3.4",  "1.2.3.4 ",    "1.2.3.4/+8", "1.2.3",
    "256.1.1.1", "1.2.3.4/-1", "0x7f.0.0.1", "1.2.3.4\n", "1.2.3.4/8/8", "::1"};

// Bad spellings never get stored: INVALID_ARGUMENT, nothing created (the
// seed stored them and then failed every VM's firewall update).
TEST_F(PolicyTest, BadAddressSpellingsAreInvalidAndBlockNothing) {
  ClientOptions opts = daemon_->client_options();
  Connection conn(opts);
  const HostPicture before = Picture(*daemon_);
  for (const std::string& bad : kBadSpellings) {
    SCOPED_TRACE("\"" + bad + "\"");
    v1::CreateVmRequest create;
    create.mutable_config()->set_vm_id("bad-cidr");
    create.mutable_config()->mutable_egress()->set_mode(v1::EgressPolicy::EGRESS_RESTRICTED);
    create.mutable_config()->mutable_egress()->add_allow_cidrs(bad);
    auto r = conn.Call(&v1::VmService::Stub::CreateVm, create);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    v1::CreateVmRequest forward;
    forward.mutable_config()->set_vm_id("bad-host-ip");
    auto* f = forward.mutable_config()->add_port_forwards();
    f->set_host_ip(bad);
    f->set_host_port(20000);
    f->set_guest_port(80);
    r = conn.Call(&v1::VmService::Stub::CreateVm, forward);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  }
  // The CLI hands CIDRs to the daemon unchecked.
  ProcResult cli = Ctl({"vm", "create", "--id", "bad-cli", "--no-start", "--allow", "010.0.0.1"});
  EXPECT_EQ(cli.exit_code, kExitInvalid) << cli.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // Then a VM starts, and its egress and forwards work.
  BootVm();
  std::string why;
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << why;
  // Bad spellings on a running VM's ExposePort change nothing either.
  const HostPicture running = Picture(*daemon_);
  for (const std::string& bad : kBadSpellings) {
    v1::ExposePortRequest expose;
    expose.set_vm_id(kVm);
    expose.mutable_forward()->set_host_ip(bad);
    expose.mutable_forward()->set_host_port(20001);
    expose.mutable_forward()->set_guest_port(80);
    auto r = conn.Call(&v1::VmService::Stub::ExposePort, expose);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << "\"" << bad << "\": " << r.status();
  }
  EXPECT_EQ(Diff(running, Picture(*daemon_)), "");
  ProcResult expose = Ctl({"vm", "expose", kVm, "127.0.0.1:20002:8000"});
  EXPECT_EQ(expose.exit_code, 0) << expose.Describe() << daemon_->DaemonLog();
  EXPECT_EQ(Ctl({"vm", "unexpose", kVm, "127.0.0.1:20002"}).exit_code, 0);
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << why;
}

// Open egress reaches the internet, not link-local metadata and not the
// host's LAN, although the host reaches both.
TEST_F(PolicyTest, DefaultEgressSkipsMetadataAndLan) {
  BootVm();
  json vm = One(Ctl({"vm", "get", kVm}).out);
  EXPECT_EQ(vm.value("network", json::object()).value("egress", json::object()).value("mode", ""),
            "EGRESS_OPEN")
      << vm.dump();
  std::string why;
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << why;
  EXPECT_TRUE(Fetches(TestDaemon::kOtherInternetIp, &why)) << why;
  ASSERT_TRUE(HostFetches(*daemon_, TestDaemon::kMetadataIp)) << "the test's metadata server";
  ASSERT_TRUE(HostFetches(*daemon_, TestDaemon::kLanHostIp)) << "the test's LAN host";
  EXPECT_TRUE(Fetches(TestDaemon::kOtherInternetIp, &why, kRestrictedVm)) << why;
  // What must not work, at once (each attempt waits out its timeout).
  struct Blocked {
    std::string vm, ip, what;
    bool reached = false;
  };
  std::vector<Blocked> blocked = {
      {kVm, TestDaemon::kMetadataIp, "a guest reached 169.254.169.254"},
      {kVm, TestDaemon::kLanHostIp, "a guest reached the host's LAN"},
      {kRestrictedVm, TestDaemon::kInternetIp, "a restricted guest reached what it does not allow"},
      // The deny list holds whatever the mode: a restricted VM that allows
      // 169.254.0.0/16 still does not reach the metadata address.
      {kRestrictedVm, TestDaemon::kMetadataIp, "a restricted guest reached 169.254.169.254"},
  };
  std::vector<std::thread> threads;
  for (auto& b : blocked) {
    threads.emplace_back([&b] { b.reached = Fetches(b.ip, nullptr, b.vm); });
  }
  ProcResult nc;  // Nor any other port of the LAN host.
  threads.emplace_back([&nc] {
    nc = Ctl({"vm", "exec", kVm, "--", "sh", "-c",
              absl::StrCat("echo | nc -w 2 ", TestDaemon::kLanHostIp, " 22")});
  });
  for (auto& t : threads) t.join();
  for (const auto& b : blocked) EXPECT_FALSE(b.reached) << b.what;
  EXPECT_NE(nc.exit_code, 0) << nc.Describe();
}

TEST_F(PolicyTest, ForwardsOnlyWhereThePortPolicyAllows) {
  BootVm();
  ASSERT_EQ(Ctl({"vm", "exec", kVm, "--", "sh", "-c",
                 "mkdir -p /root/www && echo guest-page > /root/www/index.html && "
                 "httpd -p 8000 -h /root/www"})
                .exit_code,
            0);
  HostPicture before = Picture(*daemon_);
  struct Case {
    std::string spec;
    std::string why;
  };
  for (const Case& c : std::vector<Case>{
           {"0.0.0.0:22:8000", "host_ip"},
           {"0.0.0.0:20003:8000", "host_ip"},
           {"198.51.100.1:20003:8000", "host_ip"},  // The host's LAN address.
           {"169.254.169.254:20003:8000", "host_ip"},
           {"127.0.0.1:80:8000", "range"},
           {"127.0.0.1:22:8000", "range"},
           {"127.0.0.1:9999:8000", "range"},
           {"127.0.0.1:60000:8000", "range"},
           {"127.0.0.1:53:53/udp", "range"},
       }) {
    SCOPED_TRACE(c.spec);
    ProcResult r = Ctl({"vm", "expose", kVm, c.spec});
    // PERMISSION_DENIED (smolvmctl exit 1), naming the setting.
    EXPECT_EQ(r.exit_code, kExitOther) << r.Describe();
    EXPECT_TRUE(absl::StrContains(r.err, "[ports]")) << r.Describe();
    EXPECT_TRUE(absl::StrContains(r.err, c.why)) << r.Describe();
  }
  // The policy holds at create time and for admins too.
  ProcResult create =
      Ctl({"vm", "create", "--id", "pol-fwd", "--no-start", "--forward", "0.0.0.0:22:22"});
  EXPECT_EQ(create.exit_code, kExitOther) << create.Describe();
  ProcResult admin = daemon_->Ctl({"vm", "expose", kVm, "0.0.0.0:22:8000"});
  EXPECT_EQ(admin.exit_code, kExitOther) << admin.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // A port a host process holds: FAILED_PRECONDITION naming the holder.
  HostProcess holder(*daemon_, {"busybox", "nc", "-l", "-p", "23456"});
  bool listening = false;
  for (int i = 0; i < 50 && !listening; ++i) {
    listening =
        absl::StrContains(daemon_->InNetns(daemon_->NetnsHost(), "ss -ltnH").second, ":23456");
    if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(listening);
  ProcResult held = Ctl({"vm", "expose", kVm, "127.0.0.1:23456:8000"});
  EXPECT_EQ(held.exit_code, kExitPrecondition) << held.Describe();
  EXPECT_TRUE(absl::StrContains(held.err, absl::StrCat("pid ", holder.pid())))
      << "the holder is visible to the daemon: " << held.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // An allowed forward works from the host namespace.
  ProcResult ok = Ctl({"vm", "expose", kVm, "127.0.0.1:24080:8000"});
  ASSERT_EQ(ok.exit_code, 0) << ok.Describe();
  auto page = daemon_->InNetns(daemon_->NetnsHost(),
                               "timeout 5 busybox wget -q -O - http://127.0.0.1:24080/");
  EXPECT_EQ(page.second, "guest-page\n");
  // A loopback forward is not reachable from the LAN (through the host's
  // uplink address), nor from a guest (through the bridge's address).
  auto from_lan = daemon_->InNetns(
      daemon_->NetnsInternet(),
      absl::StrCat("timeout 3 busybox wget -q -O - http://", TestDaemon::kHostUplinkIp, ":24080/"));
  EXPECT_NE(from_lan.second, "guest-page\n") << "a 127.0.0.1 forward answered on the uplink";
  ProcResult from_guest =
      Ctl({"vm", "exec", kVm, "--", "sh", "-c", "timeout 3 wget -q -O - http://10.123.0.1:24080/"});
  EXPECT_NE(from_guest.out, "guest-page\n") << "a guest reached a host forward";
  EXPECT_EQ(Ctl({"vm", "unexpose", kVm, "127.0.0.1:24080"}).exit_code, 0);
  auto gone = daemon_->InNetns(daemon_->NetnsHost(),
                               "timeout 3 busybox wget -q -O - http://127.0.0.1:24080/");
  EXPECT_NE(gone.first, 0);
}

// Docker's iptables policy (FORWARD DROP, jump to DOCKER-USER, which ends in
// RETURN) set in the host namespace before the daemon starts: guests still
// reach the internet (and, with egress_allow_lan, the LAN), not each other
// and not the metadata address; the daemon's accept rules live in the test
// namespace only and go with the last VM.
// UpdateNetworkPolicy on a running VM (smolvmctl vm egress): a deny list
// beside open egress, off and back to open, each in force for the next
// connection; the policy in the VM's record, and carried by a fork's
// snapshot into its child. Leaves kVm open again.
TEST_F(PolicyTest, LiveEgressChangesAndDenyLists) {
  BootVm();
  const std::string other = absl::StrCat(TestDaemon::kOtherInternetIp, "/32");
  std::string why;
  ProcResult r = Ctl({"--json", "vm", "egress", kVm, "open", "--deny", other});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  json egress = One(r.out).value("network", json::object()).value("egress", json::object());
  EXPECT_EQ(egress.value("mode", ""), "EGRESS_OPEN") << r.out;
  EXPECT_EQ(egress.value("deny_cidrs", json::array()), json::array({other})) << r.out;
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << why;
  EXPECT_FALSE(Fetches(TestDaemon::kOtherInternetIp)) << "a denied address was reached";

  // Off, then open again: the next connection follows each change.
  r = Ctl({"vm", "egress", kVm, "off"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(Fetches(TestDaemon::kInternetIp)) << "egress off, and the guest got out";
  r = Ctl({"vm", "egress", kVm, "open", "--deny", other});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << why;

  // A fork's child (a snapshot restored) carries the policy.
  r = Ctl({"vm", "fork", kVm, "--count", "1", "--snapshot-id", "pol-fork", "--prefix",
           "pol-kid"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << daemon_->DaemonLog();
  json kid = One(Ctl({"--json", "vm", "get", "pol-kid-1"}).out);
  EXPECT_EQ(kid["network"]["egress"].value("deny_cidrs", json::array()), json::array({other}))
      << kid.dump();
  EXPECT_EQ(kid["config"]["egress"].value("deny_cidrs", json::array()), json::array({other}))
      << kid.dump();
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why, "pol-kid-1")) << why;
  EXPECT_FALSE(Fetches(TestDaemon::kOtherInternetIp, nullptr, "pol-kid-1"))
      << "a fork's child reached what its source denies";
  EXPECT_EQ(Ctl({"vm", "delete", "pol-kid-1"}).exit_code, 0);
  EXPECT_EQ(Ctl({"snapshot", "delete", "pol-fork"}).exit_code, 0);

  // Refused at the edge, nothing changed.
  r = Ctl({"vm", "egress", kVm, "restricted", "--allow", "1.2.3.4/33"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "not an IPv4 CIDR")) << r.Describe();
  r = Ctl({"vm", "egress", kVm, "off", "--deny", other});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(Fetches(TestDaemon::kOtherInternetIp)) << "a refused change took effect";

  r = Ctl({"vm", "egress", kVm, "open"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(Fetches(TestDaemon::kOtherInternetIp, &why)) << why;
}

// Domain rules end to end: a DNS server in the fake internet (dnsmasq:
// allowed.test and every name below wild.test / denied.test / other.test
// have addresses there, TTL 0), the daemon's resolver in between.
TEST_F(PolicyTest, DomainRulesFollowTheAnswersTheGuestGets) {
  BootVm();
  const std::string pid_file = daemon_->dir() + "/dnsmasq.pid";
  NetnsProcess dns(daemon_->NetnsInternet(),
                   {"/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                    "--conf-file=/dev/null", "--bind-interfaces",
                    absl::StrCat("--listen-address=", TestDaemon::kInternetIp),
                    "--user=root", "--group=root", "--pid-file=" + pid_file,
                    // Names under .test come from here alone (no upstream):
                    // what has no address is answered, not REFUSED.
                    "--local=/test/",
                    absl::StrCat("--address=/allowed.test/", TestDaemon::kInternetIp),
                    absl::StrCat("--address=/wild.test/", TestDaemon::kOtherInternetIp),
                    absl::StrCat("--address=/denied.test/", TestDaemon::kOtherInternetIp),
                    absl::StrCat("--address=/other.test/", TestDaemon::kOtherInternetIp)});
  // The server answers (from the host namespace, as the daemon asks it).
  bool serving = false;
  for (int i = 0; i < 50 && !serving; ++i) {
    serving = daemon_->InNetns(daemon_->NetnsHost(),
                               absl::StrCat("busybox nslookup -type=a allowed.test ",
                                            TestDaemon::kInternetIp))
                  .first == 0;
    if (!serving) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(serving) << "dnsmasq did not start";
  auto fetch_name = [](const std::string& name, std::string* why = nullptr) {
    ProcResult r = Ctl({"vm", "exec", kVm, "--", "sh", "-c",
                        absl::StrCat("timeout 5 wget -q -O - http://", name, ":8080/hello.txt")});
    if (why) *why = r.Describe();
    return r.exit_code == 0 && r.out == kPage;
  };
  auto lookup = [](const std::string& name, const std::string& server = "") {
    return Ctl({"vm", "exec", kVm, "--", "sh", "-c",
                absl::StrCat("timeout 5 nslookup -type=a ", name, " ", server)});
  };
  std::string why;

  // Restricted to names: only what their answers give is reachable.
  ProcResult r = Ctl({"--json", "vm", "egress", kVm, "restricted", "--allow-domain",
                      "allowed.test", "--allow-domain", "*.wild.test"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << daemon_->DaemonLog();
  json egress = One(r.out).value("network", json::object()).value("egress", json::object());
  EXPECT_EQ(egress.value("allow_domains", json::array()),
            json::array({"allowed.test", "*.wild.test"}))
      << r.out;
  EXPECT_FALSE(Fetches(TestDaemon::kInternetIp)) << "an address reached before any answer";
  EXPECT_TRUE(fetch_name("allowed.test", &why)) << why << daemon_->DaemonLog();
  EXPECT_TRUE(Fetches(TestDaemon::kInternetIp, &why)) << "the learned address: " << why;
  // Names outside the list are refused without an answer (nothing reaches
  // the upstream), and their addresses stay closed.
  EXPECT_FALSE(fetch_name("wild.test")) << "*.wild.test does not cover wild.test";
  r = lookup("other.test");
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out + r.err, "REFUSED")) << r.Describe();
  EXPECT_FALSE(Fetches(TestDaemon::kOtherInternetIp)) << "other.test's address, never allowed";
  // A wildcard's name opens its address (other.test's too, the same one).
  EXPECT_TRUE(fetch_name("www.wild.test", &why)) << why;
  // Any resolver the guest names is the daemon's: the LAN host runs none.
  r = lookup("allowed.test", TestDaemon::kLanHostIp);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, TestDaemon::kInternetIp)) << r.Describe();
  // DNS over TLS would go around the resolver: closed even where the
  // address is open (www.wild.test's).
  NetnsProcess dot(daemon_->NetnsInternet(), {"busybox", "nc", "-ll", "-p", "853", "-e", "true"});
  auto dot_probe = [](const std::string& nc) {
    return absl::StrCat("echo | timeout 5 ", nc, " -w 2 ", TestDaemon::kOtherInternetIp, " 853");
  };
  // The control, from the host namespace (busybox's nc, as in the guest).
  bool listening = false;
  for (int i = 0; i < 50 && !listening; ++i) {
    listening = daemon_->InNetns(daemon_->NetnsHost(), dot_probe("busybox nc")).first == 0;
    if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(listening) << "no listener on port 853";
  EXPECT_TRUE(Fetches(TestDaemon::kOtherInternetIp, &why)) << why;
  r = Ctl({"vm", "exec", kVm, "--", "sh", "-c", dot_probe("nc")});
  EXPECT_NE(r.exit_code, 0) << "DNS over TLS goes around the rules: " << r.Describe();

  // A new policy forgets what the old one learned, at once.
  r = Ctl({"vm", "egress", kVm, "restricted", "--allow-domain", "*.wild.test"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_FALSE(Fetches(TestDaemon::kInternetIp)) << "learned under the old policy, still open";
  EXPECT_FALSE(fetch_name("allowed.test")) << "no longer allowed";

  // Open with a deny list of names: those do not resolve, the rest does.
  r = Ctl({"--json", "vm", "egress", kVm, "open", "--deny-domain", "denied.test"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = lookup("denied.test");
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out + r.err, "NXDOMAIN")) << r.Describe();
  EXPECT_TRUE(fetch_name("other.test", &why)) << why;

  // Refused at the edge.
  r = Ctl({"vm", "egress", kVm, "open", "--allow-domain", "allowed.test"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "--allow-domain needs --egress restricted")) << r.Describe();
  r = Ctl({"vm", "egress", kVm, "restricted", "--allow-domain", "a..test"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(r.err, "allow_domains")) << r.Describe();

  // Back to open for the other tests; the resolver is out of the way again.
  r = Ctl({"vm", "egress", kVm, "open"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(fetch_name("denied.test", &why)) << why;
}

TEST(DockerCoexistence, GuestsKeepEgressAndIsolationUnderForwardDrop) {
  TestDaemon d;
  ASSERT_TRUE(d.PrepareNetwork().ok());
  for (const char* rule :
       {"iptables -P FORWARD DROP", "iptables -N DOCKER-USER", "iptables -A FORWARD -j DOCKER-USER",
        "iptables -A DOCKER-USER -j RETURN"}) {
    auto r = d.InNetns(d.NetnsHost(), rule);
    ASSERT_EQ(r.first, 0) << rule << ": " << r.second;
  }
  const std::string bridge = "svb" + d.tag();
  ASSERT_TRUE(d.Start({"--bridge", bridge}, "[network]\negress_allow_lan = true\n").ok())
      << d.DaemonLog();
  ProcResult created =
      d.Ctl({"vm", "create", "--id", "dk-a", "--vcpus", "1", "--memory-mib", "192"});
  ASSERT_EQ(created.exit_code, 0) << created.Describe() << d.DaemonLog();
  auto fetch = [&](const std::string& vm, const std::string& ip) {
    std::vector<std::string> args = {"vm", "exec", vm, "--"};
    for (const auto& a : FetchCommand(ip)) args.push_back(a);
    ProcResult r = d.Ctl(args);
    return r.exit_code == 0 && r.out == kPage;
  };
  auto ruleset = [&] { return d.InNetns(d.NetnsHost(), "nft list ruleset").second; };
  EXPECT_TRUE(fetch("dk-a", TestDaemon::kInternetIp)) << ruleset() << d.DaemonLog();
  EXPECT_TRUE(fetch("dk-a", TestDaemon::kLanHostIp)) << "egress_allow_lan = true";
  EXPECT_FALSE(fetch("dk-a", TestDaemon::kMetadataIp)) << "link-local stays closed";
  // What the daemon added, where Docker wants it.
  std::string docker_user = d.InNetns(d.NetnsHost(), "iptables -S DOCKER-USER").second +
                            d.InNetns(d.NetnsHost(), "nft list chain ip filter DOCKER-USER").second;
  EXPECT_TRUE(absl::StrContains(docker_user, bridge)) << docker_user;

  // A second VM (restored from the first): reachable by neither.
  ASSERT_EQ(d.Ctl({"snapshot", "create", "dk-a", "--id", "dk-snap", "--resume"}).exit_code, 0);
  ProcResult restored = d.Ctl({"snapshot", "restore", "dk-snap", "--vm-id", "dk-b"});
  ASSERT_EQ(restored.exit_code, 0) << restored.Describe() << d.DaemonLog();
  const std::string b_ip = One(restored.out).value("network", json::object()).value("guest_ip", "");
  ASSERT_FALSE(b_ip.empty()) << restored.out;
  EXPECT_TRUE(fetch("dk-b", TestDaemon::kInternetIp)) << "restored guest under FORWARD DROP";
  // setsid: the listener must outlive the exec (whose process group ends with it).
  ASSERT_EQ(d.Ctl({"vm", "exec", "dk-b", "--", "sh", "-c",
                   "setsid nc -ll -p 7000 -e true </dev/null >/dev/null 2>&1 & sleep 0.3"})
                .exit_code,
            0);
  ProcResult cross = d.Ctl(
      {"vm", "exec", "dk-a", "--", "sh", "-c", absl::StrCat("echo | nc -w 2 ", b_ip, " 7000")});
  EXPECT_NE(cross.exit_code, 0) << "a VM reached another VM: " << cross.Describe();
  ProcResult self =
      d.Ctl({"vm", "exec", "dk-b", "--", "sh", "-c", "echo | nc -w 2 127.0.0.1 7000"});
  EXPECT_EQ(self.exit_code, 0) << "the listener itself works: " << self.Describe();

  // Only the test's namespace got rules.
  const std::string root_rules = RunProcess({"nft", "-s", "list", "ruleset"}).out;
  EXPECT_FALSE(absl::StrContains(root_rules, bridge)) << "rules in the machine's own namespace";
  EXPECT_FALSE(absl::StrContains(RunProcess({"iptables", "-S"}).out, bridge));

  // The last VM gone, the accept rules go; Docker's own set-up stays.
  EXPECT_EQ(d.Ctl({"vm", "delete", "dk-a"}).exit_code, 0);
  EXPECT_EQ(d.Ctl({"vm", "delete", "dk-b"}).exit_code, 0);
  docker_user = d.InNetns(d.NetnsHost(), "iptables -S DOCKER-USER").second;
  EXPECT_FALSE(absl::StrContains(docker_user, bridge)) << docker_user;
  EXPECT_TRUE(absl::StrContains(docker_user, "-A DOCKER-USER -j RETURN")) << docker_user;
  EXPECT_TRUE(
      absl::StrContains(d.InNetns(d.NetnsHost(), "iptables -S FORWARD").second, "-P FORWARD DROP"));
}

}  // namespace
}  // namespace smolvm::testing
