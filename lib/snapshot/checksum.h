// File: checksum.h
//
// Content checksums of (sparse) snapshot files, and the stamps that tell
// whether a file changed since it was last checksummed.
//
// The checksum is a function of the file's size and bytes only: the file is
// split into fixed 1 MiB blocks, each block is hashed with XXH3-64, and the
// file's checksum is XXH3-128 over the size (8 bytes, little-endian) and the
// block hashes (8 bytes each, little-endian), written "xxh3-128:<32 hex>".
// A block that lies entirely in a hole (SEEK_DATA/SEEK_HOLE) is not read:
// it contributes the hash of a block of zeros, which is what reading it would
// give. So a hole and written zeros checksum the same, and the cost is that
// of reading the data: a 2 GiB guest RAM file of which 100 MiB was touched
// costs 100 MiB of reading.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "lib/model/vm.h"

namespace smolvm::snapshot {

// The unit of hashing; part of the checksum's definition.
inline constexpr uint64_t kChecksumBlockBytes = uint64_t{1} << 20;
// The prefix of every checksum string (the algorithm).
inline constexpr char kChecksumPrefix[] = "xxh3-128:";

struct FileChecksum {
  std::string checksum;     // "xxh3-128:<32 hex>".
  FileStamp stamp;          // The file as it was hashed.
  uint64_t bytes_read = 0;  // Data actually read (holes are not).
};

// Checksums the regular file `path`. The file must not change while it is
// hashed: ABORTED if its stamp differs before and after. DATA_LOSS if it
// is missing or not a regular file; other errors name the path.
// `on_position` (optional) hears how far into the file the hash is, after
// each block and each hole skipped.
absl::StatusOr<FileChecksum> ChecksumFile(
    const std::string& path, const std::function<void(uint64_t offset)>& on_position = {});

// The stamp of an open file / of `path` (fstat). DATA_LOSS if `path` is
// missing.
absl::StatusOr<FileStamp> StampOf(int fd, const std::string& path);
absl::StatusOr<FileStamp> StampFile(const std::string& path);

}  // namespace smolvm::snapshot
