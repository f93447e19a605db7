// File: file_util.h
//
// Small filesystem helpers with Status errors that name the path: durable
// writes (write temp, fsync, rename, fsync dir), sparse copies that only
// copy allocated extents, and recursive removal.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace smolvm {

absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes = 16 << 20);

// The last `max_bytes` bytes of a file, read without reading the rest; ""
// if it is missing or empty.
std::string ReadFileTail(const std::string& path, size_t max_bytes);

// Writes `data` to `path` atomically and durably: a reader sees the old
// content or the new one, never a mix, also after a crash.
absl::Status WriteFileAtomic(const std::string& path, const std::string& data,
                             int mode = 0644);

// Copies `src` to the new file `dst`, skipping holes (SEEK_DATA/SEEK_HOLE) so
// only allocated extents are read and written; `dst` gets the same size.
// fsyncs `dst`. Fails with ALREADY_EXISTS if `dst` exists.
absl::Status SparseCopyFile(const std::string& src, const std::string& dst);

// SparseCopyFile from an already open regular file, so a caller that vetted
// what it opened (lib/image/host_paths.h) copies exactly that file and not
// whatever the name points to by now. Reads with explicit offsets except
// for SEEK_DATA/SEEK_HOLE, which move `src_fd`'s file offset.
absl::Status SparseCopyFromFd(int src_fd, const std::string& dst);

// fsync()s a file or directory by path.
absl::Status SyncPath(const std::string& path);

// Creates a directory and its parents (mode 0700 for new ones).
absl::Status MakeDirs(const std::string& path, int mode = 0700);

// Removes `path` recursively; a missing path is OK.
absl::Status RemoveTree(const std::string& path);

bool PathExists(const std::string& path);

// Bytes actually allocated on disk for a file (st_blocks * 512).
absl::StatusOr<uint64_t> AllocatedBytes(const std::string& path);

// Joins path components with "/".
std::string JoinPath(const std::string& a, const std::string& b);

// Names of the entries of `dir` (none if it cannot be read).
std::vector<std::string> ListDirNames(const std::string& dir);

// Free bytes available to unprivileged writers of the filesystem of `path`.
absl::StatusOr<uint64_t> FreeBytes(const std::string& path);

}  // namespace smolvm
