#include "lib/snapshot/snapshot_files.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace smolvm::snapshot {
namespace {

using nlohmann::json;

absl::StatusOr<uint64_t> FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::DataLossError(absl::StrCat("snapshot file ", path, " is missing: ",
                                            strerror(errno)));
  }
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

SnapshotPaths PathsIn(const std::string& dir) {
  return SnapshotPaths{dir, JoinPath(dir, "vmstate.bin"), JoinPath(dir, "mem.bin"),
                       JoinPath(dir, "disk.ext4"), JoinPath(dir, "manifest.json")};
}

absl::Status WriteManifest(const SnapshotPaths& paths, Manifest m) {
  SMOLVM_ASSIGN_OR_RETURN(m.vmstate_bytes, FileSize(paths.vmstate));
  SMOLVM_ASSIGN_OR_RETURN(m.mem_bytes, FileSize(paths.mem));
  SMOLVM_ASSIGN_OR_RETURN(m.disk_bytes, FileSize(paths.disk));
  json j = {{"format_version", m.format_version}, {"snapshot_id", m.snapshot_id},
            {"vm_id", m.vm_id}, {"vmm", m.vmm}, {"vmm_version", m.vmm_version},
            {"accelerator", m.accelerator}, {"memory_mib", m.memory_mib},
            {"ram_in_vmstate", m.ram_in_vmstate}, {"vmstate_bytes", m.vmstate_bytes},
            {"mem_bytes", m.mem_bytes}, {"disk_bytes", m.disk_bytes}};
  return WriteFileAtomic(paths.manifest, j.dump(2) + "\n");
}

absl::StatusOr<Manifest> ReadAndVerify(const SnapshotPaths& paths) {
  auto text = ReadFileToString(paths.manifest, kMaxManifestBytes);
  if (!text.ok()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", paths.manifest,
                                            " is unreadable: ", text.status().message()));
  }
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", paths.manifest,
                                            " is not valid JSON"));
  }
  Manifest m;
  try {
    m.format_version = j.at("format_version").get<int>();
    m.snapshot_id = j.at("snapshot_id").get<std::string>();
    m.vm_id = j.at("vm_id").get<std::string>();
    m.vmm = j.at("vmm").get<std::string>();
    m.vmm_version = j.at("vmm_version").get<std::string>();
    m.accelerator = j.at("accelerator").get<std::string>();
    m.memory_mib = j.at("memory_mib").get<uint32_t>();
    m.ram_in_vmstate = j.at("ram_in_vmstate").get<bool>();
    m.vmstate_bytes = j.at("vmstate_bytes").get<uint64_t>();
    m.mem_bytes = j.at("mem_bytes").get<uint64_t>();
    m.disk_bytes = j.at("disk_bytes").get<uint64_t>();
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", paths.manifest,
                                            " is incomplete: ", e.what()));
  }
  if (m.format_version > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", m.snapshot_id, " has format version ", m.format_version,
        ", newer than this smolvmd supports (", kFormatVersion, "): upgrade smolvmd"));
  }
  for (auto [path, want] : {std::pair{paths.vmstate, m.vmstate_bytes},
                            std::pair{paths.mem, m.mem_bytes},
                            std::pair{paths.disk, m.disk_bytes}}) {
    SMOLVM_ASSIGN_OR_RETURN(uint64_t got, FileSize(path));
    if (got != want) {
      return absl::DataLossError(absl::StrCat("snapshot file ", path, " has ", got,
                                              " bytes, the manifest says ", want));
    }
  }
  return m;
}

absl::Status PublishDir(const SnapshotPaths& tmp, const std::string& final_dir) {
  for (const auto& f : {tmp.vmstate, tmp.mem, tmp.disk, tmp.manifest}) {
    SMOLVM_RETURN_IF_ERROR(SyncPath(f));
  }
  SMOLVM_RETURN_IF_ERROR(SyncPath(tmp.dir));
  // RENAME_NOREPLACE: plain rename(2) would silently replace an empty dir.
  if (renameat2(AT_FDCWD, tmp.dir.c_str(), AT_FDCWD, final_dir.c_str(),
                RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) {
      return absl::AlreadyExistsError(absl::StrCat("snapshot directory ", final_dir,
                                                   " already exists"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", tmp.dir, " to ", final_dir));
  }
  std::string parent = final_dir.substr(0, final_dir.rfind('/'));
  return SyncPath(parent.empty() ? "/" : parent);
}

}  // namespace smolvm::snapshot
