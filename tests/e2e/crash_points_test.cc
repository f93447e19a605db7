// kill -9 inside multi-step operations (issue 9): smolvmd is started with
// SMOLVMD_TEST_CRASH_AT=<point> (lib/base/crash_point.h) and dies with
// SIGKILL there, once per named point inside create, boot, snapshot,
// restore, fork, expose, stop, resume and delete; then killed at random
// moments of a mixed workload. It is restarted each time, as systemd would,
// and the host checked (CheckHostAndReset): running VMs answer, listed
// snapshots verify, nothing is orphaned, no restore is half done.
//
// One cold boot (192 MiB) for the whole file.
#include <stdlib.h>

#include <filesystem>
#include <random>
#include <set>
#include <thread>
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

// Everything the issue asks of a host after a crash and a restart: every
// VM that was running runs and answers Exec (RUNNING ones here answer; the
// steady VM must be one), every listed snapshot is complete and verifies,
// nothing is orphaned (QEMU processes, TAPs, cgroups, VM files, run dirs,
// snapshot drafts). Returns whether all held; then removes every VM but the
// steady one and every snapshot but the base, for the next round.
bool CheckHostAndReset(TestDaemon& daemon, SmolVM& steady, const std::string& round) {
  SCOPED_TRACE(round);
  ClientOptions opts = daemon.client_options();
  SmolVMManager manager(opts);
  bool clean = true;
  auto check = [&](bool ok, const std::string& what) {
    EXPECT_TRUE(ok) << what;
    clean &= ok;
  };
  auto vms = manager.list_vms();
  if (!vms.ok()) {
    ADD_FAILURE() << vms.status();
    return false;
  }
  std::set<std::string> ids, live;
  for (const auto& vm : *vms) {
    ids.insert(vm.vm_id());
    if (vm.status() == v1::RUNNING || vm.status() == v1::PAUSED) {
      live.insert(vm.vm_id());
    }
    if (vm.status() == v1::RUNNING) {
      auto attached = SmolVM::attach(vm.vm_id(), opts);
      auto answer = attached.ok() ? attached->run("echo alive")
                                  : absl::StatusOr<CommandResult>(attached.status());
      check(answer.ok() && answer->stdout_text == "alive\n",
            "running vm " + vm.vm_id() + " does not answer: " + answer.status().ToString());
    }
    if (vm.status() == v1::CREATED) {
      // A restore never leaves a CREATED VM: it is finished or rolled back.
      check(vm.restored_from_snapshot_id().empty(), "vm " + vm.vm_id() + " is a half-restored clone");
    }
  }
  check(live.count("steady") == 1, "the steady VM is not live");
  auto answer = steady.run("echo steady");
  check(answer.ok() && answer->stdout_text == "steady\n", "the steady VM does not answer");
  check(daemon.QemuPids().size() == live.size(),
        absl::StrCat(daemon.QemuPids().size(), " qemu processes for ", live.size(), " live vms"));
  std::string links = daemon.InNetns(daemon.NetnsHost(), "ip -o link show").second;
  size_t taps = 0;
  for (size_t at = links.find(": smv"); at != std::string::npos; at = links.find(": smv", at + 1)) {
    ++taps;
  }
  check(taps == live.size(), absl::StrCat(taps, " TAPs for ", live.size(), " live vms"));
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(daemon.state_dir() + "/vms", ec)) {
    check(ids.count(e.path().filename().string()) == 1, "files of unknown vm " + e.path().string());
  }
  for (const auto& e : fs::directory_iterator(daemon.run_dir() + "/vms", ec)) {
    check(live.count(e.path().filename().string()) == 1, "run dir of a vm that does not run: " +
                                                             e.path().string());
  }
  for (const std::string& dir : daemon.CgroupDirs()) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (!e.is_directory()) continue;
      check(live.count(e.path().filename().string()) == 1,
            "cgroup of a vm that does not run: " + e.path().string());
    }
  }
  auto snaps = manager.list_snapshots();
  if (!snaps.ok()) {
    ADD_FAILURE() << snaps.status();
    return false;
  }
  std::set<std::string> snap_ids;
  for (const auto& snap : *snaps) {
    snap_ids.insert(snap.snapshot_id());
    auto verified = manager.verify_snapshot(snap.snapshot_id());
    check(verified.ok() && verified->ok(),
          "listed snapshot " + snap.snapshot_id() + " does not verify: " +
              verified.status().ToString());
  }
  check(snap_ids.count("base") == 1, "the base snapshot is gone");
  for (const auto& e : fs::directory_iterator(daemon.state_dir() + "/snapshots", ec)) {
    check(snap_ids.count(e.path().filename().string()) == 1,
          "unlisted snapshot dir " + e.path().string());
  }
  // Reset for the next round.
  for (const auto& id : ids) {
    if (id == "steady") continue;
    auto vm = SmolVM::attach(id, opts);
    if (vm.ok()) {
      EXPECT_TRUE(vm->close().ok()) << id;
    }
  }
  for (const auto& id : snap_ids) {
    if (id != "base") {
      EXPECT_TRUE(manager.delete_snapshot(id).ok()) << id;
    }
  }
  if (auto info = manager.get_vm("steady"); info.ok() && !info->network().port_forwards().empty()) {
    EXPECT_TRUE(steady.unexpose_port(info->network().port_forwards(0).host_port()).ok());
  }
  return clean;
}

// One operation of the mix, named by what it exercises; `tag` makes its
// objects' ids unique.
absl::Status RunOperation(const std::string& kind, const std::string& tag, SmolVM& steady,
                          const ClientOptions& opts, uint32_t port) {
  SmolVMManager manager(opts);
  if (kind == "create") {
    v1::VMConfig c;
    c.set_vm_id("c-" + tag);
    c.set_memory_mib(128);
    c.set_vcpu_count(1);
    SmolVM vm(c, opts);
    return vm.start();
  }
  if (kind == "restore") {
    return SmolVM::from_snapshot("base", /*resume_vm=*/true, "r-" + tag, opts).status();
  }
  if (kind == "snapshot") return steady.snapshot("s-" + tag, /*resume_source=*/true).status();
  if (kind == "fork") return manager.fork_snapshot("base", 2, true, "f-" + tag).status();
  if (kind == "expose") return steady.expose_port(port, 8080);
  if (kind == "exec") return steady.run("for i in 1 2 3; do echo $i; done").status();
  // delete, stop, resume: of a clone made first (without a crash).
  auto victim = SmolVM::from_snapshot("base", /*resume_vm=*/kind != "resume", "v-" + tag, opts);
  if (!victim.ok()) return victim.status();
  if (kind == "delete") return victim->close();
  if (kind == "stop") return victim->stop();
  return victim->resume();
}

TEST(CrashPointsTest, EveryInterruptedOperationIsFinishedOrRolledBack) {
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

  // One named point inside each step of each multi-step operation
  // (lib/base/crash_point.h), and the operation that reaches it.
  const std::vector<std::pair<const char*, const char*>> points = {
      {"create.row_inserted", "create"},     {"create.network_assigned", "create"},
      {"create.disk_copied", "create"},      {"boot.vmm_launched", "create"},
      {"boot.pid_recorded", "create"},       {"snapshot.state_saved", "snapshot"},
      {"snapshot.files_copied", "snapshot"}, {"snapshot.sealed", "snapshot"},
      {"snapshot.published", "snapshot"},    {"snapshot.row_inserted", "snapshot"},
      {"restore.row_inserted", "restore"},   {"restore.address_assigned", "restore"},
      {"restore.disk_staged", "restore"},    {"restore.vmm_started", "restore"},
      {"restore.resumed", "restore"},        {"restore.committed", "restore"},
      {"fork.first_clone_done", "fork"},     {"expose.row_updated", "expose"},
      {"stop.recorded", "stop"},             {"resume.vcpus_running", "resume"},
      {"delete.vmm_stopped", "delete"},      {"delete.files_removed", "delete"},
  };
  int rounds = 0, survived = 0;
  uint32_t port = 23000;
  for (const auto& [point, kind] : points) {
    SCOPED_TRACE(point);
    daemon.Stop();  // VMs outlive it.
    setenv("SMOLVMD_TEST_CRASH_AT", point, 1);
    absl::Status started = daemon.Start();
    unsetenv("SMOLVMD_TEST_CRASH_AT");
    ASSERT_TRUE(started.ok()) << daemon.DaemonLog();
    absl::Status op = RunOperation(kind, absl::StrCat(rounds), steady, opts, port++);
    EXPECT_FALSE(op.ok()) << "the daemon did not die at " << point;
    EXPECT_TRUE(absl::StrContains(daemon.DaemonLog(), absl::StrCat("dying with SIGKILL at ",
                                                                   point)))
        << daemon.DaemonLog();
    daemon.Crash();  // Reaps it.
    ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
    ++rounds;
    if (CheckHostAndReset(daemon, steady, point)) ++survived;
  }

  // Random points: kill -9 after a random delay while an operation of the
  // mix runs (seeded: the seed is printed to reproduce a failure).
  const char* kinds[] = {"create", "restore", "snapshot", "fork", "expose", "exec",
                         "delete", "stop",    "resume"};
  const unsigned seed = static_cast<unsigned>(absl::ToUnixMicros(absl::Now()));
  std::printf("crash_points_test: random kills with seed %u\n", seed);
  std::mt19937 rng(seed);
  for (int i = 0; i < 8; ++i) {
    const std::string kind = kinds[rng() % std::size(kinds)];
    const int delay_ms = static_cast<int>(rng() % 1500);
    const std::string round = absl::StrCat("random kill ", i, ": ", kind, " after ", delay_ms,
                                           " ms");
    SCOPED_TRACE(round);
    std::thread op([&, tag = absl::StrCat("k", i), p = port++] {
      (void)RunOperation(kind, tag, steady, opts, p);
    });
    absl::SleepFor(absl::Milliseconds(delay_ms));
    daemon.Crash();
    op.join();
    ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
    ++rounds;
    if (CheckHostAndReset(daemon, steady, round)) ++survived;
  }
  std::printf("crash points survived: %d/%d\n", survived, rounds);
  EXPECT_EQ(survived, rounds);
  EXPECT_GE(rounds, 25);

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
