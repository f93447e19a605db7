#include "lib/store/store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <cstdint>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"
#include "lib/base/file_util.h"

namespace smolvm::store {
namespace {

using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

VmRecord MakeVm(const std::string& vm_id) {
  VmRecord vm;
  vm.vm_id = vm_id;
  vm.state = VmState::kPaused;
  vm.config = VmConfig{.vm_id = vm_id,
                       .vcpu_count = 4,
                       .memory_mib = 2048,
                       .kernel_path = "/var/lib/smolvmd/images/vmlinux",
                       .initrd_path = "/var/lib/smolvmd/images/initrd.img",
                       .rootfs_path = "/var/lib/smolvmd/vms/" + vm_id + "/disk.ext4",
                       .boot_args = "console=ttyS0 reboot=k panic=1 \"quoted\""};
  vm.network = NetworkConfig{.guest_ip = "172.16.0.2",
                             .gateway_ip = "172.16.0.1",
                             .netmask = "255.255.255.252",
                             .tap_device = "smol-3f2a",
                             .guest_mac = "06:00:ac:10:00:02"};
  vm.created_at = absl::FromUnixMicros(1700000000123456);
  vm.updated_at = absl::FromUnixMicros(1700000001654321);
  vm.error = "qmp: connection reset";
  vm.vmm_pid = 4242;
  vm.restored_from = "snap-0badc0de";
  vm.pending_fixup = kFixupReaddress;
  vm.config.labels = {{"team", "ml"}, {"example.com/task", "t-1"}};
  return vm;
}

SnapshotRecord MakeSnapshot(const std::string& snapshot_id,
                            const std::string& vm_id) {
  SnapshotRecord snapshot;
  snapshot.snapshot_id = snapshot_id;
  snapshot.vm_id = vm_id;
  const std::string dir = "/var/lib/smolvmd/snapshots/" + snapshot_id;
  snapshot.snapshot_path = dir + "/vmstate.bin";
  snapshot.mem_file_path = dir + "/mem.bin";
  snapshot.disk_path = dir + "/disk.ext4";
  snapshot.vm_config = MakeVm(vm_id).config;
  snapshot.network_config = MakeVm(vm_id).network;
  snapshot.created_at = absl::FromUnixMicros(1700000002000001);
  snapshot.restored = true;
  snapshot.restored_vm_id = "vm-restored";
  snapshot.size_bytes = uint64_t{5} << 32;  // Does not fit in 32 bits.
  snapshot.accelerator = "tcg";
  snapshot.checksums = SnapshotChecksums{
      .vmstate = "xxh3-128:00112233445566778899aabbccddeeff",
      .mem = "xxh3-128:0123456789abcdef0123456789abcdef",
      .disk = "xxh3-128:fedcba9876543210fedcba9876543210"};
  snapshot.verified_stamps = SnapshotStamps{
      .vmstate = {.ino = 12, .size = 4096, .mtime_ns = 1700000002000000001,
                  .ctime_ns = 1700000002000000002},
      .mem = {.ino = uint64_t{1} << 63,  // Does not fit in int64.
              .size = uint64_t{2} << 30, .mtime_ns = -5, .ctime_ns = 7},
      .disk = {.ino = 14, .size = 0, .mtime_ns = 0, .ctime_ns = 0}};
  snapshot.labels = {{"stage", "golden"}, {"empty", ""}};
  return snapshot;
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = Store::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, CensusCountsWithoutReadingRows) {
  auto empty = store_->TakeCensus();
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->vms_by_state.empty());
  EXPECT_EQ(empty->snapshot_bytes, 0u);

  ASSERT_TRUE(store_->InsertVm(MakeVm("paused-1")).ok());
  VmRecord running = MakeVm("running-1");
  running.state = VmState::kRunning;
  ASSERT_TRUE(store_->InsertVm(running).ok());
  VmRecord member = MakeVm("p-0000abcd");
  member.pool_id = "p";
  ASSERT_TRUE(store_->InsertVm(member).ok());
  ASSERT_TRUE(store_->InsertPool(PoolRecord{"p", "uid:0", "snap-1", 2}).ok());
  ASSERT_TRUE(store_->InsertSnapshot(MakeSnapshot("snap-1", "paused-1")).ok());
  SnapshotRecord small = MakeSnapshot("snap-2", "paused-1");
  small.size_bytes = 1000;
  ASSERT_TRUE(store_->InsertSnapshot(small).ok());

  auto census = store_->TakeCensus();
  ASSERT_TRUE(census.ok()) << census.status();
  EXPECT_EQ(census->vms_by_state, (std::map<std::string, uint64_t>{{"paused", 2}, {"running", 1}}));
  EXPECT_EQ(census->pool_members, 1u);
  EXPECT_EQ(census->pools, 1u);
  EXPECT_EQ(census->snapshots, 2u);
  EXPECT_EQ(census->snapshot_bytes, (uint64_t{5} << 32) + 1000);
}

TEST_F(StoreTest, PoolsAndTheirMembers) {
  PoolRecord pool{"p", "uid:1000", "snap-1", 3, absl::FromUnixMicros(1700000000000000)};
  ASSERT_TRUE(store_->InsertPool(pool).ok());
  EXPECT_EQ(store_->InsertPool(pool).code(), absl::StatusCode::kAlreadyExists);
  auto got = store_->GetPool("p");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, pool);
  ASSERT_TRUE(store_->InsertPool(PoolRecord{"q", "uid:1001", "snap-2", 1}).ok());
  auto mine = store_->ListPools("uid:1000");
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ((*mine)[0].pool_id, "p");
  EXPECT_EQ(store_->ListPools()->size(), 2u);

  // Members are VM rows with pool_id; ListVms leaves them out until claimed.
  VmRecord member = MakeVm("p-0000abcd");
  member.pool_id = "p";
  ASSERT_TRUE(store_->InsertVm(member).ok());
  VmRecord other = MakeVm("q-00001234");
  other.pool_id = "q";
  ASSERT_TRUE(store_->InsertVm(other).ok());
  ASSERT_TRUE(store_->InsertVm(MakeVm("plain")).ok());
  auto page = store_->ListVms(0, "");
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].vm_id, "plain");
  auto members = store_->PoolVms("p");
  ASSERT_TRUE(members.ok());
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].pool_id, "p");
  // "" is every pool's members, and only those (the pool worker's view).
  auto all_members = store_->PoolVms("");
  ASSERT_TRUE(all_members.ok());
  ASSERT_EQ(all_members->size(), 2u);
  EXPECT_EQ((*all_members)[0].vm_id, "p-0000abcd");
  EXPECT_EQ((*all_members)[1].vm_id, "q-00001234");
  member.pool_id.clear();
  ASSERT_TRUE(store_->UpdateVm(member).ok());
  EXPECT_TRUE(store_->PoolVms("p")->empty());
  EXPECT_EQ(store_->PoolVms("")->size(), 1u);
  EXPECT_EQ(store_->ListVms(0, "")->items.size(), 2u);

  ASSERT_TRUE(store_->DeletePool("p").ok());
  EXPECT_EQ(store_->GetPool("p").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeletePool("p").code(), absl::StatusCode::kNotFound);
}

std::vector<std::string> VmIds(const absl::StatusOr<Page<VmRecord>>& page) {
  std::vector<std::string> ids;
  if (!page.ok()) return {page.status().ToString()};
  for (const VmRecord& vm : page->items) ids.push_back(vm.vm_id);
  return ids;
}

// Filters are matched in SQL: labels (all of them, by exact value, "" too),
// states (any), images (as given or by digest), on top of owner and paging.
TEST_F(StoreTest, ListVmsFiltersByLabelsStatesAndImages) {
  auto add = [&](const std::string& id, VmState state, std::map<std::string, std::string> labels,
                 const std::string& image, const std::string& digest) {
    VmRecord vm = MakeVm(id);
    vm.state = state;
    vm.config.labels = std::move(labels);
    vm.config.image = image;
    vm.config.image_digest = digest;
    ASSERT_TRUE(store_->InsertVm(vm).ok());
  };
  add("a", VmState::kRunning, {{"team", "ml"}, {"env", "prod"}}, "debian-python:latest",
      "sha256:aa");
  add("b", VmState::kPaused, {{"team", "ml"}, {"env", ""}}, "minimal", "sha256:bb");
  add("c", VmState::kRunning, {{"team", "web"}}, "minimal", "sha256:bb");
  add("d", VmState::kStopped, {}, "", "");
  using F = ListFilter;
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{})),
            (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.labels = {{"team", "ml"}}})),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.labels = {{"team", "ml"}, {"env", "prod"}}})),
            (std::vector<std::string>{"a"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.labels = {{"env", ""}}})),
            (std::vector<std::string>{"b"}));  // "" matches "" only, not a missing key
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.labels = {{"nope", "x"}}})),
            (std::vector<std::string>{}));
  EXPECT_EQ(VmIds(store_->ListVms(
                0, "", "", F{.states = {VmState::kRunning, VmState::kStopped}})),
            (std::vector<std::string>{"a", "c", "d"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.images = {"minimal"}})),
            (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "", F{.images = {"sha256:aa"}})),
            (std::vector<std::string>{"a"}));
  EXPECT_EQ(VmIds(store_->ListVms(0, "", "",
                                  F{.labels = {{"team", "ml"}},
                                    .states = {VmState::kRunning},
                                    .images = {"minimal", "debian-python:latest"}})),
            (std::vector<std::string>{"a"}));
  // Pages are pages of matches.
  auto page = store_->ListVms(1, "", "", F{.states = {VmState::kRunning}});
  EXPECT_EQ(VmIds(page), (std::vector<std::string>{"a"}));
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(VmIds(store_->ListVms(1, page->next_page_token, "", F{.states = {VmState::kRunning}})),
            (std::vector<std::string>{"c"}));
}

TEST_F(StoreTest, ListSnapshotsFiltersByTheirOwnLabelsAndImage) {
  SnapshotRecord golden = MakeSnapshot("s1", "vm-1");
  golden.labels = {{"stage", "golden"}};
  golden.vm_config.image = "minimal";
  ASSERT_TRUE(store_->InsertSnapshot(golden).ok());
  SnapshotRecord other = MakeSnapshot("s2", "vm-1");
  other.labels = {};
  other.vm_config.labels = {{"stage", "golden"}};  // the VM's, not the snapshot's
  ASSERT_TRUE(store_->InsertSnapshot(other).ok());
  auto ids = [](const absl::StatusOr<Page<SnapshotRecord>>& page) {
    std::vector<std::string> out;
    if (!page.ok()) return std::vector<std::string>{page.status().ToString()};
    for (const SnapshotRecord& s : page->items) out.push_back(s.snapshot_id);
    return out;
  };
  EXPECT_EQ(ids(store_->ListSnapshots(0, "", "", "", ListFilter{.labels = {{"stage", "golden"}}})),
            (std::vector<std::string>{"s1"}));
  EXPECT_EQ(ids(store_->ListSnapshots(0, "", "", "", ListFilter{.images = {"minimal"}})),
            (std::vector<std::string>{"s1"}));
  EXPECT_EQ(ids(store_->ListSnapshots(0, "", "", "", ListFilter{})),
            (std::vector<std::string>{"s1", "s2"}));
}

TEST_F(StoreTest, FreshDatabaseHasCurrentSchemaVersion) {
  auto version = store_->SchemaVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, kSchemaVersion);
}

TEST_F(StoreTest, VmmUidsAreUniqueKeptAndReusedAfterDelete) {
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(store_->InsertVm(MakeVm(id)).ok());
  auto alloc = [&](const std::string& id) -> uint32_t {
    auto uid = store_->AllocateVmmUid(id, 5000, 3);
    EXPECT_TRUE(uid.ok()) << uid.status();
    return uid.ok() ? *uid : 0;
  };
  EXPECT_EQ(alloc("a"), 5000u);
  EXPECT_EQ(alloc("b"), 5001u);
  // A VM keeps its uid; asking again changes nothing.
  EXPECT_EQ(alloc("a"), 5000u);
  // UpdateVm with a record that never saw the uid does not give it back.
  VmRecord stale = MakeVm("a");
  stale.vmm_uid = 0;
  ASSERT_TRUE(store_->UpdateVm(stale).ok());
  EXPECT_EQ(store_->GetVm("a")->vmm_uid, 5000u);
  // The first gap is reused after a delete.
  ASSERT_TRUE(store_->DeleteVm("a").ok());
  EXPECT_EQ(alloc("c"), 5000u);
  ASSERT_TRUE(store_->InsertVm(MakeVm("d")).ok());
  ASSERT_TRUE(store_->InsertVm(MakeVm("e")).ok());
  EXPECT_EQ(alloc("d"), 5002u);
  EXPECT_THAT(store_->AllocateVmmUid("e", 5000, 3),
              StatusIs(absl::StatusCode::kResourceExhausted, "5000-5002"));
  EXPECT_THAT(store_->AllocateVmmUid("nope", 5000, 3), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(StoreTest, VmRoundTripsEveryField) {
  VmRecord vm = MakeVm("vm-1");
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  auto got = store_->GetVm("vm-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, vm);
  EXPECT_EQ(got->created_at, absl::FromUnixMicros(1700000000123456));
  EXPECT_EQ(got->updated_at, absl::FromUnixMicros(1700000001654321));
}

TEST_F(StoreTest, EgressPoliciesRoundTrip) {
  VmRecord vm = MakeVm("vm-egress");
  vm.config.egress = {EgressMode::kRestricted, {"10.0.0.0/8"}, {"10.1.0.0/16", "10.2.3.4"}};
  vm.network.egress = {EgressMode::kOpen, {}, {"169.254.0.0/16"}, {}, {"*.evil.example"}};
  vm.config.egress.allow_domains = {"pypi.org", "*.pythonhosted.org"};
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  auto got = store_->GetVm("vm-egress");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->config.egress, vm.config.egress);
  EXPECT_EQ(got->network.egress, vm.network.egress);
}

TEST_F(StoreTest, MountsRoundTrip) {
  VmRecord vm = MakeVm("vm-mounts");
  vm.config.mounts = {Mount{"/srv/share/a", "/mnt/a", true, false},
                      Mount{"/srv/share/b", "/b", false, true}};
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  auto got = store_->GetVm("vm-mounts");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->config.mounts, vm.config.mounts);
}

TEST_F(StoreTest, EveryVmStateRoundTrips) {
  int i = 0;
  for (VmState state : {VmState::kCreated, VmState::kRunning, VmState::kPaused,
                        VmState::kStopped, VmState::kError}) {
    VmRecord vm = MakeVm(absl::StrCat("vm-", i++));
    vm.state = state;
    ASSERT_TRUE(store_->InsertVm(vm).ok());
    auto got = store_->GetVm(vm.vm_id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->state, state) << VmStateName(state);
  }
}

TEST_F(StoreTest, DefaultVmRoundTrips) {
  VmRecord vm;
  vm.vm_id = "vm-defaults";
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  auto got = store_->GetVm("vm-defaults");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, vm);
}

TEST_F(StoreTest, TimesKeepMicrosecondsIncludingBeforeEpoch) {
  VmRecord vm = MakeVm("vm-1");
  vm.created_at = absl::FromUnixMicros(-1234567);
  vm.updated_at = absl::FromUnixMicros(1);
  ASSERT_TRUE(store_->InsertVm(vm).ok());
  auto got = store_->GetVm("vm-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->created_at, vm.created_at);
  EXPECT_EQ(got->updated_at, vm.updated_at);
}

TEST_F(StoreTest, SnapshotRoundTripsEveryField) {
  SnapshotRecord snapshot = MakeSnapshot("snap-1", "vm-1");
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, snapshot);
  EXPECT_EQ(got->restored_vm_id, std::optional<std::string>("vm-restored"));
  EXPECT_EQ(got->size_bytes, uint64_t{5} << 32);
}

TEST_F(StoreTest, SnapshotWithoutChecksumsRoundTrips) {
  SnapshotRecord snapshot = MakeSnapshot("snap-legacy", "vm-1");
  snapshot.checksums.reset();
  snapshot.verified_stamps.reset();
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());
  auto got = store_->GetSnapshot("snap-legacy");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, snapshot);
}

TEST_F(StoreTest, SetSnapshotVerifiedChangesOnlyTheStamps) {
  SnapshotRecord snapshot = MakeSnapshot("snap-1", "vm-1");
  snapshot.verified_stamps.reset();
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());
  SnapshotStamps stamps;
  stamps.vmstate = {.ino = 1, .size = 2, .mtime_ns = 3, .ctime_ns = 4};
  stamps.mem = {.ino = 5, .size = 6, .mtime_ns = 7, .ctime_ns = 8};
  stamps.disk = {.ino = 9, .size = 10, .mtime_ns = 11, .ctime_ns = 12};
  ASSERT_TRUE(store_->SetSnapshotVerified("snap-1", stamps).ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  snapshot.verified_stamps = stamps;
  EXPECT_EQ(*got, snapshot);
  EXPECT_EQ(store_->SetSnapshotVerified("snap-none", stamps).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, SnapshotWithoutRestoredVmIdRoundTrips) {
  SnapshotRecord snapshot = MakeSnapshot("snap-1", "vm-1");
  snapshot.restored = false;
  snapshot.restored_vm_id = std::nullopt;
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, snapshot);
  EXPECT_EQ(got->restored_vm_id, std::nullopt);
}

TEST_F(StoreTest, EmptyRestoredVmIdIsNotNull) {
  SnapshotRecord snapshot = MakeSnapshot("snap-1", "vm-1");
  snapshot.restored_vm_id = "";
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->restored_vm_id, std::optional<std::string>(""));
}

TEST_F(StoreTest, UpdateSnapshotSetsAndClearsRestoredVmId) {
  SnapshotRecord snapshot = MakeSnapshot("snap-1", "vm-1");
  snapshot.restored = false;
  snapshot.restored_vm_id = std::nullopt;
  ASSERT_TRUE(store_->InsertSnapshot(snapshot).ok());

  snapshot.restored = true;
  snapshot.restored_vm_id = "vm-2";
  snapshot.size_bytes = 7;
  snapshot.accelerator = "kvm";
  ASSERT_TRUE(store_->UpdateSnapshot(snapshot).ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, snapshot);

  snapshot.restored = false;
  snapshot.restored_vm_id = std::nullopt;
  ASSERT_TRUE(store_->UpdateSnapshot(snapshot).ok());
  got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, snapshot);
}

TEST_F(StoreTest, DuplicateInsertIsAlreadyExists) {
  ASSERT_TRUE(store_->InsertVm(MakeVm("vm-1")).ok());
  absl::Status status = store_->InsertVm(MakeVm("vm-1"));
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(status.message(), "vm \"vm-1\" already exists");

  ASSERT_TRUE(store_->InsertSnapshot(MakeSnapshot("snap-1", "vm-1")).ok());
  status = store_->InsertSnapshot(MakeSnapshot("snap-1", "vm-2"));
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(status.message(), "snapshot \"snap-1\" already exists");
}

TEST_F(StoreTest, UnknownVmIsNotFound) {
  auto got = store_->GetVm("vm-missing");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(got.status().message(), "vm \"vm-missing\" not found");

  absl::Status status = store_->UpdateVm(MakeVm("vm-missing"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "vm \"vm-missing\" not found");

  status = store_->DeleteVm("vm-missing");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "vm \"vm-missing\" not found");
}

TEST_F(StoreTest, UnknownSnapshotIsNotFound) {
  auto got = store_->GetSnapshot("snap-missing");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(got.status().message(), "snapshot \"snap-missing\" not found");

  absl::Status status =
      store_->UpdateSnapshot(MakeSnapshot("snap-missing", "vm-1"));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "snapshot \"snap-missing\" not found");

  status = store_->DeleteSnapshot("snap-missing");
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "snapshot \"snap-missing\" not found");
}

TEST_F(StoreTest, UpdateVmReplacesFieldsAndSetsUpdatedAtToNow) {
  ASSERT_TRUE(store_->InsertVm(MakeVm("vm-1")).ok());
  VmRecord vm = MakeVm("vm-1");
  vm.state = VmState::kRunning;
  vm.config.vcpu_count = 8;
  vm.network.tap_device = "smol-ffff";
  vm.error = "";
  vm.vmm_pid = 99;
  vm.restored_from = "";
  vm.updated_at = absl::UnixEpoch();  // Ignored.

  // The store keeps microseconds, so compare against bounds at that grain.
  const absl::Time before = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  ASSERT_TRUE(store_->UpdateVm(vm).ok());
  const absl::Time after = absl::Now();

  auto got = store_->GetVm("vm-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_GE(got->updated_at, before);
  EXPECT_LE(got->updated_at, after);
  VmRecord expected = vm;
  expected.updated_at = got->updated_at;
  EXPECT_EQ(*got, expected);
}

TEST_F(StoreTest, DeleteRemovesOnlyThatRow) {
  ASSERT_TRUE(store_->InsertVm(MakeVm("vm-1")).ok());
  ASSERT_TRUE(store_->InsertVm(MakeVm("vm-2")).ok());
  ASSERT_TRUE(store_->DeleteVm("vm-1").ok());
  EXPECT_EQ(store_->GetVm("vm-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetVm("vm-2").ok());

  ASSERT_TRUE(store_->InsertSnapshot(MakeSnapshot("snap-1", "vm-2")).ok());
  ASSERT_TRUE(store_->DeleteSnapshot("snap-1").ok());
  EXPECT_EQ(store_->GetSnapshot("snap-1").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreTest, SnapshotsSurviveDeleteOfTheirVm) {
  ASSERT_TRUE(store_->InsertVm(MakeVm("vm-1")).ok());
  ASSERT_TRUE(store_->InsertSnapshot(MakeSnapshot("snap-1", "vm-1")).ok());
  ASSERT_TRUE(store_->DeleteVm("vm-1").ok());
  auto got = store_->GetSnapshot("snap-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->vm_id, "vm-1");
}

std::vector<std::string> VmIds(const std::vector<VmRecord>& vms) {
  std::vector<std::string> ids;
  for (const VmRecord& vm : vms) ids.push_back(vm.vm_id);
  return ids;
}

std::vector<std::string> SnapshotIds(
    const std::vector<SnapshotRecord>& snapshots) {
  std::vector<std::string> ids;
  for (const SnapshotRecord& snapshot : snapshots) {
    ids.push_back(snapshot.snapshot_id);
  }
  return ids;
}

TEST_F(StoreTest, ListVmsPaginatesInIdOrder) {
  // Inserted out of order; listed by id.
  for (int i : {4, 0, 6, 2, 5, 1, 3}) {
    ASSERT_TRUE(store_->InsertVm(MakeVm(absl::StrCat("vm-", i))).ok());
  }
  auto page = store_->ListVms(3, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(VmIds(page->items), ElementsAre("vm-0", "vm-1", "vm-2"));
  EXPECT_EQ(page->next_page_token, "vm-2");

  page = store_->ListVms(3, page->next_page_token);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(VmIds(page->items), ElementsAre("vm-3", "vm-4", "vm-5"));
  EXPECT_EQ(page->next_page_token, "vm-5");

  page = store_->ListVms(3, page->next_page_token);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(VmIds(page->items), ElementsAre("vm-6"));
  EXPECT_EQ(page->next_page_token, "");

  auto all = store_->AllVms();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_THAT(VmIds(*all), ElementsAre("vm-0", "vm-1", "vm-2", "vm-3", "vm-4",
                                       "vm-5", "vm-6"));
}

TEST_F(StoreTest, ExactlyFullLastPageHasNoToken) {
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(store_->InsertVm(MakeVm(absl::StrCat("vm-", i))).ok());
  }
  auto page = store_->ListVms(3, "vm-2");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(VmIds(page->items), ElementsAre("vm-3", "vm-4", "vm-5"));
  EXPECT_EQ(page->next_page_token, "");
}

TEST_F(StoreTest, EmptyStoreListsNothing) {
  auto vms = store_->ListVms(0, "");
  ASSERT_TRUE(vms.ok()) << vms.status();
  EXPECT_THAT(vms->items, IsEmpty());
  EXPECT_EQ(vms->next_page_token, "");
  auto snapshots = store_->ListSnapshots(0, "", "");
  ASSERT_TRUE(snapshots.ok()) << snapshots.status();
  EXPECT_THAT(snapshots->items, IsEmpty());
  EXPECT_EQ(snapshots->next_page_token, "");
}

TEST_F(StoreTest, PageSizeDefaultsTo100AndIsCappedAt1000) {
  for (int i = 0; i < 1001; ++i) {
    ASSERT_TRUE(
        store_->InsertVm(MakeVm(absl::StrFormat("vm-%04d", i))).ok());
  }
  auto page = store_->ListVms(0, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items.size(), 100u);
  EXPECT_EQ(page->next_page_token, "vm-0099");

  page = store_->ListVms(5000, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items.size(), 1000u);
  EXPECT_EQ(page->next_page_token, "vm-0999");
}

TEST_F(StoreTest, ListRejectsBadPageArguments) {
  for (const std::string& token : std::vector<std::string>{
           "Not-An-Id", "../etc", "vm 1", "-vm", std::string(65, 'a'),
           std::string("vm\0x", 4)}) {
    auto vms = store_->ListVms(3, token);
    EXPECT_EQ(vms.status().code(), absl::StatusCode::kInvalidArgument) << token;
    EXPECT_THAT(vms.status().message(), HasSubstr("invalid page_token"));
    auto snapshots = store_->ListSnapshots(3, token, "");
    EXPECT_EQ(snapshots.status().code(), absl::StatusCode::kInvalidArgument)
        << token;
  }
  EXPECT_EQ(store_->ListVms(-1, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->ListSnapshots(-1, "", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, ListSnapshotsPaginatesAndFiltersByVm) {
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(store_
                    ->InsertSnapshot(MakeSnapshot(absl::StrCat("snap-", i),
                                                  i % 2 == 0 ? "vm-a" : "vm-b"))
                    .ok());
  }
  auto page = store_->ListSnapshots(3, "", "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items),
              ElementsAre("snap-0", "snap-1", "snap-2"));
  EXPECT_EQ(page->next_page_token, "snap-2");
  page = store_->ListSnapshots(3, page->next_page_token, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items),
              ElementsAre("snap-3", "snap-4", "snap-5"));
  EXPECT_EQ(page->next_page_token, "snap-5");
  page = store_->ListSnapshots(3, page->next_page_token, "");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items), ElementsAre("snap-6"));
  EXPECT_EQ(page->next_page_token, "");

  // vm-a has snap-0, 2, 4, 6.
  page = store_->ListSnapshots(3, "", "vm-a");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items),
              ElementsAre("snap-0", "snap-2", "snap-4"));
  EXPECT_EQ(page->next_page_token, "snap-4");
  page = store_->ListSnapshots(3, page->next_page_token, "vm-a");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items), ElementsAre("snap-6"));
  EXPECT_EQ(page->next_page_token, "");

  page = store_->ListSnapshots(0, "", "vm-b");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(SnapshotIds(page->items),
              ElementsAre("snap-1", "snap-3", "snap-5"));
  EXPECT_EQ(page->next_page_token, "");

  page = store_->ListSnapshots(0, "", "vm-none");
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(page->items, IsEmpty());

  auto all = store_->AllSnapshots();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 7u);
}

// A store backed by a file in a fresh temp dir, plus raw SQLite access to it.
class FileStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = JoinPath(dir_, "state.db");
  }

  std::unique_ptr<Store> OpenStore() {
    auto store = Store::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Runs `sql` on its own connection and returns the first column of the
  // first row ("" if none).
  std::string RawQuery(const std::string& sql) {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    std::string result;
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr),
              SQLITE_OK)
        << sqlite3_errmsg(db);
    int rc = sqlite3_step(stmt);
    EXPECT_TRUE(rc == SQLITE_ROW || rc == SQLITE_DONE) << sqlite3_errmsg(db);
    if (rc == SQLITE_ROW && sqlite3_column_text(stmt, 0) != nullptr) {
      result = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return result;
  }

  smolvm_testing::TempDir temp_{"smolvm-store-test"};

  std::string dir_ = temp_.path();
  std::string path_;
};

TEST_F(FileStoreTest, ReopenKeepsDataAndSchemaVersion) {
  {
    std::unique_ptr<Store> store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->InsertVm(MakeVm("vm-1")).ok());
    ASSERT_TRUE(store->InsertSnapshot(MakeSnapshot("snap-1", "vm-1")).ok());
  }
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto version = store->SchemaVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, kSchemaVersion);
  auto vm = store->GetVm("vm-1");
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(*vm, MakeVm("vm-1"));
  auto snapshot = store->GetSnapshot("snap-1");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(*snapshot, MakeSnapshot("snap-1", "vm-1"));
}

TEST_F(FileStoreTest, UsesWalJournal) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->InsertVm(MakeVm("vm-1")).ok());
  // WAL mode is persistent: a second connection sees it too.
  EXPECT_EQ(RawQuery("PRAGMA journal_mode"), "wal");
  EXPECT_TRUE(PathExists(path_ + "-wal"));
}

TEST_F(FileStoreTest, RefusesNewerSchema) {
  RawQuery("PRAGMA user_version = 99");
  auto store = Store::Open(path_);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store.status().message(),
            absl::StrCat("state database schema version 99 is newer than this smolvmd "
                         "supports (", kSchemaVersion, "): upgrade smolvmd"));
  // Left untouched: no migration ran.
  EXPECT_EQ(RawQuery("PRAGMA user_version"), "99");
  EXPECT_EQ(RawQuery("SELECT count(*) FROM sqlite_master"), "0");
}

TEST_F(FileStoreTest, UndecodableRowsAreDataLoss) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->InsertVm(MakeVm("vm-1")).ok());
  ASSERT_TRUE(store->InsertVm(MakeVm("vm-2")).ok());
  ASSERT_TRUE(store->InsertSnapshot(MakeSnapshot("snap-1", "vm-1")).ok());
  RawQuery("UPDATE vms SET state = 'exploded' WHERE vm_id = 'vm-1'");
  RawQuery("UPDATE vms SET network = '{\"guest_ip\": 7}' WHERE vm_id = 'vm-2'");
  RawQuery("UPDATE snapshots SET vm_config = 'not json'");

  auto vm = store->GetVm("vm-1");
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(vm.status().message(), HasSubstr("vm \"vm-1\""));
  EXPECT_THAT(vm.status().message(), HasSubstr("exploded"));

  vm = store->GetVm("vm-2");
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(vm.status().message(), HasSubstr("vm \"vm-2\""));
  EXPECT_THAT(vm.status().message(), HasSubstr("network"));

  EXPECT_EQ(store->ListVms(0, "").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->AllVms().status().code(), absl::StatusCode::kDataLoss);

  auto snapshot = store->GetSnapshot("snap-1");
  EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(snapshot.status().message(), HasSubstr("snapshot \"snap-1\""));
  EXPECT_THAT(snapshot.status().message(), HasSubstr("vm_config"));
}

// A database as schema version 3 left it (the tables of migrations 1-3),
// with one snapshot, migrated to the current version on open.
TEST_F(FileStoreTest, MigratesSchema3SnapshotsToLegacyWithoutChecksums) {
  RawQuery(R"sql(CREATE TABLE snapshots (
  snapshot_id TEXT NOT NULL PRIMARY KEY, vm_id TEXT NOT NULL,
  snapshot_path TEXT NOT NULL, mem_file_path TEXT NOT NULL, disk_path TEXT NOT NULL,
  vm_config TEXT NOT NULL, network_config TEXT NOT NULL, created_at INTEGER NOT NULL,
  restored INTEGER NOT NULL CHECK (restored IN (0, 1)), restored_vm_id TEXT,
  size_bytes INTEGER NOT NULL, accelerator TEXT NOT NULL,
  owner TEXT NOT NULL DEFAULT 'uid:0'))sql");
  RawQuery(R"sql(CREATE TABLE vms (
  vm_id TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL, config TEXT NOT NULL,
  network TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  error TEXT NOT NULL, vmm_pid INTEGER NOT NULL, restored_from TEXT NOT NULL,
  owner TEXT NOT NULL DEFAULT 'uid:0'))sql");
  RawQuery("CREATE TABLE ip_allocations (ip TEXT NOT NULL PRIMARY KEY, "
           "vm_id TEXT NOT NULL UNIQUE)");
  RawQuery(R"sql(INSERT INTO snapshots VALUES ('snap-old', 'vm-1',
  '/s/snap-old/vmstate.bin', '/s/snap-old/mem.bin', '/s/snap-old/disk.ext4',
  '{"vm_id":"vm-1","memory_mib":256}', '{}', 1700000000000000, 0, NULL, 4096,
  'tcg', 'uid:1000'))sql");
  RawQuery("PRAGMA user_version = 3");

  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  auto version = store->SchemaVersion();
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, kSchemaVersion);
  auto old = store->GetSnapshot("snap-old");
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->vm_config.memory_mib, 256u);
  EXPECT_EQ(old->owner, "uid:1000");
  EXPECT_FALSE(old->checksums.has_value()) << "a legacy snapshot";
  EXPECT_FALSE(old->verified_stamps.has_value());

  // The new column takes checksums and stamps from now on.
  SnapshotRecord updated = *old;
  updated.checksums = MakeSnapshot("x", "y").checksums;
  updated.verified_stamps = MakeSnapshot("x", "y").verified_stamps;
  ASSERT_TRUE(store->UpdateSnapshot(updated).ok());
  auto got = store->GetSnapshot("snap-old");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, updated);
}

TEST_F(FileStoreTest, MalformedIntegrityIsDataLoss) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->InsertSnapshot(MakeSnapshot("snap-1", "vm-1")).ok());
  for (const char* bad :
       {"not json", "[]", R"({"checksums": {"vmstate": "x"}})",
        R"({"checksums": {"vmstate": 1, "mem": "m", "disk": "d"}})",
        R"({"verified": {"vmstate": {"ino": 1}}})",
        R"({"verified": {"vmstate": {"ino": -1, "size": 1, "mtime_ns": 1, "ctime_ns": 1},
            "mem": {"ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1},
            "disk": {"ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1}}})"}) {
    RawQuery(absl::StrCat("UPDATE snapshots SET integrity = '", bad, "'"));
    auto snapshot = store->GetSnapshot("snap-1");
    EXPECT_EQ(snapshot.status().code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_THAT(snapshot.status().message(), HasSubstr("integrity")) << bad;
  }
}

TEST_F(FileStoreTest, OpenInMissingDirectoryFails) {
  const std::string path = JoinPath(dir_, "missing/state.db");
  auto store = Store::Open(path);
  EXPECT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr(path));
}

TEST_F(FileStoreTest, ConcurrentInsertsAllLand) {
  std::unique_ptr<Store> store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string suffix = absl::StrCat(t, "-", i);
        if (!store->InsertVm(MakeVm("vm-" + suffix)).ok()) ++failures[t];
        if (!store->InsertSnapshot(MakeSnapshot("snap-" + suffix, "vm-" + suffix))
                 .ok()) {
          ++failures[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ::testing::Each(0));
  auto vms = store->AllVms();
  ASSERT_TRUE(vms.ok()) << vms.status();
  EXPECT_EQ(vms->size(), size_t{kThreads * kPerThread});
  auto snapshots = store->AllSnapshots();
  ASSERT_TRUE(snapshots.ok()) << snapshots.status();
  EXPECT_EQ(snapshots->size(), size_t{kThreads * kPerThread});
}

}  // namespace

TEST(AddressAllocationTest, AllocatesUniquelyReusesAndReleases) {
  auto store = Store::Open(":memory:");
  ASSERT_TRUE(store.ok());
  const std::vector<std::string> pool = {"10.0.0.2", "10.0.0.3"};
  auto a = (*store)->AllocateAddress("vm-a", pool);
  auto b = (*store)->AllocateAddress("vm-b", pool);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, "10.0.0.2");
  EXPECT_EQ(*b, "10.0.0.3");
  // A VM keeps its address; a full pool is RESOURCE_EXHAUSTED.
  EXPECT_EQ(*(*store)->AllocateAddress("vm-a", pool), "10.0.0.2");
  EXPECT_EQ((*store)->AllocateAddress("vm-c", pool).status().code(),
            absl::StatusCode::kResourceExhausted);
  // A specific address held by another VM is refused, naming the holder.
  auto taken = (*store)->ReserveAddress("vm-c", "10.0.0.3");
  EXPECT_EQ(taken.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(taken.message().find("vm-b"), std::string::npos);
  EXPECT_TRUE((*store)->ReleaseAddress("vm-b").ok());
  EXPECT_TRUE((*store)->ReserveAddress("vm-c", "10.0.0.3").ok());
  EXPECT_TRUE((*store)->ReserveAddress("vm-c", "10.0.0.3").ok());
  auto all = (*store)->AddressAllocations();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
  EXPECT_EQ(all->at("10.0.0.3"), "vm-c");
}

TEST(AddressAllocationTest, ConcurrentAllocationsNeverCollide) {
  auto store = Store::Open(":memory:");
  ASSERT_TRUE(store.ok());
  std::vector<std::string> pool;
  for (int i = 2; i < 60; ++i) pool.push_back(absl::StrCat("10.0.0.", i));
  std::vector<std::string> got(40);
  std::vector<std::thread> threads;
  for (int i = 0; i < 40; ++i) {
    threads.emplace_back([&, i] {
      auto ip = (*store)->AllocateAddress(absl::StrCat("vm-", i), pool);
      if (ip.ok()) got[i] = *ip;
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> unique(got.begin(), got.end());
  EXPECT_EQ(unique.size(), 40u);
  EXPECT_EQ(unique.count(""), 0u);
}

}  // namespace smolvm::store

namespace smolvm::store {
namespace {

// Another connection holds the write lock for a while (a second process,
// a backup tool): the store's writes wait for it (SQLite's busy handler
// retries with backoff) instead of failing, and nothing is half applied.
TEST(StoreBusyTest, WritesWaitForAnotherWriterAndLoseNothing) {
  smolvm_testing::TempDir dir("store-busy");
  const std::string path = dir.path() + "/smolvmd.db";
  auto store = Store::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::thread holder([other] {
    absl::SleepFor(absl::Milliseconds(400));
    sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr);
  });
  const absl::Time t0 = absl::Now();
  VmRecord vm;
  vm.vm_id = "busy";
  vm.config.vm_id = "busy";
  absl::Status inserted = (*store)->InsertVm(vm);
  absl::Status journaled = (*store)->BeginOperation("busy", "delete");
  const absl::Duration waited = absl::Now() - t0;
  holder.join();
  sqlite3_close(other);
  EXPECT_TRUE(inserted.ok()) << inserted;
  EXPECT_TRUE(journaled.ok()) << journaled;
  EXPECT_GE(waited, absl::Milliseconds(300)) << "the writes did not wait for the lock";
  EXPECT_TRUE((*store)->GetVm("busy").ok());
  auto pending = (*store)->PendingOperations();
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].kind, "delete");
  EXPECT_TRUE((*pending)[0].has_previous);
}

TEST(StoreJournalTest, RestorePreviousVmPutsTheRowBackAsItWas) {
  auto store = Store::Open(":memory:");
  ASSERT_TRUE(store.ok());
  VmRecord vm;
  vm.vm_id = "a";
  vm.config.vm_id = "a";
  vm.state = VmState::kStopped;
  vm.error = "before";
  ASSERT_TRUE((*store)->InsertVm(vm).ok());
  ASSERT_TRUE((*store)->BeginOperation("a", "restore").ok());
  EXPECT_TRUE(absl::IsAlreadyExists((*store)->BeginOperation("a", "restore")));
  VmRecord changed = vm;
  changed.state = VmState::kCreated;
  changed.error = "during";
  ASSERT_TRUE((*store)->UpdateVm(changed).ok());
  ASSERT_TRUE((*store)->RestorePreviousVm("a").ok());
  auto back = (*store)->GetVm("a");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->state, VmState::kStopped);
  EXPECT_EQ(back->error, "before");
  ASSERT_TRUE((*store)->EndOperation("a").ok());
  EXPECT_TRUE((*store)->EndOperation("a").ok()) << "End is idempotent";
  EXPECT_TRUE((*store)->PendingOperations()->empty());
}

}  // namespace
}  // namespace smolvm::store
