// smolvmd: wires the configuration, the core library and the gRPC server,
// and handles the process lifecycle. On SIGTERM/SIGINT the server drains and
// the daemon exits; VMs keep running and are re-attached at the next start.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/str_split.h"
#include "daemon/caller_resolver.h"
#include "daemon/config.h"
#include "daemon/event_service.h"
#include "daemon/filesystem_service.h"
#include "daemon/image_service.h"
#include "daemon/metrics.h"
#include "daemon/operation_service.h"
#include "daemon/pool_service.h"
#include "daemon/process_service.h"
#include "daemon/snapshot_service.h"
#include "daemon/systemd_notify.h"
#include "daemon/tls_credentials.h"
#include "daemon/unix_listener.h"
#include "daemon/vm_service.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server_builder.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"
#include "lib/core/event_journal.h"
#include "lib/core/tenant_directory.h"
#include "lib/core/vm_manager.h"
#include "lib/image/host_paths.h"
#include "lib/image/image_store.h"
#include "lib/net/firewall.h"
#include "lib/net/host_firewall.h"
#include "lib/net/ip_pool.h"
#include "lib/net/link_backend.h"
#include "lib/net/netlink_link_backend.h"
#include "lib/net/nft_firewall.h"
#include "lib/store/store.h"
#include "lib/vmm/accelerator.h"
#include "lib/vmm/qemu_backend.h"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {
namespace {

int Fail(const std::string& what, const absl::Status& status) {
  spdlog::critical("{}: {}", what, std::string(status.message()));
  return 1;
}

// The recipe installed with the daemon, else the one in the source tree
// (running from a build directory).
std::string DefaultRecipeDir() {
  if (PathExists(JoinPath(SMOLVM_GUEST_RECIPE_DIR, "rootfs-init.sh"))) {
    return SMOLVM_GUEST_RECIPE_DIR;
  }
  return SMOLVM_SOURCE_GUEST_DIR;
}

// The agent installed with the daemon, else the one in the build tree.
std::string DefaultAgentPath() {
  if (PathExists(SMOLVM_AGENT_INSTALL_PATH)) return SMOLVM_AGENT_INSTALL_PATH;
  return SMOLVM_AGENT_BUILD_PATH;
}

// The host's first non-loopback IPv4 resolver, or "".
std::string HostResolver() {
  auto text = ReadFileToString("/etc/resolv.conf", 1 << 16);
  if (!text.ok()) return "";
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    std::vector<std::string> words = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (words.size() >= 2 && words[0] == "nameserver" && net::ParseIpv4(words[1]).ok() &&
        !absl::StartsWith(words[1], "127.")) {
      return words[1];
    }
  }
  return "";
}

// The gid of group `name`; NOT_FOUND naming the flag that set it.
absl::StatusOr<gid_t> GroupId(const std::string& name, const char* setting) {
  std::vector<char> buf(16384);
  group entry{};
  group* found = nullptr;
  if (getgrnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found) != 0 || !found) {
    return absl::NotFoundError(absl::StrCat(
        "group \"", name, "\" does not exist (", setting, "): create it with "
        "`groupadd --system ", name, "` and add the users who may use smolvmd, or name "
        "another group"));
  }
  return found->gr_gid;
}

// Resolves the networking flags; the link backend answers "auto".
absl::StatusOr<core::NetworkOptions> NetworkOptionsFrom(const DaemonConfig& config,
                                                        net::LinkBackend& links) {
  core::NetworkOptions n;
  n.enabled = config.network;
  n.bridge = config.bridge;
  // Each instance owns its own table; the default instance keeps the name
  // it always had.
  n.nft_table = config.instance.empty() ? "smolvmd" : "smolvmd_" + config.instance;
  n.subnet = config.subnet;
  if (auto s = net::Subnet::Parse(config.subnet); !s.ok()) return s.status();
  if (config.uplink == "auto") {
    auto dev = links.DefaultRouteInterface();
    n.uplink = dev.ok() ? *dev : "";
  } else if (config.uplink != "none") {
    n.uplink = config.uplink;
  }
  if (config.dns == "auto") {
    n.dns = HostResolver();
  } else if (config.dns != "none") {
    if (!net::ParseIpv4(config.dns).ok()) {
      return absl::InvalidArgumentError("--dns must be auto, none or an IPv4 address");
    }
    n.dns = config.dns;
  }
  return n;
}

int Run(int argc, char** argv) {
  int exit_code = 1;
  auto parsed = ParseConfig(argc, argv, &exit_code);
  if (!parsed.ok()) {
    std::fprintf(exit_code == 0 ? stdout : stderr, "%s\n",
                 std::string(parsed.status().message()).c_str());
    return exit_code;
  }
  DaemonConfig config = *std::move(parsed);
  ConfigureLogging(config.log_level);
  if (geteuid() != 0) {
    return Fail("smolvmd", absl::PermissionDeniedError(
                               "must run as root: it manages VMM processes, TAP devices "
                               "and firewall rules (run it with sudo or as the systemd unit)"));
  }
  if (auto s = CheckConfig(config); !s.ok()) return Fail("configuration", s);
  for (const auto& dir : {config.state_dir, config.run_dir,
                          config.socket_path.substr(0, config.socket_path.rfind('/'))}) {
    if (auto s = MakeDirs(dir, 0700); !s.ok()) return Fail("create directory", s);
  }
  if (auto s = MakeDirs(config.socket_path.substr(0, config.socket_path.rfind('/')), 0755);
      !s.ok()) {
    return Fail("create socket directory", s);
  }

  // One daemon per state dir: two would fight over the same VMs.
  std::string lock_path = JoinPath(config.state_dir, "smolvmd.lock");
  UniqueFd lock_fd(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock_fd.valid()) return Fail("open " + lock_path, absl::ErrnoToStatus(errno, "open"));
  // A daemon that was just killed (systemd restarting it) releases the lock
  // only once its last thread has left the kernel: wait a bounded while.
  constexpr absl::Duration kLockWait = absl::Seconds(10);
  absl::Time lock_deadline = absl::Now() + kLockWait;
  bool locked = false, told = false;
  while (!(locked = flock(lock_fd.get(), LOCK_EX | LOCK_NB) == 0) && absl::Now() < lock_deadline) {
    if (!told) spdlog::info("waiting up to {} for the lock on {}", absl::FormatDuration(kLockWait),
                            lock_path);
    told = true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (!locked) {
    return Fail("lock " + lock_path,
                absl::FailedPreconditionError(
                    "another smolvmd is using this state dir; stop it or pass --state-dir"));
  }

  auto accel = vmm::ChooseAccelerator(config.accelerator);
  if (!accel.ok()) return Fail("accelerator", accel.status());
  spdlog::info("accelerator: {} ({})", accel->name, accel->reason);

  vmm::QemuSettings qemu;
  qemu.binary = config.qemu_binary;
  qemu.accelerator = accel->name;
  qemu.machine = config.machine;
  qemu.console_log_max_bytes = static_cast<uint64_t>(config.console_log_max_bytes);
  qemu.confine = config.vmm_confinement == "on";
  qemu.jail_mount_point = JoinPath(config.run_dir, "jail");
  qemu.cgroup_parent = config.cgroup_parent;
  qemu.vmm_memory_overhead_mib = static_cast<uint64_t>(config.vmm_memory_overhead_mib);
  qemu.vmm_pids_max = static_cast<uint64_t>(config.vmm_pids_max);
  if (config.vmm_uid_base + config.vmm_uid_count > int64_t{4294967294}) {
    return Fail("configuration", absl::InvalidArgumentError(
                                     "--vmm-uid-base + --vmm-uid-count passes the largest uid"));
  }
  // Snapshot RAM files that clones map are reachable only because this
  // directory is root-only (see StartConfined in lib/vmm/qemu_backend.cc).
  if (struct stat st; stat(config.state_dir.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn("state dir {} was mode {:o}; making it 0700", config.state_dir,
                 st.st_mode & 07777);
    if (chmod(config.state_dir.c_str(), 0700) != 0) {
      return Fail("chmod " + config.state_dir, absl::ErrnoToStatus(errno, "chmod"));
    }
  }
  auto hypervisor = vmm::QemuHypervisor::Create(qemu);
  if (!hypervisor.ok()) return Fail("vmm", hypervisor.status());
  spdlog::info("vmm: {}", (*hypervisor)->version());
  spdlog::info("vmm confinement: {}", (*hypervisor)->DescribeConfinement());

  std::string db_path = JoinPath(config.state_dir, "smolvmd.db");
  auto store = store::Store::Open(db_path);
  if (!store.ok()) return Fail("open " + db_path, store.status());
  if (auto s = (*store)->SetMaxEvents(config.max_events); !s.ok()) {
    return Fail("--max-events / [daemon] max_events", s);
  }
  // The manager owns the store; the journal reads it as long as main runs.
  core::EventJournal journal(store->get());

  image::ImageStoreOptions image_options;
  image_options.images_dir = JoinPath(config.state_dir, "images");
  image_options.payload.recipe_dir =
      config.guest_recipe_dir.empty() ? DefaultRecipeDir() : config.guest_recipe_dir;
  image_options.kernel_dir = config.guest_kernel_dir;
  image_options.mounts_kernel_dir = config.mounts_kernel_dir;
  image_options.mounts_boot_dir = JoinPath(config.state_dir, "images/mounts-kernel");
  image_options.payload.agent_path =
      config.guest_agent.empty() ? DefaultAgentPath() : config.guest_agent;
  image_options.default_image = config.default_image;
  image_options.build_netns = config.image_build_netns;
  image_options.package_cache_dir = config.package_cache_dir.empty()
                                        ? JoinPath(config.state_dir, "images/cache/debs")
                                        : config.package_cache_dir;
  if (auto name = image::NormalizeImageName(config.default_image);
      !name.ok() && !image::IsDigestRef(config.default_image)) {
    return Fail("--default-image", name.status());
  }
  auto images = image::ImageStore::Open(image_options, store->get());
  if (!images.ok()) return Fail("open the image store", images.status());
  image::ImageStore* image_store = images->get();

  auto links = std::make_unique<net::NetlinkLinkBackend>();
  auto network = NetworkOptionsFrom(config, *links);
  if (!network.ok()) return Fail("network", network.status());

  // Who may connect, and who is who.
  auto socket_gid = GroupId(config.socket_group, "--socket-group / [daemon] socket_group");
  if (!socket_gid.ok() && config.socket_group == DaemonConfig().socket_group) {
    // A fresh install without the group (systemd/smolvmd.sysusers.conf
    // makes it) still starts, closed to all but root.
    spdlog::warn("{}; until then only root can use the socket",
                 std::string(socket_gid.status().message()));
    socket_gid = 0;
  }
  if (!socket_gid.ok()) return Fail("socket group", socket_gid.status());
  std::optional<gid_t> admin_gid;
  if (!config.admin_group.empty()) {
    if (auto gid = GroupId(config.admin_group, "--admin-group"); gid.ok()) {
      admin_gid = *gid;
    } else {
      spdlog::warn("admin group: {}; only uid 0 and admin tenants are admins",
                   std::string(gid.status().message()));
    }
  }
  core::TenantDirectory tenants(config.tenants, config.default_quota, admin_gid);
  CallerResolver callers(&tenants);
  StreamLimiter streams(config.max_streams_per_tenant);
  callers.set_stream_limiter(&streams);

  core::ManagerOptions options;
  options.quota_for = [&tenants](const std::string& tenant) { return tenants.QuotaFor(tenant); };
  options.ports = config.ports;
  options.egress_deny = config.egress;
  if (!config.host_paths.allowed_dirs.empty()) {
    auto resolver = image::HostPathResolver::Create(config.host_paths,
                                                    {config.state_dir, config.run_dir});
    if (!resolver.ok()) return Fail("[images] allowed_dirs", resolver.status());
    options.host_paths = std::make_shared<const image::HostPathResolver>(*std::move(resolver));
  }
  if (!config.mount_paths.allowed_dirs.empty()) {
    auto resolver = image::HostPathResolver::Create(
        config.mount_paths, {config.state_dir, config.run_dir},
        "[mounts] allowed_dirs in smolvmd.toml");
    if (!resolver.ok()) return Fail("[mounts] allowed_dirs", resolver.status());
    options.mount_paths = std::make_shared<const image::HostPathResolver>(*std::move(resolver));
  }
  options.network = *network;
  options.state_dir = config.state_dir;
  options.run_dir = config.run_dir;
  options.boot_timeout = absl::Seconds(config.boot_timeout_seconds);
  options.fork_parallelism = static_cast<uint32_t>(config.fork_parallelism);
  options.vmm_uid_base = static_cast<uint32_t>(config.vmm_uid_base);
  options.vmm_uid_count = qemu.confine ? static_cast<uint32_t>(config.vmm_uid_count) : 0;
  core::ManagerParts parts;
  parts.store = *std::move(store);
  parts.hypervisor = *std::move(hypervisor);
  parts.images = *std::move(images);
  parts.links = std::move(links);
  auto firewall = net::NftFirewall::Create();
  if (!firewall.ok()) return Fail("firewall", firewall.status());
  parts.firewall = *std::move(firewall);
  parts.host_firewall = std::make_unique<net::IptablesHostFirewall>();
  // Counted from the first event on; served once the manager exists.
  DaemonMetrics metrics;
  options.events = metrics.Events();
  // Type=notify: systemd waits for READY=1; until then it shows these.
  std::atomic<core::VmManager*> healthy_manager{nullptr};
  ServiceNotifier notifier([&healthy_manager]() -> absl::Status {
    core::VmManager* m = healthy_manager.load();
    return m == nullptr ? absl::OkStatus() : m->CheckHealth();
  });
  notifier.Status("starting: re-attaching VMs and restoring the network");
  auto created = core::VmManager::Create(options, std::move(parts));
  if (!created.ok()) return Fail("start the vm manager", created.status());
  core::VmManager& manager = **created;
  healthy_manager = &manager;
  if (!config.metrics_listen.empty()) {
    if (auto s = metrics.Serve(config.metrics_listen, &manager); !s.ok()) return Fail("metrics", s);
    spdlog::info("metrics: GET http://{}/metrics", config.metrics_listen);
  }
  SetRpcMetrics(&metrics);
  absl::Cleanup unset_metrics = [] { SetRpcMetrics(nullptr); };

  // Build (or find) the default image now rather than on the first
  // CreateVm; requests that need it wait for this build.
  std::thread image_warmup([image_store] {
    auto image = image_store->Resolve(Caller::System(), "");
    if (image.ok()) {
      spdlog::info("default image {}: {}", image_store->default_image(), image->record.digest);
    } else {
      spdlog::error("default image {}: {}", image_store->default_image(),
                    std::string(image.status().message()));
    }
  });

  core::OperationRegistry operations;
  VmServiceImpl vm_service(&manager, &callers, &operations);
  SnapshotServiceImpl snapshot_service(&manager, &callers, &operations);
  OperationServiceImpl operation_service(&operations, &callers);
  ImageServiceImpl image_service(image_store, &manager, &callers);
  PoolServiceImpl pool_service(&manager, &callers);
  FilesystemServiceImpl filesystem_service(&manager, &callers);
  ProcessServiceImpl process_service(&manager, &callers);
  EventServiceImpl event_service(&journal, &callers);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // The Unix socket is accepted by UnixListener (peer credentials); gRPC
  // listens itself only on TCP, and only with mutual TLS.
  if (!config.listen_tcp.empty()) {
    auto creds = MakeMutualTlsServerCredentials(config, &tenants);
    if (!creds.ok()) {
      image_warmup.join();
      return Fail("[listen] tcp", creds.status());
    }
    builder.AddListeningPort(config.listen_tcp, *creds);
  }
  builder.RegisterService(&vm_service);
  builder.RegisterService(&snapshot_service);
  builder.RegisterService(&image_service);
  builder.RegisterService(&pool_service);
  builder.RegisterService(&operation_service);
  builder.RegisterService(&filesystem_service);
  builder.RegisterService(&process_service);
  builder.RegisterService(&event_service);
  // Exec stdin may be up to 16 MiB in one request.
  builder.SetMaxReceiveMessageSize(20 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    image_warmup.join();
    return Fail("serve", absl::UnavailableError(absl::StrCat(
                             "cannot listen on ", config.listen_tcp, " (listen_tcp)")));
  }
  auto listener = UnixListener::Create(config.socket_path, *socket_gid);
  if (!listener.ok()) {
    server->Shutdown();
    image_warmup.join();
    return Fail("listen on unix:" + config.socket_path, listener.status());
  }
  (*listener)->Serve(server.get());
  const std::string serving = absl::StrCat(
      "serving on unix:", config.socket_path,
      config.listen_tcp.empty() ? "" : absl::StrCat(" and tcp ", config.listen_tcp));
  spdlog::info("smolvmd {} (group {}){} (state {}, run {})", serving, config.socket_group,
               config.listen_tcp.empty() ? "" : " (mutual TLS)", config.state_dir,
               config.run_dir);
  notifier.Ready(serving);

  // SIGTERM/SIGINT are blocked in every thread (set in main before any
  // thread starts) and taken here synchronously.
  std::thread signal_thread([&server, &listener, &notifier, &journal] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    int sig = 0;
    sigwait(&set, &sig);
    spdlog::info("received signal {}; shutting down (VMs keep running)", sig);
    notifier.Stopping("draining requests; VMs keep running");
    (*listener)->Stop();  // No new connections while draining.
    journal.Shutdown();   // Event follows end now, not at the deadline.
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  });
  server->Wait();
  signal_thread.join();
  listener->reset();  // Removes the socket.
  image_warmup.join();
  spdlog::info("smolvmd stopped");
  return 0;
}

}  // namespace
}  // namespace smolvm::daemon

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return smolvm::daemon::Run(argc, argv);
}
