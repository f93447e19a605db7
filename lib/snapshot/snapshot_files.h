// File: snapshot_files.h
//
// The on-disk layout of a snapshot and its manifest. A snapshot directory
// <state>/snapshots/<id>/ holds:
//   vmstate.bin   device state (QEMU migration stream)
//   mem.bin       guest RAM, sparse (only pages the guest touched)
//   disk.ext4     the root disk, sparse
//   manifest.json format version, VMM version, accelerator, machine, sizes
// A directory is only ever published complete: it is written under a
// ".tmp-" name, fsynced, and renamed into place (see WriteManifest and
// PublishDir).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

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
};

// Writes paths.manifest durably, filling the three sizes from the files.
absl::Status WriteManifest(const SnapshotPaths& paths, Manifest manifest);
// Reads and checks a manifest and the files it describes: DATA_LOSS if the
// manifest is corrupt or a file is missing or has another size,
// FAILED_PRECONDITION if the format version is newer than this build's.
absl::StatusOr<Manifest> ReadAndVerify(const SnapshotPaths& paths);

// fsyncs every file of the snapshot and its directory, then renames
// `tmp_dir` to `final_dir` and fsyncs the parent. ALREADY_EXISTS if
// `final_dir` exists.
absl::Status PublishDir(const SnapshotPaths& tmp, const std::string& final_dir);

}  // namespace smolvm::snapshot
