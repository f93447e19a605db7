// Lifetime policies (issue 14 item 1) on real guests: one cold boot and one
// snapshot, then clones restored from it for each case. max_lifetime with
// delete (also across a daemon stopped over the deadline), idle_timeout
// with pause and the auto-resume of an exec and of a forwarded connection
// (the guest's state intact), an exec keeping a VM busy, and the snapshot
// action leaving a restorable snapshot; smolvmctl's flags and refusals.
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

class LifetimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    ASSERT_TRUE(daemon_->Start().ok()) << daemon_->DaemonLog();
    v1::VMConfig config;
    config.set_vm_id("life-base");
    config.set_memory_mib(256);
    config.set_vcpu_count(1);
    SmolVM base(config, daemon_->client_options());
    ASSERT_TRUE(base.start().ok()) << daemon_->DaemonLog();
    ASSERT_TRUE(base.run("echo kept > /root/marker && mkdir -p /root/www && "
                         "echo guest-page > /root/www/index.html")
                    .ok());
    ASSERT_TRUE(base.snapshot("life-snap").ok()) << daemon_->DaemonLog();
    ASSERT_TRUE(base.close().ok());
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }

  // A running clone of the suite's snapshot.
  static SmolVM Clone(const std::string& id) {
    auto vm = SmolVM::from_snapshot("life-snap", true, id, daemon_->client_options());
    EXPECT_TRUE(vm.ok()) << vm.status() << daemon_->DaemonLog();
    return *std::move(vm);
  }

  // Polls GetVm until `done` holds (or the VM is gone, `vm` then NOT_FOUND).
  static absl::StatusOr<v1::Vm> WaitFor(const std::string& id,
                                        const std::function<bool(const absl::StatusOr<v1::Vm>&)>& done,
                                        absl::Duration timeout) {
    SmolVMManager sdk(daemon_->client_options());
    const absl::Time deadline = absl::Now() + timeout;
    absl::StatusOr<v1::Vm> vm = sdk.get_vm(id);
    while (!done(vm) && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(200));
      vm = sdk.get_vm(id);
    }
    return vm;
  }

  static absl::StatusOr<v1::Vm> WaitForStatus(const std::string& id, v1::VmStatus status) {
    return WaitFor(
        id,
        [status](const absl::StatusOr<v1::Vm>& v) { return v.ok() && v->status() == status; },
        absl::Seconds(20));
  }

  static TestDaemon* daemon_;
};

TestDaemon* LifetimeTest::daemon_ = nullptr;

bool Gone(const absl::StatusOr<v1::Vm>& vm) { return absl::IsNotFound(vm.status()); }

TEST_F(LifetimeTest, MaxLifetimeDeletesAlsoAcrossADaemonStop) {
  // Set at create (smolvmctl), shown on the VM, acted on within a second.
  const absl::Time t0 = absl::Now();
  auto created = daemon_->Ctl({"vm", "create", "--id", "life-short", "--no-start",
                               "--max-lifetime", "3s", "--max-lifetime-action", "delete"});
  ASSERT_EQ(created.exit_code, 0) << created.Describe();
  EXPECT_TRUE(absl::StrContains(created.out, "\"lifetime_deadline\"")) << created.out;
  EXPECT_TRUE(absl::StrContains(created.out, "LIFETIME_DELETE")) << created.out;
  auto gone = WaitFor("life-short", Gone, absl::Seconds(20));
  EXPECT_TRUE(Gone(gone)) << gone.status();
  EXPECT_GE(absl::Now() - t0, absl::Seconds(3));

  // A running clone whose deadline passes while the daemon is down: its
  // VMM runs on, and the next daemon deletes it when it starts.
  SmolVM vm = Clone("life-restart");
  v1::Lifetime lifetime;
  lifetime.set_max_lifetime_seconds(4);
  ASSERT_TRUE(vm.set_lifetime(lifetime).ok());
  EXPECT_TRUE(vm.info().has_lifetime_deadline());
  EXPECT_EQ(vm.info().lifetime_action(), v1::LIFETIME_DELETE);  // The default.
  ASSERT_EQ(daemon_->Stop(), 0);
  absl::SleepFor(absl::Seconds(5));
  ASSERT_TRUE(daemon_->Start().ok()) << daemon_->DaemonLog();
  gone = WaitFor("life-restart", Gone, absl::Seconds(20));
  EXPECT_TRUE(Gone(gone)) << gone.status() << daemon_->DaemonLog();
  EXPECT_TRUE(absl::StrContains(daemon_->DaemonLog(), "vm life-restart: max_lifetime reached"));
  // The journal tells why it went: the action's event, then the deletion.
  auto events = daemon_->Ctl({"events", "--vm", "life-restart"});
  ASSERT_EQ(events.exit_code, 0) << events.Describe();
  const size_t action = events.out.find("LIFETIME_ACTION");
  const size_t deleted = events.out.find("VM_DELETED");
  ASSERT_NE(action, std::string::npos) << events.out;
  EXPECT_NE(events.out.find("max_lifetime reached: delete"), std::string::npos) << events.out;
  EXPECT_LT(action, deleted) << events.out;

  // Extended before it runs out: still there after the first deadline.
  SmolVM kept = Clone("life-extended");
  lifetime.set_max_lifetime_seconds(2);
  ASSERT_TRUE(kept.set_lifetime(lifetime).ok());
  lifetime.set_max_lifetime_seconds(3600);
  ASSERT_TRUE(kept.set_lifetime(lifetime).ok());
  absl::SleepFor(absl::Seconds(4));
  auto still = kept.refresh();
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(still->status(), v1::RUNNING);
  // Cleared.
  ASSERT_TRUE(kept.set_lifetime(v1::Lifetime()).ok());
  EXPECT_FALSE(kept.info().has_lifetime_deadline());
  EXPECT_FALSE(kept.info().config().has_lifetime());
  EXPECT_TRUE(kept.close().ok());
}

TEST_F(LifetimeTest, IdlePauseAndAutoResume) {
  SmolVM vm = Clone("life-idle");
  ASSERT_TRUE(vm.run("echo before-pause > /root/state").ok());
  v1::Lifetime lifetime;
  lifetime.set_idle_timeout_seconds(3);
  lifetime.set_idle_action(v1::LIFETIME_PAUSE);
  ASSERT_TRUE(vm.set_lifetime(lifetime).ok());

  // A running exec is use: a 6 s command does not let it idle 3 s (were it
  // paused under the exec, the exec would not return).
  auto busy = vm.run("sleep 6; echo done");
  ASSERT_TRUE(busy.ok()) << busy.status();
  auto after = vm.refresh();
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status(), v1::RUNNING) << "paused while an exec ran";

  // Then idle: paused, marked as the idle policy's.
  auto paused = WaitForStatus("life-idle", v1::PAUSED);
  ASSERT_TRUE(paused.ok()) << paused.status();
  ASSERT_EQ(paused->status(), v1::PAUSED) << daemon_->DaemonLog();
  EXPECT_TRUE(paused->idle_paused());

  // An exec resumes it and runs, on the guest as it was.
  auto state = vm.run("cat /root/state");
  ASSERT_TRUE(state.ok()) << state.status() << daemon_->DaemonLog();
  EXPECT_EQ(state->stdout_text, "before-pause\n");
  auto resumed = vm.refresh();
  ASSERT_TRUE(resumed.ok());
  EXPECT_EQ(resumed->status(), v1::RUNNING);
  EXPECT_FALSE(resumed->idle_paused());

  // A forwarded connection resumes it too: the client's SYN waits in the
  // paused guest's queue until the daemon sees it and resumes the guest.
  ASSERT_TRUE(vm.run("httpd -p 8000 -h /root/www").ok());
  ASSERT_TRUE(vm.expose_port(18090, 8000).ok());
  paused = WaitForStatus("life-idle", v1::PAUSED);
  ASSERT_TRUE(paused.ok() && paused->status() == v1::PAUSED) << daemon_->DaemonLog();
  auto page = daemon_->InNetns(daemon_->NetnsHost(),
                               "timeout 20 busybox wget -q -O - http://127.0.0.1:18090/");
  EXPECT_EQ(page.second, "guest-page\n") << daemon_->DaemonLog();
  EXPECT_TRUE(absl::StrContains(daemon_->DaemonLog(),
                                "vm life-idle: resumed for a forwarded connection"));

  // Without auto_resume a guest call is refused and names the fix.
  lifetime.set_auto_resume(false);
  ASSERT_TRUE(vm.set_lifetime(lifetime).ok());
  paused = WaitForStatus("life-idle", v1::PAUSED);
  ASSERT_TRUE(paused.ok() && paused->status() == v1::PAUSED);
  auto refused = vm.run("true");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "resume it")) << refused.status();
  EXPECT_TRUE(vm.close().ok());
}

TEST_F(LifetimeTest, SnapshotActionLeavesARestorableSnapshot) {
  SmolVM vm = Clone("life-snapact");
  ASSERT_TRUE(vm.run("echo at-the-end > /root/last").ok());
  v1::Lifetime lifetime;
  lifetime.set_max_lifetime_seconds(2);
  lifetime.set_max_lifetime_action(v1::LIFETIME_SNAPSHOT);
  ASSERT_TRUE(vm.set_lifetime(lifetime).ok());
  auto stopped = WaitFor(
      "life-snapact",
      [](const absl::StatusOr<v1::Vm>& v) {
        return v.ok() && v->status() == v1::STOPPED && !v->has_lifetime_deadline();
      },
      absl::Seconds(30));
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  ASSERT_EQ(stopped->status(), v1::STOPPED) << daemon_->DaemonLog();
  const std::string snap = stopped->lifetime_snapshot_id();
  ASSERT_FALSE(snap.empty()) << daemon_->DaemonLog();
  // The clone carries the policy with its own clock (2 s from its
  // restore): restored paused and cleared first, so it does not snapshot
  // itself under the test.
  auto clone = SmolVM::from_snapshot(snap, false, "life-from-action", daemon_->client_options());
  ASSERT_TRUE(clone.ok()) << clone.status() << daemon_->DaemonLog();
  EXPECT_EQ(clone->info().config().lifetime().max_lifetime_action(), v1::LIFETIME_SNAPSHOT);
  ASSERT_TRUE(clone->set_lifetime(v1::Lifetime()).ok());
  ASSERT_TRUE(clone->resume().ok());
  auto last = clone->run("cat /root/last");
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->stdout_text, "at-the-end\n");
  EXPECT_TRUE(clone->close().ok());
  EXPECT_TRUE(vm.close().ok());
}

TEST_F(LifetimeTest, CliFlagsAndRefusals) {
  auto bad = daemon_->Ctl({"vm", "create", "--no-start", "--max-lifetime", "1.5s"});
  EXPECT_TRUE(FailedWith(bad, kExitInvalid, "whole seconds")) << bad.Describe();
  bad = daemon_->Ctl({"vm", "create", "--no-start", "--idle-timeout", "1m", "--idle-action",
                      "kill"});
  EXPECT_TRUE(FailedWith(bad, kExitInvalid, "delete, stop, pause or snapshot")) << bad.Describe();
  bad = daemon_->Ctl({"vm", "create", "--no-start", "--idle-action", "stop"});
  EXPECT_TRUE(FailedWith(bad, kExitInvalid, "need --max-lifetime or --idle-timeout"))
      << bad.Describe();
  // Past the daemon's limit (a year): the daemon's message.
  bad = daemon_->Ctl({"vm", "create", "--no-start", "--max-lifetime", "400000000"});
  EXPECT_TRUE(FailedWith(bad, kExitInvalid, "365 days")) << bad.Describe();

  auto made = daemon_->Ctl({"vm", "create", "--id", "life-cli", "--no-start"});
  ASSERT_EQ(made.exit_code, 0) << made.Describe();
  auto set = daemon_->Ctl({"vm", "lifetime", "life-cli", "--idle-timeout", "1h",
                           "--idle-action", "snapshot", "--no-auto-resume"});
  ASSERT_EQ(set.exit_code, 0) << set.Describe();
  EXPECT_TRUE(absl::StrContains(set.out, "\"idle_timeout_seconds\": 3600")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "LIFETIME_SNAPSHOT")) << set.out;
  EXPECT_TRUE(absl::StrContains(set.out, "\"auto_resume\": false")) << set.out;
  auto both = daemon_->Ctl({"vm", "lifetime", "life-cli", "--clear", "--max-lifetime", "5"});
  EXPECT_TRUE(FailedWith(both, kExitInvalid, "--clear")) << both.Describe();
  auto cleared = daemon_->Ctl({"vm", "lifetime", "life-cli", "--clear"});
  ASSERT_EQ(cleared.exit_code, 0) << cleared.Describe();
  EXPECT_FALSE(absl::StrContains(cleared.out, "idle_timeout_seconds")) << cleared.out;
  auto missing = daemon_->Ctl({"vm", "lifetime", "no-such-vm", "--max-lifetime", "60"});
  EXPECT_TRUE(FailedWith(missing, kExitNotFound)) << missing.Describe();
  EXPECT_EQ(daemon_->Ctl({"vm", "delete", "life-cli"}).exit_code, 0);
}

}  // namespace
}  // namespace smolvm::testing
