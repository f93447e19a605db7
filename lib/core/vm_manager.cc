#include "lib/core/vm_manager.h"

#include <unistd.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/crash_point.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/net/port_probe.h"
#include "lib/model/boot_args.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {

VmManager::VmManager(ManagerOptions options, std::unique_ptr<store::Store> store,
                     std::unique_ptr<vmm::Hypervisor> hypervisor,
                     std::unique_ptr<image::ImageCache> images,
                     std::unique_ptr<net::LinkBackend> links,
                     std::unique_ptr<net::Firewall> firewall,
                     std::unique_ptr<net::HostFirewall> host_firewall)
    : options_(std::move(options)),
      store_(std::move(store)),
      hypervisor_(std::move(hypervisor)),
      images_(std::move(images)),
      accelerator_(hypervisor_->accelerator()),
      links_(std::move(links)),
      firewall_(std::move(firewall)),
      host_firewall_(std::move(host_firewall)),
      quota_([this](const std::string& tenant, const std::set<std::string>& skip) {
        return StoredUsage(tenant, skip);
      }) {}

absl::Status VmManager::CheckAccess(const Caller& caller, const char* kind,
                                    const std::string& id, const std::string& owner) {
  if (caller.CanAccess(owner)) return absl::OkStatus();
  // Exactly what the store says of an id nobody has.
  return absl::NotFoundError(absl::StrCat(kind, " \"", id, "\" not found"));
}

absl::StatusOr<QuotaUsage> VmManager::StoredUsage(const std::string& tenant,
                                                  const std::set<std::string>& skip) {
  QuotaUsage total;
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
  for (const auto& vm : vms) {
    if (vm.owner != tenant || skip.count(VmQuotaKey(vm.vm_id))) continue;
    bool live = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
    total += VmUsage(vm, live);
  }
  SMOLVM_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps, store_->AllSnapshots());
  for (const auto& snap : snaps) {
    if (snap.owner != tenant || skip.count(SnapshotQuotaKey(snap.snapshot_id))) continue;
    total += SnapshotUsage(snap.size_bytes);
  }
  return total;
}

absl::StatusOr<QuotaLedger::Claim> VmManager::ClaimQuota(const Caller& caller,
                                                         const std::string& owner,
                                                         const std::string& key,
                                                         const QuotaUsage& usage) {
  QuotaLimits limits;
  if (!caller.admin && options_.quota_for) limits = options_.quota_for(owner);
  // Admins are not limited, but their claim still keeps a concurrent
  // tenant operation on the same object out.
  return quota_.Reserve(owner, key, usage, limits);
}

VmManager::SlotRef VmManager::SlotFor(const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  auto& slot = slots_[vm_id];
  if (!slot) slot = std::make_shared<VmSlot>();
  ++slot->users;
  return SlotRef(this, vm_id, slot);
}

void VmManager::ReleaseSlot(const std::string& vm_id, const std::shared_ptr<VmSlot>& slot)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  absl::MutexLock lock(&mu_);
  if (--slot->users > 0) return;
  // No call holds or waits for slot->mu (every holder has a SlotRef, and a
  // new one needs mu_): its fields can be read without it.
  if (slot->instance || slot->agent) return;
  auto it = slots_.find(vm_id);
  if (it != slots_.end() && it->second == slot) slots_.erase(it);
}

size_t VmManager::SlotCountForTesting() {
  absl::MutexLock lock(&mu_);
  return slots_.size();
}

std::string VmManager::VmDir(const std::string& id) const {
  return JoinPath(JoinPath(options_.state_dir, "vms"), id);
}
std::string VmManager::VmDiskPath(const std::string& id) const {
  return JoinPath(VmDir(id), "disk.ext4");
}
std::string VmManager::VmRunDir(const std::string& id) const {
  return JoinPath(JoinPath(options_.run_dir, "vms"), id);
}
std::string VmManager::VmMemPath(const std::string& id) const {
  return JoinPath(VmRunDir(id), "mem");
}
std::string VmManager::SnapshotDir(const std::string& id) const {
  return JoinPath(JoinPath(options_.state_dir, "snapshots"), id);
}

absl::Status VmManager::ResolveImage(VmConfig& config, UniqueFd& rootfs) {
  const bool named = !config.kernel_path.empty() || !config.initrd_path.empty() ||
                     !config.rootfs_path.empty();
  if (named && !options_.host_paths) {
    return absl::PermissionDeniedError(
        "this daemon allows no host files in VMConfig (kernel_path, initrd_path, "
        "rootfs_path): leave them empty for the default image, or ask the operator to "
        "allow a directory ([images] allowed_dirs in smolvmd.toml)");
  }
  const std::string imported = JoinPath(JoinPath(options_.state_dir, "images"), "imported");
  for (auto [path, field] : {std::pair{&config.kernel_path, "kernel_path"},
                             std::pair{&config.initrd_path, "initrd_path"}}) {
    if (path->empty()) continue;
    SMOLVM_ASSIGN_OR_RETURN(image::OpenedHostFile file, options_.host_paths->Open(*path, field));
    SMOLVM_RETURN_IF_ERROR(MakeDirs(imported));
    SMOLVM_ASSIGN_OR_RETURN(*path, image::ImportFile(file, imported));
  }
  if (!config.rootfs_path.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(image::OpenedHostFile file,
                            options_.host_paths->Open(config.rootfs_path, "rootfs_path"));
    rootfs = std::move(file.fd);
  }
  if (!config.kernel_path.empty() && !config.rootfs_path.empty()) {
    return absl::OkStatus();
  }
  auto image = images_->DefaultImage();
  if (!image.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the default guest image is unavailable (", image.status().message(),
        "); pass kernel_path and rootfs_path, or fix the image recipe"));
  }
  if (config.kernel_path.empty()) {
    config.kernel_path = image->kernel_path;
    config.initrd_path = image->initrd_path;
  }
  if (config.rootfs_path.empty()) config.rootfs_path = image->rootfs_path;
  return absl::OkStatus();
}

absl::Status VmManager::CheckForwardPolicy(const PortForward& f) const {
  const PortPolicy& policy = options_.ports;
  if (std::find(policy.host_ips.begin(), policy.host_ips.end(), f.host_ip) ==
      policy.host_ips.end()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "port forward host_ip ", f.host_ip, " is not allowed on this host (allowed: ",
        absl::StrJoin(policy.host_ips, ", "), "; [ports] host_ips in smolvmd.toml)"));
  }
  if (f.host_port < policy.min_port || f.host_port > policy.max_port) {
    return absl::PermissionDeniedError(absl::StrCat(
        "port forward host_port ", f.host_port, " is outside the allowed range ",
        policy.min_port, "-", policy.max_port, " ([ports] min/max in smolvmd.toml)"));
  }
  return net::CheckHostPortFree(f.host_ip, f.host_port, f.protocol);
}

absl::StatusOr<VmRecord> VmManager::CreateVm(const Caller& caller, VmConfig config,
                                             bool start) {
  if (config.vm_id.empty()) config.vm_id = GenerateId("vm");
  SMOLVM_RETURN_IF_ERROR(ValidateId(config.vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(NormalizeVmConfig(config));
  if (!caller.admin) SMOLVM_RETURN_IF_ERROR(ValidateTenantBootArgs(config.boot_args));
  if (!config.port_forwards.empty() && !subnet_) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  for (const auto& f : config.port_forwards) SMOLVM_RETURN_IF_ERROR(CheckForwardPolicy(f));
  UniqueFd rootfs;
  SMOLVM_RETURN_IF_ERROR(ResolveImage(config, rootfs));
  const std::string& id = config.vm_id;

  auto slot = SlotFor(id);
  absl::MutexLock lock(&slot->mu);
  VmRecord vm;
  vm.vm_id = id;
  vm.state = VmState::kCreated;
  vm.config = config;
  vm.owner = caller.tenant;
  vm.created_at = vm.updated_at = absl::Now();
  VmRecord counted = vm;
  counted.network.port_forwards = config.port_forwards;
  // Checked before anything exists; held until the VM is in the store as
  // CREATED, or (with `start`) RUNNING or failed.
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(id), VmUsage(counted, start)));
  // The row reserves the id (ALREADY_EXISTS for a duplicate) before any file
  // is touched; the guard undoes both if a later step fails.
  SMOLVM_RETURN_IF_ERROR(store_->InsertVm(vm));
  CrashPoint("create.row_inserted");
  auto undo = absl::MakeCleanup([&] {
    (void)RemoveTree(VmDir(id));
    (void)store_->DeleteVm(id);
    ReleaseNetwork(id);
  });
  {
    absl::MutexLock net_lock(&net_mu_);
    SMOLVM_RETURN_IF_ERROR(CheckForwardsFree(id, vm.owner, config.port_forwards));
    SMOLVM_RETURN_IF_ERROR(AssignNetwork(vm));
    vm.network.port_forwards = config.port_forwards;
    SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  }
  SMOLVM_RETURN_IF_ERROR(MakeDirs(VmDir(id)));
  // Copied under a temp name and renamed into place: a VM whose disk.ext4
  // exists has all of it (Reconcile rolls back a CREATED VM without one).
  const std::string staged = VmDiskPath(id) + ".creating";
  absl::Status copied = rootfs.valid() ? SparseCopyFromFd(rootfs.get(), staged)
                                       : SparseCopyFile(config.rootfs_path, staged);
  if (copied.ok()) CrashPoint("create.disk_copied");
  if (copied.ok() && rename(staged.c_str(), VmDiskPath(id).c_str()) != 0) {
    copied = absl::ErrnoToStatus(errno, absl::StrCat("rename ", staged));
  }
  if (auto s = copied; !s.ok()) {
    if (absl::IsResourceExhausted(s) || s.message().find("No space") != std::string::npos) {
      return absl::ResourceExhaustedError(absl::StrCat("copy root disk for vm ", id, ": ",
                                                       s.message()));
    }
    return s;
  }
  std::move(undo).Cancel();
  spdlog::info("vm {}: created ({} vcpus, {} MiB)", id, config.vcpu_count,
               config.memory_mib);
  if (!start) return vm;
  return BootLocked(*slot, std::move(vm));
}

absl::StatusOr<VmRecord> VmManager::BootLocked(VmSlot& slot, VmRecord vm) {
  const std::string& id = vm.vm_id;
  vmm::LaunchSpec spec;
  spec.vm_id = id;
  spec.vcpu_count = vm.config.vcpu_count;
  spec.memory_mib = vm.config.memory_mib;
  spec.kernel_path = vm.config.kernel_path;
  spec.initrd_path = vm.config.initrd_path;
  spec.disk_path = VmDiskPath(id);
  spec.kernel_cmdline = options_.base_cmdline;
  if (!vm.config.boot_args.empty()) absl::StrAppend(&spec.kernel_cmdline, " ", vm.config.boot_args);
  spec.run_dir = VmRunDir(id);
  spec.mem_path = VmMemPath(id);
  spec.mem_shared = true;
  absl::StrAppend(&spec.kernel_cmdline, NetworkCmdline(vm.network));
  FillLaunchNetwork(vm, spec);
  if (auto s = AssignVmmUid(vm); !s.ok()) {
    (void)FailVmLocked(slot, vm, s);
    return s;
  }
  spec.vmm_uid = vm.vmm_uid;
  absl::Time t0 = absl::Now();
  if (auto s = PlugNetwork(vm); !s.ok()) {
    (void)FailVmLocked(slot, vm, s);
    return s;
  }
  auto instance = hypervisor_->Launch(spec);
  if (!instance.ok()) {
    (void)FailVmLocked(slot, vm, instance.status());
    return instance.status();
  }
  slot.instance = *std::move(instance);
  // Record the pid before waiting: if the daemon dies during the boot, the
  // next start finds and ends this VMM.
  vm.vmm_pid = slot.instance->pid();
  vm.error.clear();
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  // Ready means the guest agent answered (an image without the agent may
  // instead write the legacy line SMOLVM_READY on the port).
  if (auto s = ConnectAgentLocked(slot, id, options_.boot_timeout); !s.ok()) {
    (void)FailVmLocked(slot, vm, s);
    return s;
  }
  vm.state = VmState::kRunning;
  vm.restored_from.clear();
  vm.pending_fixup.clear();
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info("vm {}: running (pid {}, ready in {})", id, vm.vmm_pid,
               absl::FormatDuration(absl::Now() - t0));
  return store_->GetVm(id);
}

absl::Status VmManager::AssignVmmUid(VmRecord& vm) {
  if (options_.vmm_uid_count == 0) return absl::OkStatus();
  SMOLVM_ASSIGN_OR_RETURN(vm.vmm_uid, store_->AllocateVmmUid(vm.vm_id, options_.vmm_uid_base,
                                                             options_.vmm_uid_count));
  return absl::OkStatus();
}

absl::Status VmManager::ConnectAgentLocked(VmSlot& slot, const std::string& vm_id,
                                         absl::Duration timeout) {
  if (slot.agent && slot.agent->healthy()) return absl::OkStatus();
  slot.agent.reset();
  vmm::VmInstance* instance = slot.instance.get();
  auto dead = [&]() -> absl::Status {
    if (instance->IsAlive()) return absl::OkStatus();
    std::string cause = instance->ExitCause();
    return absl::InternalError(absl::StrCat(
        "vm ", vm_id, ": qemu exited before the guest became ready",
        cause.empty() ? "" : ": ", cause, "; console tail:\n", instance->ConsoleTail(2000)));
  };
  auto client = agent::AgentClient::Connect(instance->agent_socket_path(), timeout, dead);
  if (!client.ok() && !absl::IsDeadlineExceeded(client.status())) {
    // The channel closes a moment before the VMM is gone: a dying VMM is
    // reported as such, with its console, not as a channel error.
    absl::Time until = absl::Now() + absl::Seconds(3);
    while (instance->IsAlive() && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
    if (auto s = dead(); !s.ok()) return s;
  }
  if (!client.ok()) {
    if (absl::IsDeadlineExceeded(client.status())) {
      return absl::DeadlineExceededError(absl::StrCat(
          "vm ", vm_id, ": guest did not become ready within ", absl::FormatDuration(timeout),
          " (", client.status().message(), "); console tail:\n", instance->ConsoleTail(2000)));
    }
    return client.status();
  }
  slot.agent = *std::move(client);
  return absl::OkStatus();
}

absl::Status VmManager::TearDownLocked(VmSlot& slot, const std::string& vm_id) {
  slot.agent.reset();
  slot.needs_fixup = false;
  slot.needs_readdress = false;
  if (slot.instance) {
    SMOLVM_RETURN_IF_ERROR(slot.instance->Shutdown(absl::Seconds(5)));
    slot.instance.reset();
  }
  return RemoveTree(VmRunDir(vm_id));
}

absl::Status VmManager::FailVmLocked(VmSlot& slot, VmRecord& vm,
                                     const absl::Status& cause) {
  // The cause may carry the guest's console: escaped, so a guest cannot
  // write lines (or terminal escapes) into the daemon's log.
  spdlog::warn("vm {}: error: {}", vm.vm_id, absl::CHexEscape(cause.message()));
  absl::Status teardown = TearDownLocked(slot, vm.vm_id);
  UnplugNetwork(vm);
  vm.state = VmState::kError;
  vm.vmm_pid = 0;
  vm.pending_fixup.clear();
  vm.error = std::string(cause.message());
  if (!teardown.ok()) absl::StrAppend(&vm.error, "; cleanup: ", teardown.message());
  return store_->UpdateVm(vm);
}

absl::StatusOr<VmRecord> VmManager::RefreshLocked(VmSlot& slot, VmRecord vm) {
  bool live_state = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  if (!live_state) return vm;
  if (slot.instance && slot.instance->IsAlive()) return vm;
  std::string tail = slot.instance ? slot.instance->ConsoleTail(2000) : "";
  std::string cause = slot.instance ? slot.instance->ExitCause() : "";
  SMOLVM_RETURN_IF_ERROR(FailVmLocked(
      slot, vm,
      absl::InternalError(absl::StrCat("the vmm process ", vm.vmm_pid, " exited unexpectedly",
                                       cause.empty() ? "" : ": ", cause,
                                       "; console tail:\n", tail))));
  return vm;
}

absl::StatusOr<VmRecord> VmManager::LoadLocked(VmSlot& slot, const Caller& caller,
                                               const std::string& vm_id) {
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  return RefreshLocked(slot, std::move(vm));
}

absl::StatusOr<VmRecord> VmManager::Refresh(VmRecord vm) {
  bool live_state = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  if (!live_state) return vm;
  auto slot = SlotFor(vm.vm_id);
  // A VM busy with a long operation is reported as stored; the operation
  // itself notices a dead VMM.
  if (!slot->mu.TryLock()) return vm;
  auto unlock = absl::MakeCleanup([&] { slot->mu.Unlock(); });
  SMOLVM_ASSIGN_OR_RETURN(VmRecord fresh, store_->GetVm(vm.vm_id));
  return RefreshLocked(*slot, std::move(fresh));
}

absl::StatusOr<VmRecord> VmManager::StartVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (vm.state == VmState::kRunning || vm.state == VmState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat(
        "start vm ", vm_id, ": it is already ", VmStateName(vm.state),
        " (use ResumeVm for a paused VM)"));
  }
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(vm_id), VmUsage(vm, true)));
  return BootLocked(*slot, std::move(vm));
}

absl::StatusOr<VmRecord> VmManager::StopVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (vm.state != VmState::kRunning && vm.state != VmState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stop vm ", vm_id, ": it is ", VmStateName(vm.state), ", not running or paused"));
  }
  SMOLVM_RETURN_IF_ERROR(TearDownLocked(*slot, vm_id));
  UnplugNetwork(vm);
  vm.state = VmState::kStopped;
  vm.pending_fixup.clear();
  vm.vmm_pid = 0;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info("vm {}: stopped", vm_id);
  return store_->GetVm(vm_id);
}

absl::StatusOr<VmRecord> VmManager::PauseVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (vm.state != VmState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pause vm ", vm_id, ": it is ", VmStateName(vm.state), ", not running"));
  }
  SMOLVM_RETURN_IF_ERROR(slot->instance->Pause());
  vm.state = VmState::kPaused;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info("vm {}: paused", vm_id);
  return store_->GetVm(vm_id);
}

absl::StatusOr<VmRecord> VmManager::ResumeVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (vm.state != VmState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat(
        "resume vm ", vm_id, ": it is ", VmStateName(vm.state), ", not paused"));
  }
  SMOLVM_RETURN_IF_ERROR(slot->instance->Resume());
  if (slot->needs_fixup) {
    absl::Status s = FixUpRestoredLocked(*slot, vm_id);
    if (s.ok() && slot->needs_readdress) s = ReaddressGuestLocked(*slot, vm);
    if (!s.ok()) {
      (void)FailVmLocked(*slot, vm, s);
      return s;
    }
  }
  vm.state = VmState::kRunning;
  vm.pending_fixup.clear();
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info("vm {}: resumed", vm_id);
  return store_->GetVm(vm_id);
}

absl::Status VmManager::DeleteVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::Status status = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    absl::MutexLock lock(&slot->mu);
    SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
    SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
    SMOLVM_RETURN_IF_ERROR(TearDownLocked(*slot, vm_id));
    UnplugNetwork(vm);
    // Files go before the row: a crash in between leaves a row whose files
    // are gone, which the next start (Reconcile) or a retried DeleteVm
    // finishes; never orphaned files.
    SMOLVM_RETURN_IF_ERROR(RemoveTree(VmDir(vm_id)));
    CrashPoint("delete.files_removed");
    return store_->DeleteVm(vm_id);
  }();
  if (status.ok()) ReleaseNetwork(vm_id);
  if (status.ok()) spdlog::info("vm {}: deleted", vm_id);
  return status;
}

absl::StatusOr<VmRecord> VmManager::GetVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  return Refresh(std::move(vm));
}

absl::StatusOr<store::Page<VmRecord>> VmManager::ListVms(
    const Caller& caller, int page_size, const std::string& page_token) {
  SMOLVM_ASSIGN_OR_RETURN(auto page, store_->ListVms(page_size, page_token,
                                                     caller.admin ? "" : caller.tenant));
  for (auto& vm : page.items) {
    SMOLVM_ASSIGN_OR_RETURN(vm, Refresh(std::move(vm)));
  }
  return page;
}

}  // namespace smolvm::core
