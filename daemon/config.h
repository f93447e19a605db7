// File: config.h
//
// smolvmd's settings: command-line flags, each with an environment variable
// fallback (flag > environment > default).
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace smolvm::daemon {

struct DaemonConfig {
  std::string socket_path = "/run/smolvmd/smolvmd.sock";  // SMOLVMD_SOCKET
  std::string state_dir = "/var/lib/smolvmd";             // SMOLVMD_STATE_DIR
  std::string run_dir = "/run/smolvmd";                   // SMOLVMD_RUN_DIR
  std::string accelerator = "auto";                       // SMOLVMD_ACCELERATOR
  std::string machine = "q35";
  std::string qemu_binary = "qemu-system-x86_64";
  std::string guest_recipe_dir;  // SMOLVMD_GUEST_RECIPE_DIR; "" = built-in
  std::string guest_kernel_dir;  // SMOLVMD_GUEST_KERNEL_DIR; "" = <state>/kernel
  std::string guest_agent;       // SMOLVMD_GUEST_AGENT; "" = built-in
  int boot_timeout_seconds = 120;
  // Networking (flags only): bridge, subnet, uplink ("auto" = the default
  // route's device, "none" = no NAT), dns ("auto" = the host's first
  // non-loopback resolver, "none").
  bool network = true;
  std::string bridge = "smolvm0";
  std::string subnet = "10.200.0.0/24";
  std::string uplink = "auto";
  std::string dns = "auto";
  std::string log_level = "info";
};

// Parses argv; returns the exit code to use when parsing ends the program
// (--help, bad flags) as an error with the text to print.
absl::StatusOr<DaemonConfig> ParseConfig(int argc, char** argv, int* exit_code);

// Refuses settings that cannot work, with the fix in the message.
absl::Status CheckConfig(const DaemonConfig& config);

}  // namespace smolvm::daemon
