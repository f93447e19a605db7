// The event journal of the store: the triggers that write events with the
// changes they describe, AppendEvent, reading with owners and filters,
// retention and its OUT_OF_RANGE, waking readers, and the migration.
#include <sqlite3.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/store/store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::store {
namespace {

using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

VmRecord Vm(const std::string& vm_id, const std::string& owner = "uid:1000") {
  VmRecord vm;
  vm.vm_id = vm_id;
  vm.config.vm_id = vm_id;
  vm.owner = owner;
  vm.state = VmState::kCreated;
  return vm;
}

SnapshotRecord Snapshot(const std::string& snapshot_id, const std::string& vm_id,
                        const std::string& owner = "uid:1000") {
  SnapshotRecord snapshot;
  snapshot.snapshot_id = snapshot_id;
  snapshot.vm_id = vm_id;
  snapshot.owner = owner;
  return snapshot;
}

// "kind vm snapshot state detail" of each event, for compact expectations.
std::vector<std::string> Lines(const std::vector<EventRecord>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    out.push_back(e.kind + " " + e.vm_id + " " + e.snapshot_id + " " + e.state + " " + e.detail);
  }
  return out;
}

class EventJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  std::vector<EventRecord> List(int64_t after = 0, const std::string& owner = "",
                                const EventFilter& filter = {}) {
    auto page = store_->ListEvents(after, owner, filter, 1000);
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->events : std::vector<EventRecord>{};
  }

  std::unique_ptr<Store> store_;
};

TEST_F(EventJournalTest, VmLifecycleWritesOneEventPerChangeInOrder) {
  const absl::Time before = absl::Now() - absl::Milliseconds(1);
  VmRecord vm = Vm("a");
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  vm.state = VmState::kRunning;
  vm.vmm_pid = 42;
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  vm.vmm_pid = 43;  // Not a state change: no event.
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  vm.state = VmState::kPaused;
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  vm.state = VmState::kStopped;
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  vm.state = VmState::kError;
  vm.error = "the VMM died";
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  ASSERT_TRUE(store_->DeleteVm("a").ok());

  std::vector<EventRecord> events = List();
  EXPECT_THAT(Lines(events), ElementsAre("created a  created ", "running a  running ",
                                         "paused a  paused ", "stopped a  stopped ",
                                         "error a  error the VMM died", "deleted a   "));
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].owner, "uid:1000");
    EXPECT_EQ(events[i].event_id, static_cast<int64_t>(i + 1));
    EXPECT_GE(events[i].at, before);
    EXPECT_LE(events[i].at, absl::Now() + absl::Milliseconds(1));
  }
}

TEST_F(EventJournalTest, RestoresSnapshotsAndImages) {
  ASSERT_TRUE(store_->InsertVm(Vm("src")).ok());
  ASSERT_TRUE(store_->InsertSnapshot(Snapshot("s1", "src")).ok());
  // A restore into a new VM: inserted with restored_from, then running.
  VmRecord clone = Vm("clone");
  clone.restored_from = "s1";
  ASSERT_TRUE(store_->InsertVm(clone).ok());
  clone.state = VmState::kRunning;
  ASSERT_TRUE(store_->UpdateVm(clone).ok());
  // A restore into an existing, stopped VM (twice from the same
  // snapshot), inside its journal entry as VmManager makes it.
  VmRecord src = Vm("src");
  for (int i = 0; i < 2; ++i) {
    src.state = VmState::kStopped;
    src.restored_from = i == 0 ? "" : "s1";
    ASSERT_TRUE(store_->UpdateVm(src).ok());
    ASSERT_TRUE(store_->BeginOperation("src", "restore").ok());
    src.state = VmState::kPaused;
    src.restored_from = "s1";
    ASSERT_TRUE(store_->UpdateVm(src).ok());
    ASSERT_TRUE(store_->EndOperation("src").ok());
  }
  // A cold boot of a restored VM clears restored_from: not a restore.
  src.state = VmState::kStopped;
  ASSERT_TRUE(store_->UpdateVm(src).ok());
  src.state = VmState::kRunning;
  src.restored_from.clear();
  ASSERT_TRUE(store_->UpdateVm(src).ok());
  ASSERT_TRUE(store_->DeleteSnapshot("s1").ok());
  ImageRecord image;
  image.digest = "sha256:00aa";
  image.owner = "uid:1000";
  ASSERT_TRUE(store_->InsertImage(image, "py:1").ok());

  EXPECT_THAT(Lines(List()),
              ElementsAre("created src  created ", "snapshot_created src s1  ",
                          "restored clone s1 created ", "running clone  running ",
                          "stopped src  stopped ", "restored src s1 paused ",
                          "paused src  paused ", "stopped src  stopped ",
                          "restored src s1 paused ", "paused src  paused ",
                          "stopped src  stopped ", "running src  running ",
                          "snapshot_deleted src s1  ", "image_built    sha256:00aa"));
}

TEST_F(EventJournalTest, PoolMembersAreHiddenUntilClaimed) {
  VmRecord member = Vm("p-1");
  member.pool_id = "p";
  member.restored_from = "golden";
  ASSERT_TRUE(store_->InsertVm(member).ok());
  member.state = VmState::kRunning;
  ASSERT_TRUE(store_->UpdateVm(member).ok());
  member.state = VmState::kPaused;
  ASSERT_TRUE(store_->UpdateVm(member).ok());
  VmRecord unclaimed = Vm("p-2");
  unclaimed.pool_id = "p";
  ASSERT_TRUE(store_->InsertVm(unclaimed).ok());
  ASSERT_TRUE(store_->DeleteVm("p-2").ok());
  EXPECT_THAT(List(), IsEmpty());

  member.state = VmState::kRunning;
  member.pool_id.clear();
  ASSERT_TRUE(store_->UpdateVm(member).ok());
  EXPECT_THAT(Lines(List()), ElementsAre("restored p-1 golden running claimed from pool p"));
}

TEST_F(EventJournalTest, TenantsSeeOnlyTheirOwnAndFiltersApply) {
  ASSERT_TRUE(store_->InsertVm(Vm("mine", "uid:1000")).ok());
  ASSERT_TRUE(store_->InsertVm(Vm("theirs", "uid:2000")).ok());
  ASSERT_TRUE(store_->InsertSnapshot(Snapshot("snap", "mine", "uid:1000")).ok());
  ASSERT_TRUE(store_->DeleteVm("mine").ok());

  EXPECT_EQ(List(0, "").size(), 4u) << "an admin sees all";
  EXPECT_THAT(Lines(List(0, "uid:2000")), ElementsAre("created theirs  created "));
  EXPECT_EQ(List(0, "uid:1000").size(), 3u);
  EXPECT_THAT(Lines(List(0, "", {.vm_id = "mine"})),
              ElementsAre("created mine  created ", "snapshot_created mine snap  ",
                          "deleted mine   "));
  EXPECT_THAT(Lines(List(0, "", {.snapshot_id = "snap"})),
              ElementsAre("snapshot_created mine snap  "));
  EXPECT_THAT(Lines(List(0, "", {.kinds = {"deleted", "snapshot_created"}})),
              ElementsAre("snapshot_created mine snap  ", "deleted mine   "));
  EXPECT_THAT(Lines(List(2)), ElementsAre("snapshot_created mine snap  ", "deleted mine   "));
  auto limited = store_->ListEvents(0, "", {}, 2);
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->events.size(), 2u);
  EXPECT_EQ(limited->read_through, 2);
  auto filtered = store_->ListEvents(0, "uid:2000", {}, 10);
  ASSERT_TRUE(filtered.ok());
  EXPECT_EQ(filtered->read_through, 4) << "past the events the owner skipped";
}

TEST_F(EventJournalTest, AppendedEventsTakeTheNextId) {
  ASSERT_TRUE(store_->InsertVm(Vm("src")).ok());
  auto id = store_->AppendEvent({.owner = "uid:1000", .kind = kEventForked, .vm_id = "src",
                                 .snapshot_id = "s", .state = "running",
                                 .detail = "children: c-1 c-2"});
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(*id, 2);
  EXPECT_THAT(Lines(List(1)), ElementsAre("forked src s running children: c-1 c-2"));
  EXPECT_EQ(*store_->NewestEventId(), 2);
  EXPECT_EQ(*store_->OldestEventId(), 1);
}

TEST_F(EventJournalTest, RetentionPrunesAndResumingPastItIsOutOfRange) {
  ASSERT_TRUE(store_->SetMaxEvents(100).ok());
  for (int i = 0; i < 2050; ++i) {
    ASSERT_TRUE(store_->AppendEvent({.owner = "uid:1000", .kind = kEventLifetimeAction,
                                     .vm_id = "v"}).ok());
  }
  // Pruned at 2000: the newest 100 then, and the 50 since.
  EXPECT_EQ(*store_->OldestEventId(), 1901);
  EXPECT_EQ(*store_->NewestEventId(), 2050);
  EXPECT_EQ(List(0).size(), 150u) << "0 reads from the oldest kept";
  EXPECT_EQ(List(1900).size(), 150u) << "nothing after 1900 was dropped";
  auto missed = store_->ListEvents(1899, "", {}, 1000);
  EXPECT_THAT(missed, StatusIs(absl::StatusCode::kOutOfRange, "oldest kept is 1901"));
  EXPECT_THAT(missed.status().message(), HasSubstr("watch from 0"));
  // A lower limit applies at once; ids go on (AUTOINCREMENT).
  ASSERT_TRUE(store_->SetMaxEvents(10).ok());
  EXPECT_EQ(*store_->OldestEventId(), 2041);
  auto next = store_->AppendEvent({.owner = "uid:1000", .kind = kEventLifetimeAction});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, 2051);
  EXPECT_THAT(store_->SetMaxEvents(0), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(EventJournalTest, RollbackOfAnOperationIsTheStateItGoesBackTo) {
  VmRecord vm = Vm("a");
  vm.state = VmState::kStopped;
  vm.restored_from = "old";
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  ASSERT_TRUE(store_->BeginOperation("a", "restore").ok());
  VmRecord during = vm;
  during.state = VmState::kCreated;
  during.restored_from = "new";
  ASSERT_TRUE(store_->UpdateVm(during).ok());
  const int64_t mark = *store_->NewestEventId();
  ASSERT_TRUE(store_->RestorePreviousVm("a").ok());
  EXPECT_THAT(Lines(List(mark)),
              ElementsAre("stopped a  stopped an interrupted operation was rolled back"));
}

TEST_F(EventJournalTest, WaitForCommitWakesOnAWriteAndTimesOut) {
  const uint64_t seen = store_->CommitCount();
  const absl::Time start = absl::Now();
  EXPECT_EQ(store_->WaitForCommit(seen, start + absl::Milliseconds(50)), seen);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(45));
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store_->InsertVm(Vm("a")).ok());
  });
  const uint64_t now = store_->WaitForCommit(seen, absl::Now() + absl::Seconds(10));
  writer.join();
  EXPECT_NE(now, seen);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_THAT(Lines(List()), ElementsAre("created a  created "));
}

// A database of schema 13 (no journal) with a VM in it, migrated on open.
TEST(EventJournalMigrationTest, MigratesFromSchema13) {
  smolvm_testing::TempDir temp{"smolvm-events-test"};
  const std::string path = temp.path() + "/state.db";
  {
    auto store = Store::Open(path);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->InsertVm(Vm("old")).ok());
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  const char* downgrade =
      "DROP TRIGGER events_vm_insert; DROP TRIGGER events_vm_update; "
      "DROP TRIGGER events_vm_delete; DROP TRIGGER events_snapshot_insert; "
      "DROP TRIGGER events_snapshot_delete; DROP TRIGGER events_image_insert; "
      "DROP TRIGGER events_prune; DROP VIEW new_events; DROP TABLE events; "
      "DROP TABLE event_settings; PRAGMA user_version = 13;";
  ASSERT_EQ(sqlite3_exec(db, downgrade, nullptr, nullptr, nullptr), SQLITE_OK)
      << sqlite3_errmsg(db);
  sqlite3_close(db);

  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->SchemaVersion(), kSchemaVersion);
  EXPECT_EQ(*(*store)->NewestEventId(), 0) << "no events for what was there before";
  ASSERT_TRUE((*store)->DeleteVm("old").ok());
  auto page = (*store)->ListEvents(0, "", {}, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(Lines(page->events), ElementsAre("deleted old   "));
}

}  // namespace
}  // namespace smolvm::store
