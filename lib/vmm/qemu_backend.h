// File: qemu_backend.h
//
// QemuHypervisor runs each VM as a daemonized qemu-system-x86_64 process
// controlled over QMP (qmp_client.h), with the command line built by
// qemu_argv.h. The guest agent's channel is the virtio-serial port
// org.smolvm.agent, whose host end is agent_socket_path().
#pragma once

#include <memory>
#include <string>

#include "lib/vmm/hypervisor.h"
#include "lib/vmm/qemu_argv.h"

namespace smolvm::vmm {

class QemuHypervisor : public Hypervisor {
 public:
  // Probes the QEMU binary (its version) and fails with FAILED_PRECONDITION
  // naming the package to install if it is missing.
  static absl::StatusOr<std::unique_ptr<QemuHypervisor>> Create(
      QemuSettings settings);

  std::string name() const override { return "qemu"; }
  std::string accelerator() const override { return settings_.accelerator; }
  std::string version() const override { return version_; }
  absl::StatusOr<std::unique_ptr<VmInstance>> Launch(
      const LaunchSpec& spec) override;
  absl::StatusOr<std::unique_ptr<VmInstance>> Attach(
      const std::string& vm_id, int64_t pid, const std::string& run_dir) override;
  void EndStrayProcess(const std::string& vm_id, const std::string& run_dir) override;

 private:
  QemuHypervisor(QemuSettings settings, std::string version)
      : settings_(std::move(settings)), version_(std::move(version)) {}
  QemuSettings settings_;
  std::string version_;
};

// True if `pid` is a live (non-zombie) process whose command line carries
// `-name smolvm-<vm_id>`: the check that keeps us from signalling a pid that
// was reused by an unrelated process.
bool IsQemuOf(int64_t pid, const std::string& vm_id);

}  // namespace smolvm::vmm
