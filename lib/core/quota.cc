#include "lib/core/quota.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"

namespace smolvm::core {

QuotaUsage& QuotaUsage::operator+=(const QuotaUsage& o) {
  running_vms += o.running_vms;
  vcpus += o.vcpus;
  memory_mib += o.memory_mib;
  snapshots += o.snapshots;
  snapshot_bytes += o.snapshot_bytes;
  port_forwards += o.port_forwards;
  return *this;
}

std::string VmQuotaKey(const std::string& vm_id) { return "vm:" + vm_id; }
std::string SnapshotQuotaKey(const std::string& snapshot_id) {
  return "snapshot:" + snapshot_id;
}

QuotaUsage VmUsage(const VmRecord& vm, bool running) {
  QuotaUsage u;
  if (running) {
    u.running_vms = 1;
    u.vcpus = vm.config.vcpu_count;
    u.memory_mib = vm.config.memory_mib;
  }
  u.port_forwards = static_cast<int64_t>(vm.network.port_forwards.size());
  return u;
}

QuotaUsage SnapshotUsage(uint64_t bytes) {
  QuotaUsage u;
  u.snapshots = 1;
  u.snapshot_bytes = static_cast<int64_t>(bytes);
  return u;
}

QuotaLedger::Claim::Claim(Claim&& other) noexcept
    : ledger_(std::exchange(other.ledger_, nullptr)),
      tenant_(std::move(other.tenant_)),
      key_(std::move(other.key_)) {}

QuotaLedger::Claim& QuotaLedger::Claim::operator=(Claim&& other) noexcept {
  if (this != &other) {
    Release();
    ledger_ = std::exchange(other.ledger_, nullptr);
    tenant_ = std::move(other.tenant_);
    key_ = std::move(other.key_);
  }
  return *this;
}

QuotaLedger::Claim::~Claim() { Release(); }

void QuotaLedger::Claim::Release() {
  if (ledger_ != nullptr) ledger_->Release(tenant_, key_);
  ledger_ = nullptr;
}

void QuotaLedger::Release(const std::string& tenant, const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = claims_.find(tenant);
  if (it == claims_.end()) return;
  it->second.erase(key);
  if (it->second.empty()) claims_.erase(it);
}

absl::StatusOr<QuotaLedger::Claim> QuotaLedger::Reserve(const std::string& tenant,
                                                        const std::string& key,
                                                        const QuotaUsage& usage,
                                                        const QuotaLimits& limits) {
  absl::MutexLock lock(&mu_);
  auto& mine = claims_[tenant];
  if (mine.count(key)) {
    if (mine.empty()) claims_.erase(tenant);
    return absl::AbortedError(absl::StrCat(
        key, " is being changed by another operation; retry when it has finished"));
  }
  std::set<std::string> skip = {key};
  for (const auto& [k, u] : mine) skip.insert(k);
  absl::StatusOr<QuotaUsage> committed = reader_(tenant, skip);
  if (!committed.ok()) {
    if (mine.empty()) claims_.erase(tenant);
    return committed.status();
  }
  QuotaUsage total = *committed;
  for (const auto& [k, u] : mine) total += u;
  total += usage;
  struct Check {
    const char* name;
    const std::optional<int64_t>& limit;
    int64_t total;
    int64_t wanted;
  };
  const Check checks[] = {
      {"running_vms", limits.running_vms, total.running_vms, usage.running_vms},
      {"vcpus", limits.vcpus, total.vcpus, usage.vcpus},
      {"memory_mib", limits.memory_mib, total.memory_mib, usage.memory_mib},
      {"snapshots", limits.snapshots, total.snapshots, usage.snapshots},
      {"snapshot_bytes", limits.snapshot_bytes, total.snapshot_bytes, usage.snapshot_bytes},
      {"port_forwards", limits.port_forwards, total.port_forwards, usage.port_forwards},
  };
  for (const Check& c : checks) {
    // Only what this operation adds can push a quota over: a tenant whose
    // quota was lowered below its usage can still stop and delete things.
    if (c.limit && c.wanted > 0 && c.total > *c.limit) {
      if (mine.empty()) claims_.erase(tenant);
      return absl::ResourceExhaustedError(absl::StrCat(
          "quota ", c.name, " of tenant ", tenant, " exceeded: ", c.total - c.wanted,
          " in use, this needs ", c.wanted, ", the limit is ", *c.limit,
          "; free some (stop or delete VMs, delete snapshots or forwards) or ask an "
          "admin to raise [quotas] ", c.name));
    }
  }
  mine[key] = usage;
  return Claim(this, tenant, key);
}

}  // namespace smolvm::core
