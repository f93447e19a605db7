// Port forwards: VmManager's half (access, quota, the VM's lock) over
// VmNetwork's (uniqueness, store, firewall).
#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {

absl::StatusOr<VmRecord> VmManager::ExposePort(const Caller& caller, const std::string& vm_id,
                                               PortForward forward) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(NormalizePortForward(forward));
  if (!network_->enabled()) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  SMOLVM_RETURN_IF_ERROR(network_->CheckForwardPolicy(forward));
  VmRecord counted = vm;
  counted.network.port_forwards.push_back(forward);
  const bool live = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(vm_id), VmUsage(counted, live)));
  SMOLVM_RETURN_IF_ERROR(network_->AddForward(vm, forward));
  spdlog::info("vm {}: exposed guest port {} on {}:{}/{}", vm_id, forward.guest_port,
               forward.host_ip, forward.host_port, forward.protocol);
  return store_->GetVm(vm_id);
}

absl::StatusOr<VmRecord> VmManager::UpdateNetworkPolicy(const Caller& caller,
                                                        const std::string& vm_id,
                                                        const EgressPolicy& egress) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(ValidateEgress(egress));
  if (!network_->enabled()) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  SMOLVM_RETURN_IF_ERROR(network_->SetEgress(vm, egress));
  spdlog::info("vm {}: egress policy changed", vm_id);
  return store_->GetVm(vm_id);
}

absl::StatusOr<VmRecord> VmManager::UnexposePort(const Caller& caller, const std::string& vm_id,
                                                 PortForward forward) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  if (forward.guest_port == 0) forward.guest_port = 1;  // Not part of the key.
  SMOLVM_RETURN_IF_ERROR(NormalizePortForward(forward));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  SMOLVM_RETURN_IF_ERROR(network_->RemoveForward(vm, forward));
  return store_->GetVm(vm_id);
}

}  // namespace smolvm::core
