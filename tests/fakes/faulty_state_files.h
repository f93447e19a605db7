// File: faulty_state_files.h
//
// StateFiles with FAULT INJECTION for unit tests of lib/core: the real
// files (in the test's temp dirs), but every mutating step first asks the
// FakeHost's FaultPlan, so a test can make any one of them fail.
#pragma once

#include "lib/snapshot/state_files.h"
#include "tests/fakes/fake_host.h"

namespace smolvm::fakes {

class FaultyStateFiles : public snapshot::StateFiles {
 public:
  FaultyStateFiles(FakeHost* host, std::string state_dir, std::string run_dir)
      : StateFiles(std::move(state_dir), std::move(run_dir)), host_(host) {}

  absl::Status CopyRootDisk(const std::string& vm_id, int src_fd, uint32_t size_mib,
                            const std::string& src_path) override;
  absl::Status StageRestoredDisk(const std::string& vm_id,
                                 const std::string& snapshot_disk) override;
  absl::Status RemoveVmFiles(const std::string& vm_id) override;
  absl::Status RemoveRunDir(const std::string& vm_id) override;
  absl::StatusOr<std::unique_ptr<snapshot::SnapshotDraft>> BeginSnapshot(
      const std::string& snapshot_id, const std::vector<std::string>& sources) override;
  absl::Status CaptureMemory(snapshot::SnapshotDraft& draft, const std::string& mem_source,
                             uint64_t memory_bytes) override;
  absl::Status CaptureDisk(snapshot::SnapshotDraft& draft, const std::string& vm_id) override;
  absl::StatusOr<snapshot::ChecksummedFiles> Seal(snapshot::SnapshotDraft& draft,
                                                  snapshot::Manifest manifest) override;
  absl::StatusOr<snapshot::SnapshotPaths> Publish(snapshot::SnapshotDraft& draft,
                                                  const std::string& snapshot_id) override;
  absl::Status RemoveSnapshot(const std::string& snapshot_id) override;

 private:
  FakeHost* const host_;
};

}  // namespace smolvm::fakes
