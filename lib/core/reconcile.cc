// Startup reconciliation: what a previous daemon left behind is either
// adopted (running VMMs), recorded (VMMs that died), or removed (files and
// processes of things the store does not know, half-written snapshots).
#include <cstdio>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/snapshot/snapshot_files.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
absl::Status VmManager::FinishOrRollBack(const store::PendingOperation& op) {
  const std::string& id = op.vm_id;
  // Whatever the operation started of a VMM is not the VM's (a restore's
  // target was not running, a create's VM never ran, a delete ends it).
  hypervisor_->EndStrayProcess(id, files_->VmRunDir(id));
  (void)files_->RemoveRunDir(id);
  if (op.kind == "delete") {
    spdlog::warn("vm {}: finishing an interrupted delete", id);
    SMOLVM_RETURN_IF_ERROR(files_->RemoveVmFiles(id));
    if (auto s = store_->DeleteVm(id); !s.ok() && !absl::IsNotFound(s)) return s;
  } else if (op.has_previous) {
    spdlog::warn("vm {}: rolling back an interrupted {}: the vm is put back as it was", id,
                 op.kind);
    files_->RecoverInterruptedRestore(id);
    SMOLVM_RETURN_IF_ERROR(store_->RestorePreviousVm(id));
  } else {
    spdlog::warn("vm {}: rolling back an interrupted {}", id, op.kind);
    SMOLVM_RETURN_IF_ERROR(files_->RemoveVmFiles(id));
    if (auto s = store_->DeleteVm(id); !s.ok() && !absl::IsNotFound(s)) return s;
  }
  // (Its address, if it no longer exists, is released with the other
  // vanished VMs' below.)
  return store_->EndOperation(id);
}

absl::Status VmManager::Reconcile() {
  // The journal first: operations a crash interrupted are finished (a
  // delete) or rolled back (a create or restore), from what they recorded.
  SMOLVM_ASSIGN_OR_RETURN(std::vector<store::PendingOperation> pending,
                          store_->PendingOperations());
  for (const auto& op : pending) SMOLVM_RETURN_IF_ERROR(FinishOrRollBack(op));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
  std::set<std::string> known;
  int adopted = 0, lost = 0;
  std::set<std::string> rolled_back;
  for (VmRecord& vm : vms) {
    // Rows a smolvmd from before the journal (schema 7) left mid-create or
    // mid-delete: a CREATED VM whose disk never arrived, a VM whose files
    // are gone. Neither can run; they are removed.
    const bool interrupted_create =
        vm.state == VmState::kCreated && !PathExists(files_->VmDisk(vm.vm_id));
    const bool interrupted_delete = !interrupted_create && !PathExists(files_->VmDir(vm.vm_id));
    if (interrupted_create || interrupted_delete) {
      spdlog::warn("vm {}: {}", vm.vm_id,
                   interrupted_delete ? "finishing an interrupted delete (no journal entry)"
                                      : "rolling back an interrupted create (no journal entry)");
      hypervisor_->EndStrayProcess(vm.vm_id, files_->VmRunDir(vm.vm_id));
      (void)files_->RemoveRunDir(vm.vm_id);
      (void)files_->RemoveVmFiles(vm.vm_id);
      SMOLVM_RETURN_IF_ERROR(store_->DeleteVm(vm.vm_id));
      rolled_back.insert(vm.vm_id);
      continue;
    }
    known.insert(vm.vm_id);
    auto slot = SlotFor(vm.vm_id);
    absl::MutexLock lock(&slot->mu);
    const bool live_state = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
    if (!live_state) {
      // E.g. the daemon died while this VM was booting or being restored.
      hypervisor_->EndStrayProcess(vm.vm_id, files_->VmRunDir(vm.vm_id));
      (void)files_->RemoveRunDir(vm.vm_id);
      // A restore interrupted by a crash: keep the disk the VM had.
      files_->RecoverInterruptedRestore(vm.vm_id);
      continue;
    }
    auto instance = hypervisor_->Attach(vm.vm_id, vm.vmm_pid, files_->VmRunDir(vm.vm_id));
    if (!instance.ok() && !absl::IsNotFound(instance.status())) {
      // The VMM may well be running: a start that cannot reach it must not
      // end it. Fail the start (systemd tries again) and leave the VM be.
      return absl::UnavailableError(absl::StrCat(
          "re-attach to the vmm of vm ", vm.vm_id, " (pid ", vm.vmm_pid,
          "): ", instance.status().message(), "; the vm was left running"));
    }
    if (!instance.ok()) {
      ++lost;
      hypervisor_->EndStrayProcess(vm.vm_id, files_->VmRunDir(vm.vm_id));
      (void)FailVmLocked(*slot, vm,
                         absl::InternalError(absl::StrCat(
                             "the vmm process ", vm.vmm_pid,
                             " was gone when smolvmd started: ",
                             instance.status().message())));
      continue;
    }
    slot->instance = *std::move(instance);
    // A VM restored PAUSED keeps what its resume must still do.
    slot->needs_fixup = !vm.pending_fixup.empty();
    slot->needs_readdress = vm.pending_fixup == kFixupReaddress;
    // A crash may have come between a QMP stop/cont and the store update.
    // The store records the last completed operation: a VM it says is
    // running but whose vCPUs are stopped was paused by an operation that
    // never finished (a snapshot, a pause nobody was told of) and is
    // continued; one it says is paused but runs keeps running (a resume
    // that got as far as QEMU).
    if (auto run_state = slot->instance->QueryRunState(); run_state.ok()) {
      VmState actual = *run_state == "running" ? VmState::kRunning : VmState::kPaused;
      if (vm.state == VmState::kRunning && actual == VmState::kPaused) {
        spdlog::warn("vm {}: continuing it: an interrupted operation left it paused ({})",
                     vm.vm_id, *run_state);
        if (auto s = slot->instance->Resume(); !s.ok()) {
          spdlog::warn("vm {}: continue failed: {}", vm.vm_id, std::string(s.message()));
          vm.state = VmState::kPaused;
          SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
        }
      } else if (actual != vm.state) {
        vm.state = actual;
        SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
      }
    }
    // A clone that runs but whose record still owes its fix-ups (a resume
    // that got as far as QEMU, or as far as the guest): it must not go on
    // with its snapshot's clock, RNG or address. The fix-ups are idempotent.
    if (vm.state == VmState::kRunning && slot->needs_fixup) {
      spdlog::warn("vm {}: finishing the fix-ups of an interrupted resume", vm.vm_id);
      absl::Status s = FixUpRestoredLocked(*slot, vm.vm_id);
      if (s.ok() && slot->needs_readdress) s = ReaddressGuestLocked(*slot, vm);
      if (s.ok()) {
        vm.pending_fixup.clear();
        s = store_->UpdateVm(vm);
      }
      if (!s.ok()) {
        (void)FailVmLocked(*slot, vm, s);
        continue;
      }
    }
    ++adopted;
  }

  // Files of VMs that no longer exist (a crash during DeleteVm or a failed
  // CreateVm).
  for (const auto& name : files_->VmDirNames()) {
    if (known.count(name)) continue;
    spdlog::warn("removing files of unknown vm {}", name);
    (void)files_->RemoveVmFiles(name);
  }
  for (const auto& name : files_->RunDirNames()) {
    if (known.count(name)) continue;
    hypervisor_->EndStrayProcess(name, files_->VmRunDir(name));
    (void)files_->RemoveRunDir(name);
  }

  // Snapshots: half-written directories, and published ones whose row never
  // landed, are not snapshots.
  SMOLVM_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps, store_->AllSnapshots());
  std::set<std::string> snapshot_ids;
  for (const auto& s : snaps) snapshot_ids.insert(s.snapshot_id);
  for (const auto& name : files_->SnapshotDirNames()) {
    if (snapshot::StateFiles::IsDraft(name) || !snapshot_ids.count(name)) {
      spdlog::warn("removing incomplete snapshot directory {}", name);
      (void)RemoveTree(JoinPath(files_->SnapshotsDir(), name));
    }
  }
  for (const auto& s : snaps) {
    if (auto m = snapshot::ReadAndVerify(files_->SnapshotPathsOf(s.snapshot_id));
        !m.ok()) {
      spdlog::error("snapshot {}: {}", s.snapshot_id, std::string(m.status().message()));
    }
  }
  // TAPs of VMs that do not run, allocations of VMs that are gone, and a
  // firewall rebuilt from what exists.
  SMOLVM_ASSIGN_OR_RETURN(vms, store_->AllVms());

  // Imported kernels and initrds nothing refers to any more, and imports a
  // crash interrupted. Safe here: no request is served yet.
  std::set<std::string> referenced;
  for (const auto& vm : vms) {
    referenced.insert({vm.config.kernel_path, vm.config.initrd_path});
  }
  for (const auto& snap : snaps) {
    referenced.insert({snap.vm_config.kernel_path, snap.vm_config.initrd_path});
  }
  const std::string imported = files_->ImportedDir();
  for (const auto& name : ListDirNames(imported)) {
    const std::string path = JoinPath(imported, name);
    if (referenced.count(path)) continue;
    spdlog::info("removing unreferenced imported image file {}", name);
    (void)RemoveTree(path);
  }

  std::erase_if(vms, [&](const VmRecord& vm) { return rolled_back.count(vm.vm_id) > 0; });
  network_->Reconcile(vms);
  spdlog::info("reconciled: {} vms ({} re-attached, {} lost), {} snapshots", vms.size(),
               adopted, lost, snaps.size());
  return absl::OkStatus();
}

}  // namespace smolvm::core
