#include "tests/fakes/faulty_state_files.h"

#include "lib/base/status_macros.h"

namespace smolvm::fakes {

using snapshot::StateFiles;

absl::Status FaultyStateFiles::CopyRootDisk(const std::string& vm_id, int src_fd,
                                            uint32_t size_mib,
                                            const std::string& src_path) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.copy_root_disk"));
  return StateFiles::CopyRootDisk(vm_id, src_fd, size_mib, src_path);
}
absl::Status FaultyStateFiles::StageRestoredDisk(const std::string& vm_id,
                                                 const std::string& snapshot_disk) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.stage_restored_disk"));
  return StateFiles::StageRestoredDisk(vm_id, snapshot_disk);
}
absl::Status FaultyStateFiles::RemoveVmFiles(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.remove_vm_files"));
  return StateFiles::RemoveVmFiles(vm_id);
}
absl::Status FaultyStateFiles::RemoveRunDir(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.remove_run_dir"));
  return StateFiles::RemoveRunDir(vm_id);
}
absl::StatusOr<std::unique_ptr<snapshot::SnapshotDraft>> FaultyStateFiles::BeginSnapshot(
    const std::string& snapshot_id, const std::vector<std::string>& sources) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.begin_snapshot"));
  return StateFiles::BeginSnapshot(snapshot_id, sources);
}
absl::Status FaultyStateFiles::CaptureMemory(snapshot::SnapshotDraft& draft,
                                             const std::string& mem_source,
                                             uint64_t memory_bytes) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.capture_memory"));
  return StateFiles::CaptureMemory(draft, mem_source, memory_bytes);
}
absl::Status FaultyStateFiles::CaptureDisk(snapshot::SnapshotDraft& draft,
                                           const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.capture_disk"));
  return StateFiles::CaptureDisk(draft, vm_id);
}
absl::StatusOr<snapshot::ChecksummedFiles> FaultyStateFiles::Seal(
    snapshot::SnapshotDraft& draft, snapshot::Manifest manifest) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.seal"));
  return StateFiles::Seal(draft, std::move(manifest));
}
absl::StatusOr<snapshot::SnapshotPaths> FaultyStateFiles::Publish(
    snapshot::SnapshotDraft& draft, const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.publish"));
  return StateFiles::Publish(draft, snapshot_id);
}
absl::Status FaultyStateFiles::RemoveSnapshot(const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("files.remove_snapshot"));
  return StateFiles::RemoveSnapshot(snapshot_id);
}

}  // namespace smolvm::fakes
