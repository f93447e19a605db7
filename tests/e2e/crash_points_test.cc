// kill -9 inside multi-step operations (issue 9): smolvmd is started with
// SMOLVMD_TEST_CRASH_AT=<point> (lib/base/crash_point.h), dies with SIGKILL
// there, and is restarted as systemd would. After each restart: the
// interrupted create or restore left no VM (no row, CREATED or otherwise),
// the interrupted delete is finished,
// no QEMU, no TAP, no cgroup, no files; an interrupted snapshot is not
// listed; the VM that was running before still runs and answers Exec; the
// base snapshot still restores.
//
// One cold boot (192 MiB) for the whole file.
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

struct Point {
  const char* name;
  const char* object;  // The VM or snapshot the interrupted operation makes.
};

TEST(CrashPointsTest, EveryInterruptedOperationIsRolledBack) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  ClientOptions opts = daemon.client_options();
  v1::VMConfig config;
  config.set_vm_id("steady");
  config.set_memory_mib(192);
  config.set_vcpu_count(1);
  SmolVM steady(config, opts);
  ASSERT_TRUE(steady.start().ok()) << daemon.DaemonLog();
  ASSERT_TRUE(steady.snapshot("base", /*resume_source=*/true).ok());

  const std::vector<Point> points = {
      {"create.row_inserted", "c-row"},
      {"create.disk_copied", "c-disk"},
      {"restore.row_inserted", "r-row"},
      {"restore.vmm_started", "r-vmm"},
      {"snapshot.published", "s-pub"},
      {"delete.files_removed", "d-files"},
  };
  int survived = 0;
  for (const Point& p : points) {
    SCOPED_TRACE(p.name);
    daemon.Stop();  // VMs outlive it.
    setenv("SMOLVMD_TEST_CRASH_AT", p.name, 1);
    absl::Status started = daemon.Start();
    unsetenv("SMOLVMD_TEST_CRASH_AT");
    ASSERT_TRUE(started.ok()) << daemon.DaemonLog();

    absl::Status op;
    if (absl::StartsWith(p.name, "create.")) {
      v1::VMConfig c;
      c.set_vm_id(p.object);
      c.set_memory_mib(128);
      c.set_vcpu_count(1);
      SmolVM vm(c, opts);
      op = vm.start();
    } else if (absl::StartsWith(p.name, "restore.")) {
      op = SmolVM::from_snapshot("base", /*resume_vm=*/true, p.object, opts).status();
    } else if (absl::StartsWith(p.name, "delete.")) {
      auto victim = SmolVM::from_snapshot("base", /*resume_vm=*/true, p.object, opts);
      ASSERT_TRUE(victim.ok()) << victim.status();
      op = victim->close();
    } else {
      op = steady.snapshot(p.object, /*resume_source=*/true).status();
    }
    EXPECT_FALSE(op.ok()) << "the daemon did not die at " << p.name;
    EXPECT_TRUE(absl::StrContains(daemon.DaemonLog(), absl::StrCat("dying with SIGKILL at ",
                                                                   p.name)))
        << daemon.DaemonLog();
    daemon.Crash();  // Reaps it.
    ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();

    SmolVMManager manager(opts);
    bool clean = true;
    auto check = [&](bool ok, const std::string& what) {
      EXPECT_TRUE(ok) << what;
      clean &= ok;
    };
    const std::string id = p.object;
    check(manager.get_vm(id).status().code() == absl::StatusCode::kNotFound,
          "the interrupted VM still exists: " + manager.get_vm(id).status().ToString());
    check(manager.get_snapshot(id).status().code() == absl::StatusCode::kNotFound,
          "the interrupted snapshot is listed");
    check(!fs::exists(daemon.state_dir() + "/vms/" + id), "its files are left");
    check(!fs::exists(daemon.state_dir() + "/snapshots/" + id), "its snapshot dir is left");
    check(!fs::exists(daemon.run_dir() + "/vms/" + id), "its run dir is left");
    bool group_left = false;
    for (const std::string& dir : daemon.CgroupDirs()) group_left |= fs::exists(dir + "/" + id);
    check(!group_left, "its cgroup is left");
    auto vms = manager.list_vms();
    ASSERT_TRUE(vms.ok());
    check(vms->size() == 1 && daemon.QemuPids().size() == 1,
          absl::StrCat(vms->size(), " vms, ", daemon.QemuPids().size(), " qemu processes"));
    std::string links = daemon.InNetns(daemon.NetnsHost(), "ip -o link show").second;
    int taps = 0;
    for (size_t at = links.find(": smv"); at != std::string::npos; at = links.find(": smv", at + 1)) {
      ++taps;
    }
    check(taps == 1, "TAPs: " + links);
    auto answer = steady.run("echo steady");
    check(answer.ok() && answer->stdout_text == "steady\n", "the running VM does not answer");
    if (clean) ++survived;
  }
  std::printf("crash points survived: %d/%zu\n", survived, points.size());
  EXPECT_EQ(survived, static_cast<int>(points.size()));

  // The base snapshot still restores and runs.
  auto clone = SmolVM::from_snapshot("base", /*resume_vm=*/true, "after", opts);
  ASSERT_TRUE(clone.ok()) << clone.status() << daemon.DaemonLog();
  auto r = clone->run("echo after");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text, "after\n");

  // A clone restored PAUSED, then a crash before its resume: the resume
  // after the restart still fixes its clock and entropy and re-addresses it
  // (it must not run with its snapshot's random state and address).
  auto paused = SmolVM::from_snapshot("base", /*resume_vm=*/false, "paused-clone", opts);
  ASSERT_TRUE(paused.ok()) << paused.status();
  const std::string ip = paused->info().network().guest_ip();
  ASSERT_FALSE(ip.empty());
  daemon.Crash();
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  const size_t log_before = daemon.DaemonLog().size();
  ASSERT_TRUE(paused->resume().ok()) << daemon.DaemonLog();
  EXPECT_TRUE(absl::StrContains(daemon.DaemonLog().substr(log_before),
                                "vm paused-clone: clock and entropy fixed"))
      << daemon.DaemonLog().substr(log_before);
  auto addr = paused->run("ip -4 -o addr show");
  ASSERT_TRUE(addr.ok()) << addr.status();
  EXPECT_TRUE(absl::StrContains(addr->stdout_text, ip + "/")) << addr->stdout_text;
}

}  // namespace
}  // namespace smolvm::testing
