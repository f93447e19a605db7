#include "lib/snapshot/snapshot_files.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/snapshot/checksum.h"
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

// A checksum as ChecksumFile writes it: the prefix and 32 lower-case hex.
bool IsChecksum(const std::string& s) {
  constexpr size_t kPrefix = sizeof(kChecksumPrefix) - 1;
  if (s.size() != kPrefix + 32 || !absl::StartsWith(s, kChecksumPrefix)) return false;
  for (size_t i = kPrefix; i < s.size(); ++i) {
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  }
  return true;
}

// An integer member of a manifest, in T's range. json's get<T>() also
// converts a float (undefined behaviour when it is out of range) and wraps a
// negative number into an unsigned one. A missing member throws, as for the
// other fields.
template <typename T>
absl::StatusOr<T> IntegerMember(const json& j, const char* key, const std::string& source) {
  const json& v = j.at(key);
  if (v.is_number_unsigned() && std::in_range<T>(v.get<uint64_t>())) {
    return static_cast<T>(v.get<uint64_t>());
  }
  if (v.is_number_integer() && !v.is_number_unsigned() && std::in_range<T>(v.get<int64_t>())) {
    return static_cast<T>(v.get<int64_t>());
  }
  return absl::DataLossError(absl::StrCat("snapshot manifest ", source, " has an invalid ", key,
                                          ": not an integer from ", std::numeric_limits<T>::min(),
                                          " to ", std::numeric_limits<T>::max()));
}

// The three content files in report order, with the checksum of each.
struct NamedFile {
  const char* name;
  const std::string* path;
};
std::array<NamedFile, 3> ContentFiles(const SnapshotPaths& p) {
  return {NamedFile{"vmstate.bin", &p.vmstate}, NamedFile{"mem.bin", &p.mem},
          NamedFile{"disk.ext4", &p.disk}};
}
std::array<const std::string*, 3> Fields(const SnapshotChecksums& c) {
  return {&c.vmstate, &c.mem, &c.disk};
}
std::array<std::string*, 3> Fields(SnapshotChecksums& c) {
  return {&c.vmstate, &c.mem, &c.disk};
}
std::array<FileStamp*, 3> Fields(SnapshotStamps& s) { return {&s.vmstate, &s.mem, &s.disk}; }

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
  if (m.checksums) {
    j["checksums"] = {{"vmstate", m.checksums->vmstate},
                      {"mem", m.checksums->mem},
                      {"disk", m.checksums->disk}};
  }
  return WriteFileAtomic(paths.manifest, j.dump(2) + "\n");
}

absl::StatusOr<Manifest> ParseManifest(std::string_view text, const std::string& source) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", source,
                                            " is not valid JSON"));
  }
  Manifest m;
  try {
    SMOLVM_ASSIGN_OR_RETURN(m.format_version, IntegerMember<int>(j, "format_version", source));
    m.snapshot_id = j.at("snapshot_id").get<std::string>();
    m.vm_id = j.at("vm_id").get<std::string>();
    m.vmm = j.at("vmm").get<std::string>();
    m.vmm_version = j.at("vmm_version").get<std::string>();
    m.accelerator = j.at("accelerator").get<std::string>();
    SMOLVM_ASSIGN_OR_RETURN(m.memory_mib, IntegerMember<uint32_t>(j, "memory_mib", source));
    m.ram_in_vmstate = j.at("ram_in_vmstate").get<bool>();
    SMOLVM_ASSIGN_OR_RETURN(m.vmstate_bytes,
                            IntegerMember<uint64_t>(j, "vmstate_bytes", source));
    SMOLVM_ASSIGN_OR_RETURN(m.mem_bytes, IntegerMember<uint64_t>(j, "mem_bytes", source));
    SMOLVM_ASSIGN_OR_RETURN(m.disk_bytes, IntegerMember<uint64_t>(j, "disk_bytes", source));
    // Optional: absent in manifests written before checksums existed.
    if (auto it = j.find("checksums"); it != j.end()) {
      SnapshotChecksums c;
      c.vmstate = it->at("vmstate").get<std::string>();
      c.mem = it->at("mem").get<std::string>();
      c.disk = it->at("disk").get<std::string>();
      for (const std::string* sum : Fields(c)) {
        if (!IsChecksum(*sum)) {
          return absl::DataLossError(absl::StrCat("snapshot manifest ", source,
                                                  " has a malformed checksum"));
        }
      }
      m.checksums = std::move(c);
    }
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", source,
                                            " is incomplete: ", e.what()));
  }
  if (m.format_version > kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "snapshot ", m.snapshot_id, " has format version ", m.format_version,
        ", newer than this smolvmd supports (", kFormatVersion, "): upgrade smolvmd"));
  }
  return m;
}

absl::StatusOr<Manifest> ReadAndVerify(const SnapshotPaths& paths) {
  auto text = ReadFileToString(paths.manifest, kMaxManifestBytes);
  if (!text.ok()) {
    return absl::DataLossError(absl::StrCat("snapshot manifest ", paths.manifest,
                                            " is unreadable: ", text.status().message()));
  }
  SMOLVM_ASSIGN_OR_RETURN(Manifest m, ParseManifest(*text, paths.manifest));
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

absl::StatusOr<ChecksummedFiles> ChecksumFiles(
    const SnapshotPaths& paths, const std::map<std::string, FileChecksum>& known) {
  ChecksummedFiles out;
  auto files = ContentFiles(paths);
  auto sums = Fields(out.checksums);
  auto stamps = Fields(out.stamps);
  for (size_t i = 0; i < files.size(); ++i) {
    FileChecksum c;
    if (auto it = known.find(*files[i].path); it != known.end()) {
      c = it->second;
      SMOLVM_ASSIGN_OR_RETURN(c.stamp, StampFile(*files[i].path));
    } else {
      SMOLVM_ASSIGN_OR_RETURN(c, ChecksumFile(*files[i].path));
    }
    *sums[i] = std::move(c.checksum);
    *stamps[i] = c.stamp;
    out.bytes_read += c.bytes_read;
  }
  return out;
}

absl::StatusOr<SnapshotStamps> StampFiles(const SnapshotPaths& paths) {
  SnapshotStamps out;
  auto files = ContentFiles(paths);
  auto stamps = Fields(out);
  for (size_t i = 0; i < files.size(); ++i) {
    SMOLVM_ASSIGN_OR_RETURN(*stamps[i], StampFile(*files[i].path));
  }
  return out;
}

absl::StatusOr<VerifyReport> VerifyFiles(const SnapshotPaths& paths,
                                         const std::optional<SnapshotChecksums>& expected) {
  const absl::Time start = absl::Now();
  SMOLVM_ASSIGN_OR_RETURN(ChecksummedFiles got, ChecksumFiles(paths));
  VerifyReport report;
  report.legacy = !expected.has_value();
  report.hashed = true;
  report.bytes_read = got.bytes_read;
  report.stamps = got.stamps;
  report.ok = !report.legacy;
  auto files = ContentFiles(paths);
  auto actual = Fields(got.checksums);
  for (size_t i = 0; i < files.size(); ++i) {
    FileCheck& f = report.files.emplace_back();
    f.name = files[i].name;
    f.path = *files[i].path;
    f.actual = *actual[i];
    if (expected) f.expected = *Fields(*expected)[i];
    f.ok = !report.legacy && f.actual == f.expected;
    report.ok = report.ok && f.ok;
  }
  report.duration = absl::Now() - start;
  return report;
}

absl::Status CorruptionError(const VerifyReport& report) {
  if (report.ok || report.legacy) return absl::OkStatus();
  const FileCheck* first = nullptr;
  int bad = 0;
  for (const FileCheck& f : report.files) {
    if (f.ok) continue;
    if (first == nullptr) first = &f;
    ++bad;
  }
  if (first == nullptr) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(
      "snapshot file ", first->path, " is corrupt: checksum ", first->actual, ", expected ",
      first->expected,
      bad > 1 ? absl::StrCat(" (and ", bad - 1, " more of its files differ)") : "",
      "; delete the snapshot or restore it from a backup"));
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
