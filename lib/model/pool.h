// File: pool.h
//
// A warm pool: `size` clones of a snapshot kept restored (each with its own
// identity already applied) and paused, so that a claim only resumes one.
// The members are ordinary VM rows whose VmRecord::pool_id names the pool
// until they are claimed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace smolvm {

struct PoolRecord {
  std::string pool_id;      // Same rules as VM ids (lib/model/validation.h).
  std::string owner;        // Tenant; members and claimed VMs are its VMs.
  std::string snapshot_id;  // What members are restored from.
  uint32_t size = 0;        // Members kept ready (1..kMaxPoolSize).
  absl::Time created_at = absl::UnixEpoch();

  bool operator==(const PoolRecord&) const = default;
};

// A pool as GetPool reports it: the record and its members' state.
struct PoolStatus {
  PoolRecord pool;
  std::vector<std::string> ready;  // Paused members a claim can take now.
  uint32_t starting = 0;           // Members being restored.
  std::string last_error;          // The last refill failure, "" if none since.
};

// Bounded so that one request cannot ask the host for unbounded VMs; a
// tenant's VM and memory quotas apply to members on top of this.
inline constexpr uint32_t kMaxPoolSize = 64;

}  // namespace smolvm
