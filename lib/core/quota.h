// File: quota.h
//
// QuotaLedger checks a tenant's quota atomically with the operation that
// uses it. The store says what is committed; operations in flight hold a
// Claim on the object they are changing (a VM being started, a snapshot
// being written). A claim states the object's usage *after* the operation
// and replaces whatever the store says about that object, so an object is
// never counted twice and two concurrent operations can never both take
// the last unit: the check and the claim happen under one lock, and a
// claim is released only after the operation's result is in the store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/model/tenant.h"
#include "lib/model/vm.h"

namespace smolvm::core {

// What a tenant uses (or one object of it).
struct QuotaUsage {
  int64_t running_vms = 0;
  int64_t vcpus = 0;
  int64_t memory_mib = 0;
  int64_t snapshots = 0;
  int64_t snapshot_bytes = 0;
  int64_t port_forwards = 0;

  QuotaUsage& operator+=(const QuotaUsage& other);
};

// Keys of the objects usage is counted for: "vm:<id>", "snapshot:<id>".
std::string VmQuotaKey(const std::string& vm_id);
std::string SnapshotQuotaKey(const std::string& snapshot_id);

// The usage of one VM; `running` says whether it holds RAM and vCPUs.
QuotaUsage VmUsage(const VmRecord& vm, bool running);
QuotaUsage SnapshotUsage(uint64_t bytes);

// Committed usage of `tenant` in the store, leaving out the objects whose
// keys are in `skip` (they are claimed).
using UsageReader = std::function<absl::StatusOr<QuotaUsage>(
    const std::string& tenant, const std::set<std::string>& skip)>;

class QuotaLedger {
 public:
  // Releases its claim when destroyed. Movable.
  class Claim {
   public:
    Claim() = default;
    Claim(Claim&& other) noexcept;
    Claim& operator=(Claim&& other) noexcept;
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    ~Claim();

   private:
    friend class QuotaLedger;
    Claim(QuotaLedger* ledger, std::string tenant, std::string key)
        : ledger_(ledger), tenant_(std::move(tenant)), key_(std::move(key)) {}
    void Release();
    QuotaLedger* ledger_ = nullptr;
    std::string tenant_, key_;
  };

  explicit QuotaLedger(UsageReader reader) : reader_(std::move(reader)) {}

  // Checks that `tenant`'s usage with `key` counted as `usage` stays within
  // `limits` and claims it. RESOURCE_EXHAUSTED naming the quota, the limit
  // and the usage otherwise; ABORTED if `key` is already claimed (another
  // operation on the same object is under way).
  absl::StatusOr<Claim> Reserve(const std::string& tenant, const std::string& key,
                                const QuotaUsage& usage, const QuotaLimits& limits)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(const std::string& tenant, const std::string& key) ABSL_LOCKS_EXCLUDED(mu_);

  const UsageReader reader_;
  absl::Mutex mu_;
  // tenant -> key -> claimed usage.
  std::map<std::string, std::map<std::string, QuotaUsage>> claims_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smolvm::core
