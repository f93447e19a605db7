#include "daemon/config.h"

#include <cstdlib>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"

namespace smolvm::daemon {
namespace {

void FromEnv(const char* name, std::string& field) {
  if (const char* v = std::getenv(name); v != nullptr && *v != '\0') field = v;
}

}  // namespace

absl::StatusOr<DaemonConfig> ParseConfig(int argc, char** argv, int* exit_code) {
  DaemonConfig c;
  FromEnv("SMOLVMD_SOCKET", c.socket_path);
  FromEnv("SMOLVMD_STATE_DIR", c.state_dir);
  FromEnv("SMOLVMD_RUN_DIR", c.run_dir);
  FromEnv("SMOLVMD_ACCELERATOR", c.accelerator);
  FromEnv("SMOLVMD_GUEST_RECIPE_DIR", c.guest_recipe_dir);
  FromEnv("SMOLVMD_GUEST_KERNEL_DIR", c.guest_kernel_dir);
  FromEnv("SMOLVMD_GUEST_AGENT", c.guest_agent);

  CLI::App app{"smolvmd: the microVM sandbox daemon"};
  app.add_option("--socket", c.socket_path, "Unix socket to serve the API on (env SMOLVMD_SOCKET)");
  app.add_option("--state-dir", c.state_dir, "Database, disks, snapshots, images (env SMOLVMD_STATE_DIR)");
  app.add_option("--run-dir", c.run_dir, "Runtime files and guest RAM; should be tmpfs (env SMOLVMD_RUN_DIR)");
  app.add_option("--accelerator", c.accelerator, "auto, kvm or tcg (env SMOLVMD_ACCELERATOR)")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  app.add_option("--machine", c.machine, "QEMU machine type");
  app.add_option("--qemu-binary", c.qemu_binary, "QEMU system emulator to run");
  app.add_option("--guest-recipe-dir", c.guest_recipe_dir,
                 "Directory with build-image.sh and fetch-kernel.sh (env SMOLVMD_GUEST_RECIPE_DIR)");
  app.add_option("--guest-kernel-dir", c.guest_kernel_dir,
                 "Extracted guest kernel; fetched from Debian's archive when missing "
                 "(env SMOLVMD_GUEST_KERNEL_DIR, default <state-dir>/kernel)");
  app.add_option("--guest-agent", c.guest_agent,
                 "Static smolvm-agent binary put into the default image (env SMOLVMD_GUEST_AGENT)");
  app.add_option("--boot-timeout-seconds", c.boot_timeout_seconds,
                 "How long a booting guest has to become ready")
      ->check(CLI::Range(1, 3600));
  app.add_option("--network", c.network, "Give VMs a NIC on the daemon's bridge (true/false)");
  app.add_option("--bridge", c.bridge, "Bridge device owned by smolvmd");
  app.add_option("--subnet", c.subnet, "IPv4 subnet of the VMs; the bridge gets the first address");
  app.add_option("--uplink", c.uplink,
                 "Device for NAT to the outside: auto (default route), none, or a name");
  app.add_option("--dns", c.dns, "Resolver for guests: auto (from /etc/resolv.conf), none, or an IPv4");
  app.add_option("--log-level", c.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = e.get_exit_code();
    std::string text = e.get_exit_code() == 0 ? app.help() : std::string(e.what());
    return absl::InvalidArgumentError(text);
  }
  if (c.guest_kernel_dir.empty()) c.guest_kernel_dir = JoinPath(c.state_dir, "kernel");
  return c;
}

absl::Status CheckConfig(const DaemonConfig& c) {
  for (const auto* dir : {&c.state_dir, &c.run_dir}) {
    if (dir->empty() || (*dir)[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "directory \"", *dir, "\" must be an absolute path"));
    }
    // QEMU option values are comma-separated: a comma would split them.
    if (dir->find(',') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "directory \"", *dir, "\" must not contain a comma"));
    }
  }
  // <run>/vms/<64-char id>/agent.sock must fit in sun_path (108 bytes).
  if (c.run_dir.size() + 5 + 64 + 12 >= 108) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--run-dir \"", c.run_dir, "\" is too long for Unix socket paths: use at most ",
        108 - 5 - 64 - 12 - 1, " characters"));
  }
  return absl::OkStatus();
}

}  // namespace smolvm::daemon
