// File: config.h
//
// smolvmd's settings: command-line flags, environment variables and the
// configuration file (/etc/smolvmd/smolvmd.toml; daemon/config_file.h).
// Precedence: flag > environment > file > default.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/model/policy.h"
#include "lib/model/tenant.h"

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
  // The generic kernel of VMs with host mounts (SMOLVMD_MOUNTS_KERNEL_DIR;
  // "" = <state>/kernel-mounts).
  std::string mounts_kernel_dir;
  std::string guest_agent;       // SMOLVMD_GUEST_AGENT; "" = built-in
  // The image of VMs that name none (SMOLVMD_DEFAULT_IMAGE).
  std::string default_image = "debian-python";
  // Debian packages kept across image builds (SMOLVMD_PACKAGE_CACHE_DIR;
  // "" = <state>/images/cache/debs).
  std::string package_cache_dir;
  // Network namespace (a path such as /proc/1/ns/net or /run/netns/NAME)
  // in which image builds download packages (SMOLVMD_IMAGE_BUILD_NETNS;
  // "" = the daemon's own), for a daemon whose own namespace has no route
  // to the Debian archive.
  std::string image_build_netns;
  int boot_timeout_seconds = 120;
  // Clones ForkSnapshot restores at once (0 = the number of cores).
  int fork_parallelism = 0;
  // Guest console kept per VM (console.log + console.log.1), in bytes.
  int64_t console_log_max_bytes = 4 << 20;
  // Events the journal keeps (EventService; the oldest are dropped).
  int64_t max_events = 100000;
  // Long calls (execs, streams, watches, waits) a tenant may hold open at
  // once; admins are not limited (0: no limit).
  int max_streams_per_tenant = 64;
  // Networking (flags or [network]): bridge, subnet, uplink ("auto" = the default
  // route's device, "none" = no NAT), dns ("auto" = the host's first
  // non-loopback resolver, "none").
  bool network = true;
  std::string bridge = "smolvm0";
  std::string subnet = "10.200.0.0/24";
  std::string uplink = "auto";
  std::string dns = "auto";
  std::string log_level = "info";
  // Several daemons on one host (different state dirs): each needs its own
  // instance name ([a-z0-9]{1,8}; "" = the default instance). It names the
  // nftables table (smolvmd_NAME) and, unless set explicitly, the bridge
  // and the cgroup parent (smolvm-NAME). Each daemon touches only its own.
  std::string instance;

  // Access (issue 7). The configuration file; "" = /etc/smolvmd/smolvmd.toml
  // if it exists, else none. SMOLVMD_CONFIG.
  std::string config_file;
  // Members of socket_group may connect to the Unix socket (0660
  // root:socket_group); members of admin_group (and uid 0) are admins.
  std::string socket_group = "smolvm";
  std::string admin_group = "smolvm-admin";
  // Optional TCP listener "host:port", served only with mutual TLS.
  std::string listen_tcp;
  // Prometheus text on GET /metrics at this loopback "host:port"
  // ([metrics] listen); "" = off.
  std::string metrics_listen;
  std::string tls_cert;       // PEM server certificate (chain).
  std::string tls_key;        // PEM private key.
  std::string tls_client_ca;  // PEM CA bundle that signs client certificates.
  // Confinement of the VMMs (issue 8; [vmm]). "on" in production; "off" only
  // to measure its cost or debug a VMM by hand.
  std::string vmm_confinement = "on";
  // VMMs run as uids (= gids) uid_base .. uid_base + uid_count - 1, one per
  // VM. The default is in the range systemd leaves unused (docs/decisions.md).
  int64_t vmm_uid_base = 1879048192;
  int64_t vmm_uid_count = 65536;
  // cgroup parent of the VMs' groups, below the hierarchy's root (v1: in each
  // controller): "smolvm". Outside the daemon's own unit, so that restarting
  // the unit on v2 never meets a cgroup with controllers enabled (systemd 252
  // cannot start a unit there). "" = the daemon's delegated cgroup on v2
  // (needs systemd >= 254's DelegateSubgroup=daemon to restart with VMs).
  std::string cgroup_parent = "smolvm";
  // Each VM's cgroup memory limit is its RAM plus this much for QEMU.
  int64_t vmm_memory_overhead_mib = 256;
  int64_t vmm_pids_max = 512;
  std::vector<TenantConfig> tenants;
  QuotaLimits default_quota;  // [quotas]
  HostPathPolicy host_paths;  // [images] allowed_dirs
  // [mounts] allowed_dirs: host directories VMConfig.mounts may name (one
  // list for every tenant, admins included).
  HostPathPolicy mount_paths;
  PortPolicy ports;           // [ports]
  EgressDenyPolicy egress;    // [network] egress_deny, egress_allow_lan
};

// Parses argv; returns the exit code to use when parsing ends the program
// (--help, bad flags, an unreadable or invalid configuration file) as an
// error with the text to print. Each setting comes from the first of: its
// flag, its environment variable, the configuration file, the default. The
// file is --config PATH (--config "" for none), else SMOLVMD_CONFIG, else
// /etc/smolvmd/smolvmd.toml if it exists.
absl::StatusOr<DaemonConfig> ParseConfig(int argc, char** argv, int* exit_code);

// Refuses settings that cannot work, with the setting and the fix in the
// message: state/run dirs, [images] allowed_dirs (absolute, existing, not
// overlapping state_dir or run_dir), [listen] tcp with all three readable
// [tls] files, [ports], [network] egress_deny, tenant names, a uid or TLS
// subject in two tenants, negative quotas.
absl::Status CheckConfig(const DaemonConfig& config);

// OK if `listen` is "A.B.C.D:PORT" with A = 127, or "[::1]:PORT", port
// 1-65535; else INVALID_ARGUMENT naming the setting and the fix. The metrics
// endpoint has no authentication, so it never listens beyond loopback.
absl::Status CheckMetricsListen(const std::string& listen);

// A [tenants.NAME] name: 1-64 of [A-Za-z0-9_.@-], so never "uid:<n>".
absl::Status ValidateTenantName(const std::string& name);

}  // namespace smolvm::daemon
