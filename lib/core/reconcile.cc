// Startup reconciliation: what a previous daemon left behind is either
// adopted (running VMMs), recorded (VMMs that died), or removed (files and
// processes of things the store does not know, half-written snapshots).
#include <cstdio>
#include <filesystem>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/snapshot/snapshot_files.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> EntriesOf(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  return names;
}

}  // namespace

absl::Status VmManager::Reconcile() {
  SMOLVM_RETURN_IF_ERROR(InitNetwork());
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
  std::set<std::string> known;
  int adopted = 0, lost = 0;
  std::set<std::string> rolled_back;
  for (VmRecord& vm : vms) {
    // A create or a restore into a new VM that the previous daemon did not
    // finish: the row exists (it reserved the id) but the operation never
    // completed. A create's disk is renamed into place as its last step, a
    // restore never leaves a VM CREATED. Undo it: row, address (below, as
    // for a vanished VM), TAP, files, cgroup, and any VMM it started.
    // A VM whose directory is gone was being deleted (DeleteVm removes the
    // files, then the row): the delete is finished the same way.
    const bool interrupted_create =
        vm.state == VmState::kCreated &&
        (!vm.restored_from.empty() || !PathExists(VmDiskPath(vm.vm_id)));
    const bool interrupted_delete = !interrupted_create && !PathExists(VmDir(vm.vm_id));
    if (interrupted_create || interrupted_delete) {
      spdlog::warn("vm {}: {}", vm.vm_id,
                   interrupted_delete          ? "finishing an interrupted delete"
                   : vm.restored_from.empty() ? "rolling back an interrupted create"
                                              : "rolling back an interrupted restore of " +
                                                    vm.restored_from);
      hypervisor_->EndStrayProcess(vm.vm_id, VmRunDir(vm.vm_id));
      (void)RemoveTree(VmRunDir(vm.vm_id));
      (void)RemoveTree(VmDir(vm.vm_id));
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
      hypervisor_->EndStrayProcess(vm.vm_id, VmRunDir(vm.vm_id));
      (void)RemoveTree(VmRunDir(vm.vm_id));
      // A restore interrupted by a crash: keep the disk the VM had.
      const std::string disk = VmDiskPath(vm.vm_id);
      (void)unlink((disk + ".restoring").c_str());
      if (PathExists(disk + ".previous")) rename((disk + ".previous").c_str(), disk.c_str());
      continue;
    }
    auto instance = hypervisor_->Attach(vm.vm_id, vm.vmm_pid, VmRunDir(vm.vm_id));
    if (!instance.ok()) {
      ++lost;
      hypervisor_->EndStrayProcess(vm.vm_id, VmRunDir(vm.vm_id));
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
    ++adopted;
  }

  // Files of VMs that no longer exist (a crash during DeleteVm or a failed
  // CreateVm).
  for (const auto& name : EntriesOf(JoinPath(options_.state_dir, "vms"))) {
    if (known.count(name)) continue;
    spdlog::warn("removing files of unknown vm {}", name);
    (void)RemoveTree(VmDir(name));
  }
  for (const auto& name : EntriesOf(JoinPath(options_.run_dir, "vms"))) {
    if (known.count(name)) continue;
    hypervisor_->EndStrayProcess(name, VmRunDir(name));
    (void)RemoveTree(VmRunDir(name));
  }

  // Snapshots: half-written directories, and published ones whose row never
  // landed, are not snapshots.
  SMOLVM_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps, store_->AllSnapshots());
  std::set<std::string> snapshot_ids;
  for (const auto& s : snaps) snapshot_ids.insert(s.snapshot_id);
  const std::string snapshots_dir = JoinPath(options_.state_dir, "snapshots");
  for (const auto& name : EntriesOf(snapshots_dir)) {
    if (absl::StartsWith(name, snapshot::kTempPrefix) || !snapshot_ids.count(name)) {
      spdlog::warn("removing incomplete snapshot directory {}", name);
      (void)RemoveTree(JoinPath(snapshots_dir, name));
    }
  }
  for (const auto& s : snaps) {
    if (auto m = snapshot::ReadAndVerify(snapshot::PathsIn(SnapshotDir(s.snapshot_id)));
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
  const std::string imported = JoinPath(JoinPath(options_.state_dir, "images"), "imported");
  for (const auto& name : EntriesOf(imported)) {
    const std::string path = JoinPath(imported, name);
    if (referenced.count(path)) continue;
    spdlog::info("removing unreferenced imported image file {}", name);
    (void)RemoveTree(path);
  }

  std::erase_if(vms, [&](const VmRecord& vm) { return rolled_back.count(vm.vm_id) > 0; });
  ReconcileNetwork(vms);
  spdlog::info("reconciled: {} vms ({} re-attached, {} lost), {} snapshots", vms.size(),
               adopted, lost, snaps.size());
  return absl::OkStatus();
}

}  // namespace smolvm::core
