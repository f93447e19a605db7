#include "lib/vmm/accelerator.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"

namespace smolvm::vmm {
namespace {

// Returns "" if /dev/kvm answers KVM_GET_API_VERSION, else why not.
std::string KvmUnusableReason(const std::string& dev_kvm) {
  UniqueFd fd(open(dev_kvm.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return absl::StrCat("cannot open ", dev_kvm, ": ", strerror(errno));
  int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return absl::StrCat(dev_kvm, " reports API version ", version, ", expected ",
                        KVM_API_VERSION);
  }
  return "";
}

}  // namespace

absl::StatusOr<AcceleratorChoice> ChooseAccelerator(
    const std::string& requested, const std::string& dev_kvm,
    const std::string& sys_module_dir) {
  if (requested == "tcg") return AcceleratorChoice{"tcg", "requested explicitly"};
  if (requested != "kvm" && requested != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "accelerator \"", requested, "\" is not supported: use auto, kvm or tcg"));
  }
  std::string unusable = KvmUnusableReason(dev_kvm);
  if (requested == "kvm") {
    if (!unusable.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "accelerator kvm requested but ", unusable,
          ": load the kvm module, pass /dev/kvm in, or use --accelerator=auto"));
    }
    return AcceleratorChoice{"kvm", "requested explicitly"};
  }
  if (!unusable.empty()) {
    return AcceleratorChoice{"tcg", absl::StrCat("KVM is unavailable (", unusable, ")")};
  }
  // kvm_pvm is a nested paravirtual KVM that cannot run a stock guest kernel
  // at a useful speed (measured: <1 MB/s early memset, no console after 20
  // minutes), so it must not be picked even though /dev/kvm answers.
  if (PathExists(JoinPath(sys_module_dir, "kvm_pvm"))) {
    return AcceleratorChoice{
        "tcg", "/dev/kvm is the nested paravirtual kvm_pvm flavour, which "
               "cannot run stock guest kernels; using software emulation"};
  }
  return AcceleratorChoice{"kvm", absl::StrCat(dev_kvm, " is usable")};
}

}  // namespace smolvm::vmm
