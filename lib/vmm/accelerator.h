// File: accelerator.h
//
// Picks the accelerator QEMU runs guests with. "auto" chooses one that can
// actually run a stock guest kernel on this host and says why: KVM when
// /dev/kvm is usable and is a normal (not the nested paravirtual kvm_pvm)
// flavour, TCG otherwise. See DESIGN.md for the kvm_pvm measurements.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace smolvm::vmm {

struct AcceleratorChoice {
  std::string name;    // "kvm" | "tcg"
  std::string reason;  // One sentence for the startup log.
};

// `requested` is "auto", "kvm" or "tcg". Explicit "kvm" fails with
// FAILED_PRECONDITION when /dev/kvm cannot be used.
absl::StatusOr<AcceleratorChoice> ChooseAccelerator(
    const std::string& requested, const std::string& dev_kvm = "/dev/kvm",
    const std::string& sys_module_dir = "/sys/module");

}  // namespace smolvm::vmm
