// File: vm_activity.h
//
// When each VM was last used, for idle timeouts (VMConfig.lifetime): calls
// note it, and a call that goes on (a running exec, an attached process)
// holds a token that keeps its VM from being idle until it ends. In memory
// only: a restarted daemon gives every VM a fresh idle window.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace smolvm::core {

class VmActivity {
 public:
  explicit VmActivity(absl::Time started_at) : started_at_(started_at) {}

  // `vm_id` was used now.
  void Note(const std::string& vm_id);
  // `vm_id` is in use until the token is destroyed (noted at both ends).
  std::shared_ptr<void> Busy(const std::string& vm_id);
  // Since when `vm_id` has been unused; nullopt while a token is held. A VM
  // never noted counts from when this tracker started.
  std::optional<absl::Time> IdleSince(const std::string& vm_id) const;
  // The VM is gone (its tokens may outlive this).
  void Forget(const std::string& vm_id);

 private:
  struct Use {
    absl::Time last = absl::InfinitePast();
    int busy = 0;
  };
  void Release(const std::string& vm_id);

  const absl::Time started_at_;
  mutable absl::Mutex mu_;
  std::map<std::string, Use> uses_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smolvm::core
