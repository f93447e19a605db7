// Fuzz target: the snapshot manifest reader. The input is the text of a
// manifest.json; ParseManifest (lib/snapshot/snapshot_files.cc) is what
// ReadAndVerify runs on it before it compares the file sizes. A manifest it
// accepts must satisfy what the restore path relies on: a supported format
// version and either no checksums or three well-formed ones.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "lib/snapshot/checksum.h"
#include "lib/snapshot/snapshot_files.h"

namespace {

bool WellFormed(const std::string& sum) {
  // The prefix and 32 lower-case hex digits, as ChecksumFile writes them.
  const std::string_view prefix = smolvm::snapshot::kChecksumPrefix;
  if (sum.size() != prefix.size() + 32 || sum.compare(0, prefix.size(), prefix) != 0) {
    return false;
  }
  for (size_t i = prefix.size(); i < sum.size(); ++i) {
    char c = sum[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // ReadAndVerify reads at most kMaxManifestBytes.
  if (size > smolvm::snapshot::kMaxManifestBytes) return 0;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto manifest = smolvm::snapshot::ParseManifest(text, "/fuzz/manifest.json");
  if (!manifest.ok()) return 0;
  bool ok = manifest->format_version <= smolvm::snapshot::kFormatVersion;
  if (manifest->checksums) {
    ok = ok && WellFormed(manifest->checksums->vmstate) && WellFormed(manifest->checksums->mem) &&
         WellFormed(manifest->checksums->disk);
  }
  if (!ok) {
    std::fprintf(stderr, "ParseManifest accepted a manifest it should refuse\n");
    std::abort();
  }
  return 0;
}
