#include "tests/fakes/fake_network.h"

#include "absl/strings/match.h"
#include "lib/base/status_macros.h"

namespace smolvm::fakes {

absl::Status FakeLinkBackend::EnsureBridge(const std::string& name, uint32_t gateway_ip,
                                           int prefix) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("links.ensure_bridge"));
  absl::MutexLock lock(&host_->mu);
  host_->links.insert(name);
  return absl::OkStatus();
}

absl::Status FakeLinkBackend::CreateTap(const std::string& name, const std::string& bridge) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("links.create_tap"));
  absl::MutexLock lock(&host_->mu);
  if (!host_->links.count(bridge)) return absl::FailedPreconditionError("no bridge " + bridge);
  host_->links.insert(name);
  return absl::OkStatus();
}

absl::Status FakeLinkBackend::DeleteLink(const std::string& name) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("links.delete"));
  absl::MutexLock lock(&host_->mu);
  host_->links.erase(name);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FakeLinkBackend::ListLinks(const std::string& prefix) {
  absl::MutexLock lock(&host_->mu);
  std::vector<std::string> out;
  for (const auto& l : host_->links) {
    if (absl::StartsWith(l, prefix)) out.push_back(l);
  }
  return out;
}

absl::StatusOr<std::map<std::string, absl::Status>> FakeFirewall::Apply(
    const net::FirewallState& state) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("firewall.apply"));
  absl::MutexLock lock(&host_->mu);
  host_->firewall_vms.clear();
  for (const auto& vm : state.vms) host_->firewall_vms.insert(vm.vm_id);
  ++host_->firewall_applies;
  return std::map<std::string, absl::Status>{};
}

absl::Status FakeFirewall::Remove(const std::string& table) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("firewall.remove"));
  absl::MutexLock lock(&host_->mu);
  host_->firewall_vms.clear();
  return absl::OkStatus();
}

}  // namespace smolvm::fakes
