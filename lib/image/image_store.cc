#include "lib/image/image_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <regex>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/image/guest_kernel.h"
#include "lib/image/host_paths.h"
#include "lib/model/validation.h"
#include "lib/store/store.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace smolvm::image {
namespace {

using Json = nlohmann::json;

constexpr char kDirPrefix[] = "sha256-";
constexpr char kDigestPrefix[] = "sha256:";
constexpr char kKernelFile[] = "vmlinuz";
constexpr char kInitrdFile[] = "initrd.img";
constexpr char kRootfsFile[] = "rootfs.ext4";
constexpr char kManifestFile[] = "manifest.json";
// Root disks of userlands others build on get room for packages by
// default (sparse: unused space costs nothing).
constexpr uint32_t kDefaultDiskMib = 1024;
constexpr uint32_t kMinimalDiskMib = 256;

// The recipes of the built-in names.
std::optional<ImageSource> BuiltinSource(const std::string& name) {
  ImageSource source;
  if (name == absl::StrCat(kMinimalImage, ":latest")) return source;
  if (name == absl::StrCat(kDebianPythonImage, ":latest")) {
    source.kind = ImageSource::Kind::kDebian;
    source.debian.packages = {"python3"};
    return source;
  }
  return std::nullopt;
}

Json SourceJson(const ImageSource& source) {
  Json j{{"kind", SourceKindName(source.kind)}};
  switch (source.kind) {
    case ImageSource::Kind::kMinimal:
      break;
    case ImageSource::Kind::kDebian:
      j["suite"] = source.debian.suite;
      j["packages"] = source.debian.packages;
      j["variant"] = source.debian.variant;
      break;
    case ImageSource::Kind::kOci:
      j["path"] = source.oci.path;
      j["reference"] = source.oci.reference;
      break;
    case ImageSource::Kind::kDirectory:
    case ImageSource::Kind::kTarball:
      j["path"] = source.path;
      break;
  }
  return j;
}

Json ManifestJson(const ImageManifest& m) {
  return Json{{"kernel_version", m.kernel_version},
              {"kernel_package", m.kernel_package},
              {"exec", {{"env", m.exec.env},
                        {"working_dir", m.exec.working_dir},
                        {"user", m.exec.user}}},
              {"disk_size_bytes", m.disk_size_bytes},
              {"build_ms", m.build_ms},
              {"payload_hash", m.payload_hash}};
}

absl::StatusOr<ImageManifest> ParseManifest(const std::string& text) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return absl::DataLossError("image manifest is not a JSON object");
  ImageManifest m;
  try {
    m.kernel_version = j.value("kernel_version", "");
    m.kernel_package = j.value("kernel_package", "");
    m.disk_size_bytes = j.value("disk_size_bytes", uint64_t{0});
    m.build_ms = j.value("build_ms", uint64_t{0});
    m.payload_hash = j.value("payload_hash", "");
    if (auto e = j.find("exec"); e != j.end() && e->is_object()) {
      m.exec.env = e->value("env", std::vector<std::string>{});
      m.exec.working_dir = e->value("working_dir", "");
      m.exec.user = e->value("user", "");
    }
  } catch (const Json::exception& e) {
    return absl::DataLossError(absl::StrCat("image manifest: ", e.what()));
  }
  return m;
}

bool Visible(const Caller& caller, const ImageRecord& image) {
  return image.owner.empty() || caller.CanAccess(image.owner);
}

// Whether the caller may change (delete, tag) the image.
absl::Status CheckOwner(const Caller& caller, const ImageRecord& image, const char* action) {
  if (image.owner.empty() ? caller.admin : caller.CanAccess(image.owner)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "only an admin", image.owner.empty() ? "" : " or the image's tenant", " may ", action,
      " image ", image.digest));
}

}  // namespace

const char* SourceKindName(ImageSource::Kind kind) {
  switch (kind) {
    case ImageSource::Kind::kMinimal:
      return "minimal";
    case ImageSource::Kind::kDebian:
      return "debian";
    case ImageSource::Kind::kOci:
      return "oci";
    case ImageSource::Kind::kDirectory:
      return "directory";
    case ImageSource::Kind::kTarball:
      return "tarball";
  }
  return "unknown";
}

std::string SourceKindOf(const ImageRecord& image) {
  Json j = Json::parse(image.source, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return "";
  auto it = j.find("kind");
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

absl::StatusOr<std::string> NormalizeImageName(const std::string& name) {
  static const std::regex kName("[a-z0-9][a-z0-9._-]{0,63}");
  static const std::regex kTag("[A-Za-z0-9._-]{1,64}");
  const size_t colon = name.find(':');
  const std::string base = name.substr(0, colon);
  const std::string tag = colon == std::string::npos ? "latest" : name.substr(colon + 1);
  if (!std::regex_match(base, kName) || !std::regex_match(tag, kTag) || base == "sha256") {
    return absl::InvalidArgumentError(absl::StrCat(
        "image name \"", name,
        "\" is invalid: use NAME or NAME:TAG, NAME 1-64 of [a-z0-9._-] starting with a "
        "letter or digit (not \"sha256\"), TAG 1-64 of [A-Za-z0-9._-]"));
  }
  return absl::StrCat(base, ":", tag);
}

bool IsDigestRef(const std::string& ref) {
  static const std::regex kDigest("sha256:[0-9a-f]{64}");
  return std::regex_match(ref, kDigest);
}

absl::StatusOr<std::unique_ptr<ImageStore>> ImageStore::Open(ImageStoreOptions options,
                                                             store::Store* store) {
  auto images = std::unique_ptr<ImageStore>(new ImageStore(std::move(options), store));
  SMOLVM_RETURN_IF_ERROR(images->Reconcile());
  return images;
}

std::string ImageStore::DirOf(const std::string& digest) const {
  return JoinPath(options_.images_dir, kDirPrefix + digest.substr(strlen(kDigestPrefix)));
}

absl::Status ImageStore::Reconcile() {
  const std::string tmp = JoinPath(options_.images_dir, "tmp");
  for (const auto& name : ListDirNames(tmp)) {
    spdlog::info("removing interrupted image build {}", name);
    SMOLVM_RETURN_IF_ERROR(RemoveTree(JoinPath(tmp, name)));
  }
  SMOLVM_RETURN_IF_ERROR(MakeDirs(tmp));
  // A kernel fetch a crash interrupted leaves "<kernel dir>.tmp-XXXXXX".
  if (!options_.kernel_dir.empty()) {
    const std::filesystem::path kernel(options_.kernel_dir);
    const std::string prefix = kernel.filename().string() + ".tmp-";
    for (const auto& name : ListDirNames(kernel.parent_path().string())) {
      if (!absl::StartsWith(name, prefix)) continue;
      spdlog::info("removing interrupted kernel fetch {}", name);
      SMOLVM_RETURN_IF_ERROR(RemoveTree(JoinPath(kernel.parent_path().string(), name)));
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(std::vector<ImageRecord> rows, store_->AllImages());
  std::set<std::string> recorded;
  for (const auto& image : rows) {
    recorded.insert(DirOf(image.digest));
    if (!PathExists(JoinPath(DirOf(image.digest), kRootfsFile))) {
      spdlog::error("image {} ({}): its files are missing; delete it and build it again",
                    image.digest, absl::StrJoin(image.names, ", "));
    }
  }
  for (const auto& name : ListDirNames(options_.images_dir)) {
    const std::string dir = JoinPath(options_.images_dir, name);
    if (!absl::StartsWith(name, kDirPrefix) || recorded.count(dir)) continue;
    // Renamed into place by a build whose row a crash kept from being written.
    spdlog::info("removing unrecorded image directory {}", name);
    SMOLVM_RETURN_IF_ERROR(RemoveTree(dir));
  }
  return absl::OkStatus();
}

absl::Status ImageStore::EnsureKernel(const BuildContext& ctx) {
  if (PathExists(JoinPath(options_.kernel_dir, kKernelFile))) return absl::OkStatus();
  ctx.Report("kernel: fetching Debian's cloud kernel");
  KernelFetchOptions fetch;
  fetch.dest_dir = options_.kernel_dir;
  auto fetched = FetchKernel(fetch, ctx);
  if (!fetched.ok()) {
    return absl::Status(fetched.status().code(),
                        absl::StrCat("fetch the guest kernel into ", options_.kernel_dir, ": ",
                                     fetched.status().message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ImageStore::PayloadHash() {
  {
    absl::MutexLock lock(&mu_);
    if (payload_hash_) return *payload_hash_;
  }
  std::vector<std::string> inputs = {
      options_.payload.busybox_path,
      JoinPath(options_.payload.recipe_dir, "rootfs-init.sh"),
      JoinPath(options_.payload.recipe_dir, "initramfs-init.sh"),
      JoinPath(options_.kernel_dir, kKernelFile)};
  if (!options_.payload.agent_path.empty()) inputs.push_back(options_.payload.agent_path);
  std::string all;
  for (const auto& path : inputs) {
    SMOLVM_ASSIGN_OR_RETURN(std::string h, Sha256OfFile(path));
    absl::StrAppend(&all, h, "\n");
  }
  const std::string hash = Sha256OfString(all);
  absl::MutexLock lock(&mu_);
  payload_hash_ = hash;
  return hash;
}

absl::StatusOr<ImageRecord> ImageStore::Build(const Caller& caller, const BuildRequest& request,
                                              const BuildContext& ctx) {
  if (!request.kernel_deb.empty() && !caller.admin) {
    return absl::PermissionDeniedError(
        "booting an image on a kernel package from a host path (kernel_deb) needs an admin");
  }
  if (request.source.kind != ImageSource::Kind::kMinimal &&
      request.source.kind != ImageSource::Kind::kDebian && !caller.admin) {
    return absl::PermissionDeniedError(absl::StrCat(
        "building an image from a host path (", SourceKindName(request.source.kind),
        ") needs an admin: ask the operator to build it and share its name"));
  }
  SMOLVM_ASSIGN_OR_RETURN(std::string name, NormalizeImageName(request.name));
  if (BuiltinSource(name) && !caller.admin) {
    return absl::PermissionDeniedError(
        absl::StrCat("\"", name, "\" is a built-in image name; choose another name"));
  }
  absl::MutexLock build(&build_mu_);
  BuildRequest normalized = request;
  normalized.name = name;
  return BuildLocked(caller.admin ? "" : caller.tenant, normalized, ctx);
}

absl::StatusOr<ImageRecord> ImageStore::BuildLocked(const std::string& owner,
                                                    const BuildRequest& request,
                                                    const BuildContext& caller_ctx) {
  if (auto taken = store_->ResolveImageName(request.name); taken.ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "image name \"", request.name,
        "\" is already taken: choose another name, or delete that image first"));
  } else if (!absl::IsNotFound(taken.status())) {
    return taken.status();
  }
  const absl::Time started = absl::Now();
  BuildContext ctx = caller_ctx;
  ctx.download_netns = options_.build_netns;
  SMOLVM_RETURN_IF_ERROR(EnsureKernel(ctx));
  SMOLVM_RETURN_IF_ERROR(CheckPayload(options_.payload));
  SMOLVM_ASSIGN_OR_RETURN(std::string payload_hash, PayloadHash());

  const std::string tmp = JoinPath(options_.images_dir, "tmp");
  SMOLVM_RETURN_IF_ERROR(MakeDirs(tmp));
  const std::string staging = JoinPath(tmp, GenerateId("build"));
  SMOLVM_RETURN_IF_ERROR(MakeDirs(staging));
  absl::Cleanup remove_staging = [&] { (void)RemoveTree(staging); };
  const std::string rootfs = JoinPath(staging, "rootfs");
  SMOLVM_RETURN_IF_ERROR(MakeDirs(rootfs, 0755));

  // The daemon's kernel, or the admin's package unpacked into the staging
  // dir (and removed with it: only vmlinuz and the initramfs are kept).
  std::string kernel_dir = options_.kernel_dir;
  if (!request.kernel_deb.empty()) {
    KernelFetchOptions fetch;
    fetch.dest_dir = kernel_dir = JoinPath(staging, "kernel");
    fetch.deb_path = request.kernel_deb;
    SMOLVM_RETURN_IF_ERROR(FetchKernel(fetch, ctx).status());
  }
  SMOLVM_ASSIGN_OR_RETURN(KernelInfo kernel, ReadKernelDir(kernel_dir));
  const std::string& kernel_version = kernel.kernel_version;
  ImageManifest manifest;
  manifest.kernel_version = kernel_version;
  manifest.kernel_package = kernel.package_version;
  manifest.payload_hash = payload_hash;
  const ImageSource& source = request.source;
  uint32_t min_disk_mib = kDefaultDiskMib;
  ctx.Report(absl::StrCat("userland: ", SourceKindName(source.kind)));
  switch (source.kind) {
    case ImageSource::Kind::kMinimal:
      min_disk_mib = kMinimalDiskMib;
      SMOLVM_RETURN_IF_ERROR(BuildMinimalRootfs(options_.payload, rootfs, kernel_version));
      break;
    case ImageSource::Kind::kDebian:
      SMOLVM_RETURN_IF_ERROR(BuildDebianRootfs(
          source.debian, rootfs, options_.package_cache_dir, ctx));
      break;
    case ImageSource::Kind::kOci: {
      SMOLVM_ASSIGN_OR_RETURN(manifest.exec, UnpackOciRootfs(source.oci, rootfs, ctx));
      break;
    }
    case ImageSource::Kind::kDirectory:
      SMOLVM_RETURN_IF_ERROR(CopyDirectoryRootfs(source.path, rootfs, ctx));
      break;
    case ImageSource::Kind::kTarball:
      SMOLVM_RETURN_IF_ERROR(UnpackRootfsTarball(source.path, rootfs, ctx));
      break;
  }
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");
  ctx.Report("payload: init, agent, busybox");
  SMOLVM_RETURN_IF_ERROR(InjectPayload(options_.payload, rootfs));
  ctx.Report("kernel and initramfs");
  SMOLVM_RETURN_IF_ERROR(
      SparseCopyFile(JoinPath(kernel_dir, kKernelFile), JoinPath(staging, kKernelFile)));
  SMOLVM_RETURN_IF_ERROR(
      BuildInitrd(options_.payload, kernel_dir, JoinPath(staging, kInitrdFile), ctx));
  if (kernel_dir != options_.kernel_dir) SMOLVM_RETURN_IF_ERROR(RemoveTree(kernel_dir));
  ctx.Report("root disk (ext4)");
  SMOLVM_ASSIGN_OR_RETURN(
      manifest.disk_size_bytes,
      MakeExt4(rootfs, JoinPath(staging, kRootfsFile),
               std::max(min_disk_mib, request.min_disk_mib), ctx));
  SMOLVM_RETURN_IF_ERROR(RemoveTree(rootfs));
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");

  ctx.Report("digest");
  std::string hashes;
  for (const char* file : {kKernelFile, kInitrdFile, kRootfsFile}) {
    SMOLVM_ASSIGN_OR_RETURN(std::string h, Sha256OfFile(JoinPath(staging, file)));
    absl::StrAppend(&hashes, file, " ", h, "\n");
  }
  // A tenant's image is addressed by its content and its owner: the same
  // content built by two tenants is two images, so neither can see, keep or
  // delete the other's (and a build learns nothing of other tenants' images).
  if (!owner.empty()) absl::StrAppend(&hashes, "owner ", owner, "\n");
  SMOLVM_RETURN_IF_ERROR(WriteFileAtomic(JoinPath(staging, "SHA256SUMS"), hashes, 0644));
  const std::string hex = Sha256OfString(hashes);
  manifest.build_ms = static_cast<uint64_t>(absl::ToInt64Milliseconds(absl::Now() - started));
  SMOLVM_ASSIGN_OR_RETURN(std::string manifest_text, [&]() -> absl::StatusOr<std::string> {
    try {
      return ManifestJson(manifest).dump(2);
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(
          absl::StrCat("the image's config is not valid UTF-8: ", e.what()));
    }
  }());
  SMOLVM_RETURN_IF_ERROR(
      WriteFileAtomic(JoinPath(staging, kManifestFile), manifest_text, 0644));

  ImageRecord record;
  record.digest = kDigestPrefix + hex;
  record.owner = owner;
  record.source = SourceJson(source).dump();
  record.manifest = manifest_text;
  // At the store's precision (microseconds), so what Build returns equals
  // what Get and List read back.
  record.created_at = absl::FromUnixMicros(absl::ToUnixMicros(absl::Now()));
  const std::string final_dir = DirOf(record.digest);
  if (auto existing = store_->GetImage(record.digest); existing.ok()) {
    // Built before (builds are deterministic): the new name joins it.
    SMOLVM_RETURN_IF_ERROR(store_->AddImageName(request.name, record.digest));
    spdlog::info("image {} rebuilt identically; named {} too", record.digest, request.name);
    return store_->GetImage(record.digest);
  } else if (!absl::IsNotFound(existing.status())) {
    return existing.status();
  }
  // A directory without a row: what a crash between the two leaves.
  if (PathExists(final_dir)) SMOLVM_RETURN_IF_ERROR(RemoveTree(final_dir));
  // Read-only templates, readable by the unprivileged VMM uids (the jail
  // binds the kernel and initrd by path; directories above stay 0700).
  for (const char* file : {kKernelFile, kInitrdFile, kRootfsFile, kManifestFile}) {
    if (chmod(JoinPath(staging, file).c_str(), 0444) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", JoinPath(staging, file)));
    }
  }
  SMOLVM_RETURN_IF_ERROR(SyncPath(staging));
  if (rename(staging.c_str(), final_dir.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", staging, " to ", final_dir));
  }
  std::move(remove_staging).Cancel();
  (void)SyncPath(options_.images_dir);
  for (const char* file : {kKernelFile, kInitrdFile, kRootfsFile, kManifestFile}) {
    if (auto bytes = AllocatedBytes(JoinPath(final_dir, file)); bytes.ok()) {
      record.size_bytes += *bytes;
    }
  }
  if (auto inserted = store_->InsertImage(record, request.name); !inserted.ok()) {
    (void)RemoveTree(final_dir);
    return inserted;
  }
  record.names = {request.name};
  spdlog::info("image {} built as {} in {} ms ({} MiB on disk)", record.digest, request.name,
               manifest.build_ms, record.size_bytes >> 20);
  return record;
}

absl::StatusOr<ImageRecord> ImageStore::EnsureBuiltin(const std::string& name,
                                                      Progress* progress) {
  std::optional<ImageSource> source = BuiltinSource(name);
  auto current = [&]() -> absl::StatusOr<std::optional<ImageRecord>> {
    auto digest = store_->ResolveImageName(name);
    if (absl::IsNotFound(digest.status())) return std::nullopt;
    SMOLVM_RETURN_IF_ERROR(digest.status());
    SMOLVM_ASSIGN_OR_RETURN(ImageRecord image, store_->GetImage(*digest));
    if (image.owner.empty() && source) {
      // A built-in follows the daemon's payload: an image with an older
      // agent or init is replaced (VMs made from it keep their copy).
      SMOLVM_ASSIGN_OR_RETURN(ImageManifest manifest, ParseManifest(image.manifest));
      SMOLVM_ASSIGN_OR_RETURN(std::string payload, PayloadHash());
      if (manifest.payload_hash != payload) return std::nullopt;
    }
    return image;
  };
  SMOLVM_ASSIGN_OR_RETURN(std::optional<ImageRecord> found, current());
  if (found) return *found;
  if (!source) return absl::NotFoundError(absl::StrCat("image \"", name, "\" not found"));
  ReportStage(progress, absl::StrCat("building image ", name, " (first use)"));
  absl::MutexLock build(&build_mu_);
  SMOLVM_ASSIGN_OR_RETURN(found, current());  // Built while we waited.
  if (found) return *found;
  if (auto stale = store_->ResolveImageName(name); stale.ok()) {
    spdlog::info("built-in image {} ({}) has an older guest payload; rebuilding it", name,
                 *stale);
    SMOLVM_RETURN_IF_ERROR(store_->RemoveImageName(name));
  }
  spdlog::info("building built-in image {} (first use)", name);
  BuildContext ctx;
  std::string last_step;
  ctx.progress = [&](const std::string& step, uint64_t bytes) {
    // Steps report again as their bytes grow: logged and staged once each.
    if (step == last_step) {
      ReportDone(progress, bytes);
      return;
    }
    last_step = step;
    spdlog::info("image {}: {}", name, step);
    ReportStage(progress, absl::StrCat("building image ", name, ": ", step), 0,
                bytes > 0 ? "bytes" : "");
    ReportDone(progress, bytes);
  };
  BuildRequest request;
  request.name = name;
  request.source = *source;
  return BuildLocked("", request, ctx);
}

absl::StatusOr<ImageRecord> ImageStore::Lookup(const Caller& caller, const std::string& ref) {
  std::string digest = ref;
  if (!IsDigestRef(ref)) {
    SMOLVM_ASSIGN_OR_RETURN(std::string name, NormalizeImageName(ref));
    auto resolved = store_->ResolveImageName(name);
    if (absl::IsNotFound(resolved.status())) {
      return absl::NotFoundError(absl::StrCat(
          "image \"", name, "\" not found: list images with `smolvmctl image list`, or build it"));
    }
    SMOLVM_RETURN_IF_ERROR(resolved.status());
    digest = *resolved;
  }
  auto image = store_->GetImage(digest);
  if (image.ok() && !Visible(caller, *image)) {
    return absl::NotFoundError(absl::StrCat("image \"", ref, "\" not found"));
  }
  return image;
}

std::shared_ptr<void> ImageStore::Lease(const std::string& digest) {
  absl::MutexLock lock(&mu_);
  ++leases_[digest];
  return std::shared_ptr<void>(nullptr, [this, digest](void*) {
    absl::MutexLock lock(&mu_);
    if (--leases_[digest] == 0) leases_.erase(digest);
  });
}

absl::StatusOr<ResolvedImage> ImageStore::Resolve(const Caller& caller, const std::string& ref,
                                                  Progress* progress) {
  const std::string wanted = ref.empty() ? options_.default_image : ref;
  if (!IsDigestRef(wanted)) {
    SMOLVM_ASSIGN_OR_RETURN(std::string name, NormalizeImageName(wanted));
    if (BuiltinSource(name)) {
      auto built = EnsureBuiltin(name, progress);
      if (!built.ok()) {
        return absl::Status(built.status().code(),
                            absl::StrCat("build the built-in image \"", name,
                                         "\": ", built.status().message()));
      }
    }
  }
  ResolvedImage out;
  SMOLVM_ASSIGN_OR_RETURN(out.record, Lookup(caller, wanted));
  out.lease = Lease(out.record.digest);
  SMOLVM_ASSIGN_OR_RETURN(out.manifest, ParseManifest(out.record.manifest));
  const std::string dir = DirOf(out.record.digest);
  out.kernel_path = JoinPath(dir, kKernelFile);
  out.initrd_path = JoinPath(dir, kInitrdFile);
  out.rootfs_path = JoinPath(dir, kRootfsFile);
  for (const auto& f : {out.kernel_path, out.initrd_path, out.rootfs_path}) {
    if (!PathExists(f)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "image ", out.record.digest, " lacks ", f, ": delete the image and build it again"));
    }
  }
  return out;
}

absl::StatusOr<std::vector<ImageRecord>> ImageStore::List(const Caller& caller) {
  SMOLVM_ASSIGN_OR_RETURN(std::vector<ImageRecord> all, store_->AllImages());
  std::erase_if(all, [&](const ImageRecord& image) { return !Visible(caller, image); });
  return all;
}

absl::StatusOr<ImageRecord> ImageStore::Get(const Caller& caller, const std::string& ref) {
  return Lookup(caller, ref);
}

absl::StatusOr<ImageManifest> ImageStore::ManifestOf(const ImageRecord& image) {
  return ParseManifest(image.manifest);
}

absl::StatusOr<std::vector<std::string>> ImageStore::UsersOf(const std::string& digest) {
  std::vector<std::string> users;
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> vms, store_->AllVms());
  for (const auto& vm : vms) {
    if (vm.config.image_digest == digest) users.push_back("vm:" + vm.vm_id);
  }
  SMOLVM_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> snaps, store_->AllSnapshots());
  for (const auto& snap : snaps) {
    if (snap.vm_config.image_digest == digest) users.push_back("snapshot:" + snap.snapshot_id);
  }
  return users;
}

absl::StatusOr<bool> ImageStore::Delete(const Caller& caller, const std::string& ref) {
  SMOLVM_ASSIGN_OR_RETURN(ImageRecord image, Lookup(caller, ref));
  SMOLVM_RETURN_IF_ERROR(CheckOwner(caller, image, "delete"));
  if (!IsDigestRef(ref) && image.names.size() > 1) {
    SMOLVM_ASSIGN_OR_RETURN(std::string name, NormalizeImageName(ref));
    SMOLVM_RETURN_IF_ERROR(store_->RemoveImageName(name));
    return false;
  }
  // Hold the lease table while checking users and deleting, so no create
  // can start using the image in between (it takes a lease first, and
  // records the VM before giving the lease back).
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> users, UsersOf(image.digest));
  if (leases_.count(image.digest)) users.push_back("a VM being created");
  if (!users.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "image ", image.digest, " (", absl::StrJoin(image.names, ", "), ") is in use by ",
        absl::StrJoin(users, ", "), ": delete those first"));
  }
  SMOLVM_RETURN_IF_ERROR(store_->DeleteImage(image.digest));
  if (auto removed = RemoveTree(DirOf(image.digest)); !removed.ok()) {
    // The row is gone: the next start removes the unrecorded directory.
    spdlog::warn("image {}: {}", image.digest, std::string(removed.message()));
  }
  return true;
}

absl::StatusOr<ImageRecord> ImageStore::Tag(const Caller& caller, const std::string& ref,
                                            const std::string& name) {
  SMOLVM_ASSIGN_OR_RETURN(ImageRecord image, Lookup(caller, ref));
  SMOLVM_RETURN_IF_ERROR(CheckOwner(caller, image, "tag"));
  SMOLVM_ASSIGN_OR_RETURN(std::string normalized, NormalizeImageName(name));
  if (BuiltinSource(normalized) && !caller.admin) {
    return absl::PermissionDeniedError(
        absl::StrCat("\"", normalized, "\" is a built-in image name; choose another name"));
  }
  SMOLVM_RETURN_IF_ERROR(store_->AddImageName(normalized, image.digest));
  return store_->GetImage(image.digest);
}

}  // namespace smolvm::image
