#include "lib/snapshot/checksum.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"

namespace smolvm::snapshot {
namespace {

constexpr uint64_t kBlock = kChecksumBlockBytes;

// One block of zeros, for the hash of a hole (allocated once, never freed).
const char* Zeros() {
  static const char* const zeros = new char[kBlock]();
  return zeros;
}

// XXH3-64 of a whole block of zeros: what every full hole block contributes.
uint64_t ZeroBlockHash() {
  static const uint64_t hash = XXH3_64bits(Zeros(), kBlock);
  return hash;
}

int64_t Nanos(const struct timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void AppendLittleEndian(uint64_t v, std::string& out) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// The next data extent at or after `offset`, clipped to `size`: [start, end).
// start == size when only holes are left. Filesystems without SEEK_DATA
// report everything as data.
absl::StatusOr<std::pair<uint64_t, uint64_t>> NextData(int fd, uint64_t offset, uint64_t size,
                                                       const std::string& path) {
  off_t data = lseek(fd, static_cast<off_t>(offset), SEEK_DATA);
  if (data < 0) {
    if (errno == ENXIO) return std::pair{size, size};
    if (errno == EINVAL) return std::pair{offset, size};
    return absl::ErrnoToStatus(errno, absl::StrCat("seek data in ", path));
  }
  off_t hole = lseek(fd, data, SEEK_HOLE);
  if (hole < 0) {
    if (errno != ENXIO && errno != EINVAL) {
      return absl::ErrnoToStatus(errno, absl::StrCat("seek hole in ", path));
    }
    hole = static_cast<off_t>(size);
  }
  return std::pair{std::min<uint64_t>(data, size), std::min<uint64_t>(hole, size)};
}

absl::Status ChangedWhileHashed(const std::string& path) {
  return absl::AbortedError(absl::StrCat("checksum ", path,
                                         ": the file changed while it was read; try again"));
}

// Reads exactly `len` bytes at `offset` (holes read as zeros).
absl::Status ReadBlock(int fd, uint64_t offset, size_t len, char* buf, const std::string& path) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(fd, buf + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("read ", path));
    }
    if (n == 0) return ChangedWhileHashed(path);  // Shrunk under us.
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<FileStamp> StampOf(int fd, const std::string& path) {
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  return FileStamp{static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
                   Nanos(st.st_mtim), Nanos(st.st_ctim)};
}

absl::StatusOr<FileStamp> StampFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      return absl::DataLossError(absl::StrCat("snapshot file ", path, " is missing"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  }
  return StampOf(fd.get(), path);
}

absl::StatusOr<FileChecksum> ChecksumFile(const std::string& path,
                                          const std::function<void(uint64_t)>& on_position) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      return absl::DataLossError(absl::StrCat("snapshot file ", path, " is missing"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", path));
  if (!S_ISREG(st.st_mode)) {
    return absl::DataLossError(absl::StrCat("snapshot file ", path, " is not a regular file"));
  }
  FileChecksum result;
  SMOLVM_ASSIGN_OR_RETURN(result.stamp, StampOf(fd.get(), path));
  (void)posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  const uint64_t size = result.stamp.size;
  const uint64_t blocks = (size + kBlock - 1) / kBlock;
  // What XXH3-128 covers: the size, then each block's XXH3-64.
  std::string summary;
  summary.reserve(8 * (blocks + 1));
  AppendLittleEndian(size, summary);
  auto hole_hash = [&](uint64_t block) {
    const uint64_t len = std::min(kBlock, size - block * kBlock);
    return len == kBlock ? ZeroBlockHash() : XXH3_64bits(Zeros(), len);
  };
  std::unique_ptr<char[]> buf;
  uint64_t block = 0;
  while (block < blocks) {
    SMOLVM_ASSIGN_OR_RETURN(auto extent, NextData(fd.get(), block * kBlock, size, path));
    auto [data_start, data_end] = extent;
    // Blocks wholly before the data are holes: not read.
    const uint64_t first_data_block = data_start >= size ? blocks : data_start / kBlock;
    for (; block < first_data_block; ++block) AppendLittleEndian(hole_hash(block), summary);
    if (on_position) on_position(std::min(size, block * kBlock));
    if (block >= blocks) break;
    // Blocks the extent touches are read whole (a partial hole reads as
    // zeros, as it hashes).
    // At least one block, so that the loop always advances.
    const uint64_t end_block =
        std::clamp((data_end + kBlock - 1) / kBlock, block + 1, blocks);
    if (!buf) buf.reset(new char[kBlock]);
    for (; block < end_block; ++block) {
      const uint64_t len = std::min(kBlock, size - block * kBlock);
      SMOLVM_RETURN_IF_ERROR(ReadBlock(fd.get(), block * kBlock, len, buf.get(), path));
      result.bytes_read += len;
      AppendLittleEndian(XXH3_64bits(buf.get(), len), summary);
      if (on_position) on_position(block * kBlock + len);
    }
  }

  SMOLVM_ASSIGN_OR_RETURN(FileStamp after, StampOf(fd.get(), path));
  if (after != result.stamp) return ChangedWhileHashed(path);
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(summary.data(), summary.size()));
  result.checksum = absl::StrCat(
      kChecksumPrefix,
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(canonical.digest),
                                               sizeof(canonical.digest))));
  return result;
}

}  // namespace smolvm::snapshot
