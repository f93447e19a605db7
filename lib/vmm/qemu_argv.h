// File: qemu_argv.h
//
// Pure translation of a LaunchSpec into a QEMU command line, kept separate
// from process handling so it is unit-tested table-style. The device model is
// identical for cold boots and restores (a requirement of QEMU migration);
// only the RAM mapping and -incoming differ.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lib/vmm/hypervisor.h"

namespace smolvm::vmm {

// The id of the guest-RAM memory backend object; QEMU names the backend's
// RAM block after it, so it is also the block's idstr in migration streams.
inline constexpr char kRamBackendId[] = "ram";

struct QemuSettings {
  std::string binary = "qemu-system-x86_64";
  std::string accelerator = "tcg";  // "kvm" | "tcg"
  std::string machine = "q35";
  // Translation-block cache for TCG, in MiB; bounds QEMU's RSS per VM.
  int tcg_tb_size_mib = 64;
  // The guest console kept on disk per VM (console.log + console.log.1).
  uint64_t console_log_max_bytes = 4 << 20;
  // Confinement (issue 8; vmm_jail.h, vm_cgroups.h). Off only to measure
  // its cost (bench/) or to debug a VMM by hand.
  bool confine = true;
  // An empty directory the jail's root is mounted on (in the VMM's own
  // mount namespace only).
  std::string jail_mount_point;
  // cgroup filesystem and the parent group of the VMs' groups ("" = "smolvm"
  // on v1, the daemon's delegated cgroup on v2; see vm_cgroups.h).
  std::string cgroup_fs_root = "/sys/fs/cgroup";
  std::string cgroup_parent;
  // memory limit = guest RAM + this (QEMU itself, its TCG translation cache,
  // device buffers).
  uint64_t vmm_memory_overhead_mib = 256;
  uint64_t vmm_pids_max = 512;
  uint32_t vmm_io_weight = 100;
};

// The descriptor number of the VM's TAP inside a confined VMM (the daemon
// opens the TAP; QEMU never needs the privilege to).
inline constexpr int kTapFdInVmm = 3;

// Where a confined VMM sees host mount `tag` (inside its jail only).
std::string JailMountPath(const std::string& tag);

// Well-known files inside LaunchSpec::run_dir.
std::string QmpSocketPath(const std::string& run_dir);
std::string AgentSocketPath(const std::string& run_dir);
std::string ConsoleLogPath(const std::string& run_dir);
// QEMU serves the serial console here; ConsoleRecorder writes the log.
std::string ConsoleSocketPath(const std::string& run_dir);
std::string PidFilePath(const std::string& run_dir);
// QEMU's stderr (error reports, e.g. why a migration failed).
std::string VmmLogPath(const std::string& run_dir);

// The value of QEMU's -name, which also identifies the process in
// /proc/PID/cmdline when re-attaching.
std::string QemuProcessName(const std::string& vm_id);

// `mount_paths[i]` is where QEMU finds spec.mounts[i] (JailMountPath when
// confined); the default is JailMountPath of each.
std::vector<std::string> BuildQemuArgv(const QemuSettings& settings,
                                       const LaunchSpec& spec,
                                       const std::vector<std::string>& mount_paths = {});

}  // namespace smolvm::vmm
