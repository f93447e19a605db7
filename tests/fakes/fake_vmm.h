// File: fake_vmm.h
//
// FAKE vmm::Hypervisor for unit tests of lib/core: "VMM processes" are
// entries in a FakeHost. It keeps the real backend's contract where the
// core depends on it: a cold boot creates the shared RAM file at mem_path,
// a restore needs the device-state file and starts paused, a save leaves
// the VM "postmigrate", Attach finds only a live process of that VM, and a
// handle's destruction leaves the process running.
#pragma once

#include <memory>
#include <string>

#include "lib/vmm/hypervisor.h"
#include "tests/fakes/fake_host.h"

namespace smolvm::fakes {

class FakeHypervisor : public vmm::Hypervisor {
 public:
  explicit FakeHypervisor(FakeHost* host) : host_(host) {}
  std::string name() const override { return "fake"; }
  std::string accelerator() const override { return "tcg"; }
  std::string version() const override { return "fake 1.0"; }
  absl::StatusOr<std::unique_ptr<vmm::VmInstance>> Launch(const vmm::LaunchSpec& spec) override;
  absl::StatusOr<std::unique_ptr<vmm::VmInstance>> Attach(const std::string& vm_id,
                                                          int64_t pid,
                                                          const std::string& run_dir) override;
  void EndStrayProcess(const std::string& vm_id, const std::string& run_dir) override;

 private:
  FakeHost* const host_;
};

}  // namespace smolvm::fakes
