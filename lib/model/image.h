// File: image.h
//
// What an image is to the store and the API: a content digest with its
// metadata, and the names ("name:tag") that point at it. The files live in
// the image store's directory (lib/image/image_store.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace smolvm {

struct ImageRecord {
  std::string digest;    // "sha256:<64 hex>" over the image's files.
  std::string owner;     // Tenant that built it; "" = the daemon's built-ins.
  std::string source;    // JSON: how it was built ({"kind": "debian", ...}).
  std::string manifest;  // JSON: kernel, exec defaults, payload, sizes.
  uint64_t size_bytes = 0;  // Allocated bytes of its files.
  absl::Time created_at = absl::UnixEpoch();
  std::vector<std::string> names;  // "name:tag", sorted; filled by reads.

  bool operator==(const ImageRecord&) const = default;
};

}  // namespace smolvm
