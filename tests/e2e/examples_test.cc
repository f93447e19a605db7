// The seed's three flows, as the compiled examples/ programs run them,
// against a real daemon: create+start → snapshot("my-checkpoint") → close;
// list_snapshots(); from_snapshot("my-checkpoint", resume_vm=true).
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

struct ProgramRun {
  int exit_code;
  std::string output;
};

ProgramRun RunExample(const TestDaemon& daemon, const std::string& program, const std::string& arg) {
  std::string cmd = "SMOLVMD_SOCKET=" + daemon.socket_path() + " " + SMOLVM_EXAMPLES_DIR +
                    "/" + program + " " + arg + " 2>&1";
  ProgramRun run{-1, ""};
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return run;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) run.output.append(buf.data(), n);
  int status = pclose(pipe);
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

TEST(Examples, SeedFlowsRunEndToEnd) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();

  ProgramRun create = RunExample(daemon, "create_and_snapshot", "my-checkpoint");
  ASSERT_EQ(create.exit_code, 0) << create.output << daemon.DaemonLog();
  std::cout << create.output;

  ProgramRun list = RunExample(daemon, "list_snapshots", "");
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find("my-checkpoint"), std::string::npos) << list.output;
  std::cout << list.output;

  ProgramRun restore = RunExample(daemon, "restore_snapshot", "my-checkpoint");
  ASSERT_EQ(restore.exit_code, 0) << restore.output << daemon.DaemonLog();
  EXPECT_NE(restore.output.find("RUNNING"), std::string::npos) << restore.output;
  std::cout << restore.output;

  // The examples close their VMs; the snapshot stays, marked restored.
  SmolVMManager manager(daemon.client_options());
  auto vms = manager.list_vms();
  ASSERT_TRUE(vms.ok());
  EXPECT_TRUE(vms->empty());
  auto snap = manager.get_snapshot("my-checkpoint");
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_TRUE(snap->restored());
  EXPECT_TRUE(daemon.QemuPids().empty());
}

}  // namespace
}  // namespace smolvm::testing
