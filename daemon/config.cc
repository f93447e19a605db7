#include "daemon/config.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <utility>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/config_file.h"
#include "lib/base/file_util.h"
#include "lib/base/ipv4.h"

namespace smolvm::daemon {
namespace {

void FromEnv(const char* name, std::string& field) {
  if (const char* v = std::getenv(name); v != nullptr && *v != '\0') field = v;
}

// The flags, parsed into their own DaemonConfig and copied over the file
// and environment afterwards, each only if it was given: that is what makes
// a flag win without a file or environment value being mistaken for one.
class FlagLayer {
 public:
  // `get` returns the setting's field in a DaemonConfig.
  template <typename Get>
  CLI::Option* Option(CLI::App& app, const std::string& name, Get get, const std::string& help) {
    return Track(app.add_option(name, get(values_), help), get);
  }
  template <typename Get>
  CLI::Option* Flag(CLI::App& app, const std::string& name, Get get, const std::string& help) {
    return Track(app.add_flag(name, get(values_), help), get);
  }

  // Copies the given flags into `config`.
  void ApplyTo(DaemonConfig& config) {
    for (auto& copy : copies_) copy(config);
  }

  const DaemonConfig& values() const { return values_; }

 private:
  template <typename Get>
  CLI::Option* Track(CLI::Option* option, Get get) {
    copies_.push_back([this, option, get](DaemonConfig& to) {
      if (option->count() > 0) get(to) = get(values_);
    });
    return option;
  }

  DaemonConfig values_;
  std::vector<std::function<void(DaemonConfig&)>> copies_;
};

// An accessor for a DaemonConfig member, for FlagLayer.
template <typename T>
auto Field(T DaemonConfig::*member) {
  return [member](DaemonConfig& c) -> T& { return c.*member; };
}

// Lexical normal form of an absolute path: no "//", no "." components, no
// trailing "/". Callers reject "..".
std::string NormalPath(const std::string& path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view p : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (p != ".") parts.push_back(p);
  }
  return "/" + absl::StrJoin(parts, "/");
}

// Whether one of two normal paths is the other or inside it.
bool Overlap(const std::string& a, const std::string& b) {
  auto inside = [](const std::string& x, const std::string& dir) {
    return dir == "/" || x == dir || absl::StartsWith(x, dir + "/");
  };
  return inside(a, b) || inside(b, a);
}

// The path with symlinks resolved, or the normal path if it does not exist
// (yet: the daemon creates its state and run dirs after this check).
std::string RealOrNormal(const std::string& path) {
  char buf[PATH_MAX];
  if (realpath(path.c_str(), buf) != nullptr) return buf;
  return NormalPath(path);
}

absl::Status CheckDirs(const DaemonConfig& c) {
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

// Tenants may name files beneath these, so none may reach into the
// daemon's own state (disks, database) or runtime files (sockets).
absl::Status CheckAllowedDirsOf(const std::vector<std::string>& dirs, const char* kSetting,
                                const DaemonConfig& c) {
  for (const std::string& dir : dirs) {
    if (dir.empty() || dir[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat(kSetting, ": \"", dir, "\" must be an absolute path"));
    }
    for (absl::string_view part : absl::StrSplit(dir, '/')) {
      if (part == "..") {
        return absl::InvalidArgumentError(
            absl::StrCat(kSetting, ": \"", dir, "\" must not contain \"..\""));
      }
    }
    struct stat st;
    if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kSetting, ": \"", dir, "\" is not an existing directory; create it or remove it"));
    }
    std::string lexical = NormalPath(dir);
    std::string real = RealOrNormal(dir);
    for (const auto& [what, daemon_dir] :
         {std::pair<const char*, const std::string*>{"state dir", &c.state_dir},
          std::pair<const char*, const std::string*>{"run dir", &c.run_dir}}) {
      if (Overlap(lexical, NormalPath(*daemon_dir)) || Overlap(real, RealOrNormal(*daemon_dir))) {
        return absl::InvalidArgumentError(absl::StrCat(
            kSetting, ": \"", dir, "\" overlaps the daemon's ", what, " \"", *daemon_dir,
            "\" (tenants could name its files); use a directory outside it that does not "
            "contain it"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckAllowedDirs(const DaemonConfig& c) {
  if (auto s = CheckAllowedDirsOf(c.host_paths.allowed_dirs, "[images] allowed_dirs", c);
      !s.ok()) {
    return s;
  }
  return CheckAllowedDirsOf(c.mount_paths.allowed_dirs, "[mounts] allowed_dirs", c);
}

}  // namespace

absl::Status CheckMetricsListen(const std::string& listen) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "[metrics] listen / --metrics-listen \"", listen, "\": ", why,
        "; use 127.0.0.1:PORT or [::1]:PORT (the endpoint has no authentication: put a "
        "proxy with TLS in front to scrape from elsewhere)"));
  };
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return bad("want host:port with a port 1-65535");
  }
  const std::string host = listen.substr(0, colon);
  if (host == "[::1]") return absl::OkStatus();
  absl::StatusOr<uint32_t> ip = net::ParseIpv4(host);
  if (!ip.ok()) return bad("the host is not an IPv4 address");
  if ((*ip >> 24) != 127) return bad("not a loopback address");
  return absl::OkStatus();
}

namespace {

absl::Status CheckMetrics(const DaemonConfig& c) {
  return c.metrics_listen.empty() ? absl::OkStatus() : CheckMetricsListen(c.metrics_listen);
}

absl::Status CheckListen(const DaemonConfig& c) {
  if (c.listen_tcp.empty()) return absl::OkStatus();
  size_t colon = c.listen_tcp.rfind(':');
  int port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(absl::string_view(c.listen_tcp).substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "[listen] tcp / --listen-tcp \"", c.listen_tcp,
        "\" must be host:port with a port 1-65535 (e.g. 0.0.0.0:7443)"));
  }
  const std::pair<const char*, const std::string*> files[] = {
      {"[tls] cert / --tls-cert", &c.tls_cert},
      {"[tls] key / --tls-key", &c.tls_key},
      {"[tls] client_ca / --tls-client-ca", &c.tls_client_ca},
  };
  for (const auto& [setting, path] : files) {
    if (path->empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "[listen] tcp \"", c.listen_tcp, "\" is served only with mutual TLS: set ", setting));
    }
  }
  for (const auto& [setting, path] : files) {
    if (auto text = ReadFileToString(*path, 1 << 20); !text.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(setting, ": cannot read it: ", text.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckNetworkPolicy(const DaemonConfig& c) {
  const PortPolicy& p = c.ports;
  if (p.min_port < 1 || p.max_port > 65535 || p.min_port > p.max_port) {
    return absl::InvalidArgumentError(absl::StrCat(
        "[ports] min ", p.min_port, " / max ", p.max_port,
        ": need 1 <= min <= max <= 65535"));
  }
  for (const std::string& ip : p.host_ips) {
    if (!net::ParseIpv4(ip).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "[ports] host_ips: \"", ip, "\" is not a dotted IPv4 address such as 127.0.0.1"));
    }
  }
  for (const std::string& cidr : c.egress.deny_cidrs) {
    if (!net::ParseCidr(cidr).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "[network] egress_deny: \"", cidr, "\" is not an IPv4 CIDR such as 169.254.0.0/16"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckQuota(const QuotaLimits& q, const std::string& table) {
  const std::pair<const char*, const std::optional<int64_t>*> fields[] = {
      {"running_vms", &q.running_vms}, {"vcpus", &q.vcpus},
      {"memory_mib", &q.memory_mib},   {"snapshots", &q.snapshots},
      {"snapshot_bytes", &q.snapshot_bytes}, {"port_forwards", &q.port_forwards},
  };
  for (const auto& [key, value] : fields) {
    if (value->has_value() && **value < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "[", table, "] ", key, ": must be >= 0 (leave it out for no limit)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTenants(const DaemonConfig& c) {
  if (auto s = CheckQuota(c.default_quota, "quotas"); !s.ok()) return s;
  std::map<std::string, std::string> names;
  std::map<uint32_t, std::string> uids;
  std::map<std::string, std::string> subjects;
  for (const TenantConfig& t : c.tenants) {
    if (auto s = ValidateTenantName(t.name); !s.ok()) return s;
    if (!names.emplace(t.name, t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("[tenants.", t.name, "] is configured twice"));
    }
    for (uint32_t uid : t.uids) {
      auto [it, added] = uids.emplace(uid, t.name);
      if (!added && it->second != t.name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "uid ", uid, " is in the uids of both [tenants.", it->second, "] and [tenants.",
            t.name, "]; a user can be only one tenant"));
      }
    }
    for (const std::string& subject : t.tls_subjects) {
      if (subject.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("[tenants.", t.name, "] tls_subjects: must not contain \"\""));
      }
      auto [it, added] = subjects.emplace(subject, t.name);
      if (!added && it->second != t.name) {
        return absl::InvalidArgumentError(absl::StrCat(
            "TLS subject \"", subject, "\" is in the tls_subjects of both [tenants.",
            it->second, "] and [tenants.", t.name, "]; a certificate can be only one tenant"));
      }
    }
    if (auto s = CheckQuota(t.quota, absl::StrCat("tenants.", t.name, ".quotas")); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTenantName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64;
  for (char ch : name) {
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '.' || ch == '@' || ch == '-')) {
      ok = false;
    }
  }
  // Unreachable with the character set above, but "uid:*" names are
  // reserved for unconfigured local users whatever the set becomes.
  if (absl::StartsWith(name, "uid:")) ok = false;
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tenant name \"", absl::CHexEscape(name),
        "\" must be 1-64 characters of letters, digits, '_', '.', '@' and '-' "
        "([tenants.NAME]; \"uid:<n>\" is reserved for unconfigured users)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DaemonConfig> ParseConfig(int argc, char** argv, int* exit_code) {
  FlagLayer flags;
  CLI::App app{"smolvmd: the microVM sandbox daemon"};
  // --help shows every flag's default: FlagLayer binds the flags to a
  // default DaemonConfig, which is what is captured here.
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", "smolvmd " SMOLVM_VERSION);
  CLI::Option* config_flag = flags.Option(
      app, "--config", Field(&DaemonConfig::config_file),
      absl::StrCat("Configuration file (env SMOLVMD_CONFIG; default ", kDefaultConfigFile,
                   " if it exists; \"\" for none). Flags override environment, which "
                   "overrides the file"));
  flags.Option(app, "--socket", Field(&DaemonConfig::socket_path),
               "Unix socket to serve the API on (env SMOLVMD_SOCKET)");
  flags.Option(app, "--state-dir", Field(&DaemonConfig::state_dir),
               "Database, disks, snapshots, images (env SMOLVMD_STATE_DIR)");
  flags.Option(app, "--run-dir", Field(&DaemonConfig::run_dir),
               "Runtime files and guest RAM; should be tmpfs (env SMOLVMD_RUN_DIR)");
  flags.Option(app, "--accelerator", Field(&DaemonConfig::accelerator),
               "auto, kvm or tcg (env SMOLVMD_ACCELERATOR)")
      ->check(CLI::IsMember({"auto", "kvm", "tcg"}));
  flags.Option(app, "--machine", Field(&DaemonConfig::machine), "QEMU machine type");
  flags.Option(app, "--qemu-binary", Field(&DaemonConfig::qemu_binary),
               "QEMU system emulator to run");
  flags.Option(app, "--guest-recipe-dir", Field(&DaemonConfig::guest_recipe_dir),
               "Directory with the in-guest scripts (initramfs-init.sh, rootfs-init.sh) (env SMOLVMD_GUEST_RECIPE_DIR)");
  flags.Option(app, "--guest-kernel-dir", Field(&DaemonConfig::guest_kernel_dir),
               "Extracted guest kernel; fetched from Debian's archive when missing "
               "(env SMOLVMD_GUEST_KERNEL_DIR, default <state-dir>/kernel)");
  flags.Option(app, "--mounts-kernel-dir", Field(&DaemonConfig::mounts_kernel_dir),
               "Extracted generic guest kernel (9p) of VMs with host mounts; fetched from "
               "Debian's archive on first use (env SMOLVMD_MOUNTS_KERNEL_DIR, default "
               "<state-dir>/kernel-mounts)");
  flags.Option(app, "--default-image", Field(&DaemonConfig::default_image),
               "Image of VMs that name none: debian-python (built on first use), minimal "
               "(busybox, fastest) or any image name (env SMOLVMD_DEFAULT_IMAGE)");
  flags.Option(app, "--package-cache-dir", Field(&DaemonConfig::package_cache_dir),
               "Debian packages kept across image builds (env SMOLVMD_PACKAGE_CACHE_DIR, "
               "default <state-dir>/images/cache/debs)");
  flags.Option(app, "--image-build-netns", Field(&DaemonConfig::image_build_netns),
               "Network namespace (e.g. /proc/1/ns/net) in which image builds reach the Debian "
               "archive (env SMOLVMD_IMAGE_BUILD_NETNS, default: the daemon's own)");
  flags.Option(app, "--guest-agent", Field(&DaemonConfig::guest_agent),
               "Static smolvm-agent binary put into every image (env SMOLVMD_GUEST_AGENT)");
  flags.Option(app, "--console-log-max-bytes", Field(&DaemonConfig::console_log_max_bytes),
               "Guest console kept on disk per VM (older output is dropped)")
      ->check(CLI::Range(int64_t{8192}, int64_t{1} << 32));
  flags.Option(app, "--max-events", Field(&DaemonConfig::max_events),
               "Events the journal keeps for WatchEvents (older ones are dropped)")
      ->check(CLI::Range(int64_t{1000}, int64_t{100000000}));
  flags.Option(app, "--max-streams-per-tenant", Field(&DaemonConfig::max_streams_per_tenant),
               "Long calls (execs, streams, watches, waits) one tenant may hold open at once; "
               "admins are not limited (0: no limit)")
      ->check(CLI::Range(0, 100000));
  flags.Option(app, "--vmm-confinement", Field(&DaemonConfig::vmm_confinement),
               "on: every VMM runs as its own uid in an empty mount namespace, under "
               "seccomp and in its own cgroup; off: only to measure that cost")
      ->check(CLI::IsMember({"on", "off"}));
  flags.Option(app, "--vmm-uid-base", Field(&DaemonConfig::vmm_uid_base),
               "First uid (and gid) VMMs run as, one per VM")
      ->check(CLI::Range(int64_t{1000}, int64_t{4294000000}));
  flags.Option(app, "--vmm-uid-count", Field(&DaemonConfig::vmm_uid_count),
               "How many uids from --vmm-uid-base (the most VMs that can exist)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  flags.Option(app, "--cgroup-parent", Field(&DaemonConfig::cgroup_parent),
               "cgroup under which each VM gets its group (default smolvm; \"\" = the "
               "daemon's delegated cgroup on v2)");
  flags.Option(app, "--vmm-memory-overhead-mib", Field(&DaemonConfig::vmm_memory_overhead_mib),
               "A VM's cgroup memory limit is its RAM plus this much")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  flags.Option(app, "--vmm-pids-max", Field(&DaemonConfig::vmm_pids_max),
               "Most tasks (threads) one VMM may have")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 22));
  flags.Option(app, "--boot-timeout-seconds", Field(&DaemonConfig::boot_timeout_seconds),
               "How long a booting guest has to become ready")
      ->check(CLI::Range(1, 3600));
  flags.Option(app, "--fork-parallelism", Field(&DaemonConfig::fork_parallelism),
               "Clones ForkSnapshot restores at once (0 = the number of cores)")
      ->check(CLI::Range(0, 256));
  flags.Option(app, "--network", Field(&DaemonConfig::network),
               "Give VMs a NIC on the daemon's bridge (true/false)");
  flags.Option(app, "--bridge", Field(&DaemonConfig::bridge), "Bridge device owned by smolvmd");
  flags.Option(app, "--subnet", Field(&DaemonConfig::subnet),
               "IPv4 subnet of the VMs; the bridge gets the first address");
  flags.Option(app, "--uplink", Field(&DaemonConfig::uplink),
               "Device for NAT to the outside: auto (default route), none, or a name");
  flags.Option(app, "--dns", Field(&DaemonConfig::dns),
               "Resolver for guests: auto (from /etc/resolv.conf), none, or an IPv4");
  flags.Flag(app, "--egress-allow-lan",
             [](DaemonConfig& c) -> bool& { return c.egress.allow_lan; },
             "Let guests with open egress reach the host's directly connected subnets");
  flags.Option(app, "--instance", Field(&DaemonConfig::instance),
               "Name of this daemon among several on one host ([a-z0-9]{1,8}): its nftables "
               "table is smolvmd_NAME, its default bridge and cgroup parent smolvm-NAME");
  flags.Option(app, "--log-level", Field(&DaemonConfig::log_level),
               "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  flags.Option(app, "--socket-group", Field(&DaemonConfig::socket_group),
               "Group that may connect to the Unix socket (mode 0660 root:GROUP)");
  flags.Option(app, "--admin-group", Field(&DaemonConfig::admin_group),
               "Members of this group (and root) are admins: they see and act on every tenant");
  flags.Option(app, "--listen-tcp", Field(&DaemonConfig::listen_tcp),
               "Also serve on TCP host:port, with mutual TLS (needs --tls-cert, --tls-key, "
               "--tls-client-ca)");
  flags.Option(app, "--metrics-listen", Field(&DaemonConfig::metrics_listen),
               "Serve Prometheus metrics on GET /metrics at this loopback host:port "
               "(e.g. 127.0.0.1:9464); off by default");
  flags.Option(app, "--tls-cert", Field(&DaemonConfig::tls_cert),
               "PEM server certificate chain for --listen-tcp");
  flags.Option(app, "--tls-key", Field(&DaemonConfig::tls_key),
               "PEM private key of --tls-cert");
  flags.Option(app, "--tls-client-ca", Field(&DaemonConfig::tls_client_ca),
               "PEM CA bundle that client certificates must chain to");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    *exit_code = e.get_exit_code();
    std::string text = e.get_exit_code() != 0                               ? std::string(e.what())
                       : dynamic_cast<const CLI::CallForVersion*>(&e) != nullptr ? std::string(e.what())
                                                                                 : app.help();
    return absl::InvalidArgumentError(text);
  }

  // Default < file < environment < flags.
  DaemonConfig c;
  std::string file;
  if (config_flag->count() > 0) {
    file = flags.values().config_file;
  } else if (const char* env = std::getenv("SMOLVMD_CONFIG"); env != nullptr && *env != '\0') {
    file = env;
  } else if (PathExists(kDefaultConfigFile)) {
    file = kDefaultConfigFile;
  }
  if (!file.empty()) {
    if (auto s = ApplyConfigFile(file, c); !s.ok()) {
      *exit_code = 1;
      return s;
    }
  }
  c.config_file = file;
  FromEnv("SMOLVMD_SOCKET", c.socket_path);
  FromEnv("SMOLVMD_STATE_DIR", c.state_dir);
  FromEnv("SMOLVMD_RUN_DIR", c.run_dir);
  FromEnv("SMOLVMD_ACCELERATOR", c.accelerator);
  FromEnv("SMOLVMD_GUEST_RECIPE_DIR", c.guest_recipe_dir);
  FromEnv("SMOLVMD_GUEST_KERNEL_DIR", c.guest_kernel_dir);
  FromEnv("SMOLVMD_MOUNTS_KERNEL_DIR", c.mounts_kernel_dir);
  FromEnv("SMOLVMD_DEFAULT_IMAGE", c.default_image);
  FromEnv("SMOLVMD_PACKAGE_CACHE_DIR", c.package_cache_dir);
  FromEnv("SMOLVMD_IMAGE_BUILD_NETNS", c.image_build_netns);
  FromEnv("SMOLVMD_GUEST_AGENT", c.guest_agent);
  flags.ApplyTo(c);
  c.config_file = file;
  if (c.guest_kernel_dir.empty()) c.guest_kernel_dir = JoinPath(c.state_dir, "kernel");
  if (c.mounts_kernel_dir.empty()) c.mounts_kernel_dir = JoinPath(c.state_dir, "kernel-mounts");
  // Another instance's own names, unless they were chosen explicitly.
  if (!c.instance.empty()) {
    const DaemonConfig defaults;
    if (c.bridge == defaults.bridge) c.bridge = "smolvm-" + c.instance;
    if (c.cgroup_parent == defaults.cgroup_parent) c.cgroup_parent = "smolvm-" + c.instance;
  }
  return c;
}

absl::Status CheckInstance(const DaemonConfig& c) {
  bool ok = c.instance.size() <= 8;
  for (char ch : c.instance) ok &= (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9');
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--instance \"", absl::CHexEscape(c.instance),
        "\" must be 1-8 lowercase letters and digits ([daemon] instance): it becomes part of "
        "interface and nftables names"));
  }
  return absl::OkStatus();
}

absl::Status CheckConfig(const DaemonConfig& c) {
  for (auto check : {CheckDirs, CheckAllowedDirs, CheckListen, CheckMetrics, CheckNetworkPolicy, CheckTenants,
                     CheckInstance}) {
    if (auto s = check(c); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace smolvm::daemon
