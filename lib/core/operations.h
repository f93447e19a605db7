// File: operations.h
//
// The operations OperationService shows: long calls (CreateVm,
// CreateSnapshot, RestoreSnapshot, ForkSnapshot) that a client named with an
// operation_id, with the progress they report and, once they end, their
// outcome. In memory only (a restarted daemon has none), per tenant, and
// bounded: a finished operation is forgotten after `keep_finished` or when
// more than `max_finished` have finished since.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/base/progress.h"
#include "lib/model/tenant.h"

namespace smolvm::core {

// One operation as a client sees it (Operation in the proto).
struct OperationState {
  std::string operation_id;
  std::string owner;   // Tenant that started it.
  std::string kind;    // The RPC: "CreateVm", "ForkSnapshot", ...
  std::string target;  // The VM or snapshot it acts on.
  std::string stage;
  uint64_t done = 0;
  uint64_t total = 0;
  std::string unit;
  uint32_t stage_number = 0;
  bool finished = false;
  absl::Status outcome;  // Meaningful once finished.
  absl::Time started_at;
  absl::Time updated_at;
  // Grows with every change: what a watcher waits past.
  uint64_t version = 0;
};

class OperationRegistry {
 public:
  explicit OperationRegistry(absl::Duration keep_finished = absl::Minutes(10),
                             size_t max_finished = 1024)
      : keep_finished_(keep_finished), max_finished_(max_finished) {}
  OperationRegistry(const OperationRegistry&) = delete;
  OperationRegistry& operator=(const OperationRegistry&) = delete;

  // A running operation: the Progress its call reports to. Finish records
  // the call's outcome; a handle destroyed unfinished records UNKNOWN (the
  // call ended without saying how), so no watcher waits forever.
  class Handle : public Progress {
   public:
    ~Handle() override;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    void Stage(std::string_view name, uint64_t total, std::string_view unit) override;
    void SetDone(uint64_t done) override;
    void Advance(uint64_t units) override;
    void Finish(const absl::Status& outcome);

   private:
    friend class OperationRegistry;
    Handle(OperationRegistry* registry, std::pair<std::string, std::string> key)
        : registry_(registry), key_(std::move(key)) {}
    OperationRegistry* const registry_;
    const std::pair<std::string, std::string> key_;  // (owner, id)
    bool finished_ = false;
  };

  // Registers `id` for `caller`'s tenant. INVALID_ARGUMENT for a malformed
  // id, ALREADY_EXISTS while the tenant has a running operation of that id
  // (a finished one of that id is replaced).
  absl::StatusOr<std::unique_ptr<Handle>> Begin(const Caller& caller, const std::string& id,
                                                std::string kind, std::string target);

  // The caller's operation `id` (an admin's own first, else any tenant's).
  // NOT_FOUND if there is none.
  absl::StatusOr<OperationState> Get(const Caller& caller, const std::string& id);

  // Waits until operation `id` has a version above `after` (0: until it
  // exists) or `deadline` passes, and returns its state then: unchanged at
  // the deadline, NOT_FOUND if it never appeared.
  absl::StatusOr<OperationState> WaitNewer(const Caller& caller, const std::string& id,
                                           uint64_t after, absl::Time deadline);

 private:
  using Key = std::pair<std::string, std::string>;
  // What Get / WaitNewer find for the caller; null if nothing. Requires mu_.
  const OperationState* FindLocked(const Caller& caller, const std::string& id) const;
  void UpdateLocked(OperationState& op);
  void PruneLocked(absl::Time now);
  // Applies `change` to a running operation and wakes its watchers.
  template <typename ChangeFn>
  void Change(const Key& key, ChangeFn&& change);

  const absl::Duration keep_finished_;
  const size_t max_finished_;
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<Key, OperationState> ops_;
  uint64_t next_version_ = 1;
};

}  // namespace smolvm::core
