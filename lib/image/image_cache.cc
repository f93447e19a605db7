#include "lib/image/image_cache.h"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"

namespace smolvm::image {
namespace {

namespace fs = std::filesystem;

// FNV-1a, 64 bit: a stable content fingerprint (not a security boundary:
// all inputs are root-owned files of the host).
void Fnv1a(uint64_t& h, const std::string& data) {
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ULL;
  }
}

std::vector<std::string> RegularFilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) out.push_back(it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

GuestImage ImageIn(const std::string& dir) {
  return GuestImage{JoinPath(dir, "vmlinuz"), JoinPath(dir, "initrd.img"),
                    JoinPath(dir, "rootfs.ext4"), dir};
}

}  // namespace

absl::StatusOr<std::string> ImageCache::InputsHash() {
  uint64_t h = 1469598103934665603ULL;
  std::vector<std::string> inputs;
  for (const auto& f : RegularFilesUnder(options_.recipe_dir)) {
    if (fs::path(f).extension() == ".sh") inputs.push_back(f);  // Not the docs.
  }
  for (const auto& f : RegularFilesUnder(options_.kernel_dir)) inputs.push_back(f);
  inputs.push_back(options_.busybox_path);
  if (!options_.agent_path.empty()) inputs.push_back(options_.agent_path);
  for (const auto& path : inputs) {
    SMOLVM_ASSIGN_OR_RETURN(std::string content, ReadFileToString(path, 256 << 20));
    Fnv1a(h, fs::path(path).filename().string());
    Fnv1a(h, content);
  }
  return absl::StrFormat("%016x", h);
}

absl::StatusOr<GuestImage> ImageCache::DefaultImage() {
  absl::MutexLock lock(&mu_);
  if (cached_) return *cached_;
  return Build();
}

absl::StatusOr<GuestImage> ImageCache::Build() {
  SubprocessOptions opts;
  opts.timeout = absl::Minutes(10);
  if (!PathExists(JoinPath(options_.kernel_dir, "vmlinuz"))) {
    auto fetched = RunChecked(
        {JoinPath(options_.recipe_dir, "fetch-kernel.sh"), options_.kernel_dir}, opts);
    if (!fetched.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "fetch the guest kernel into ", options_.kernel_dir, ": ",
          fetched.status().message()));
    }
  }
  auto hash = InputsHash();
  if (!hash.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "default guest image inputs are incomplete: ", hash.status().message()));
  }
  std::string dir = JoinPath(options_.images_dir, "default-" + *hash);
  GuestImage image = ImageIn(dir);
  if (!PathExists(image.rootfs_path)) {
    SMOLVM_RETURN_IF_ERROR(MakeDirs(options_.images_dir));
    std::vector<std::string> argv = {JoinPath(options_.recipe_dir, "build-image.sh"),
                                     options_.kernel_dir, dir};
    if (!options_.agent_path.empty()) argv.push_back(options_.agent_path);
    auto built = RunChecked(argv, opts);
    if (!built.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "build the default guest image into ", dir, ": ", built.status().message()));
    }
  }
  for (const auto& f : {image.kernel_path, image.initrd_path, image.rootfs_path}) {
    if (!PathExists(f)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "default guest image ", dir, " lacks ", f, ": remove the directory to rebuild it"));
    }
  }
  cached_ = image;
  return image;
}

}  // namespace smolvm::image
