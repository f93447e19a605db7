// File: image_store.h
//
// The daemon's images: read-only templates a VM boots from, each a
// content-addressed directory under the state dir
//
//   <state>/images/sha256-<hex>/   vmlinuz, initrd.img, rootfs.ext4, manifest.json
//   <state>/images/tmp/            builds in progress (removed at start)
//   <state>/images/cache/debs/     Debian packages kept across builds
//
// with metadata and names in the store's SQLite tables. The digest is the
// SHA-256 of SHA256SUMS: the three boot files' SHA-256s and, for a tenant's
// image, the owning tenant (tenants never share an image by accident). A
// build whose result already exists adds its name to it. Who uses an image is read
// from the VMs' and snapshots' configs (image_digest), never counted
// separately, so it cannot drift: an image in use cannot be deleted.
//
// A build runs the image's source (lib/image/rootfs_sources.h), adds the
// guest payload (lib/image/guest_payload.h) and the kernel, makes the ext4
// disk, and only then renames the finished directory into place and
// records it: nothing is registered half-built, and a crash leaves only a
// tmp/ dir or an unrecorded directory, both removed by the next Open.
//
// Built-in names ("minimal", "debian-python") are built on first use and
// rebuilt when the daemon's payload (agent, init, busybox, kernel) changes.
//
// Thread-safe. One build runs at a time (builds are disk- and CPU-heavy);
// resolving an existing image never waits for a build.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/progress.h"
#include "lib/image/build_context.h"
#include "lib/image/guest_payload.h"
#include "lib/image/rootfs_sources.h"
#include "lib/model/image.h"
#include "lib/model/tenant.h"

namespace smolvm::store {
class Store;
}

namespace smolvm::image {

inline constexpr char kMinimalImage[] = "minimal";
inline constexpr char kDebianPythonImage[] = "debian-python";

struct ImageSource {
  enum class Kind { kMinimal, kDebian, kOci, kDirectory, kTarball };
  Kind kind = Kind::kMinimal;
  DebianSource debian;
  OciSource oci;
  std::string path;  // kDirectory, kTarball.
};

const char* SourceKindName(ImageSource::Kind kind);
// The source kind recorded for an image ("debian", ...); "" if unreadable.
std::string SourceKindOf(const ImageRecord& image);

struct BuildRequest {
  std::string name;  // "name" or "name:tag".
  ImageSource source;
  uint32_t min_disk_mib = 0;
  // Admins only: a linux-image-*.deb to take the kernel from ("" = the
  // daemon's Debian cloud kernel).
  std::string kernel_deb;
};

// What the manifest of an image records, decoded.
struct ImageManifest {
  std::string kernel_version;
  std::string kernel_package;
  ExecDefaults exec;
  uint64_t disk_size_bytes = 0;
  uint64_t build_ms = 0;
  std::string payload_hash;
};

// An image ready to boot: its record and files.
struct ResolvedImage {
  ImageRecord record;
  ImageManifest manifest;
  std::string kernel_path;
  std::string initrd_path;
  std::string rootfs_path;
  // Held while a VM is being made from the image, so a concurrent delete
  // cannot remove the files before the VM's row names the digest.
  std::shared_ptr<void> lease;
};

// A kernel and its initramfs.
struct KernelFiles {
  std::string kernel_path;
  std::string initrd_path;
};

struct ImageStoreOptions {
  std::string images_dir;  // <state>/images
  std::string kernel_dir;  // Debian cloud kernel, fetched when missing.
  // Debian's generic kernel (9p modules) for VMs with host mounts, fetched
  // when missing, and where its boot files are kept (mounts_kernel.cc).
  std::string mounts_kernel_dir;
  std::string mounts_boot_dir;
  GuestPayload payload;
  std::string package_cache_dir;  // Debian .debs kept across builds.
  std::string build_netns;        // Where downloads run; "" = our own.
  // The image VMs get when they name none.
  std::string default_image = kDebianPythonImage;
};

class ImageStore {
 public:
  // Opens the store over `store` (which outlives it): removes builds a
  // crash interrupted and image directories no row records.
  static absl::StatusOr<std::unique_ptr<ImageStore>> Open(ImageStoreOptions options,
                                                          store::Store* store);
  virtual ~ImageStore() = default;

  // Builds and names an image owned by the caller's tenant (admins: built
  // in, visible to all). INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION
  // for bad sources (see rootfs_sources.h), ALREADY_EXISTS for a taken name,
  // PERMISSION_DENIED for a host-path source from a non-admin, CANCELLED.
  absl::StatusOr<ImageRecord> Build(const Caller& caller, const BuildRequest& request,
                                    const BuildContext& ctx);

  // The image `ref` names ("" = the default), building a built-in on first
  // use. NOT_FOUND for an unknown or invisible one. (Virtual: the core's
  // unit tests resolve to a prebuilt fake image.)
  // `progress` (optional) hears the steps of such a build.
  virtual absl::StatusOr<ResolvedImage> Resolve(const Caller& caller, const std::string& ref,
                                                Progress* progress = nullptr);

  // The kernel and initramfs VMs with host mounts boot (any image's root
  // disk works with them): fetched and built on first use, then reused.
  // FAILED_PRECONDITION without mounts_kernel_dir; the fetch's errors.
  // (Virtual: the core's unit tests fake it.)
  virtual absl::StatusOr<KernelFiles> MountsKernel(Progress* progress = nullptr);

  absl::StatusOr<std::vector<ImageRecord>> List(const Caller& caller);
  absl::StatusOr<ImageRecord> Get(const Caller& caller, const std::string& ref);
  absl::StatusOr<ImageManifest> ManifestOf(const ImageRecord& image);
  // "vm:<id>" / "snapshot:<id>" of everything using `digest`.
  absl::StatusOr<std::vector<std::string>> UsersOf(const std::string& digest);
  // See ImageService.DeleteImage. Returns whether the image itself went.
  absl::StatusOr<bool> Delete(const Caller& caller, const std::string& ref);
  absl::StatusOr<ImageRecord> Tag(const Caller& caller, const std::string& ref,
                                  const std::string& name);

  const std::string& default_image() const { return options_.default_image; }

 protected:
  ImageStore(ImageStoreOptions options, store::Store* store)
      : options_(std::move(options)), store_(store) {}

 private:
  absl::Status Reconcile();
  // The digest `ref` names, if the caller may see it.
  absl::StatusOr<ImageRecord> Lookup(const Caller& caller, const std::string& ref);
  absl::StatusOr<ImageRecord> BuildLocked(const std::string& owner, const BuildRequest& request,
                                          const BuildContext& caller_ctx)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(build_mu_);
  absl::StatusOr<ImageRecord> EnsureBuiltin(const std::string& name, Progress* progress)
      ABSL_LOCKS_EXCLUDED(build_mu_);
  absl::StatusOr<std::string> PayloadHash();
  absl::Status EnsureKernel(const BuildContext& ctx);
  std::string DirOf(const std::string& digest) const;
  std::shared_ptr<void> Lease(const std::string& digest);

  const ImageStoreOptions options_;
  store::Store* const store_;
  absl::Mutex build_mu_;  // One build at a time.
  absl::Mutex mu_;
  std::optional<std::string> payload_hash_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> leases_ ABSL_GUARDED_BY(mu_);
};

// "name" -> "name:latest"; INVALID_ARGUMENT naming the rule otherwise.
absl::StatusOr<std::string> NormalizeImageName(const std::string& name);
// Whether `ref` is a digest reference ("sha256:<64 hex>").
bool IsDigestRef(const std::string& ref);

}  // namespace smolvm::image
