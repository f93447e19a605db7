// Two smolvmd instances on one host (issue 9, item 4): different state
// dirs, --instance and --subnet, in the same network namespace. Each has
// its own bridge, nftables table and TAPs; restarting either leaves the
// other's TAPs, rules and VMs alone.
//
// One cold boot (192 MiB) per daemon.
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

SmolVM Boot(TestDaemon& daemon, const std::string& id) {
  v1::VMConfig config;
  config.set_vm_id(id);
  config.set_memory_mib(192);
  config.set_vcpu_count(1);
  SmolVM vm(config, daemon.client_options());
  absl::Status s = vm.start();
  EXPECT_TRUE(s.ok()) << s << daemon.DaemonLog();
  return vm;
}

TEST(InstancesTest, TwoDaemonsOnOneHostTouchOnlyTheirOwn) {
  TestDaemon a;
  ASSERT_TRUE(a.Start().ok()) << a.DaemonLog();
  TestDaemon b;  // Destroyed first: a owns the namespaces.
  b.ShareNetworkOf(a);
  ASSERT_TRUE(b.Start({"--instance", "b", "--subnet", "10.124.0.0/24"}).ok()) << b.DaemonLog();
  SmolVM va = Boot(a, "inst-a");
  SmolVM vb = Boot(b, "inst-b");
  const std::string tap_a = va.info().network().tap_device();
  const std::string tap_b = vb.info().network().tap_device();
  const std::string ip_a = va.info().network().guest_ip();
  ASSERT_FALSE(tap_a.empty());
  ASSERT_FALSE(tap_b.empty());
  ASSERT_NE(tap_a, tap_b);

  auto tables = a.InNetns(a.NetnsHost(), "nft list tables").second;
  EXPECT_TRUE(absl::StrContains(tables, "inet smolvmd\n")) << tables;
  EXPECT_TRUE(absl::StrContains(tables, "inet smolvmd_b\n")) << tables;
  auto links = a.InNetns(a.NetnsHost(), "ip -o link show").second;
  EXPECT_TRUE(absl::StrContains(links, ": smolvm0:")) << links;
  EXPECT_TRUE(absl::StrContains(links, ": smolvm-b:")) << links;

  // Restart each in turn: the other's TAP, rules and VM stay.
  for (TestDaemon* restarted : {&b, &a}) {
    SCOPED_TRACE(restarted == &a ? "restart a" : "restart b");
    restarted->Stop();
    absl::Status s = restarted == &a
                         ? a.Start()
                         : b.Start({"--instance", "b", "--subnet", "10.124.0.0/24"});
    ASSERT_TRUE(s.ok()) << restarted->DaemonLog();
    links = a.InNetns(a.NetnsHost(), "ip -o link show").second;
    EXPECT_TRUE(absl::StrContains(links, ": " + tap_a)) << links;
    EXPECT_TRUE(absl::StrContains(links, ": " + tap_b)) << links;
    auto rules_a = a.InNetns(a.NetnsHost(), "nft list table inet smolvmd").second;
    EXPECT_TRUE(absl::StrContains(rules_a, ip_a)) << rules_a;
    for (SmolVM* vm : {&va, &vb}) {
      auto r = vm->run("echo up");
      ASSERT_TRUE(r.ok()) << vm->vm_id() << ": " << r.status();
      EXPECT_EQ(r->stdout_text, "up\n");
    }
  }
  EXPECT_TRUE(vb.close().ok());
  EXPECT_TRUE(va.close().ok());
}

}  // namespace
}  // namespace smolvm::testing
