// File: host_paths.h
//
// The host files a tenant's VMConfig may name (kernel_path, initrd_path,
// rootfs_path), opened safely, and the daemon-owned copies made of them.
//
// HostPathResolver enforces HostPathPolicy (lib/model/policy.h): a named
// path must lie lexically beneath one of the operator's allowed directories
// and resolve there, without symlinks, ".." or mount crossings, to a
// regular file. The file is opened once and used through that descriptor
// only (copied with SparseCopyFromFd, or imported with ImportFile), so
// renaming or swapping the name afterwards changes nothing.
//
// ImportFile copies a kernel or initrd into a content-addressed store in
// the state dir, so later launches and restores read daemon-owned files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/base/unique_fd.h"
#include "lib/model/policy.h"

namespace smolvm::image {

// A host file opened by HostPathResolver::Open: a regular file, read-only.
struct OpenedHostFile {
  UniqueFd fd;        // O_RDONLY | O_CLOEXEC, blocking.
  std::string path;   // As the caller named it.
  uint64_t size = 0;  // st_size when opened.
};

// Opens tenant-named host files beneath the operator's allowed directories.
// Movable; Open is const and thread-safe.
class HostPathResolver {
 public:
  // `forbidden_dirs` are the daemon's state and run dirs: an allowed dir
  // equal to, inside or containing one is INVALID_ARGUMENT (a tenant could
  // otherwise name another tenant's disk or the daemon's database). Allowed
  // dirs must be absolute existing directories; each is opened once here,
  // so a later rename of the name does not redirect lookups. No allowed dirs
  // is valid: every named path is then refused.
  // `setting` names the operator's setting in messages.
  static absl::StatusOr<HostPathResolver> Create(
      HostPathPolicy policy, std::vector<std::string> forbidden_dirs,
      std::string setting = "[images] allowed_dirs in smolvmd.toml");

  // Opens `path` for the request field `field` ("kernel_path", ...).
  //  INVALID_ARGUMENT: not absolute, NUL, "." or ".." component; not a
  //                    regular file (directory, FIFO, device, socket).
  //  PERMISSION_DENIED: outside every allowed dir; a symlink anywhere in the
  //                    path below the allowed dir; a mount point crossed.
  //  NOT_FOUND:        missing (or a component is not a directory).
  absl::StatusOr<OpenedHostFile> Open(const std::string& path, absl::string_view field) const;

  // Resolves the directory `path` (for host mounts) the same way and returns
  // it opened O_PATH | O_DIRECTORY: the caller uses the descriptor (e.g.
  // binds /proc/<pid>/fd/<fd>), never the name again, so a rename or a
  // symlink swapped in after the check changes nothing. An allowed dir
  // itself may be named. The errors are Open's; a non-directory is
  // INVALID_ARGUMENT.
  absl::StatusOr<UniqueFd> OpenDirectory(const std::string& path, absl::string_view field) const;

  // The allowed dirs as configured (normalized: no trailing "/").
  std::vector<std::string> allowed_dirs() const;

 private:
  struct AllowedDir {
    std::string path;  // As configured, normalized.
    std::string real;  // realpath() of it when opened; "" if the same.
    UniqueFd fd;       // O_PATH | O_DIRECTORY.
  };
  HostPathResolver(std::vector<AllowedDir> dirs, std::string setting)
      : dirs_(std::move(dirs)), setting_(std::move(setting)) {}

  // The most specific allowed dir `path` is lexically beneath, and the rest
  // of the path below it ("" for the dir itself).
  struct Found {
    const AllowedDir* dir;
    std::string rel;
  };
  absl::StatusOr<Found> Find(const std::string& path, absl::string_view field,
                             absl::string_view hint) const;
  absl::Status Denied(const std::string& path, absl::string_view field,
                      absl::string_view hint) const;
  // `s` prefixed with the field and path (and the setting when denied).
  absl::Status Prefixed(const std::string& path, absl::string_view field,
                        const absl::Status& s) const;

  std::vector<AllowedDir> dirs_;
  std::string setting_;
};

// Copies `file`'s content (read from its fd, never by name) into the
// content-addressed store `store_dir` as "sha256-<64 hex digits>", mode
// 0644, durably (temp file, fsync, rename, fsync dir); returns that path.
// Idempotent: an existing entry with the same digest is reused without a
// second write. Creates `store_dir` (0700) if missing.
absl::StatusOr<std::string> ImportFile(const OpenedHostFile& file, const std::string& store_dir);

// SHA-256 (lowercase hex) of the regular file at `path`, read through one
// descriptor.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);
// SHA-256 (lowercase hex) of `data`.
std::string Sha256OfString(absl::string_view data);

namespace internal {

// Opens the regular file `rel` (relative, no "." or ".." components, not
// empty) beneath the directory `dir_fd` for reading, refusing symlinks,
// magic links and mount crossings: with openat2 or, when `use_openat2` is
// false or the kernel lacks it, component by component with O_NOFOLLOW.
// What it resolves to is first opened O_PATH and checked, so a FIFO or a
// device is never opened. Errors are Open's, without the path (Open adds
// it). Exposed for the test of the fallback.
absl::StatusOr<UniqueFd> OpenBeneath(int dir_fd, const std::string& rel, bool use_openat2);

}  // namespace internal
}  // namespace smolvm::image
