#include "lib/core/vm_activity.h"

#include <algorithm>

namespace smolvm::core {

void VmActivity::Note(const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  uses_[vm_id].last = absl::Now();
}

std::shared_ptr<void> VmActivity::Busy(const std::string& vm_id) {
  {
    absl::MutexLock lock(&mu_);
    Use& use = uses_[vm_id];
    use.last = absl::Now();
    ++use.busy;
  }
  // A token that owns nothing; its deleter ends the use.
  return std::shared_ptr<void>(nullptr, [this, vm_id](void*) { Release(vm_id); });
}

void VmActivity::Release(const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  auto it = uses_.find(vm_id);
  if (it == uses_.end()) return;  // Forgotten meanwhile.
  it->second.last = absl::Now();
  it->second.busy = std::max(0, it->second.busy - 1);
}

std::optional<absl::Time> VmActivity::IdleSince(const std::string& vm_id) const {
  absl::MutexLock lock(&mu_);
  auto it = uses_.find(vm_id);
  if (it == uses_.end()) return started_at_;
  if (it->second.busy > 0) return std::nullopt;
  return std::max(it->second.last, started_at_);
}

void VmActivity::Forget(const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  uses_.erase(vm_id);
}

}  // namespace smolvm::core
