#include "tests/fakes/fake_host.h"

#include "absl/strings/str_cat.h"

namespace smolvm::fakes {

void FaultPlan::FailAt(int n) {
  absl::MutexLock lock(&mu_);
  countdown_ = n;
  fired_ = false;
  fired_step_.clear();
  steps_.clear();
}

absl::Status FaultPlan::Hit(std::string_view step) {
  absl::MutexLock lock(&mu_);
  steps_.emplace_back(step);
  if (countdown_ <= 0) return absl::OkStatus();
  if (--countdown_ > 0) return absl::OkStatus();
  fired_ = true;
  fired_step_ = std::string(step);
  return absl::UnavailableError(absl::StrCat("injected fault at step ", steps_.size(), ": ",
                                             std::string(step)));
}

bool FaultPlan::fired() const {
  absl::MutexLock lock(&mu_);
  return fired_;
}

std::string FaultPlan::fired_step() const {
  absl::MutexLock lock(&mu_);
  return fired_step_;
}

std::vector<std::string> FaultPlan::steps() const {
  absl::MutexLock lock(&mu_);
  return steps_;
}

std::map<std::string, int> FakeHost::LiveVmms() {
  absl::MutexLock lock(&mu);
  std::map<std::string, int> live;
  for (const auto& [pid, p] : processes) {
    if (p.alive) ++live[p.vm_id];
  }
  return live;
}

void FakeHost::KillVmm(const std::string& vm_id) {
  absl::MutexLock lock(&mu);
  for (auto& [pid, p] : processes) {
    if (p.vm_id == vm_id) p.alive = false;
  }
}

std::set<std::string> FakeHost::Links() {
  absl::MutexLock lock(&mu);
  return links;
}

std::set<std::string> FakeHost::FirewallVms() {
  absl::MutexLock lock(&mu);
  return firewall_vms;
}

}  // namespace smolvm::fakes
