// File: state_files.h
//
// StateFiles owns the on-disk layout of the daemon's files — every path
// under the state and run dirs is named here and nowhere else — and the
// multi-step file work of the core's operations, each step written so that
// a crash between two of them leaves something the next start recognizes
// (a staged name, a temp dir) and undoes:
//
//   <state_dir>/vms/<vm_id>/disk.ext4            a VM's root disk
//                           disk.ext4.creating   CreateVm's copy, renamed into place
//                           disk.ext4.restoring  a restore's copy of the snapshot disk
//                           disk.ext4.previous   the disk a restore replaces, until it commits
//   <state_dir>/snapshots/<id>/                  a snapshot (snapshot_files.h)
//   <state_dir>/snapshots/.tmp-<id>-XXXXXX/      one CreateSnapshot's draft
//   <state_dir>/images/imported/                 kernels/initrds imported from host paths
//   <run_dir>/vms/<vm_id>/                       the VMM's sockets, pid file, console log,
//                                                and `mem` (a cold-booted guest's RAM)
//
// The mutating methods are virtual so that unit tests of the core can make
// any of them fail (tests/fakes); the real files are always used.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/base/progress.h"
#include "lib/snapshot/checksum.h"
#include "lib/snapshot/snapshot_files.h"

namespace smolvm::snapshot {

// One CreateSnapshot's files being written (a ".tmp-" directory of its
// own). Removed when destroyed unless published.
class SnapshotDraft {
 public:
  explicit SnapshotDraft(SnapshotPaths paths) : paths_(std::move(paths)) {}
  ~SnapshotDraft();
  SnapshotDraft(const SnapshotDraft&) = delete;
  SnapshotDraft& operator=(const SnapshotDraft&) = delete;
  const SnapshotPaths& paths() const { return paths_; }
  void MarkPublished() { published_ = true; }
  // Checksums taken while a file was copied in (path -> checksum), which
  // Seal uses instead of reading the file again.
  const std::map<std::string, FileChecksum>& checksums() const { return checksums_; }
  void AddChecksum(const std::string& path, FileChecksum sum) {
    checksums_[path] = std::move(sum);
  }
  // Where the copies report their stages and bytes (may be null).
  void set_progress(Progress* progress) { progress_ = progress; }
  Progress* progress() const { return progress_; }

 private:
  SnapshotPaths paths_;
  Progress* progress_ = nullptr;
  bool published_ = false;
  std::map<std::string, FileChecksum> checksums_;
};

class StateFiles {
 public:
  StateFiles(std::string state_dir, std::string run_dir);
  virtual ~StateFiles() = default;
  StateFiles(const StateFiles&) = delete;
  StateFiles& operator=(const StateFiles&) = delete;

  // ---- Paths ----
  std::string VmDir(const std::string& vm_id) const;
  std::string VmDisk(const std::string& vm_id) const;
  std::string VmRunDir(const std::string& vm_id) const;
  // The console of the VM's last run, kept when its run dir goes.
  std::string VmLastConsole(const std::string& vm_id) const;
  // A cold-booted guest's RAM (a shared mapping the VMM creates).
  std::string VmMem(const std::string& vm_id) const;
  std::string SnapshotsDir() const;
  std::string SnapshotDir(const std::string& snapshot_id) const;
  SnapshotPaths SnapshotPathsOf(const std::string& snapshot_id) const;
  std::string ImportedDir() const;

  // ---- A VM's files ----
  // Copies a root disk into the VM's dir: from `src_fd` if valid, else
  // from `src_path`, grown to `size_mib` unless 0 (lib/image GrowExt4).
  // Written under a staged name and renamed, so a VM whose
  // disk exists has all of it. RESOURCE_EXHAUSTED when the disk is full.
  virtual absl::Status CopyRootDisk(const std::string& vm_id, int src_fd, uint32_t size_mib,
                                    const std::string& src_path);
  // Puts a copy of a snapshot's disk in place as the VM's disk; a disk the
  // VM had is kept aside until CommitRestoredDisk (or put back by
  // RollBackRestoredDisk).
  virtual absl::Status StageRestoredDisk(const std::string& vm_id,
                                         const std::string& snapshot_disk);
  // The restore succeeded: the previous disk goes.
  void CommitRestoredDisk(const std::string& vm_id);
  // The restore failed: the previous disk comes back (or, for a VM that had
  // none, the VM's files go when `remove_dir`).
  void RollBackRestoredDisk(const std::string& vm_id, bool remove_dir);
  // Removes the VM's state dir (its disk).
  virtual absl::Status RemoveVmFiles(const std::string& vm_id);
  // Removes the VM's run dir (sockets, console log, RAM file).
  virtual absl::Status RemoveRunDir(const std::string& vm_id);

  // ---- Snapshots ----
  // Creates a draft for `snapshot_id` once there is room for `sources`
  // (their allocated bytes plus slack): RESOURCE_EXHAUSTED otherwise.
  virtual absl::StatusOr<std::unique_ptr<SnapshotDraft>> BeginSnapshot(
      const std::string& snapshot_id, const std::vector<std::string>& sources);
  // Guest RAM: a copy of `mem_source`, or (when empty) a sparse file of
  // `memory_bytes` (the RAM travels in vmstate.bin). Clones' VMMs, each
  // with its own uid, open it read-write for a private mapping: mode 0666
  // inside the root-only state dir (docs/decisions.md).
  // Both copies are checksummed from their source while they are made (see
  // CopyChecksummed in state_files.cc), so Seal does not read them again.
  virtual absl::Status CaptureMemory(SnapshotDraft& draft, const std::string& mem_source,
                                     uint64_t memory_bytes);
  virtual absl::Status CaptureDisk(SnapshotDraft& draft, const std::string& vm_id);
  // Checksums the files and writes the manifest (with them) durably.
  virtual absl::StatusOr<ChecksummedFiles> Seal(SnapshotDraft& draft, Manifest manifest);
  // Renames the draft into place: the snapshot's directory is complete.
  virtual absl::StatusOr<SnapshotPaths> Publish(SnapshotDraft& draft,
                                                const std::string& snapshot_id);
  virtual absl::Status RemoveSnapshot(const std::string& snapshot_id);
  // Allocated bytes of a published snapshot's files.
  uint64_t SnapshotBytes(const std::string& snapshot_id) const;

  // ---- Startup ----
  std::vector<std::string> VmDirNames() const;
  std::vector<std::string> RunDirNames() const;
  // Published directories and drafts ("." names included).
  std::vector<std::string> SnapshotDirNames() const;
  // Undoes a restore a crash interrupted: the staged copy goes, the
  // previous disk comes back.
  void RecoverInterruptedRestore(const std::string& vm_id);
  // True for a name SnapshotDirNames returns that is a draft.
  static bool IsDraft(const std::string& name);

 private:
  const std::string state_dir_;
  const std::string run_dir_;
};

}  // namespace smolvm::snapshot
