#include "lib/core/operations.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace smolvm::core {
namespace {

Caller Tenant(const std::string& t) { return Caller{t, false, t}; }

TEST(OperationRegistryTest, ReportsStagesProgressAndOutcome) {
  OperationRegistry ops;
  auto h = ops.Begin(Tenant("uid:1001"), "op-1", "ForkSnapshot", "snap-a");
  ASSERT_TRUE(h.ok()) << h.status();
  (*h)->Stage("restoring clones", 3, "clones");
  (*h)->Advance(1);
  (*h)->Advance(1);
  auto s = ops.Get(Tenant("uid:1001"), "op-1");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->kind, "ForkSnapshot");
  EXPECT_EQ(s->target, "snap-a");
  EXPECT_EQ(s->stage, "restoring clones");
  EXPECT_EQ(s->done, 2u);
  EXPECT_EQ(s->total, 3u);
  EXPECT_EQ(s->unit, "clones");
  EXPECT_EQ(s->stage_number, 1u);
  EXPECT_FALSE(s->finished);
  // Done never passes the total nor goes back.
  (*h)->Advance(5);
  (*h)->SetDone(1);
  EXPECT_EQ(ops.Get(Tenant("uid:1001"), "op-1")->done, 3u);
  (*h)->Finish(absl::NotFoundError("gone"));
  s = ops.Get(Tenant("uid:1001"), "op-1");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->finished);
  EXPECT_EQ(s->outcome.code(), absl::StatusCode::kNotFound);
  // Reports after the end change nothing.
  uint64_t v = s->version;
  (*h)->Stage("late", 1, "");
  EXPECT_EQ(ops.Get(Tenant("uid:1001"), "op-1")->version, v);
}

TEST(OperationRegistryTest, TenantsSeeOnlyTheirOwnAndAdminsSeeAll) {
  OperationRegistry ops;
  auto h = ops.Begin(Tenant("uid:1001"), "same-id", "CreateVm", "vm-a");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(ops.Get(Tenant("uid:1002"), "same-id").status().code(),
            absl::StatusCode::kNotFound);
  // The other tenant may use the same id for its own operation.
  auto other = ops.Begin(Tenant("uid:1002"), "same-id", "CreateVm", "vm-b");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(ops.Get(Tenant("uid:1002"), "same-id")->target, "vm-b");
  EXPECT_EQ(ops.Get(Tenant("uid:1001"), "same-id")->target, "vm-a");
  auto seen = ops.Get(Caller{"uid:0", true, "root"}, "same-id");
  ASSERT_TRUE(seen.ok());
}

TEST(OperationRegistryTest, RunningIdIsTakenFinishedIdIsReusable) {
  OperationRegistry ops;
  auto h = ops.Begin(Tenant("t"), "job", "CreateVm", "vm-a");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(ops.Begin(Tenant("t"), "job", "CreateVm", "vm-b").status().code(),
            absl::StatusCode::kAlreadyExists);
  (*h)->Finish(absl::OkStatus());
  auto again = ops.Begin(Tenant("t"), "job", "CreateVm", "vm-b");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(ops.Get(Tenant("t"), "job")->finished);
}

TEST(OperationRegistryTest, RejectsMalformedIds) {
  OperationRegistry ops;
  for (const std::string id : {std::string(""), std::string(65, 'a'), std::string("a b"),
                               std::string("a/b"), std::string("x\n")}) {
    EXPECT_EQ(ops.Begin(Tenant("t"), id, "CreateVm", "").status().code(),
              absl::StatusCode::kInvalidArgument)
        << id;
    EXPECT_EQ(ops.Get(Tenant("t"), id).status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(ops.Begin(Tenant("t"), "6f1c2a9e-0b7d-4c1e-9a3f-1d2e3f4a5b6c", "CreateVm", "").ok());
}

TEST(OperationRegistryTest, AnAbandonedHandleFinishesUnknown) {
  OperationRegistry ops;
  {
    auto h = ops.Begin(Tenant("t"), "job", "CreateSnapshot", "vm-a");
    ASSERT_TRUE(h.ok());
  }
  auto s = ops.Get(Tenant("t"), "job");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->finished);
  EXPECT_EQ(s->outcome.code(), absl::StatusCode::kUnknown);
}

TEST(OperationRegistryTest, FinishedOperationsAreBounded) {
  OperationRegistry ops(absl::Minutes(10), /*max_finished=*/3);
  for (int i = 0; i < 5; ++i) {
    auto h = ops.Begin(Tenant("t"), "op" + std::to_string(i), "CreateVm", "");
    ASSERT_TRUE(h.ok());
    (*h)->Finish(absl::OkStatus());
  }
  EXPECT_FALSE(ops.Get(Tenant("t"), "op0").ok());
  EXPECT_FALSE(ops.Get(Tenant("t"), "op1").ok());
  EXPECT_TRUE(ops.Get(Tenant("t"), "op4").ok());

  OperationRegistry short_lived(absl::Milliseconds(1), 100);
  auto h = short_lived.Begin(Tenant("t"), "old", "CreateVm", "");
  ASSERT_TRUE(h.ok());
  (*h)->Finish(absl::OkStatus());
  absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(short_lived.Begin(Tenant("t"), "new", "CreateVm", "").ok());
  EXPECT_EQ(short_lived.Get(Tenant("t"), "old").status().code(), absl::StatusCode::kNotFound);
}

TEST(OperationRegistryTest, WaitNewerWakesOnChangesAndWaitsForTheStart) {
  OperationRegistry ops;
  // A watcher that comes first waits for the operation to begin.
  absl::StatusOr<OperationState> first = absl::UnknownError("not run");
  std::thread watcher([&] {
    first = ops.WaitNewer(Tenant("t"), "job", 0, absl::Now() + absl::Seconds(10));
  });
  absl::SleepFor(absl::Milliseconds(50));
  auto h = ops.Begin(Tenant("t"), "job", "ForkSnapshot", "s");
  ASSERT_TRUE(h.ok());
  watcher.join();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->kind, "ForkSnapshot");

  std::thread reporter([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (*h)->Stage("restoring clones", 2, "clones");
  });
  auto next = ops.WaitNewer(Tenant("t"), "job", first->version, absl::Now() + absl::Seconds(10));
  reporter.join();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->stage, "restoring clones");
  // Nothing new: the same state back at the deadline.
  auto same = ops.WaitNewer(Tenant("t"), "job", next->version, absl::Now() + absl::Milliseconds(20));
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->version, next->version);
  // Never started: NOT_FOUND at the deadline, also for another tenant.
  EXPECT_EQ(ops.WaitNewer(Tenant("t"), "nope", 0, absl::Now() + absl::Milliseconds(20))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ops.WaitNewer(Tenant("u"), "job", 0, absl::Now() + absl::Milliseconds(20))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace smolvm::core
