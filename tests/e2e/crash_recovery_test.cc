// A daemon killed with SIGKILL (no cleanup at all) and restarted: running
// VMs are re-attached, a VM whose VMM died meanwhile is ERROR with the
// reason, complete snapshots stay listed and restorable, and half-written
// or unlisted snapshot directories and files of unknown VMs are removed.
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/heartbeat.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

void Plant(const std::string& dir) {
  fs::create_directories(dir);
  std::ofstream(dir + "/vmstate.bin") << "half-written";
}

TEST(CrashRecovery, RestartAfterSigkillReconcilesEverything) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  ClientOptions opts = daemon.client_options();
  v1::VMConfig config;
  config.set_vm_id("survivor");
  config.set_memory_mib(192);
  config.set_vcpu_count(1);
  config.set_boot_args(kHeartbeatArg);
  SmolVM vm(config, opts);
  ASSERT_TRUE(vm.start().ok()) << daemon.DaemonLog();
  auto snap = vm.snapshot("kept", /*resume_source=*/true);
  ASSERT_TRUE(snap.ok()) << snap.status();
  auto victim = SmolVM::from_snapshot("kept", true, "victim", opts);
  ASSERT_TRUE(victim.ok()) << victim.status();
  const int64_t survivor_pid = vm.info().vmm_pid();
  const int64_t victim_pid = victim->info().vmm_pid();
  const std::string victim_tap = victim->info().network().tap_device();
  ASSERT_FALSE(victim_tap.empty());

  daemon.Crash();
  // While the daemon is down: one VMM dies, and debris of interrupted work
  // appears (a half-written snapshot, a published one whose row never
  // landed, the disk of a VM whose row is gone).
  kill(static_cast<pid_t>(victim_pid), SIGKILL);
  const std::string snaps = daemon.state_dir() + "/snapshots";
  Plant(snaps + "/.tmp-interrupted-4242");
  Plant(snaps + "/unlisted");
  Plant(daemon.state_dir() + "/vms/ghost");
  // A TAP of a VM that never made it into the store.
  ASSERT_EQ(daemon.InNetns(daemon.NetnsHost(), "ip tuntap add dev smv0a7b00fe mode tap").first, 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  SmolVMManager manager(opts);
  auto survivor = manager.get_vm("survivor");
  ASSERT_TRUE(survivor.ok());
  EXPECT_EQ(survivor->status(), v1::RUNNING) << survivor->error();
  EXPECT_EQ(survivor->vmm_pid(), survivor_pid);
  auto lost = manager.get_vm("victim");
  ASSERT_TRUE(lost.ok());
  EXPECT_EQ(lost->status(), v1::ERROR);
  EXPECT_NE(lost->error().find("gone"), std::string::npos) << lost->error();
  EXPECT_EQ(lost->vmm_pid(), 0);

  EXPECT_FALSE(fs::exists(snaps + "/.tmp-interrupted-4242"));
  EXPECT_FALSE(fs::exists(snaps + "/unlisted"));
  EXPECT_FALSE(fs::exists(daemon.state_dir() + "/vms/ghost"));
  // No TAP is left for the VM whose VMM died, nor for the unknown one; the
  // survivor keeps its own.
  std::string links = daemon.InNetns(daemon.NetnsHost(), "ip -o link show").second;
  EXPECT_EQ(links.find(victim_tap), std::string::npos) << links;
  EXPECT_EQ(links.find("smv0a7b00fe"), std::string::npos) << links;
  EXPECT_NE(links.find(survivor->network().tap_device()), std::string::npos) << links;
  auto listed = manager.list_snapshots();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].snapshot_id(), "kept");

  // The re-attached VM is controllable and the kept snapshot restorable,
  // also into the ERROR VM's identity.
  auto handle = SmolVM::attach("survivor", opts);
  ASSERT_TRUE(handle.ok());
  EXPECT_TRUE(handle->pause().ok()) << daemon.DaemonLog();
  EXPECT_TRUE(handle->resume().ok());
  auto revived = SmolVM::from_snapshot("kept", true, "victim", opts);
  EXPECT_EQ(revived.status().code(), absl::StatusCode::kAlreadyExists)
      << "a clone id that exists is refused even in ERROR";
  ASSERT_TRUE(manager.get_vm("victim").ok());
  auto victim_handle = SmolVM::attach("victim", opts);
  ASSERT_TRUE(victim_handle.ok());
  EXPECT_TRUE(victim_handle->close().ok());
  // The re-adopted VM answers Exec, and the kept snapshot really restores
  // (into a fresh clone that runs commands).
  auto answer = handle->run("echo adopted");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->stdout_text, "adopted\n");
  auto restored = SmolVM::from_snapshot("kept", true, "revived", opts);
  ASSERT_TRUE(restored.ok()) << restored.status() << daemon.DaemonLog();
  auto revived_answer = restored->run("echo revived");
  ASSERT_TRUE(revived_answer.ok()) << revived_answer.status();
  EXPECT_EQ(revived_answer->stdout_text, "revived\n");
  EXPECT_TRUE(restored->close().ok());
  EXPECT_TRUE(handle->close().ok());
  EXPECT_TRUE(daemon.QemuPids().empty());
}

}  // namespace
}  // namespace smolvm::testing
