#include "lib/core/vm_manager.h"

#include <unistd.h>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/crash_point.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_mounts.h"
#include "lib/model/boot_args.h"
#include "lib/model/validation.h"
#include "lib/vmm/qemu_argv.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {

VmManager::VmManager(ManagerOptions options, ManagerParts parts,
                     std::unique_ptr<VmNetwork> network)
    : options_(std::move(options)),
      store_(std::move(parts.store)),
      hypervisor_(std::move(parts.hypervisor)),
      images_(std::move(parts.images)),
      files_(std::move(parts.files)),
      guests_(std::move(parts.guests)),
      network_(std::move(network)),
      accelerator_(hypervisor_->accelerator()),
      quota_([this](const std::string& tenant, const std::set<std::string>& skip) {
        return StoredUsage(tenant, skip);
      }) {}

absl::StatusOr<std::unique_ptr<VmManager>> VmManager::Create(ManagerOptions options,
                                                             ManagerParts parts) {
  if (!parts.store || !parts.hypervisor || !parts.images) {
    return absl::InvalidArgumentError("a VmManager needs a store, a hypervisor and images");
  }
  if (!parts.files) {
    parts.files = std::make_unique<snapshot::StateFiles>(options.state_dir, options.run_dir);
  }
  if (!parts.guests) parts.guests = agent::NewAgentConnector();
  SMOLVM_ASSIGN_OR_RETURN(
      std::unique_ptr<VmNetwork> network,
      VmNetwork::Create(options.network, options.ports, options.egress_deny, parts.store.get(),
                        std::move(parts.links), std::move(parts.firewall),
                        std::move(parts.host_firewall)));
  if (network) network->set_events(options.events);
  std::unique_ptr<VmManager> manager(
      new VmManager(std::move(options), std::move(parts), std::move(network)));
  SMOLVM_RETURN_IF_ERROR(manager->Reconcile());
  // Pools refill from the reconciled store (vm_manager_pools.cc).
  manager->pool_worker_ = std::thread([m = manager.get()] { m->PoolWorkerLoop(); });
  // Deadlines that passed while the daemon was down are acted on now.
  manager->lifetime_worker_ = std::thread([m = manager.get()] { m->LifetimeWorkerLoop(); });
  return manager;
}

VmManager::~VmManager() {
  {
    absl::MutexLock lock(&pools_mu_);
    stopping_ = pool_work_due_ = true;
  }
  if (pool_worker_.joinable()) pool_worker_.join();
  if (lifetime_worker_.joinable()) lifetime_worker_.join();
}

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

absl::StatusOr<std::shared_ptr<void>> VmManager::ResolveImage(const Caller& caller,
                                                              VmConfig& config,
                                                              UniqueFd& rootfs,
                                                              Progress* progress) {
  const bool named = !config.kernel_path.empty() || !config.initrd_path.empty() ||
                     !config.rootfs_path.empty();
  if (named && !config.image.empty()) {
    return absl::InvalidArgumentError(
        "set either image or kernel_path/initrd_path/rootfs_path, not both");
  }
  if (named && !options_.host_paths) {
    return absl::PermissionDeniedError(
        "this daemon allows no host files in VMConfig (kernel_path, initrd_path, "
        "rootfs_path): use an image (VMConfig.image), or ask the operator to "
        "allow a directory ([images] allowed_dirs in smolvmd.toml)");
  }
  const std::string imported = files_->ImportedDir();
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
    config.image_digest.clear();
    return std::shared_ptr<void>();
  }
  auto image = images_->Resolve(caller, config.image, progress);
  if (!image.ok()) {
    if (absl::IsNotFound(image.status()) || absl::IsInvalidArgument(image.status()) ||
        absl::IsPermissionDenied(image.status())) {
      return image.status();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "the image \"", config.image.empty() ? images_->default_image() : config.image,
        "\" is unavailable (", image.status().message(), ")"));
  }
  config.image_digest = image->record.digest;
  if (config.kernel_path.empty() && !config.mounts.empty()) {
    // The image's cloud kernel has no 9p (mounts_kernel.cc).
    SMOLVM_ASSIGN_OR_RETURN(image::KernelFiles kernel, images_->MountsKernel(progress));
    config.kernel_path = kernel.kernel_path;
    config.initrd_path = kernel.initrd_path;
  } else if (config.kernel_path.empty()) {
    config.kernel_path = image->kernel_path;
    config.initrd_path = image->initrd_path;
  }
  if (config.rootfs_path.empty()) config.rootfs_path = image->rootfs_path;
  // The image's exec defaults under the VM's own.
  for (auto& [name, value] : image::EnvMap(image->manifest.exec)) {
    config.env.emplace(name, std::move(value));  // The VM's own wins.
  }
  SMOLVM_RETURN_IF_ERROR(ValidateEnv(config.env, "env (with the image's Env)"));
  if (config.working_dir.empty()) config.working_dir = image->manifest.exec.working_dir;
  if (config.disk_size_mib != 0 &&
      uint64_t{config.disk_size_mib} << 20 < image->manifest.disk_size_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "disk_size_mib ", config.disk_size_mib, " is smaller than the image's root disk (",
        image->manifest.disk_size_bytes >> 20, " MiB): use 0 or at least that"));
  }
  return image->lease;
}

absl::StatusOr<VmRecord> VmManager::CreateVm(const Caller& caller, VmConfig config,
                                             bool start, Progress* progress) {
  if (config.vm_id.empty()) config.vm_id = GenerateId("vm");
  SMOLVM_RETURN_IF_ERROR(ValidateId(config.vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(NormalizeVmConfig(config));
  if (!caller.admin) SMOLVM_RETURN_IF_ERROR(ValidateTenantBootArgs(config.boot_args));
  if (!config.mounts.empty() && !caller.admin) {
    // One allow list for every tenant, and VMM uids reused across VMs: a
    // tenant's mount could reach another tenant's files there. Admins only
    // until the list is per tenant (docs/decisions.md).
    return absl::PermissionDeniedError(
        "host mounts are for admins on this daemon: the [mounts] allowed_dirs list is shared "
        "by every tenant (ask an admin to create the VM for you, or use file uploads)");
  }
  // Checked now so a bad mount fails the create, not a later start; every
  // launch resolves them again (vm_mounts.h).
  SMOLVM_RETURN_IF_ERROR(OpenMounts(options_.mount_paths.get(), config.mounts).status());
  if (!config.port_forwards.empty() && !network_->enabled()) {
    return absl::FailedPreconditionError("networking is disabled on this daemon (--network=false)");
  }
  for (const auto& f : config.port_forwards) {
    SMOLVM_RETURN_IF_ERROR(network_->CheckForwardPolicy(f));
  }
  UniqueFd rootfs;
  // Held until the VM's row names the image: a concurrent delete of the
  // image fails meanwhile.
  SMOLVM_ASSIGN_OR_RETURN(std::shared_ptr<void> image_lease,
                          ResolveImage(caller, config, rootfs, progress));
  const std::string& id = config.vm_id;

  auto slot = SlotFor(id);
  absl::MutexLock lock(&slot->mu);
  VmRecord vm;
  vm.vm_id = id;
  vm.state = VmState::kCreated;
  vm.config = config;
  vm.config.lifetime = StartLifetime(config.lifetime, absl::Now());
  vm.owner = caller.tenant;
  vm.created_at = vm.updated_at = absl::Now();
  VmRecord counted = vm;
  counted.network.port_forwards = config.port_forwards;
  // Checked before anything exists; held until the VM is in the store as
  // CREATED, or (with `start`) RUNNING or failed.
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(id), VmUsage(counted, start)));
  if (store_->GetVm(id).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("vm \"", id, "\" already exists"));
  }
  // The intent first (the next start rolls an unfinished create back), then
  // the row, which reserves the id, before any file is touched; the guard
  // undoes all of it if a later step fails.
  SMOLVM_RETURN_IF_ERROR(store_->BeginOperation(id, "create"));
  absl::Cleanup end_operation = [&] { (void)store_->EndOperation(id); };
  SMOLVM_RETURN_IF_ERROR(store_->InsertVm(vm));
  CrashPoint("create.row_inserted");
  auto undo = absl::MakeCleanup([&] {
    (void)files_->RemoveVmFiles(id);
    (void)store_->DeleteVm(id);
    network_->Release(id);
  });
  SMOLVM_RETURN_IF_ERROR(network_->Assign(vm, config.port_forwards));
  CrashPoint("create.network_assigned");
  ReportStage(progress, "copying the root disk");
  // Written under a staged name and renamed into place: a VM whose
  // disk.ext4 exists has all of it (Reconcile rolls back a CREATED VM
  // without one).
  SMOLVM_RETURN_IF_ERROR(files_->CopyRootDisk(id, rootfs.valid() ? rootfs.get() : -1,
                                              config.disk_size_mib, config.rootfs_path));
  SMOLVM_RETURN_IF_ERROR(store_->EndOperation(id));
  std::move(end_operation).Cancel();
  std::move(undo).Cancel();
  spdlog::info("vm {}: created ({} vcpus, {} MiB)", id, config.vcpu_count,
               config.memory_mib);
  if (!start) return vm;
  return BootLocked(*slot, std::move(vm), progress);
}

absl::StatusOr<vmm::LaunchSpec> VmManager::LaunchSpecFor(VmRecord& vm) {
  vmm::LaunchSpec spec;
  spec.vm_id = vm.vm_id;
  spec.vcpu_count = vm.config.vcpu_count;
  spec.memory_mib = vm.config.memory_mib;
  spec.kernel_path = vm.config.kernel_path;
  spec.initrd_path = vm.config.initrd_path;
  spec.disk_path = files_->VmDisk(vm.vm_id);
  spec.kernel_cmdline = options_.base_cmdline;
  if (!vm.config.boot_args.empty()) absl::StrAppend(&spec.kernel_cmdline, " ", vm.config.boot_args);
  absl::StrAppend(&spec.kernel_cmdline, network_->Cmdline(vm.network));
  absl::StrAppend(&spec.kernel_cmdline, MountCmdline(vm.config.mounts));
  SMOLVM_ASSIGN_OR_RETURN(std::shared_ptr<OpenedMounts> mounts,
                          OpenMounts(options_.mount_paths.get(), vm.config.mounts));
  spec.mounts = mounts->mounts;
  spec.resources = std::move(mounts);
  spec.run_dir = files_->VmRunDir(vm.vm_id);
  network_->FillLaunch(vm, spec);
  SMOLVM_RETURN_IF_ERROR(AssignVmmUid(vm));
  spec.vmm_uid = vm.vmm_uid;
  return spec;
}

absl::StatusOr<VmRecord> VmManager::BootLocked(VmSlot& slot, VmRecord vm, Progress* progress) {
  const std::string& id = vm.vm_id;
  ReportStage(progress, "starting the VMM");
  vm.config.lifetime.idle_paused = false;  // A fresh boot: nothing to resume.
  auto spec = LaunchSpecFor(vm);
  if (!spec.ok()) {
    (void)FailVmLocked(slot, vm, spec.status());
    return spec.status();
  }
  spec->mem_path = files_->VmMem(id);
  spec->mem_shared = true;
  absl::Time t0 = absl::Now();
  if (auto s = network_->Plug(vm); !s.ok()) {
    (void)FailVmLocked(slot, vm, s);
    return s;
  }
  auto instance = hypervisor_->Launch(*spec);
  if (!instance.ok()) {
    (void)FailVmLocked(slot, vm, instance.status());
    return instance.status();
  }
  slot.instance = *std::move(instance);
  CrashPoint("boot.vmm_launched");
  // From here on a failure must not leave the VMM running under a record
  // that does not say so: the VM is recorded as ERROR and the VMM ended.
  auto fail = [&](const absl::Status& s) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    (void)FailVmLocked(slot, vm, s);
    return s;
  };
  // Record the pid before waiting: if the daemon dies during the boot, the
  // next start finds and ends this VMM.
  vm.vmm_pid = slot.instance->pid();
  vm.error.clear();
  if (auto s = store_->UpdateVm(vm); !s.ok()) return fail(s);
  CrashPoint("boot.pid_recorded");
  // Ready means the guest agent answered (an image without the agent may
  // instead write the legacy line SMOLVM_READY on the port).
  ReportStage(progress, "booting the guest");
  if (auto s = ConnectAgentLocked(slot, id, options_.boot_timeout); !s.ok()) return fail(s);
  vm.state = VmState::kRunning;
  vm.restored_from.clear();
  vm.pending_fixup.clear();
  if (auto s = store_->UpdateVm(vm); !s.ok()) return fail(s);
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
  const bool reconnect = slot.agent != nullptr;  // Its connection broke.
  slot.agent.reset();
  vmm::VmInstance* instance = slot.instance.get();
  auto dead = [&]() -> absl::Status {
    if (instance->IsAlive()) return absl::OkStatus();
    std::string cause = instance->ExitCause();
    return absl::InternalError(absl::StrCat(
        "vm ", vm_id, ": qemu exited before the guest became ready",
        cause.empty() ? "" : ": ", cause, "; console tail:\n", instance->ConsoleTail(2000)));
  };
  auto client = guests_->Connect(instance->agent_socket_path(), timeout, dead);
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
  Report(reconnect ? CoreEvent::kAgentReconnect : CoreEvent::kAgentConnect);
  return absl::OkStatus();
}

void VmManager::Report(CoreEvent event, absl::Duration took) const {
  if (options_.events) options_.events(event, took);
}

void VmManager::KeepLastConsole(const std::string& vm_id) {
  // Read as a client reads it (regular files only, never through a link
  // the jailed VMM could have planted), and written into the state dir,
  // which the VMM cannot reach.
  auto reader = vmm::ConsoleLogReader::Open(vmm::ConsoleLogPath(files_->VmRunDir(vm_id)),
                                            UINT64_MAX);
  if (!reader.ok()) return;  // It never ran, or its run dir is gone already.
  std::string console;
  for (;;) {
    absl::StatusOr<std::string> chunk = reader->Read(1 << 20);
    if (!chunk.ok() || chunk->empty()) break;
    console += *chunk;
  }
  if (auto s = WriteFileAtomic(files_->VmLastConsole(vm_id), console, 0600); !s.ok()) {
    spdlog::warn("vm {}: its last console was not kept: {}", vm_id, s.ToString());
  }
}

absl::Status VmManager::TearDownLocked(VmSlot& slot, const std::string& vm_id) {
  slot.agent.reset();
  slot.needs_fixup = false;
  slot.needs_readdress = false;
  if (slot.instance) {
    SMOLVM_RETURN_IF_ERROR(slot.instance->Shutdown(absl::Seconds(5)));
    slot.instance.reset();
  }
  // The VMM is gone: what is left in its run dir is garbage the next start
  // removes, not a reason to report the VM as still running. Its console
  // is kept first, so `vm logs` of a stopped VM shows how it ended.
  KeepLastConsole(vm_id);
  if (auto s = files_->RemoveRunDir(vm_id); !s.ok()) {
    spdlog::warn("vm {}: {}", vm_id, std::string(s.message()));
  }
  return absl::OkStatus();
}

absl::Status VmManager::FailVmLocked(VmSlot& slot, VmRecord& vm,
                                     const absl::Status& cause) {
  // The cause may carry the guest's console: escaped, so a guest cannot
  // write lines (or terminal escapes) into the daemon's log.
  spdlog::warn("vm {}: error: {}", vm.vm_id, absl::CHexEscape(cause.message()));
  absl::Status teardown = TearDownLocked(slot, vm.vm_id);
  network_->Unplug(vm);
  vm.state = VmState::kError;
  vm.config.lifetime.idle_paused = false;
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
  // A pool member is the pool's until claimed: only ClaimVm resumes it
  // (with its clock stepped), and only DeleteVm and GetVm see it otherwise.
  if (!vm.pool_id.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vm ", vm_id, " is an unclaimed member of pool ", vm.pool_id,
        "; claim it first (ClaimVm, smolvmctl pool claim ", vm.pool_id, " --vm ", vm_id,
        ") or delete it"));
  }
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

absl::StatusOr<VmRecord> VmManager::StartVm(const Caller& caller, const std::string& vm_id,
                                            Progress* progress) {
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
  return BootLocked(*slot, std::move(vm), progress);
}

absl::Status VmManager::StopLocked(VmSlot& slot, VmRecord& vm) {
  // Recorded first: a VMM that outlives a failed stop is ended by the next
  // start (it belongs to a VM that is not running), while a VMM ended under
  // a record still saying "running" would be reported as a crash.
  const VmRecord before = vm;
  vm.state = VmState::kStopped;
  vm.pending_fixup.clear();
  vm.vmm_pid = 0;
  vm.config.lifetime.idle_paused = false;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  CrashPoint("stop.recorded");
  if (auto s = TearDownLocked(slot, vm.vm_id); !s.ok()) {
    vm = before;
    (void)store_->UpdateVm(vm);
    return s;
  }
  network_->Unplug(vm);
  return absl::OkStatus();
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
  SMOLVM_RETURN_IF_ERROR(StopLocked(*slot, vm));
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
  SMOLVM_RETURN_IF_ERROR(ResumeLocked(*slot, vm));
  return store_->GetVm(vm_id);
}

absl::Status VmManager::ResumeLocked(VmSlot& slot, VmRecord& vm) {
  SMOLVM_RETURN_IF_ERROR(slot.instance->Resume());
  CrashPoint("resume.vcpus_running");
  if (slot.needs_fixup) {
    absl::Status s = FixUpRestoredLocked(slot, vm.vm_id);
    if (s.ok() && slot.needs_readdress) s = ReaddressGuestLocked(slot, vm);
    if (!s.ok()) {
      (void)FailVmLocked(slot, vm, s);
      return s;
    }
  }
  vm.state = VmState::kRunning;
  vm.pending_fixup.clear();
  vm.config.lifetime.idle_paused = false;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  activity_.Note(vm.vm_id);
  spdlog::info("vm {}: resumed", vm.vm_id);
  return absl::OkStatus();
}

absl::Status VmManager::DeleteVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::Status status = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    absl::MutexLock lock(&slot->mu);
    SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
    SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
    // The intent first: from the moment files go, the next start finishes
    // the delete. (An unfinished operation recorded for this VM — a failed
    // earlier delete — is superseded by this one.)
    if (auto s = store_->BeginOperation(vm_id, "delete"); !s.ok() && !absl::IsAlreadyExists(s)) {
      return s;
    }
    absl::Cleanup abandon = [&] { (void)store_->EndOperation(vm_id); };
    if (vm.state == VmState::kRunning || vm.state == VmState::kPaused || slot->instance) {
      SMOLVM_RETURN_IF_ERROR(StopLocked(*slot, vm));
      CrashPoint("delete.vmm_stopped");
    }
    // Files go before the row; once they start going the delete is
    // committed: a failure or crash from here is finished by a retried
    // DeleteVm or the next start (Reconcile, from the journal).
    std::move(abandon).Cancel();
    SMOLVM_RETURN_IF_ERROR(files_->RemoveVmFiles(vm_id));
    CrashPoint("delete.files_removed");
    if (auto s = store_->DeleteVm(vm_id); !s.ok() && !absl::IsNotFound(s)) return s;
    if (auto s = store_->EndOperation(vm_id); !s.ok()) {
      spdlog::warn("vm {}: deleted; its journal entry is cleared at the next start: {}", vm_id,
                   std::string(s.message()));
    }
    return absl::OkStatus();
  }();
  if (status.ok()) network_->Release(vm_id);
  if (status.ok()) {
    activity_.Forget(vm_id);
    spdlog::info("vm {}: deleted", vm_id);
  }
  return status;
}

absl::StatusOr<VmRecord> VmManager::GetVm(const Caller& caller, const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "vm", vm_id, vm.owner));
  return Refresh(std::move(vm));
}

absl::StatusOr<VmStats> VmManager::GetVmStats(const Caller& caller, const std::string& vm_id) {
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, GetVm(caller, vm_id));
  if ((vm.state != VmState::kRunning && vm.state != VmState::kPaused) || vm.vmm_pid <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vm ", vm_id, " is ", VmStateName(vm.state), ": only a running or paused VM has stats"));
  }
  absl::StatusOr<VmStats> stats =
      CollectHostStats(static_cast<pid_t>(vm.vmm_pid), files_->VmDisk(vm_id));
  if (absl::IsNotFound(stats.status())) {
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is no longer running"));
  }
  if (!stats.ok()) return stats.status();
  if (auto tap = network_->TapCounters(vm); tap.ok()) {
    // The TAP receives what the guest sends.
    stats->guest_tx_bytes = tap->rx_bytes;
    stats->guest_tx_packets = tap->rx_packets;
    stats->guest_rx_bytes = tap->tx_bytes;
    stats->guest_rx_packets = tap->tx_packets;
  }
  if (vm.state == VmState::kRunning) {
    // The guest's own view, through its agent (a file read, no process).
    // Not a use of the VM (a watch must not keep it from idling, nor
    // resume one its idle policy paused).
    std::string meminfo;
    agent::FileRequest file{.path = "/proc/meminfo"};
    absl::StatusOr<agent::FileInfo> read = absl::UnavailableError("no agent");
    if (auto agent = AgentFor(caller, vm_id, /*internal=*/true); agent.ok()) {
      read = (*agent)->ReadFile(
          file,
          [&](const std::string& data) {
            if (meminfo.size() + data.size() > (64 << 10)) {
              return absl::ResourceExhaustedError("meminfo larger than 64 KiB");
            }
            meminfo += data;
            return absl::OkStatus();
          },
          absl::Seconds(10));
    }
    if (read.ok()) {
      stats->guest_memory_known = ParseMeminfo(meminfo, &stats->guest_memory_total_bytes,
                                               &stats->guest_memory_available_bytes);
    }
  }
  return stats;
}

absl::StatusOr<vmm::ConsoleLogReader> VmManager::OpenConsole(const Caller& caller,
                                                             const std::string& vm_id,
                                                             std::optional<uint64_t> tail_bytes) {
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, GetVm(caller, vm_id));
  if (vm.state != VmState::kRunning && vm.state != VmState::kPaused) {
    // How its last run ended (a follow ends after it: nothing is added).
    auto last = vmm::ConsoleLogReader::Open(files_->VmLastConsole(vm_id),
                                            tail_bytes.value_or(UINT64_MAX));
    if (absl::IsNotFound(last.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "vm ", vm_id, " is ", VmStateName(vm.state),
          " and has no console kept (it has not run yet: start it, then stream its console)"));
    }
    return last;
  }
  auto reader = vmm::ConsoleLogReader::Open(vmm::ConsoleLogPath(files_->VmRunDir(vm_id)),
                                            tail_bytes.value_or(UINT64_MAX));
  if (absl::IsNotFound(reader.status())) {
    // Stopped between the two reads.
    return absl::FailedPreconditionError(absl::StrCat("vm ", vm_id, " is no longer running"));
  }
  return reader;
}

absl::StatusOr<store::Page<VmRecord>> VmManager::ListVms(
    const Caller& caller, int page_size, const std::string& page_token,
    const ListFilter& filter) {
  SMOLVM_RETURN_IF_ERROR(ValidateLabels(filter.labels, "labels"));
  SMOLVM_ASSIGN_OR_RETURN(auto page, store_->ListVms(page_size, page_token,
                                                     caller.admin ? "" : caller.tenant,
                                                     WithImageAliases(filter)));
  for (auto& vm : page.items) {
    SMOLVM_ASSIGN_OR_RETURN(vm, Refresh(std::move(vm)));
  }
  return page;
}

absl::Status VmManager::CheckHealth() { return store_->SchemaVersion().status(); }

absl::StatusOr<store::Store::Census> VmManager::TakeCensus() { return store_->TakeCensus(); }

}  // namespace smolvm::core
