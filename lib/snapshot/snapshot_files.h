// File: snapshot_files.h
//
// The on-disk layout of a snapshot and its manifest. A snapshot directory
// <state>/snapshots/<id>/ holds:
//   vmstate.bin   device state (QEMU migration stream)
//   mem.bin       guest RAM, sparse (only pages the guest touched)
//   disk.ext4     the root disk, sparse
//   manifest.json format version, VMM version, accelerator, machine, sizes
//                 and content checksums of the three files above
// A directory is only ever published complete: it is written under a
// ".tmp-" name, fsynced, and renamed into place (see WriteManifest and
// PublishDir).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/model/vm.h"
#include "lib/snapshot/checksum.h"

namespace smolvm::snapshot {

// Bumped whenever the layout or the manifest changes incompatibly.
inline constexpr int kFormatVersion = 1;
// Manifests larger than this are corrupt, not read.
inline constexpr size_t kMaxManifestBytes = 64 * 1024;
// Prefix of directories being written; startup removes leftovers.
inline constexpr char kTempPrefix[] = ".tmp-";

struct SnapshotPaths {
  std::string dir;
  std::string vmstate;
  std::string mem;
  std::string disk;
  std::string manifest;
};
SnapshotPaths PathsIn(const std::string& dir);

struct Manifest {
  int format_version = kFormatVersion;
  std::string snapshot_id;
  std::string vm_id;
  std::string vmm;          // "qemu"
  std::string vmm_version;  // First line of `qemu --version`.
  std::string accelerator;  // "kvm" | "tcg"
  uint32_t memory_mib = 0;
  // True when guest RAM travels inside vmstate.bin (the source VM's RAM was
  // a private mapping, i.e. it was itself restored); mem.bin is then an
  // empty sparse file of the RAM size.
  bool ram_in_vmstate = false;
  uint64_t vmstate_bytes = 0;
  uint64_t mem_bytes = 0;
  uint64_t disk_bytes = 0;
  // Content checksums (checksum.h). Manifests written before checksums
  // existed have none: such "legacy" snapshots restore unverified.
  std::optional<SnapshotChecksums> checksums;
};

// Writes paths.manifest durably, filling the three sizes from the files.
absl::Status WriteManifest(const SnapshotPaths& paths, Manifest manifest);
// Parses and checks the text of a manifest (`source`, its path, names it in
// messages): DATA_LOSS if it is not a JSON object with every field of the
// right type and well-formed checksums, FAILED_PRECONDITION if the format
// version is newer than this build's. Touches no file.
absl::StatusOr<Manifest> ParseManifest(std::string_view text, const std::string& source);
// Reads and checks a manifest and the files it describes: DATA_LOSS if the
// manifest is corrupt or a file is missing or has another size,
// FAILED_PRECONDITION if the format version is newer than this build's.
// Sizes only: the content is checked by VerifyFiles.
absl::StatusOr<Manifest> ReadAndVerify(const SnapshotPaths& paths);

// The checksums of the three files and their stamps as they were hashed.
struct ChecksummedFiles {
  SnapshotChecksums checksums;
  SnapshotStamps stamps;
  uint64_t bytes_read = 0;  // Data read (holes are skipped).
};
// `known` (path -> checksum) are taken as they are: only their stamps are
// read now (the file must not have been written since it was hashed).
absl::StatusOr<ChecksummedFiles> ChecksumFiles(
    const SnapshotPaths& paths, const std::map<std::string, FileChecksum>& known = {});
// The current stamps of the three files, without reading them.
absl::StatusOr<SnapshotStamps> StampFiles(const SnapshotPaths& paths);

// One file of a verification.
struct FileCheck {
  std::string name;      // "vmstate.bin", "mem.bin" or "disk.ext4".
  std::string path;
  std::string expected;  // Recorded at creation; "" for a legacy snapshot.
  std::string actual;    // Computed now; "" if the files were not hashed.
  bool ok = false;       // actual == expected (never for a legacy snapshot).
};

// The outcome of checking a snapshot's content.
struct VerifyReport {
  std::string snapshot_id;
  std::vector<FileCheck> files;  // vmstate.bin, mem.bin, disk.ext4.
  bool ok = false;      // Every file matches its checksum.
  bool legacy = false;  // No checksums were recorded: nothing to compare.
  bool hashed = false;  // The files were read (not skipped on their stamps).
  absl::Duration duration;
  uint64_t bytes_read = 0;
  SnapshotStamps stamps;  // Of the files as hashed (when `hashed`).
};

// Hashes the three files and compares them with `expected` (nullopt: a
// legacy snapshot, reported with `legacy` and not ok). Errors only for
// files that cannot be read (DATA_LOSS if missing); a mismatch is a report
// that is not ok (see CorruptionError).
absl::StatusOr<VerifyReport> VerifyFiles(const SnapshotPaths& paths,
                                         const std::optional<SnapshotChecksums>& expected);
// DATA_LOSS naming the first file of `report` that does not match its
// checksum, and the fix; OK if all match or the snapshot is legacy.
absl::Status CorruptionError(const VerifyReport& report);

// fsyncs every file of the snapshot and its directory, then renames
// `tmp_dir` to `final_dir` and fsyncs the parent. ALREADY_EXISTS if
// `final_dir` exists.
absl::Status PublishDir(const SnapshotPaths& tmp, const std::string& final_dir);

}  // namespace smolvm::snapshot
