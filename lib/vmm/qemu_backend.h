// File: qemu_backend.h
//
// QemuHypervisor runs each VM as a daemonized qemu-system-x86_64 process
// controlled over QMP (qmp_client.h), with the command line built by
// qemu_argv.h. The guest agent's channel is the virtio-serial port
// org.smolvm.agent, whose host end is agent_socket_path().
#pragma once

#include <memory>
#include <string>

#include "lib/base/unique_fd.h"

#include "lib/vmm/hypervisor.h"
#include "lib/vmm/qemu_argv.h"
#include "lib/vmm/vm_cgroups.h"

namespace smolvm::vmm {

class QemuHypervisor : public Hypervisor {
 public:
  // Probes the QEMU binary (its version) and fails with FAILED_PRECONDITION
  // naming the package to install if it is missing. With confinement, also
  // opens the cgroup hierarchy (vm_cgroups.h) and checks the jail's mount
  // point.
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

  // "cgroup v1 under ..." / "unconfined", for the startup log.
  std::string DescribeConfinement() const;

 private:
  QemuHypervisor(QemuSettings settings, std::string version, std::string binary_path,
                 std::unique_ptr<VmCgroups> cgroups)
      : settings_(std::move(settings)), version_(std::move(version)),
        binary_path_(std::move(binary_path)), cgroups_(std::move(cgroups)) {}
  absl::StatusOr<int64_t> StartConfined(const LaunchSpec& spec);
  // Ends the VMM `pid` of `vm_id` (if it is still that VMM; pid 0: none)
  // and removes its cgroup.
  void EndVmm(int64_t pid, const std::string& vm_id);
  absl::StatusOr<int64_t> StartUnconfined(const LaunchSpec& spec);

  QemuSettings settings_;
  std::string version_;
  std::string binary_path_;  // Absolute: the jail has no PATH lookup.
  std::unique_ptr<VmCgroups> cgroups_;  // Null when unconfined.
};

// Opens the persistent TAP `name` for a VMM (IFF_VNET_HDR, as a restore's
// saved NIC requires).
absl::StatusOr<UniqueFd> OpenTap(const std::string& name);

// True if `pid` is a live (non-zombie) process whose command line carries
// `-name smolvm-<vm_id>`: the check that keeps us from signalling a pid that
// was reused by an unrelated process.
bool IsQemuOf(int64_t pid, const std::string& vm_id);

}  // namespace smolvm::vmm
