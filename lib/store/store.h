// File: store.h
//
// Store persists VMs and snapshots in SQLite (WAL mode, versioned schema
// migrations run at Open). It is the daemon's source of truth across
// restarts: what exists, in which state, owned by which VMM pid.
//
// Thread-safety: all methods may be called concurrently; the store
// serializes access to its connection internally.
// Errors: NOT_FOUND for unknown ids, ALREADY_EXISTS for duplicate ids,
// INTERNAL for SQLite failures (message carries sqlite3_errmsg), DATA_LOSS
// for rows that cannot be decoded.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/model/event.h"
#include "lib/model/image.h"
#include "lib/model/pool.h"
#include "lib/model/vm.h"

struct sqlite3;

namespace smolvm::store {

// The schema version this build writes; Open migrates older databases up and
// refuses newer ones (FAILED_PRECONDITION: "upgrade smolvmd").
inline constexpr int kSchemaVersion = 15;

// A page of results. `next_page_token` is "" on the last page.
template <typename T>
struct Page {
  std::vector<T> items;
  std::string next_page_token;
};

// An operation a crash interrupted (see Store::BeginOperation).
struct PendingOperation {
  std::string vm_id;
  std::string kind;
  bool has_previous = false;  // The VM existed before the operation.
};

class Store {
 public:
  // Opens (creating if needed) the database at `path`; ":memory:" for tests.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  absl::Status InsertVm(const VmRecord& vm);
  // Replaces every field of an existing VM (NOT_FOUND if absent) and sets
  // updated_at to now.
  absl::Status UpdateVm(const VmRecord& vm);
  absl::StatusOr<VmRecord> GetVm(const std::string& vm_id);
  absl::Status DeleteVm(const std::string& vm_id);
  // Ordered by vm_id. page_size 0 means 100; capped at 1000. `owner` ""
  // means every tenant's. Unclaimed pool members are not listed (they are
  // the pool's, see PoolVms).
  // `filter`: see ListFilter (labels against config.labels).
  absl::StatusOr<Page<VmRecord>> ListVms(int page_size,
                                         const std::string& page_token,
                                         const std::string& owner = "",
                                         const ListFilter& filter = {});
  absl::StatusOr<std::vector<VmRecord>> AllVms();
  // The unclaimed members of a pool ("": of every pool), ordered by vm_id.
  absl::StatusOr<std::vector<VmRecord>> PoolVms(const std::string& pool_id);
  // VMs whose config holds a lifetime policy (or what one left), pool
  // members included, ordered by id.
  absl::StatusOr<std::vector<VmRecord>> LifetimeVms();

  // Warm pools (schema 9; store_pools.cc). ALREADY_EXISTS / NOT_FOUND.
  absl::Status InsertPool(const PoolRecord& pool);
  absl::StatusOr<PoolRecord> GetPool(const std::string& pool_id);
  // Ordered by pool_id; `owner` "" means every tenant's.
  absl::StatusOr<std::vector<PoolRecord>> ListPools(const std::string& owner = "");
  absl::Status DeletePool(const std::string& pool_id);

  absl::Status InsertSnapshot(const SnapshotRecord& snapshot);
  absl::Status UpdateSnapshot(const SnapshotRecord& snapshot);
  // Sets only `verified_stamps` of an existing snapshot (NOT_FOUND if
  // absent), atomically with respect to every other write of this store:
  // concurrent verifications and restores of one snapshot cannot undo each
  // other's other fields.
  absl::Status SetSnapshotVerified(const std::string& snapshot_id,
                                   const SnapshotStamps& stamps);
  absl::StatusOr<SnapshotRecord> GetSnapshot(const std::string& snapshot_id);
  absl::Status DeleteSnapshot(const std::string& snapshot_id);
  // Ordered by snapshot_id; `vm_id` "" and `owner` "" mean all. `filter`:
  // labels against the snapshot's own, images against vm_config (states
  // are ignored).
  absl::StatusOr<Page<SnapshotRecord>> ListSnapshots(
      int page_size, const std::string& page_token, const std::string& vm_id,
      const std::string& owner = "", const ListFilter& filter = {});
  absl::StatusOr<std::vector<SnapshotRecord>> AllSnapshots();

  // Guest addresses. AllocateAddress gives `vm_id` the first of
  // `candidates` nobody holds (or the one it already holds);
  // RESOURCE_EXHAUSTED when all are taken. ReserveAddress claims a specific
  // one (a restore into its own identity); FAILED_PRECONDITION, naming the
  // holder, when another VM has it. ReleaseAddress is OK if none is held.
  absl::StatusOr<std::string> AllocateAddress(const std::string& vm_id,
                                              const std::vector<std::string>& candidates);
  absl::Status ReserveAddress(const std::string& vm_id, const std::string& ip);
  absl::Status ReleaseAddress(const std::string& vm_id);
  // ip → vm_id.
  absl::StatusOr<std::map<std::string, std::string>> AddressAllocations();

  // The unprivileged uid of the VM's VMM: the one it holds if inside
  // [base, base + count), else the lowest free one there (freed when the VM
  // row is deleted). RESOURCE_EXHAUSTED when all are taken; NOT_FOUND for an
  // unknown VM. Only this call writes the column: UpdateVm leaves it alone,
  // so a stale VmRecord can never give a uid back.
  absl::StatusOr<uint32_t> AllocateVmmUid(const std::string& vm_id, uint32_t base,
                                          uint32_t count);

  // The operations journal: a multi-step operation on VM `vm_id` ("create",
  // "restore", "delete") records its intent before its first side effect
  // and ends it when done, so the next start finishes or rolls back what a
  // crash interrupted. Begin also keeps the VM's row as it is now (if it
  // exists), which RestorePreviousVm puts back. ALREADY_EXISTS if an
  // operation on `vm_id` is unfinished. End is OK if none is recorded.
  absl::Status BeginOperation(const std::string& vm_id, const std::string& kind);
  absl::Status EndOperation(const std::string& vm_id);
  absl::StatusOr<std::vector<PendingOperation>> PendingOperations();
  absl::Status RestorePreviousVm(const std::string& vm_id);

  // The schema version of the open database (for tests and logs).
  // Images (schema 8). InsertImage adds the image and points `name` at it
  // in one transaction: ALREADY_EXISTS if the name points elsewhere.
  absl::Status InsertImage(const ImageRecord& image, const std::string& name);
  // Points `name` at `digest`: NOT_FOUND for an unknown digest,
  // ALREADY_EXISTS if the name points at another image.
  absl::Status AddImageName(const std::string& name, const std::string& digest);
  absl::Status RemoveImageName(const std::string& name);
  // The digest `name` points at; NOT_FOUND when none.
  absl::StatusOr<std::string> ResolveImageName(const std::string& name);
  absl::StatusOr<ImageRecord> GetImage(const std::string& digest);
  absl::StatusOr<std::vector<ImageRecord>> AllImages();
  // Deletes the image and every name pointing at it.
  absl::Status DeleteImage(const std::string& digest);

  absl::StatusOr<int> SchemaVersion();

  // The event journal (schema 14; store_events.cc). Row changes of VMs,
  // snapshots and images write their events themselves (SQLite triggers,
  // see the migration); AppendEvent records the others (kEventForked,
  // kEventLifetimeAction): `event.at` and `event_id` are set by the store.
  // Returns the new event's id.
  absl::StatusOr<int64_t> AppendEvent(const EventRecord& event);
  // The events after `after_event_id` (0: from the oldest kept) that
  // `owner` ("" = every tenant's) and `filter` let through, ordered by id,
  // at most `limit` (capped at 1000). `read_through`: every event up to
  // this id was considered (the last one returned when `limit` were, else
  // the newest), so the next read continues after it even when the filter
  // let none through. OUT_OF_RANGE when retention dropped events after
  // `after_event_id` (a reader resuming from it would miss them), naming
  // the oldest kept.
  struct EventPage {
    std::vector<EventRecord> events;
    int64_t read_through = 0;
  };
  absl::StatusOr<EventPage> ListEvents(int64_t after_event_id, const std::string& owner,
                                       const EventFilter& filter, int limit);
  // The newest event's id (0: none yet) and the oldest kept (0: none).
  absl::StatusOr<int64_t> NewestEventId();
  absl::StatusOr<int64_t> OldestEventId();
  // Keeps at most about `max_events` events (>= 1): every 1000th event
  // drops all but the newest max_events; a lower limit applies at once.
  absl::Status SetMaxEvents(int64_t max_events);
  // Writers wake readers: every commit of this store (which may have
  // written events) bumps a counter. WaitForCommit returns the counter once
  // it differs from `seen`, or at `deadline`. Read the counter before
  // listing, then wait with it: no commit in between is missed.
  uint64_t CommitCount();
  uint64_t WaitForCommit(uint64_t seen, absl::Time deadline);

  // Counts of what the store holds (the daemon's metrics), from aggregate
  // queries: no row is read into memory.
  struct Census {
    std::map<std::string, uint64_t> vms_by_state;  // VmStateName -> count; members included.
    uint64_t pool_members = 0;                     // Unclaimed.
    uint64_t snapshots = 0;
    uint64_t snapshot_bytes = 0;                   // Sum of size_bytes.
    uint64_t pools = 0;
  };
  absl::StatusOr<Census> TakeCensus();

 // Unit tests of the core make writes fail (tests/fakes/fault_plan.h):
  // `fault` is asked before every write with the method's name; a non-OK
  // answer is returned instead of writing. Unset in production.
  void SetWriteFaultForTesting(std::function<absl::Status(std::string_view write)> fault);

 private:
  explicit Store(sqlite3* db);
  absl::Status WriteFault(std::string_view write);
  static int OnCommit(void* self);
  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
  absl::Mutex commit_mu_;  // Taken inside mu_ (by OnCommit), never around it.
  uint64_t commits_ ABSL_GUARDED_BY(commit_mu_) = 0;
  std::function<absl::Status(std::string_view)> write_fault_;
};

}  // namespace smolvm::store
