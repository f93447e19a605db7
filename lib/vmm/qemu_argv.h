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

struct QemuSettings {
  std::string binary = "qemu-system-x86_64";
  std::string accelerator = "tcg";  // "kvm" | "tcg"
  std::string machine = "q35";
  // Translation-block cache for TCG, in MiB; bounds QEMU's RSS per VM.
  int tcg_tb_size_mib = 64;
  // The guest console kept on disk per VM (console.log + console.log.1).
  uint64_t console_log_max_bytes = 4 << 20;
};

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

std::vector<std::string> BuildQemuArgv(const QemuSettings& settings,
                                       const LaunchSpec& spec);

}  // namespace smolvm::vmm
