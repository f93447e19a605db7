// The Python SDK (sdk/python, package `smolvm`) against a real daemon with
// real QEMU guests: the Python copies of the seed's three flows
// (examples/python/*.py, as examples_test runs the C++ ones), then
// sdk/python/tests/e2e_flows.py (run, files, snapshot and SnapshotInfo,
// list, restore, pause/resume, fork, pool, errors, close) on a clone of the
// examples' snapshot, so the whole test pays for one cold boot.
//
// Python is Debian's (SMOLVM_PYTHON: it has python3-grpcio and
// python3-protobuf), with PYTHONPATH at the build's generated SDK tree and
// SMOLVMD_SOCKET at the test daemon. The daemon and everything it made go
// with the TestDaemon, also when a step fails.
#include <string>
#include <vector>

#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/process.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

ProcResult RunPython(const TestDaemon& daemon, const std::string& script,
                     const std::vector<std::string>& args) {
  std::vector<std::string> argv = {SMOLVM_PYTHON, script};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, {"PYTHONPATH=" SMOLVM_PYTHON_SDK_DIR, "PYTHONDONTWRITEBYTECODE=1",
                           "SMOLVMD_SOCKET=" + daemon.socket_path(), "SMOLVMD_ENDPOINT="});
}

std::string Example(const std::string& name) {
  return std::string(SMOLVM_SOURCE_DIR) + "/examples/python/" + name + ".py";
}

TEST(PythonSdk, SeedFlowsAndSdkFlowsEndToEnd) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();

  ProcResult create = RunPython(daemon, Example("create_and_snapshot"), {"my-checkpoint"});
  ASSERT_EQ(create.exit_code, 0) << create.Describe() << daemon.DaemonLog();
  EXPECT_NE(create.out.find("is running"), std::string::npos) << create.out;
  EXPECT_NE(create.out.find("/vmstate.bin"), std::string::npos) << create.out;
  std::cout << create.out;

  ProcResult list = RunPython(daemon, Example("list_snapshots"), {});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_NE(list.out.find("snapshot_id:    my-checkpoint"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("restored_vm_id: None"), std::string::npos) << list.out;
  std::cout << list.out;

  ProcResult restore = RunPython(daemon, Example("restore_snapshot"), {"my-checkpoint"});
  ASSERT_EQ(restore.exit_code, 0) << restore.Describe() << daemon.DaemonLog();
  EXPECT_NE(restore.out.find("status: running"), std::string::npos) << restore.out;
  std::cout << restore.out;

  ProcResult flows =
      RunPython(daemon, std::string(SMOLVM_SOURCE_DIR) + "/sdk/python/tests/e2e_flows.py",
                {"--from-snapshot", "my-checkpoint"});
  std::cout << flows.out << flows.err;
  EXPECT_EQ(flows.exit_code, 0) << flows.Describe() << daemon.DaemonLog();
  EXPECT_NE(flows.out.find(" passed, 0 failed"), std::string::npos) << flows.out;

  // The scripts close their VMs and delete what they made; the examples'
  // snapshot stays, marked restored.
  SmolVMManager manager(daemon.client_options());
  auto vms = manager.list_vms();
  ASSERT_TRUE(vms.ok()) << vms.status();
  EXPECT_TRUE(vms->empty()) << vms->size() << " VMs left, the first " << vms->front().vm_id();
  auto snapshots = manager.list_snapshots();
  ASSERT_TRUE(snapshots.ok()) << snapshots.status();
  ASSERT_EQ(snapshots->size(), 1u);
  EXPECT_EQ(snapshots->front().snapshot_id(), "my-checkpoint");
  EXPECT_TRUE(snapshots->front().restored());
  auto pools = manager.list_pools();
  ASSERT_TRUE(pools.ok()) << pools.status();
  EXPECT_TRUE(pools->empty());
  EXPECT_TRUE(daemon.QemuPids().empty());
}

}  // namespace
}  // namespace smolvm::testing
