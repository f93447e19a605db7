#include "lib/snapshot/state_files.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/crash_point.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"
#include "lib/image/guest_payload.h"

namespace smolvm::snapshot {
namespace {

constexpr char kCreatingSuffix[] = ".creating";
constexpr char kRestoringSuffix[] = ".restoring";
constexpr char kPreviousSuffix[] = ".previous";

// A full disk keeps its code (errno-based errors map ENOSPC and EDQUOT to
// RESOURCE_EXHAUSTED) and gains what was being written, so a client sees
// "disk full" in terms of its request.
absl::Status DiskFullAware(absl::Status s, const std::string& what) {
  if (!absl::IsResourceExhausted(s)) return s;
  return absl::ResourceExhaustedError(absl::StrCat(what, ": ", s.message()));
}

absl::Status Rename(const std::string& from, const std::string& to) {
  if (rename(from.c_str(), to.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", from, " to ", to));
  }
  return absl::OkStatus();
}

// Copies `src` to `dst` and checksums `src` at the same time, on a second
// thread: the copy runs in the kernel and mostly waits for the disk (its
// fsync), so the hash costs next to nothing, where hashing the finished
// copy was a second pass over it (about a third of a snapshot's time).
// Source and copy hold the same bytes because nothing writes the source
// meanwhile (its VM is paused, which is also what makes the copy
// consistent); ChecksumFile fails with ABORTED if the source changed.
// Its progress is the hash's: how far into the source it has read.
absl::Status CopyChecksummed(SnapshotDraft& draft, const std::string& src,
                             const std::string& dst, const std::string& what,
                             std::string_view stage) {
  Progress* progress = draft.progress();
  struct stat st;
  ReportStage(progress, stage, stat(src.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0,
              "bytes");
  absl::StatusOr<FileChecksum> sum = absl::UnknownError("not hashed");
  std::thread hasher([&] {
    sum = ChecksumFile(src, [progress](uint64_t offset) { ReportDone(progress, offset); });
  });
  absl::Status copied = SparseCopyFile(src, dst);
  hasher.join();
  SMOLVM_RETURN_IF_ERROR(DiskFullAware(copied, what));
  if (!sum.ok()) {
    return absl::Status(sum.status().code(),
                        absl::StrCat(what, ": checksum the source: ", sum.status().message()));
  }
  draft.AddChecksum(dst, *std::move(sum));
  return absl::OkStatus();
}

}  // namespace

SnapshotDraft::~SnapshotDraft() {
  if (!published_) (void)RemoveTree(paths_.dir);
}

StateFiles::StateFiles(std::string state_dir, std::string run_dir)
    : state_dir_(std::move(state_dir)), run_dir_(std::move(run_dir)) {}

std::string StateFiles::VmDir(const std::string& id) const {
  return JoinPath(JoinPath(state_dir_, "vms"), id);
}
std::string StateFiles::VmDisk(const std::string& id) const {
  return JoinPath(VmDir(id), "disk.ext4");
}
std::string StateFiles::VmRunDir(const std::string& id) const {
  return JoinPath(JoinPath(run_dir_, "vms"), id);
}
std::string StateFiles::VmLastConsole(const std::string& id) const {
  return JoinPath(VmDir(id), "console-last.log");
}
std::string StateFiles::VmMem(const std::string& id) const {
  return JoinPath(VmRunDir(id), "mem");
}
std::string StateFiles::SnapshotsDir() const { return JoinPath(state_dir_, "snapshots"); }
std::string StateFiles::SnapshotDir(const std::string& id) const {
  return JoinPath(SnapshotsDir(), id);
}
SnapshotPaths StateFiles::SnapshotPathsOf(const std::string& id) const {
  return PathsIn(SnapshotDir(id));
}
std::string StateFiles::ImportedDir() const {
  return JoinPath(JoinPath(state_dir_, "images"), "imported");
}

absl::Status StateFiles::CopyRootDisk(const std::string& vm_id, int src_fd, uint32_t size_mib,
                                      const std::string& src_path) {
  SMOLVM_RETURN_IF_ERROR(MakeDirs(VmDir(vm_id)));
  const std::string disk = VmDisk(vm_id);
  const std::string staged = disk + kCreatingSuffix;
  absl::Status copied =
      src_fd >= 0 ? SparseCopyFromFd(src_fd, staged) : SparseCopyFile(src_path, staged);
  // Grown before it gets its name, so a VM's disk is always whole.
  if (copied.ok() && size_mib != 0) copied = image::GrowExt4(staged, size_mib, {});
  if (copied.ok()) {
    CrashPoint("create.disk_copied");
    copied = Rename(staged, disk);
  }
  if (!copied.ok()) unlink(staged.c_str());
  return DiskFullAware(copied, absl::StrCat("copy root disk for vm ", vm_id));
}

absl::Status StateFiles::StageRestoredDisk(const std::string& vm_id,
                                           const std::string& snapshot_disk) {
  SMOLVM_RETURN_IF_ERROR(MakeDirs(VmDir(vm_id)));
  const std::string disk = VmDisk(vm_id);
  const std::string staged = disk + kRestoringSuffix;
  unlink(staged.c_str());
  SMOLVM_RETURN_IF_ERROR(DiskFullAware(SparseCopyFile(snapshot_disk, staged),
                                       absl::StrCat("copy the snapshot disk for vm ", vm_id)));
  // The VMM must open the disk under its final name: QEMU reopens it by
  // path when it changes permissions (e.g. at the end of a later snapshot).
  if (PathExists(disk)) SMOLVM_RETURN_IF_ERROR(Rename(disk, disk + kPreviousSuffix));
  return Rename(staged, disk);
}

void StateFiles::CommitRestoredDisk(const std::string& vm_id) {
  unlink((VmDisk(vm_id) + kPreviousSuffix).c_str());
}

void StateFiles::RollBackRestoredDisk(const std::string& vm_id, bool remove_dir) {
  if (remove_dir) {
    (void)RemoveTree(VmDir(vm_id));
    return;
  }
  RecoverInterruptedRestore(vm_id);
}

void StateFiles::RecoverInterruptedRestore(const std::string& vm_id) {
  const std::string disk = VmDisk(vm_id);
  unlink((disk + kRestoringSuffix).c_str());
  if (PathExists(disk + kPreviousSuffix)) (void)Rename(disk + kPreviousSuffix, disk);
}

absl::Status StateFiles::RemoveVmFiles(const std::string& vm_id) {
  return RemoveTree(VmDir(vm_id));
}

absl::Status StateFiles::RemoveRunDir(const std::string& vm_id) {
  return RemoveTree(VmRunDir(vm_id));
}

absl::StatusOr<std::unique_ptr<SnapshotDraft>> StateFiles::BeginSnapshot(
    const std::string& snapshot_id, const std::vector<std::string>& sources) {
  const std::string dir = SnapshotsDir();
  SMOLVM_RETURN_IF_ERROR(MakeDirs(dir));
  uint64_t need = 64 << 20;  // Device state and slack.
  for (const auto& f : sources) {
    if (auto bytes = AllocatedBytes(f); bytes.ok()) need += *bytes;
  }
  SMOLVM_ASSIGN_OR_RETURN(uint64_t free_bytes, FreeBytes(dir));
  if (free_bytes < need) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough disk space in ", dir, " for the snapshot: ", need >> 20,
        " MiB needed, ", free_bytes >> 20, " MiB free; delete old snapshots"));
  }
  // A temp dir of this call only, never shared with another.
  std::string tmp = JoinPath(dir, absl::StrCat(kTempPrefix, snapshot_id, "-XXXXXX"));
  if (mkdtemp(tmp.data()) == nullptr) {
    return DiskFullAware(absl::ErrnoToStatus(errno, absl::StrCat("create ", tmp)),
                         "create snapshot directory");
  }
  return std::make_unique<SnapshotDraft>(PathsIn(tmp));
}

absl::Status StateFiles::CaptureMemory(SnapshotDraft& draft, const std::string& mem_source,
                                       uint64_t memory_bytes) {
  const std::string& mem = draft.paths().mem;
  if (!mem_source.empty()) {
    SMOLVM_RETURN_IF_ERROR(CopyChecksummed(draft, mem_source, mem, "copy guest RAM",
                                           "copying guest memory"));
  } else {
    UniqueFd fd(open(mem.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("create ", mem));
    if (ftruncate(fd.get(), static_cast<off_t>(memory_bytes)) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("truncate ", mem));
    }
  }
  // Set before the stamps are taken, so restores do not see a changed file.
  if (chmod(mem.c_str(), 0666) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", mem));
  }
  return absl::OkStatus();
}

absl::Status StateFiles::CaptureDisk(SnapshotDraft& draft, const std::string& vm_id) {
  return CopyChecksummed(draft, VmDisk(vm_id), draft.paths().disk, "copy the disk",
                         "copying the disk");
}

absl::StatusOr<ChecksummedFiles> StateFiles::Seal(SnapshotDraft& draft, Manifest manifest) {
  SMOLVM_ASSIGN_OR_RETURN(ChecksummedFiles sums,
                          ChecksumFiles(draft.paths(), draft.checksums()));
  manifest.checksums = sums.checksums;
  SMOLVM_RETURN_IF_ERROR(
      DiskFullAware(WriteManifest(draft.paths(), std::move(manifest)), "write the manifest"));
  return sums;
}

absl::StatusOr<SnapshotPaths> StateFiles::Publish(SnapshotDraft& draft,
                                                  const std::string& snapshot_id) {
  const std::string final_dir = SnapshotDir(snapshot_id);
  SMOLVM_RETURN_IF_ERROR(PublishDir(draft.paths(), final_dir));
  draft.MarkPublished();
  return PathsIn(final_dir);
}

absl::Status StateFiles::RemoveSnapshot(const std::string& snapshot_id) {
  return RemoveTree(SnapshotDir(snapshot_id));
}

uint64_t StateFiles::SnapshotBytes(const std::string& snapshot_id) const {
  auto paths = SnapshotPathsOf(snapshot_id);
  uint64_t total = 0;
  for (const auto& f : {paths.vmstate, paths.mem, paths.disk, paths.manifest}) {
    if (auto bytes = AllocatedBytes(f); bytes.ok()) total += *bytes;
  }
  return total;
}

std::vector<std::string> StateFiles::VmDirNames() const {
  return ListDirNames(JoinPath(state_dir_, "vms"));
}
std::vector<std::string> StateFiles::RunDirNames() const {
  return ListDirNames(JoinPath(run_dir_, "vms"));
}
std::vector<std::string> StateFiles::SnapshotDirNames() const {
  return ListDirNames(SnapshotsDir());
}
bool StateFiles::IsDraft(const std::string& name) {
  return absl::StartsWith(name, kTempPrefix);
}

}  // namespace smolvm::snapshot
