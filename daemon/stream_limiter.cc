#include "daemon/stream_limiter.h"

#include "absl/strings/str_cat.h"

namespace smolvm::daemon {

absl::StatusOr<std::shared_ptr<void>> StreamLimiter::Take(const Caller& caller) {
  if (caller.admin || max_per_tenant_ <= 0) return std::shared_ptr<void>();
  {
    absl::MutexLock lock(&mu_);
    int& held = held_[caller.tenant];
    if (held >= max_per_tenant_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant ", caller.tenant, " already has ", held,
          " long calls open (execs, streams, watches, waits): end some, or ask the operator "
          "to raise max_streams_per_tenant"));
    }
    ++held;
  }
  return std::shared_ptr<void>(nullptr,
                               [this, tenant = caller.tenant](void*) { Release(tenant); });
}

void StreamLimiter::Release(const std::string& tenant) {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(tenant);
  if (it == held_.end()) return;
  if (--it->second <= 0) held_.erase(it);
}

int StreamLimiter::HeldBy(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  auto it = held_.find(tenant);
  return it == held_.end() ? 0 : it->second;
}

}  // namespace smolvm::daemon
