// EventJournal over a real store: validation, tenants, a follow woken by a
// commit, cancellation and shutdown.
#include "lib/core/event_journal.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::core {
namespace {

using ::smolvm_testing::StatusIs;

class EventJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = store::Store::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    journal_ = std::make_unique<EventJournal>(store_.get());
  }
  void Append(const std::string& owner, const std::string& vm_id) {
    ASSERT_TRUE(store_->AppendEvent({.owner = owner, .kind = kEventLifetimeAction,
                                     .vm_id = vm_id}).ok());
  }
  // The vm_ids of what `caller` reads without follow.
  std::vector<std::string> Read(const Caller& caller, EventJournal::WatchOptions options = {}) {
    std::vector<std::string> seen;
    absl::Status s = journal_->Watch(
        caller, options,
        [&](const EventRecord& e) {
          seen.push_back(e.vm_id);
          return true;
        },
        [] { return false; });
    EXPECT_TRUE(s.ok()) << s;
    return seen;
  }

  std::unique_ptr<store::Store> store_;
  std::unique_ptr<EventJournal> journal_;
};

TEST_F(EventJournalTest, TenantsReadTheirOwnAdminsAll) {
  Append("uid:1", "a");
  Append("uid:2", "b");
  Append("uid:1", "c");
  EXPECT_THAT(Read(Caller{"uid:1", false, "t"}), ::testing::ElementsAre("a", "c"));
  EXPECT_THAT(Read(Caller{"uid:2", false, "t"}), ::testing::ElementsAre("b"));
  EXPECT_THAT(Read(Caller::System()), ::testing::ElementsAre("a", "b", "c"));
  EXPECT_THAT(Read(Caller::System(), {.after_event_id = 2}), ::testing::ElementsAre("c"));
  EXPECT_THAT(Read(Caller::System(), {.filter = {.vm_id = "b"}}), ::testing::ElementsAre("b"));
}

TEST(EventJournalValidationTest, FiltersAreCheckedAtTheEdge) {
  EXPECT_THAT(EventJournal::ValidateFilter({.vm_id = "Bad_Id"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "filter.vm_id"));
  EXPECT_THAT(EventJournal::ValidateFilter({.snapshot_id = "-x"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "filter.snapshot_id"));
  EXPECT_THAT(EventJournal::ValidateFilter({.kinds = {"created", "nope"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown event kind \"nope\""));
  EXPECT_TRUE(EventJournal::ValidateFilter({.vm_id = "ok-1", .kinds = {"forked"}}).ok());
}

TEST_F(EventJournalTest, AFollowGetsNewEventsAtOnceAndEndsOnShutdown) {
  Append("uid:1", "before");
  std::vector<std::string> seen;
  absl::Notification got_new;
  absl::Status ended;
  absl::Time sent_at;
  absl::Duration latency;
  std::thread follower([&] {
    ended = journal_->Watch(
        Caller{"uid:1", false, "t"},
        {.after_event_id = 1, .follow = true, .poll = absl::Seconds(3)},
        [&](const EventRecord& e) {
          seen.push_back(e.vm_id);
          latency = absl::Now() - sent_at;
          got_new.Notify();
          return true;
        },
        [] { return false; });
  });
  absl::SleepFor(absl::Milliseconds(200));  // The follower waits now.
  sent_at = absl::Now();
  Append("uid:1", "after");
  ASSERT_TRUE(got_new.WaitForNotificationWithTimeout(absl::Seconds(4)))
      << "woken by the commit, not by the 3 s poll";
  EXPECT_LT(latency, absl::Milliseconds(1500));
  journal_->Shutdown();
  follower.join();  // Within one poll.
  EXPECT_THAT(seen, ::testing::ElementsAre("after"));
  EXPECT_THAT(ended, StatusIs(absl::StatusCode::kUnavailable, "shutting down"));
}

TEST_F(EventJournalTest, ACancelledFollowEnds) {
  std::atomic<bool> cancelled{false};
  std::thread follower([&] {
    absl::Status s = journal_->Watch(
        Caller::System(), {.follow = true, .poll = absl::Milliseconds(50)},
        [](const EventRecord&) { return true; }, [&] { return cancelled.load(); });
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kCancelled));
  });
  absl::SleepFor(absl::Milliseconds(100));
  cancelled = true;
  follower.join();
}

}  // namespace
}  // namespace smolvm::core
