// Warm pools (issue 11): one cold boot, one snapshot, a pool of two clones
// kept restored and paused. A claim hands out a RUNNING VM with its own
// identity and a stepped clock; the pool refills; members are the pool's
// until claimed; the pool and its members survive a daemon restart; an
// empty pool still answers (restore on demand); DeletePool removes the
// unclaimed members and nothing else.
#include <sqlite3.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

// Waits until pool `id` has `ready` ready members (refills take a restore
// each, ~0.3-1 s here under TCG).
absl::StatusOr<v1::Pool> WaitReady(const SmolVMManager& sdk, const std::string& id,
                                   int ready) {
  absl::Time deadline = absl::Now() + absl::Seconds(90);
  absl::StatusOr<v1::Pool> pool;
  while (absl::Now() < deadline) {
    pool = sdk.get_pool(id);
    if (!pool.ok() || pool->ready_vm_ids_size() >= ready) return pool;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "pool ", id, " has ", pool.ok() ? pool->ready_vm_ids_size() : -1, " ready, not ", ready,
      pool.ok() ? " (last error: " + pool->last_error() + ")" : ""));
}

int64_t CountRows(const TestDaemon& daemon, const char* sql) {
  sqlite3* db = nullptr;
  int64_t n = -1;
  if (sqlite3_open_v2((daemon.state_dir() + "/smolvmd.db").c_str(), &db, SQLITE_OPEN_READONLY,
                      nullptr) == SQLITE_OK) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      n = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(db);
  return n;
}

// The guest's clock in whole seconds since the epoch.
int64_t GuestClock(SmolVM& vm) {
  auto r = vm.run("date +%s");
  EXPECT_TRUE(r.ok()) << r.status();
  int64_t t = 0;
  if (r.ok()) EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(r->stdout_text), &t));
  return t;
}

TEST(PoolTest, ClaimRefillRestartAndDelete) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  SmolVMManager sdk(daemon.client_options());

  v1::VMConfig config;
  config.set_vm_id("pool-base");
  config.set_memory_mib(256);
  config.set_vcpu_count(1);
  SmolVM base(config, daemon.client_options());
  ASSERT_TRUE(base.start().ok()) << daemon.DaemonLog();
  ASSERT_TRUE(base.run("echo warm > /root/marker").ok());
  ASSERT_TRUE(base.snapshot("pool-snap").ok()) << daemon.DaemonLog();
  ASSERT_TRUE(base.close().ok());

  // Bad requests leave nothing.
  EXPECT_EQ(sdk.create_pool("p", "pool-snap", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sdk.create_pool("p", "pool-snap", 65).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(sdk.create_pool("p", "no-such-snap", 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(sdk.create_pool(std::string(56, 'a'), "pool-snap", 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SmolVM::from_pool("nope", "", daemon.client_options()).status().code(),
            absl::StatusCode::kNotFound);

  auto created = sdk.create_pool("web", "pool-snap", 2);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->size(), 2u);
  EXPECT_EQ(sdk.create_pool("web", "pool-snap", 1).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto pool = WaitReady(sdk, "web", 2);
  ASSERT_TRUE(pool.ok()) << pool.status() << daemon.DaemonLog();
  const std::set<std::string> members(pool->ready_vm_ids().begin(),
                                      pool->ready_vm_ids().end());

  // Members are the pool's: not listed, not resumable, but visible by id,
  // PAUSED, and already holding their own identity.
  auto vms = sdk.list_vms();
  ASSERT_TRUE(vms.ok());
  for (const auto& vm : *vms) EXPECT_FALSE(members.count(vm.vm_id())) << vm.vm_id();
  const std::string first = *members.begin();
  auto member = sdk.get_vm(first);
  ASSERT_TRUE(member.ok());
  EXPECT_EQ(member->status(), v1::PAUSED);
  EXPECT_EQ(member->pool_id(), "web");
  EXPECT_FALSE(member->network().guest_ip().empty());
  auto resumed = daemon.Ctl({"vm", "resume", first});
  EXPECT_TRUE(FailedWith(resumed, kExitPrecondition, "claim it first")) << resumed.out << resumed.err;
  // The snapshot feeds the pool, so it stays.
  EXPECT_EQ(sdk.delete_snapshot("pool-snap").code(), absl::StatusCode::kFailedPrecondition);

  // A claim: RUNNING at once, its own address, clock stepped to the host's,
  // the snapshot's guest state there.
  absl::SleepFor(absl::Seconds(3));  // Let the paused members' clocks fall behind.
  bool from_pool = false;
  auto claimed = SmolVM::from_pool("web", "", daemon.client_options(), &from_pool);
  ASSERT_TRUE(claimed.ok()) << claimed.status() << daemon.DaemonLog();
  EXPECT_TRUE(from_pool);
  EXPECT_TRUE(members.count(claimed->vm_id())) << claimed->vm_id();
  EXPECT_EQ(claimed->status(), v1::RUNNING);
  EXPECT_EQ(claimed->info().pool_id(), "");
  EXPECT_LE(std::abs(GuestClock(*claimed) - absl::ToUnixSeconds(absl::Now())), 2);
  auto marker = claimed->run("cat /root/marker");
  ASSERT_TRUE(marker.ok());
  EXPECT_EQ(marker->stdout_text, "warm\n");
  auto addr = claimed->run("ip -4 -o addr show eth0");
  ASSERT_TRUE(addr.ok());
  EXPECT_TRUE(absl::StrContains(addr->stdout_text, claimed->info().network().guest_ip() + "/"))
      << addr->stdout_text;
  // A claimed VM is an ordinary VM: listed, pausable.
  EXPECT_EQ(Column(daemon.Ctl({"vm", "list"}).out, "vm_id").count(claimed->vm_id()), 1u);
  ASSERT_TRUE(claimed->pause().ok());
  ASSERT_TRUE(claimed->resume().ok());

  // The pool refills to two; the CLI claims a named member.
  pool = WaitReady(sdk, "web", 2);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const std::string named = pool->ready_vm_ids(1);
  auto by_name = daemon.Ctl({"pool", "claim", "web", "--vm", named});
  ASSERT_EQ(by_name.exit_code, 0) << by_name.err;
  nlohmann::json answer = Json(by_name.out);
  EXPECT_EQ(answer["vm"]["vm_id"], named);
  EXPECT_EQ(answer["vm"]["status"], "RUNNING");
  EXPECT_EQ(answer["from_pool"], true);
  auto listed = daemon.Ctl({"pool", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(Column(listed.out, "pool_id"), std::set<std::string>{"web"});

  // Members survive a restart and are claimable after it.
  pool = WaitReady(sdk, "web", 2);
  ASSERT_TRUE(pool.ok()) << pool.status();
  const std::set<std::string> before(pool->ready_vm_ids().begin(), pool->ready_vm_ids().end());
  ASSERT_EQ(daemon.Stop(), 0);
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  pool = sdk.get_pool("web");
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(std::set<std::string>(pool->ready_vm_ids().begin(), pool->ready_vm_ids().end()),
            before);
  auto after_restart = SmolVM::from_pool("web", "", daemon.client_options(), &from_pool);
  ASSERT_TRUE(after_restart.ok()) << after_restart.status() << daemon.DaemonLog();
  EXPECT_TRUE(from_pool);
  EXPECT_TRUE(before.count(after_restart->vm_id()));
  EXPECT_LE(std::abs(GuestClock(*after_restart) - absl::ToUnixSeconds(absl::Now())), 2);

  // Emptied faster than it refills, a pool still hands out VMs.
  std::vector<SmolVM> burst;
  for (int i = 0; i < 3; ++i) {
    auto vm = SmolVM::from_pool("web", "", daemon.client_options(), &from_pool);
    ASSERT_TRUE(vm.ok()) << vm.status();
    EXPECT_EQ(vm->status(), v1::RUNNING);
    std::printf("burst claim %d: %s\n", i, from_pool ? "from the pool" : "restored on demand");
    burst.push_back(*std::move(vm));
  }

  // DeletePool removes the unclaimed members only.
  pool = sdk.get_pool("web");
  ASSERT_TRUE(pool.ok());
  std::vector<std::string> unclaimed(pool->ready_vm_ids().begin(), pool->ready_vm_ids().end());
  ASSERT_TRUE(sdk.delete_pool("web").ok());
  EXPECT_EQ(sdk.get_pool("web").status().code(), absl::StatusCode::kNotFound);
  for (const auto& id : unclaimed) {
    EXPECT_EQ(sdk.get_vm(id).status().code(), absl::StatusCode::kNotFound) << id;
  }
  // Members being restored when the pool went are reaped by the worker.
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (;;) {
    // Members are not listed: count the rows (read-only, WAL lets the
    // daemon go on writing).
    const bool member_left = CountRows(daemon, "SELECT count(*) FROM vms WHERE pool_id != ''") != 0;
    if (!member_left || absl::Now() > deadline) {
      EXPECT_FALSE(member_left);
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  for (SmolVM* vm : {&*claimed, &*after_restart}) {
    auto r = vm->run("echo alive");
    ASSERT_TRUE(r.ok()) << vm->vm_id() << ": " << r.status();
    EXPECT_TRUE(vm->close().ok());
  }
  for (auto& vm : burst) EXPECT_TRUE(vm.close().ok());
  EXPECT_TRUE(daemon.Ctl({"vm", "delete", named}).exit_code == 0);
  EXPECT_TRUE(sdk.delete_snapshot("pool-snap").ok());
}

}  // namespace
}  // namespace smolvm::testing
