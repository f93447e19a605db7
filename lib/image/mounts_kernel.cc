// ImageStore::MountsKernel: the guest kernel of VMs with host mounts.
//
// The cloud kernel every image carries has no 9p (CONFIG_NET_9P unset);
// Debian's generic flavour of the same version has it as modules. It is
// fetched beside the cloud kernel (its own kernel directory) and paired with
// an initramfs that loads its modules; both are copied, once per (kernel
// package, initramfs payload), into a directory of their own that VMs name
// in their config, so a later kernel update never changes what an existing
// VM boots. Measurements and the choice: docs/decisions.md, "Host mounts".
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/unique_fd.h"
#include "lib/image/guest_kernel.h"
#include "lib/image/guest_payload.h"
#include "lib/image/host_paths.h"
#include "lib/image/image_store.h"
#include "spdlog/spdlog.h"

namespace smolvm::image {
namespace {

// The XZ stream's magic (the bzImage payload of an XZ-compressed kernel).
constexpr char kXzMagic[] = "\xFD" "7zXZ";

// Writes the kernel `vmlinuz` boots as the plain ELF `out` (QEMU boots it
// through its PVH note, skipping the decompression); returns false (and
// leaves nothing) when the payload is not XZ or does not unpack to an ELF.
bool ExtractVmlinux(const std::string& vmlinuz, const std::string& out) {
  auto image = ReadFileToString(vmlinuz, 256 << 20);
  if (!image.ok()) return false;
  const size_t at = image->find(std::string(kXzMagic, 6));
  if (at == std::string::npos) return false;
  const std::string xz = out + ".xz";
  if (!WriteFileAtomic(xz, image->substr(at), 0644).ok()) return false;
  SubprocessOptions options;
  options.timeout = absl::Minutes(2);
  // --single-stream: the bzImage's trailer after the stream is ignored.
  auto r = RunSubprocess({"xz", "-d", "-q", "--single-stream", "--", xz}, options);
  unlink(xz.c_str());
  char head[4] = {};
  UniqueFd fd(open(out.c_str(), O_RDONLY | O_CLOEXEC));
  const bool elf =
      fd.valid() && pread(fd.get(), head, 4, 0) == 4 && memcmp(head, "\177ELF", 4) == 0;
  if (!r.ok() || r->exit_code != 0 || !elf) {
    unlink(out.c_str());
    return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<KernelFiles> ImageStore::MountsKernel(Progress* progress) {
  if (options_.mounts_kernel_dir.empty() || options_.mounts_boot_dir.empty()) {
    return absl::FailedPreconditionError(
        "this daemon has no guest kernel for host mounts (mounts_kernel_dir unset)");
  }
  absl::MutexLock build(&build_mu_);
  BuildContext ctx;
  ctx.progress = [&](const std::string& step, uint64_t) {
    spdlog::info("mounts kernel: {}", step);
    ReportStage(progress, absl::StrCat("guest kernel for host mounts: ", step));
  };
  if (!PathExists(JoinPath(options_.mounts_kernel_dir, "vmlinuz"))) {
    KernelFetchOptions fetch;
    fetch.dest_dir = options_.mounts_kernel_dir;
    fetch.meta_package = kMountsKernelMeta;
    auto fetched = FetchKernel(fetch, ctx);
    if (!fetched.ok()) {
      return absl::Status(fetched.status().code(),
                          absl::StrCat("fetch the guest kernel for host mounts into ",
                                       options_.mounts_kernel_dir, ": ",
                                       fetched.status().message()));
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(KernelInfo info, ReadKernelDir(options_.mounts_kernel_dir));
  // What the initramfs is made of: the kernel's modules (by package), busybox
  // and the initramfs script.
  std::string inputs = info.package_version + "\n";
  for (const std::string& path :
       {options_.payload.busybox_path,
        JoinPath(options_.payload.recipe_dir, "initramfs-init.sh"),
        JoinPath(options_.mounts_kernel_dir, "vmlinuz")}) {
    SMOLVM_ASSIGN_OR_RETURN(std::string h, Sha256OfFile(path));
    absl::StrAppend(&inputs, h, "\n");
  }
  const std::string dir =
      JoinPath(options_.mounts_boot_dir, "sha256-" + Sha256OfString(inputs));
  KernelFiles files{JoinPath(dir, "vmlinux"), JoinPath(dir, "initrd.img")};
  if (PathExists(files.initrd_path)) {
    if (!PathExists(files.kernel_path)) files.kernel_path = JoinPath(dir, "vmlinuz");
    return files;
  }

  SMOLVM_RETURN_IF_ERROR(MakeDirs(options_.mounts_boot_dir));
  const std::string staging = dir + ".tmp";
  (void)RemoveTree(staging);
  SMOLVM_RETURN_IF_ERROR(MakeDirs(staging, 0755));
  absl::Cleanup remove_staging = [&] { (void)RemoveTree(staging); };
  const std::string vmlinuz = JoinPath(options_.mounts_kernel_dir, "vmlinuz");
  if (!ExtractVmlinux(vmlinuz, JoinPath(staging, "vmlinux"))) {
    // Not XZ (or no xz tool): the bzImage, slower to boot.
    spdlog::warn("mounts kernel: cannot extract an uncompressed kernel from {}; booting the "
                 "bzImage (slower)", vmlinuz);
    SMOLVM_RETURN_IF_ERROR(SparseCopyFile(vmlinuz, JoinPath(staging, "vmlinuz")));
    files.kernel_path = JoinPath(dir, "vmlinuz");
  }
  SMOLVM_RETURN_IF_ERROR(BuildInitrd(options_.payload, options_.mounts_kernel_dir,
                                     JoinPath(staging, "initrd.img"), ctx));
  SMOLVM_RETURN_IF_ERROR(SyncPath(staging));
  if (rename(staging.c_str(), dir.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", staging, " to ", dir));
  }
  std::move(remove_staging).Cancel();
  (void)SyncPath(options_.mounts_boot_dir);
  spdlog::info("guest kernel for host mounts: {} ({}) in {}", info.package_version,
               info.kernel_version, dir);
  return files;
}

}  // namespace smolvm::image
