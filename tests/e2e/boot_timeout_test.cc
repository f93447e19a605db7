// A guest that never signals readiness: after the daemon's bounded wait the
// VM is ERROR with the console tail, its VMM is gone, and the call says
// DEADLINE_EXCEEDED.
#include <filesystem>

#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

TEST(BootTimeout, NeverReadyGuestBecomesErrorAndIsReleased) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start({"--boot-timeout-seconds", "4"}).ok()) << daemon.DaemonLog();
  v1::VMConfig config;
  config.set_vm_id("silent");
  config.set_memory_mib(128);
  config.set_vcpu_count(1);
  // A shell as init never runs the readiness hello.
  config.set_boot_args("init=/bin/sh");
  SmolVM vm(config, daemon.client_options());
  absl::Status s = vm.start();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("did not become ready"), std::string::npos) << s;
  auto got = SmolVM::attach("silent", daemon.client_options());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->status(), v1::ERROR);
  EXPECT_NE(got->info().error().find("console tail"), std::string::npos);
  EXPECT_TRUE(daemon.QemuPids().empty());
  EXPECT_FALSE(std::filesystem::exists(daemon.run_dir() + "/vms/silent"));
  // ERROR is not terminal: the VM can be deleted (or started again).
  EXPECT_TRUE(got->close().ok());
}

}  // namespace
}  // namespace smolvm::testing
