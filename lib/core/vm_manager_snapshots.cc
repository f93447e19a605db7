// Snapshot and restore: VmManager's half that deals with lib/snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/crash_point.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"
#include "lib/core/vm_manager.h"
#include "lib/core/vm_mounts.h"
#include "lib/model/validation.h"
#include "lib/snapshot/migration_stream.h"
#include "lib/snapshot/snapshot_files.h"
#include "lib/vmm/qemu_argv.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

// Records that `snap` was forked into `clones` (event kEventForked).
void RecordFork(
    store::Store& store, const SnapshotRecord& snap,
    const std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>& clones) {
  std::vector<std::string> made, failed;
  for (const auto& [vm_id, vm] : clones) (vm.ok() ? made : failed).push_back(vm_id);
  if (made.empty()) return;  // Nothing was forked.
  std::string detail = absl::StrCat("children: ", absl::StrJoin(made, ","));
  if (!failed.empty()) absl::StrAppend(&detail, "; failed: ", absl::StrJoin(failed, ","));
  // The clones' own events are in; this one only ties them together, so
  // a failure to record it does not undo the fork.
  auto source = store.GetVm(snap.vm_id);
  auto id = store.AppendEvent({.owner = snap.owner,
                                .kind = kEventForked,
                                .vm_id = snap.vm_id,
                                .snapshot_id = snap.snapshot_id,
                                .state = source.ok() && source->owner == snap.owner
                                             ? VmStateName(source->state)
                                             : "",
                                .detail = detail});
  if (!id.ok()) spdlog::warn("fork of snapshot {}: {}", snap.snapshot_id, id.status().ToString());
}

// DATA_LOSS unless the manifest at `manifest_path` describes the snapshot
// `snap` of the store, taken with the VMM this host runs: a manifest copied
// from another snapshot, or edited, is not restored.
absl::Status CheckManifestMatches(const SnapshotRecord& snap, const snapshot::Manifest& m,
                                  const std::string& manifest_path, const std::string& vmm,
                                  const std::string& vmm_version) {
  auto mismatch = [&](const char* field, const std::string& got, const std::string& want,
                      const char* fix) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", manifest_path, ": ", field,
                                            " is \"", got, "\", expected \"", want, "\"; ",
                                            fix));
  };
  constexpr char kForeign[] =
      "the manifest is not this snapshot's; delete the snapshot or restore it from a backup";
  if (m.snapshot_id != snap.snapshot_id) {
    return mismatch("snapshot_id", m.snapshot_id, snap.snapshot_id, kForeign);
  }
  if (m.vm_id != snap.vm_id) return mismatch("vm_id", m.vm_id, snap.vm_id, kForeign);
  if (m.accelerator != snap.accelerator) {
    return mismatch("accelerator", m.accelerator, snap.accelerator, kForeign);
  }
  if (m.memory_mib != snap.vm_config.memory_mib) {
    return mismatch("memory_mib", absl::StrCat(m.memory_mib),
                    absl::StrCat(snap.vm_config.memory_mib), kForeign);
  }
  if (m.checksums != snap.checksums) {
    auto text = [](const std::optional<SnapshotChecksums>& c) {
      return c ? absl::StrCat(c->vmstate, ",", c->mem, ",", c->disk) : std::string("none");
    };
    return mismatch("checksums", text(m.checksums), text(snap.checksums), kForeign);
  }
  constexpr char kOtherVmm[] =
      "the snapshot was taken with another VMM; restore it on a host that runs that one";
  if (m.vmm != vmm) return mismatch("vmm", m.vmm, vmm, kOtherVmm);
  if (m.vmm_version != vmm_version) {
    return mismatch("vmm_version", m.vmm_version, vmm_version, kOtherVmm);
  }
  return absl::OkStatus();
}

double MiB(uint64_t bytes) { return static_cast<double>(bytes) / (1 << 20); }

// A restored VM maps its RAM privately, so its save `saved` carries every
// page. They are moved into paths.mem (a sparse file of `memory_bytes`), and
// the rest becomes paths.vmstate: the snapshot then restores like a
// cold-booted VM's, in time flat in its RAM. A stream that cannot be split
// becomes vmstate.bin as it is (restores then load RAM page by page).
// Returns whether the RAM stayed in vmstate.bin.
absl::StatusOr<bool> SplitRestoredRam(const std::string& snapshot_id, const std::string& saved,
                                      const snapshot::SnapshotPaths& paths,
                                      uint64_t memory_bytes) {
  const absl::Time start = absl::Now();
  auto split = snapshot::SplitRamBlock(saved, vmm::kRamBackendId, memory_bytes, paths.vmstate,
                                       paths.mem);
  if (split.ok()) {
    if (unlink(saved.c_str()) != 0) return absl::ErrnoToStatus(errno, "remove " + saved);
    spdlog::info(
        "snapshot {}: guest RAM split out of the device state in {} ({} pages to mem.bin, {} "
        "zero pages; vmstate {:.1f} -> {:.1f} MiB)",
        snapshot_id, absl::FormatDuration(absl::Now() - start), split->pages_written,
        split->zero_pages, MiB(split->bytes_in), MiB(split->bytes_out));
    return false;
  }
  spdlog::warn("snapshot {}: guest RAM kept in the device state (restores will load it page "
               "by page): {}", snapshot_id, split.status().ToString());
  if (rename(saved.c_str(), paths.vmstate.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", saved, " to ", paths.vmstate));
  }
  return true;
}

}  // namespace

absl::StatusOr<snapshot::VerifyReport> VmManager::CheckIntegrity(
    const SnapshotRecord& snap, const snapshot::SnapshotPaths& paths,
    const snapshot::Manifest& manifest, bool force) {
  SMOLVM_RETURN_IF_ERROR(CheckManifestMatches(snap, manifest, paths.manifest,
                                              hypervisor_->name(), hypervisor_->version()));
  const absl::Time start = absl::Now();
  snapshot::VerifyReport report;
  if (!force && !snap.checksums) {
    spdlog::warn("snapshot {}: taken before checksums were recorded; restored unverified",
                 snap.snapshot_id);
    report.snapshot_id = snap.snapshot_id;
    report.legacy = true;
    return report;
  }
  // Unchanged since the last verification (same inode, size, mtime and
  // ctime): hashing again would only read what was already checked.
  if (!force && snap.verified_stamps) {
    if (auto now = snapshot::StampFiles(paths); now.ok() && *now == *snap.verified_stamps) {
      report.snapshot_id = snap.snapshot_id;
      report.ok = true;
      report.stamps = *now;
      report.duration = absl::Now() - start;
      return report;
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(report, snapshot::VerifyFiles(paths, snap.checksums));
  report.snapshot_id = snap.snapshot_id;
  if (report.legacy) return report;
  SMOLVM_RETURN_IF_ERROR(snapshot::CorruptionError(report));
  // Concurrent restores and verifications may record at once: the store
  // serializes them and any of them is right (the files did not change).
  SMOLVM_RETURN_IF_ERROR(store_->SetSnapshotVerified(snap.snapshot_id, report.stamps));
  spdlog::info("snapshot {}: verified 3 files in {} ({:.1f} MiB read)", snap.snapshot_id,
               absl::FormatDuration(report.duration), MiB(report.bytes_read));
  return report;
}

absl::StatusOr<snapshot::VerifyReport> VmManager::VerifySnapshot(
    const Caller& caller, const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  absl::ReaderMutexLock files_lock(&snapshot_files_mu_);
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, GetSnapshot(caller, snapshot_id));
  auto paths = files_->SnapshotPathsOf(snapshot_id);
  SMOLVM_ASSIGN_OR_RETURN(snapshot::Manifest manifest, snapshot::ReadAndVerify(paths));
  return CheckIntegrity(snap, paths, manifest, /*force=*/true);
}

absl::StatusOr<SnapshotRecord> VmManager::CreateSnapshot(const Caller& caller,
                                                         const std::string& vm_id,
                                                         std::string snapshot_id,
                                                         bool resume_source,
                                                         Progress* progress,
                                                         const Labels& labels) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(ValidateLabels(labels, "labels"));
  if (snapshot_id.empty()) snapshot_id = GenerateId("snap");
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  // The id first, before any state is looked at, so that a retried create
  // is ALREADY_EXISTS whatever became of its VM, and two creates of one id
  // never run at once.
  {
    absl::MutexLock lock(&mu_);
    if (!creating_snapshots_.insert(snapshot_id).second) {
      return absl::AlreadyExistsError(absl::StrCat("snapshot \"", snapshot_id,
                                                   "\" is being created by another call"));
    }
  }
  absl::Cleanup release_id = [this, &snapshot_id] {
    absl::MutexLock lock(&mu_);
    creating_snapshots_.erase(snapshot_id);
  };
  if (auto existing = store_->GetSnapshot(snapshot_id); existing.ok()) {
    return absl::AlreadyExistsError(absl::StrCat("snapshot \"", snapshot_id,
                                                 "\" already exists"));
  }
  absl::ReaderMutexLock files_lock(&snapshot_files_mu_);
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (vm.state != VmState::kRunning && vm.state != VmState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot vm ", vm_id, ": it is ", VmStateName(vm.state),
        "; only running or paused VMs can be snapshotted (start it first)"));
  }
  // QEMU cannot save a VM again before it ran after its last save; that
  // earlier snapshot already holds exactly this state.
  if (auto run_state = slot->instance->QueryRunState();
      run_state.ok() && *run_state == "postmigrate") {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot vm ", vm_id, ": it has not run since its last snapshot, which "
        "already holds this state; resume the vm first, or restore that snapshot"));
  }
  // QEMU refuses to migrate an attached 9p export: the guest lets go of
  // its mounts first (detach_on_snapshot), or there is no snapshot.
  const bool detach = !vm.config.mounts.empty();
  if (detach) {
    if (std::vector<std::string> held = UndetachableMounts(vm.config.mounts); !held.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot vm ", vm_id, ": it has host mounts, which QEMU cannot save while the guest "
          "uses them: ", absl::StrJoin(held, ", "),
          "; create the vm with detach_on_snapshot on those mounts (the guest then unmounts "
          "them for the snapshot and mounts them again after)"));
    }
    if (vm.state != VmState::kRunning) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot vm ", vm_id, ": its host mounts are unmounted by the guest for a snapshot, "
          "which needs the vm running; resume it first"));
    }
    SMOLVM_RETURN_IF_ERROR(ConnectAgentLocked(*slot, vm_id, absl::Seconds(10)));
    SMOLVM_RETURN_IF_ERROR(SetGuestMountsAttached(*slot->agent, vm.config.mounts, false));
  }
  // Runs last (after the guest is resumed) on a failure below.
  auto reattach = absl::MakeCleanup([&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (!detach || !slot->agent) return;
    if (auto s = SetGuestMountsAttached(*slot->agent, vm.config.mounts, true); !s.ok()) {
      spdlog::warn("vm {}: {}", vm_id, std::string(s.message()));
    }
  });
  // The snapshot belongs to its creator; its size is estimated by what it
  // will copy (touched RAM and disk) and recorded exactly once written.
  // A cold-booted VM's RAM is the shared file in its run dir; a restored
  // VM maps its snapshot's mem.bin privately, so its RAM travels in the
  // device-state stream instead (and is split out of it into mem.bin).
  const std::string mem = files_->VmMem(vm_id);
  const bool ram_shared = PathExists(mem);
  const std::vector<std::string> sources = {ram_shared ? mem : "", files_->VmDisk(vm_id)};
  uint64_t estimate = 0;
  for (const auto& f : sources) {
    if (auto bytes = AllocatedBytes(f); bytes.ok()) estimate += *bytes;
  }
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, caller.tenant, SnapshotQuotaKey(snapshot_id),
                                     SnapshotUsage(estimate)));
  // A draft of this call only; removed on any failure below (the draft's
  // destructor), and the VM is given back in the state it had.
  SMOLVM_ASSIGN_OR_RETURN(std::unique_ptr<snapshot::SnapshotDraft> draft,
                          files_->BeginSnapshot(snapshot_id, sources));
  draft->set_progress(progress);

  absl::Time t0 = absl::Now();
  const bool was_running = vm.state == VmState::kRunning;
  ReportStage(progress, "saving device state");
  if (was_running) SMOLVM_RETURN_IF_ERROR(slot->instance->Pause());
  auto resume = absl::MakeCleanup([&] {
    if (was_running) (void)slot->instance->Resume();
  });
  // A restored VM's save (RAM included) goes aside, to be split below.
  const std::string& vmstate = draft->paths().vmstate;
  const std::string saved = ram_shared ? vmstate : vmstate + ".full";
  SMOLVM_RETURN_IF_ERROR(slot->instance->SaveDeviceState(saved));
  CrashPoint("snapshot.state_saved");
  absl::Time t_state = absl::Now();
  const uint64_t memory_bytes = static_cast<uint64_t>(vm.config.memory_mib) << 20;
  SMOLVM_RETURN_IF_ERROR(files_->CaptureMemory(*draft, ram_shared ? mem : "", memory_bytes));
  bool ram_in_vmstate = false;
  if (!ram_shared) {
    SMOLVM_ASSIGN_OR_RETURN(ram_in_vmstate,
                            SplitRestoredRam(snapshot_id, saved, draft->paths(), memory_bytes));
  }
  // Copied while the source is still paused, so disk and RAM agree.
  SMOLVM_RETURN_IF_ERROR(files_->CaptureDisk(*draft, vm_id));
  CrashPoint("snapshot.files_copied");
  // Content checksums, for the manifest and the row; the stamps of the
  // files as hashed make this their first verification.
  absl::Time t_sum = absl::Now();
  ReportStage(progress, "sealing the snapshot");
  snapshot::Manifest manifest;
  manifest.snapshot_id = snapshot_id;
  manifest.vm_id = vm_id;
  manifest.vmm = hypervisor_->name();
  manifest.vmm_version = hypervisor_->version();
  manifest.accelerator = accelerator_;
  manifest.memory_mib = vm.config.memory_mib;
  manifest.ram_in_vmstate = ram_in_vmstate;
  SMOLVM_ASSIGN_OR_RETURN(snapshot::ChecksummedFiles sums,
                          files_->Seal(*draft, std::move(manifest)));
  const absl::Duration checksum_time = absl::Now() - t_sum;
  CrashPoint("snapshot.sealed");

  SMOLVM_ASSIGN_OR_RETURN(snapshot::SnapshotPaths paths, files_->Publish(*draft, snapshot_id));
  CrashPoint("snapshot.published");
  SnapshotRecord snap;
  snap.snapshot_id = snapshot_id;
  snap.vm_id = vm_id;
  snap.snapshot_path = paths.vmstate;
  snap.mem_file_path = paths.mem;
  snap.disk_path = paths.disk;
  snap.vm_config = vm.config;
  snap.network_config = vm.network;
  snap.labels = labels;
  snap.created_at = absl::Now();
  snap.accelerator = accelerator_;
  snap.owner = caller.tenant;
  snap.checksums = sums.checksums;
  snap.verified_stamps = sums.stamps;  // Renaming the directory keeps them.
  snap.size_bytes = files_->SnapshotBytes(snapshot_id);
  // The row is the commit point: a crash before it leaves a directory with
  // no row, which Reconcile removes.
  if (auto s = store_->InsertSnapshot(snap); !s.ok()) {
    (void)files_->RemoveSnapshot(snapshot_id);
    return s;
  }
  CrashPoint("snapshot.row_inserted");
  std::move(resume).Cancel();
  std::move(reattach).Cancel();

  if (resume_source || detach) {
    if (auto s = slot->instance->Resume(); !s.ok()) {
      (void)FailVmLocked(*slot, vm, s);
      return s;
    }
    vm.state = VmState::kRunning;
  } else {
    vm.state = VmState::kPaused;
  }
  if (detach) {
    // The snapshot is complete whatever happens here: a failure to mount
    // again is reported to the caller, with the vm running.
    absl::Status remounted = SetGuestMountsAttached(*slot->agent, vm.config.mounts, true);
    if (!resume_source) {
      if (auto s = slot->instance->Pause(); !s.ok()) {
        (void)FailVmLocked(*slot, vm, s);
        return s;
      }
      vm.state = VmState::kPaused;
    }
    if (!remounted.ok()) {
      SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
      return absl::Status(remounted.code(),
                          absl::StrCat("snapshot ", snapshot_id, " of vm ", vm_id,
                                       " was created, but ", remounted.message()));
    }
  }
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info(
      "snapshot {}: created from vm {} in {} (device state {}, checksums {} for {:.1f} MiB "
      "hashed, RAM and disk while they were copied), {} MiB, vm {}",
      snapshot_id, vm_id, absl::FormatDuration(absl::Now() - t0),
      absl::FormatDuration(t_state - t0), absl::FormatDuration(checksum_time),
      MiB(sums.bytes_read), snap.size_bytes >> 20, VmStateName(vm.state));
  return snap;
}

absl::StatusOr<SnapshotRecord> VmManager::GetSnapshot(const Caller& caller,
                                                      const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, store_->GetSnapshot(snapshot_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "snapshot", snapshot_id, snap.owner));
  return snap;
}

absl::StatusOr<store::Page<SnapshotRecord>> VmManager::ListSnapshots(
    const Caller& caller, int page_size, const std::string& page_token,
    const std::string& vm_id, const ListFilter& filter) {
  if (!vm_id.empty()) SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(ValidateLabels(filter.labels, "labels"));
  return store_->ListSnapshots(page_size, page_token, vm_id,
                               caller.admin ? "" : caller.tenant, WithImageAliases(filter));
}

absl::Status VmManager::DeleteSnapshot(const Caller& caller, const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  absl::MutexLock files_lock(&snapshot_files_mu_);
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, GetSnapshot(caller, snapshot_id));
  // A pool refills from it (CreatePool holds this lock shared while it
  // checks the snapshot and records the pool, so none can slip in).
  SMOLVM_ASSIGN_OR_RETURN(std::vector<PoolRecord> pools, store_->ListPools());
  for (const auto& pool : pools) {
    if (pool.snapshot_id != snapshot_id) continue;
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", snapshot_id, " is in use by pool:", pool.pool_id,
        ", which restores its members from it; delete the pool first"));
  }
  // The row goes first: a crash after it leaves an unlisted directory, which
  // Reconcile removes. VMs restored from it keep running: their private
  // mapping of mem.bin holds the file's pages.
  SMOLVM_RETURN_IF_ERROR(store_->DeleteSnapshot(snapshot_id));
  // Deleted once the row is: files that cannot be removed now are an
  // unlisted directory, which the next start removes.
  if (auto s = files_->RemoveSnapshot(snapshot_id); !s.ok()) {
    spdlog::warn("snapshot {}: deleted, but its files stay until the next start: {}",
                 snapshot_id, std::string(s.message()));
  }
  spdlog::info("snapshot {}: deleted", snapshot_id);
  return absl::OkStatus();
}

absl::StatusOr<VmRecord> VmManager::RestoreSnapshot(const Caller& caller,
                                                    const std::string& snapshot_id,
                                                    bool resume_vm, std::string vm_id,
                                                    Progress* progress) {
  return RestoreAs(caller, snapshot_id, resume_vm, std::move(vm_id), /*pool_id=*/"", progress);
}

absl::StatusOr<VmRecord> VmManager::RestoreAs(const Caller& caller,
                                              const std::string& snapshot_id, bool resume_vm,
                                              std::string vm_id, const std::string& pool_id,
                                              Progress* progress) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  if (!vm_id.empty()) SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  // Held while the snapshot's files are read; given up as soon as the VMM
  // has loaded them (RestoreLocked), so a slow guest's fix-ups never stall
  // other restores and deletes behind a waiting DeleteSnapshot.
  snapshot_files_mu_.ReaderLock();
  bool files_held = true;
  auto release_files = [this, &files_held]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (files_held) snapshot_files_mu_.ReaderUnlock();
    files_held = false;
  };
  absl::Cleanup unlock_files = release_files;
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, GetSnapshot(caller, snapshot_id));
  if (snap.accelerator != accelerator_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restore snapshot ", snapshot_id, ": it was taken with accelerator ",
        snap.accelerator, " and this daemon runs ", accelerator_,
        "; restore it on a host with the same accelerator"));
  }
  const bool own_identity = vm_id.empty() || vm_id == snap.vm_id;
  if (vm_id.empty()) vm_id = snap.vm_id;
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  return RestoreLocked(*slot, caller, snap, resume_vm, vm_id, own_identity, release_files,
                       pool_id, progress);
}

absl::StatusOr<VmRecord> VmManager::RestoreLocked(VmSlot& slot, const Caller& caller,
                                                  const SnapshotRecord& snap,
                                                  bool resume_vm,
                                                  const std::string& vm_id,
                                                  bool own_identity,
                                                  const std::function<void()>& release_files,
                                                  const std::string& pool_id,
                                                  Progress* progress) {
  auto paths = files_->SnapshotPathsOf(snap.snapshot_id);
  ReportStage(progress, "verifying the snapshot");
  SMOLVM_ASSIGN_OR_RETURN(snapshot::Manifest manifest, snapshot::ReadAndVerify(paths));
  // Before anything is recorded or started: a corrupt or foreign snapshot
  // leaves nothing behind.
  SMOLVM_ASSIGN_OR_RETURN(snapshot::VerifyReport integrity,
                          CheckIntegrity(snap, paths, manifest, /*force=*/false));

  auto existing = store_->GetVm(vm_id);
  if (!existing.ok() && !absl::IsNotFound(existing.status())) return existing.status();
  if (existing.ok()) {
    if (!own_identity || !caller.CanAccess(existing->owner)) {
      return absl::AlreadyExistsError(absl::StrCat(
          "restore snapshot ", snap.snapshot_id, " as vm ", vm_id,
          ": that vm already exists; pick another vm_id or delete it"));
    }
    SMOLVM_ASSIGN_OR_RETURN(*existing, RefreshLocked(slot, *std::move(existing)));
    if (existing->state == VmState::kRunning || existing->state == VmState::kPaused) {
      return absl::FailedPreconditionError(absl::StrCat(
          "restore snapshot ", snap.snapshot_id, ": its vm ", vm_id, " is still ",
          VmStateName(existing->state),
          "; stop or delete it first, or restore into a new vm_id"));
    }
  }

  VmRecord vm = existing.ok() ? *existing : VmRecord{};
  vm.vm_id = vm_id;
  if (!existing.ok()) vm.owner = caller.tenant;
  vm.state = VmState::kCreated;
  vm.config = snap.vm_config;
  vm.config.vm_id = vm_id;
  // A clone's limits count from now (a pool member's from its claim).
  vm.config.lifetime = StartLifetime(snap.vm_config.lifetime, absl::Now());
  if (!pool_id.empty()) vm.config.lifetime.expires_at = absl::InfinitePast();
  vm.error.clear();
  vm.vmm_pid = 0;
  vm.restored_from = snap.snapshot_id;
  vm.pool_id = pool_id;
  if (own_identity) {
    // Same TAP, address and MAC as at the snapshot, and the policy it had.
    vm.network = snap.network_config;
    vm.network.egress = snap.vm_config.egress;
    // Host ports come back only if the operator's policy still allows them.
    for (const auto& f : vm.network.port_forwards) {
      SMOLVM_RETURN_IF_ERROR(network_->CheckForwardPolicy(f));
    }
  } else {
    // A clone gets a fresh identity; host ports stay with their owner.
    vm.network = NetworkConfig{};
    vm.config.port_forwards.clear();
  }
  // A restored VM holds RAM and vCPUs whether it runs or is paused.
  SMOLVM_ASSIGN_OR_RETURN(QuotaLedger::Claim claim,
                          ClaimQuota(caller, vm.owner, VmQuotaKey(vm_id), VmUsage(vm, true)));
  // The intent (with the existing VM's row as it is) before anything
  // changes: the next start rolls an unfinished restore back exactly.
  SMOLVM_RETURN_IF_ERROR(store_->BeginOperation(vm_id, "restore"));
  absl::Cleanup end_operation = [&] { (void)store_->EndOperation(vm_id); };
  if (!existing.ok()) {
    vm.created_at = vm.updated_at = absl::Now();
    SMOLVM_RETURN_IF_ERROR(store_->InsertVm(vm));
    CrashPoint("restore.row_inserted");
  }
  // Until the end, failures restore the previous situation: a new VM
  // disappears (address released), an existing one keeps its record and
  // its disk (kept aside by StageRestoredDisk while the restored one is
  // tried).
  auto undo = absl::MakeCleanup([&, had_vm = existing.ok()] {
    if (slot.instance) {
      (void)slot.instance->Shutdown(absl::Seconds(2));
      slot.instance.reset();
    }
    slot.agent.reset();
    slot.needs_fixup = slot.needs_readdress = false;
    network_->Unplug(vm);
    (void)files_->RemoveRunDir(vm_id);
    files_->RollBackRestoredDisk(vm_id, /*remove_dir=*/!had_vm);
    if (had_vm) {
      (void)store_->UpdateVm(*existing);
      (void)network_->ApplyFirewall();
    } else {
      (void)store_->DeleteVm(vm_id);
      network_->Release(vm_id);
    }
  });
  if (own_identity) {
    SMOLVM_RETURN_IF_ERROR(network_->Reclaim(vm));
  } else {
    SMOLVM_RETURN_IF_ERROR(network_->Assign(vm, {}));
  }
  CrashPoint("restore.address_assigned");
  absl::Time t0 = absl::Now();
  ReportStage(progress, "copying the disk");
  SMOLVM_RETURN_IF_ERROR(files_->StageRestoredDisk(vm_id, paths.disk));
  CrashPoint("restore.disk_staged");
  // A restored VM has no RAM file of its own (see CreateSnapshot).
  SMOLVM_RETURN_IF_ERROR(files_->RemoveRunDir(vm_id));

  SMOLVM_ASSIGN_OR_RETURN(vmm::LaunchSpec spec, LaunchSpecFor(vm));
  // Private copy-on-write mapping: no guest memory is copied and the
  // snapshot's file is never written.
  spec.mem_path = paths.mem;
  spec.mem_shared = false;
  spec.incoming_state_path = paths.vmstate;
  // The TAP and the VM's rules (its egress policy among them) are in place
  // before the restored guest runs a single instruction.
  SMOLVM_RETURN_IF_ERROR(network_->Plug(vm));
  ReportStage(progress, "loading the VM's state");
  SMOLVM_ASSIGN_OR_RETURN(slot.instance, hypervisor_->Launch(spec));
  CrashPoint("restore.vmm_started");
  // The VMM has the device state loaded and mem.bin mapped (a DeleteSnapshot
  // from now on cannot take them away): the snapshot's files are no longer
  // needed.
  release_files();
  // A clone must not be handed out with its snapshot's clock and random
  // state: a running restore is fixed up now, a paused one when resumed.
  slot.needs_readdress = !own_identity;
  if (resume_vm) {
    ReportStage(progress, "giving the guest its clock and identity");
    SMOLVM_RETURN_IF_ERROR(slot.instance->Resume());
    CrashPoint("restore.resumed");
    SMOLVM_RETURN_IF_ERROR(FixUpRestoredLocked(slot, vm_id));
    if (slot.needs_readdress) SMOLVM_RETURN_IF_ERROR(ReaddressGuestLocked(slot, vm));
  } else {
    slot.needs_fixup = true;
  }
  // Recorded with the state below, so a restart before the resume cannot
  // hand out a clone with its snapshot's clock and random state.
  vm.pending_fixup = !slot.needs_fixup     ? ""
                     : slot.needs_readdress ? kFixupReaddress
                                            : kFixupClock;
  vm.state = resume_vm ? VmState::kRunning : VmState::kPaused;
  vm.vmm_pid = slot.instance->pid();
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  SMOLVM_RETURN_IF_ERROR(store_->EndOperation(vm_id));
  // The commit point: the record says the VM runs from the restored disk.
  std::move(end_operation).Cancel();
  std::move(undo).Cancel();
  CrashPoint("restore.committed");
  files_->CommitRestoredDisk(vm_id);

  SnapshotRecord updated = snap;
  if (integrity.hashed) updated.verified_stamps = integrity.stamps;
  updated.restored = true;
  updated.restored_vm_id = vm_id;
  // (Deleted meanwhile: the restored VM stands on its own.)
  if (auto s = store_->UpdateSnapshot(updated); !s.ok() && !absl::IsNotFound(s)) return s;
  spdlog::info("vm {}: restored from snapshot {} in {} ({}{})", vm_id, snap.snapshot_id,
               absl::FormatDuration(absl::Now() - t0), VmStateName(vm.state),
               manifest.ram_in_vmstate ? ", RAM from device state" : "");
  return store_->GetVm(vm_id);
}

absl::StatusOr<std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>>
VmManager::ForkSnapshot(const Caller& caller, const std::string& snapshot_id, uint32_t count,
                        bool resume_vm, const std::string& vm_id_prefix,
                        Progress* progress) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  if (count < 1 || count > 128) {
    return absl::InvalidArgumentError(absl::StrCat("fork count ", count, " must be 1-128"));
  }
  const std::string prefix = vm_id_prefix.empty() ? snapshot_id + "-fork" : vm_id_prefix;
  SMOLVM_RETURN_IF_ERROR(ValidateId(absl::StrCat(prefix, "-", count), "vm_id_prefix + \"-N\""));
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, GetSnapshot(caller, snapshot_id));
  std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>> results;
  for (uint32_t i = 1; i <= count; ++i) {
    results.emplace_back(absl::StrCat(prefix, "-", i), absl::UnknownError("not restored"));
  }
  // Clones are independent VMs (own slot, files and address); restores of
  // one snapshot share its files' read lock, so they run side by side.
  // Each worker takes the next clone until none is left.
  uint32_t parallel = options_.fork_parallelism;
  if (parallel == 0) parallel = std::max(1u, std::thread::hardware_concurrency());
  parallel = std::min(parallel, count);
  std::atomic<uint32_t> next{0};
  std::atomic<bool> first_done{false};
  // Done counts clones finished either way; each one's outcome is in the
  // results.
  ReportStage(progress, "restoring clones", count, "clones");
  auto work = [&] {
    for (uint32_t i; (i = next.fetch_add(1)) < count;) {
      results[i].second = RestoreSnapshot(caller, snapshot_id, resume_vm, results[i].first);
      ReportAdvance(progress);
      if (!first_done.exchange(true)) CrashPoint("fork.first_clone_done");
    }
  };
  std::vector<std::thread> workers;
  for (uint32_t w = 1; w < parallel; ++w) workers.emplace_back(work);
  work();
  for (auto& t : workers) t.join();
  RecordFork(*store_, snap, results);
  return results;
}

absl::StatusOr<VmManager::ForkVmResult> VmManager::ForkVm(
    const Caller& caller, const std::string& vm_id, uint32_t count, std::string snapshot_id,
    const std::string& vm_id_prefix, bool paused, const Labels& labels, Progress* progress) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  // Everything that can be refused is, before the snapshot is taken.
  if (count < 1 || count > 128) {
    return absl::InvalidArgumentError(absl::StrCat("fork count ", count, " must be 1-128"));
  }
  SMOLVM_RETURN_IF_ERROR(ValidateLabels(labels, "labels"));
  if (snapshot_id.empty()) {
    // "<vm_id>-fork-<unix ms>", short enough for the children's "-<n>".
    std::string base = vm_id.substr(0, 40);
    while (!base.empty() && base.back() == '-') base.pop_back();
    snapshot_id = absl::StrCat(base, "-fork-", absl::ToUnixMillis(absl::Now()));
  }
  SMOLVM_RETURN_IF_ERROR(ValidateId(snapshot_id, "snapshot_id"));
  const std::string prefix = vm_id_prefix.empty() ? snapshot_id : vm_id_prefix;
  SMOLVM_RETURN_IF_ERROR(ValidateId(absl::StrCat(prefix, "-", count), "vm_id_prefix + \"-N\""));
  SMOLVM_ASSIGN_OR_RETURN(VmRecord source, GetVm(caller, vm_id));
  if (source.state != VmState::kRunning && source.state != VmState::kPaused) {
    return absl::FailedPreconditionError(
        absl::StrCat("fork needs a RUNNING or PAUSED VM; ", vm_id, " is ",
                     VmStateName(source.state), ": start it first"));
  }
  // The source stays as it was: a RUNNING one runs on after the snapshot.
  SMOLVM_ASSIGN_OR_RETURN(
      SnapshotRecord snap,
      CreateSnapshot(caller, vm_id, snapshot_id,
                     /*resume_source=*/source.state == VmState::kRunning, progress, labels));
  ForkVmResult result;
  result.snapshot_id = snap.snapshot_id;
  SMOLVM_ASSIGN_OR_RETURN(result.children,
                          ForkSnapshot(caller, snap.snapshot_id, count, !paused, prefix, progress));
  return result;
}

}  // namespace smolvm::core
