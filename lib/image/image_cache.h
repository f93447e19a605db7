// File: image_cache.h
//
// ImageCache provides the default guest image (kernel, initramfs, ext4
// rootfs), built by the project's recipe (guest/build-image.sh) from Debian
// packages and cached under <state>/images/default-<inputs hash>/. The hash
// covers every input (recipe scripts, kernel files, busybox), so the image
// is rebuilt exactly when an input changes. Old images are kept: VMs and
// snapshots refer to their kernel by path and restores need the same one.
//
// Thread-safe; concurrent callers share one build.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace smolvm::image {

struct GuestImage {
  std::string kernel_path;
  std::string initrd_path;
  std::string rootfs_path;
  std::string dir;
};

struct ImageCacheOptions {
  std::string images_dir;  // <state>/images
  std::string recipe_dir;  // Holds build-image.sh and fetch-kernel.sh.
  // Extracted cloud kernel (vmlinuz, modules/). Fetched with
  // fetch-kernel.sh from Debian's archive when missing.
  std::string kernel_dir;
  std::string busybox_path = "/bin/busybox";
  // The statically linked guest agent placed at /sbin/smolvm-agent; "" for
  // an image without it (readiness then falls back to a one-shot line).
  std::string agent_path;
};

class ImageCache {
 public:
  explicit ImageCache(ImageCacheOptions options) : options_(std::move(options)) {}
  virtual ~ImageCache() = default;

  // Returns the default image, building it first if its inputs changed.
  // FAILED_PRECONDITION (with the recipe's output) if it cannot be built.
  // (Virtual for unit tests of the core, which use a prebuilt fake image.)
  virtual absl::StatusOr<GuestImage> DefaultImage();

 private:
  absl::StatusOr<std::string> InputsHash();
  absl::StatusOr<GuestImage> Build() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ImageCacheOptions options_;
  absl::Mutex mu_;
  std::optional<GuestImage> cached_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smolvm::image
