#include "tests/e2e/test_daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace smolvm::testing {
namespace {

std::string KernelDir() {
  const char* env = std::getenv("SMOLVM_TEST_KERNEL_DIR");
  return env && *env ? env : "/var/cache/smolvmd/kernel";
}

// The generic kernel of VMs with host mounts: $SMOLVM_TEST_MOUNTS_KERNEL_DIR,
// else "<kernel dir>-mounts" beside the cloud one (scripts/test.sh fetches
// both).
std::string MountsKernelDir() {
  const char* env = std::getenv("SMOLVM_TEST_MOUNTS_KERNEL_DIR");
  return env && *env ? env : KernelDir() + "-mounts";
}

// Debian packages downloaded by image builds, kept in the build tree
// across test runs ($SMOLVM_TEST_PACKAGE_CACHE overrides).
std::string PackageCacheDir() {
  const char* env = std::getenv("SMOLVM_TEST_PACKAGE_CACHE");
  return env && *env ? env : SMOLVM_PACKAGE_CACHE_DIR;
}

// $SMOLVM_TEST_SMOLVMD, else the smolvmd built beside the tests: lets one
// build's e2e tests drive another build's daemon (scripts/sanitize.sh runs
// them against a sanitizer build's).
std::string SmolvmdPath() {
  const char* env = std::getenv("SMOLVM_TEST_SMOLVMD");
  return env && *env ? env : SMOLVMD_BINARY;
}

bool WaitPid(pid_t pid, int* status, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

}  // namespace

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TestDaemon::TestDaemon() {
  // Short, unique and under /tmp: socket paths must stay below 108 bytes.
  char tmpl[] = "/tmp/svt-XXXXXX";
  dir_ = mkdtemp(tmpl);
  // Other users (test_users.h) must reach the socket inside; nothing here
  // is listable or writable for them.
  chmod(dir_.c_str(), 0711);
  std::string tag = dir_.substr(dir_.size() - 6);
  netns_host_ = "svt-" + tag + "-h";
  netns_inet_ = "svt-" + tag + "-i";
}

std::pair<int, std::string> TestDaemon::InNetns(const std::string& netns,
                                                const std::string& cmd) const {
  std::string full = "ip netns exec " + netns + " sh -c '" + cmd + "' 2>&1";
  std::string out;
  FILE* p = popen(full.c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

void TestDaemon::ShareNetworkOf(const TestDaemon& other) {
  netns_host_ = other.netns_host_;
  netns_inet_ = other.netns_inet_;
  shared_network_ = true;
}

absl::Status TestDaemon::SetUpNetwork() {
  if (network_ready_ || shared_network_) return absl::OkStatus();
  network_ready_ = true;  // From here on, TearDownNetwork has work to do.
  std::string tag = dir_.substr(dir_.size() - 6);
  std::string vh = "svh" + tag, vi = "svi" + tag;
  const std::string& h = netns_host_;
  const std::string& i = netns_inet_;
  std::vector<std::string> steps = {
      "ip netns add " + h,
      "ip netns add " + i,
      "ip link add " + vh + " type veth peer name " + vi,
      "ip link set " + vh + " netns " + h,
      "ip link set " + vi + " netns " + i,
      "ip -n " + h + " link set " + vh + " name up0",
      "ip -n " + h + " addr add " + kHostUplinkIp + "/24 dev up0",
      "ip -n " + h + " link set up0 up",
      "ip -n " + h + " link set lo up",
      "ip -n " + h + " route add default via " + kLanHostIp,
      "ip -n " + i + " link set " + vi + " name eth0",
      "ip -n " + i + " addr add " + kLanHostIp + "/24 dev eth0",
      "ip -n " + i + " addr add " + std::string(kInternetIp) + "/32 dev eth0",
      "ip -n " + i + " addr add " + std::string(kOtherInternetIp) + "/32 dev eth0",
      "ip -n " + i + " addr add " + std::string(kMetadataIp) + "/32 dev eth0",
      "ip -n " + i + " link set eth0 up",
      "ip -n " + i + " link set lo up",
  };
  for (const auto& step : steps) {
    if (int rc = system((step + " 2>>" + log_path()).c_str()); rc != 0) {
      return absl::InternalError("network setup failed: " + step);
    }
  }
  std::filesystem::create_directories(InternetWwwDir());
  std::ofstream(InternetWwwDir() + "/hello.txt") << "hello from the internet\n";
  // One server on every address of the internet namespace.
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    execlp("ip", "ip", "netns", "exec", i.c_str(), "busybox", "httpd", "-f", "-p", "8080", "-h",
           InternetWwwDir().c_str(), nullptr);
    _exit(127);
  }
  servers_.push_back(pid);
  return absl::OkStatus();
}

void TestDaemon::TearDownNetwork() {
  for (pid_t pid : servers_) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
  servers_.clear();
  if (!network_ready_) return;
  // Deleting the namespaces deletes the veth pair and everything the daemon
  // made inside (bridge, TAPs, nft tables).
  (void)!system(("ip netns del " + netns_host_ + " 2>/dev/null").c_str());
  (void)!system(("ip netns del " + netns_inet_ + " 2>/dev/null").c_str());
  network_ready_ = false;
}

TestDaemon::~TestDaemon() {
  Stop();
  for (pid_t pid : QemuPids()) kill(pid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!QemuPids().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  TearDownNetwork();
  RemoveCgroups();
  if (std::getenv("SMOLVM_TEST_KEEP_DIR") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

absl::Status TestDaemon::PrepareNetwork() { return SetUpNetwork(); }

std::string TestDaemon::CgroupParent() const {
  return "smolvm-test-" + dir_.substr(dir_.size() - 6);
}

std::vector<std::string> TestDaemon::CgroupDirs() const {
  std::vector<std::string> dirs;
  std::error_code ec;
  if (std::filesystem::exists("/sys/fs/cgroup/cgroup.controllers")) {
    dirs.push_back("/sys/fs/cgroup/" + CgroupParent());
  } else {
    for (const auto& entry : std::filesystem::directory_iterator("/sys/fs/cgroup", ec)) {
      std::string dir = entry.path().string() + "/" + CgroupParent();
      if (std::filesystem::is_directory(dir, ec)) dirs.push_back(dir);
    }
  }
  return dirs;
}

void TestDaemon::RemoveCgroups() const {
  // The VMs' groups are empty once their QEMUs are gone (cgroup dirs are
  // removed with rmdir, never recursively).
  // A killed task leaves its cgroup a moment after it is gone from /proc:
  // EBUSY is retried for a while.
  auto remove = [](const std::string& path) {
    for (int i = 0; i < 200 && rmdir(path.c_str()) != 0 && errno == EBUSY; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  std::error_code ec;
  for (const std::string& dir : CgroupDirs()) {
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      if (entry.is_directory(ec)) remove(entry.path().string());
    }
    remove(dir);
  }
}

absl::Status TestDaemon::Start(const std::vector<std::string>& extra_args,
                               const std::string& config_toml) {
  if (auto s = SetUpNetwork(); !s.ok()) return s;
  // nsenter execs the daemon in place: pid_ is the daemon's pid. (Not `ip
  // netns exec`: it remounts /sys, which hides the cgroup hierarchy.)
  bool has_subnet = false, has_dns = false;
  for (const auto& a : extra_args) {
    has_subnet |= a == "--subnet";
    has_dns |= a == "--dns";
  }
  std::vector<std::string> args = {"/usr/bin/nsenter", "--net=/run/netns/" + netns_host_, "--",
                                   SmolvmdPath(),
                                   "--cgroup-parent", CgroupParent(),
                                   "--uplink", "up0"};
  if (!has_subnet) args.insert(args.end(), {"--subnet", kSubnet});
  if (!has_dns) args.insert(args.end(), {"--dns", "none"});
  args.insert(args.end(), {"--socket", socket_path(),
                           "--state-dir", state_dir(),
                           "--run-dir", run_dir(),
                           "--accelerator", "auto",
                           "--guest-kernel-dir", KernelDir(),
                           "--mounts-kernel-dir", MountsKernelDir(),
                           "--guest-recipe-dir", SMOLVM_SOURCE_GUEST_DIR,
                           "--log-level", "debug"});
  if (!config_toml.empty()) {
    std::ofstream(config_path(), std::ios::trunc) << config_toml;
    args.push_back("--config");
    args.push_back(config_path());
  }
  // Tests boot the busybox image unless they ask for another default
  // (image_test: debian-python); Debian packages are cached in the build
  // tree across runs.
  bool has_default_image = false;
  for (const auto& a : extra_args) has_default_image |= a == "--default-image";
  if (!has_default_image) args.insert(args.end(), {"--default-image", "minimal"});
  // Image builds download from Debian's archive in the test's own
  // namespace (the daemon's has only the fake internet).
  args.insert(args.end(), {"--package-cache-dir", PackageCacheDir(), "--image-build-netns",
                           absl::StrCat("/proc/", getpid(), "/ns/net")});
  bool has_group = false;
  for (const auto& a : extra_args) {
    has_group |= a == "--socket-group" || a.rfind("--socket-group=", 0) == 0;
  }
  if (!has_group) {
    args.push_back("--socket-group");
    args.push_back("root");
  }
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    int log = open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(log, 1);
    dup2(log, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  // Ready when the API answers.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  ClientOptions opts = client_options();
  opts.timeout = absl::Seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError("smolvmd exited during startup:\n" + DaemonLog());
    }
    if (SmolVMManager(opts).list_vms().ok()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError("smolvmd did not answer within 120 s:\n" + DaemonLog());
}

int TestDaemon::Stop() {
  if (pid_ <= 0) return 0;
  int status = 0;
  kill(pid_, SIGTERM);
  if (!WaitPid(pid_, &status, std::chrono::seconds(20))) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  return status;
}

void TestDaemon::Crash() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

ClientOptions TestDaemon::client_options() const {
  ClientOptions opts;
  opts.socket_path = socket_path();
  opts.timeout = absl::Minutes(5);
  return opts;
}

std::string TestDaemon::ConsoleLog(const std::string& vm_id) const {
  return ReadAll(absl::StrCat(run_dir(), "/vms/", vm_id, "/console.log"));
}

std::string TestDaemon::DaemonLog() const { return ReadAll(log_path()); }

std::string SmolvmctlPath() { return SMOLVMCTL_BINARY; }

std::vector<std::string> AsUser(std::optional<RunAs> as) {
  if (!as) return {};
  return {"setpriv", absl::StrCat("--reuid=", as->uid), absl::StrCat("--regid=", as->gid),
          "--init-groups", "--"};
}

ProcResult TestDaemon::Ctl(const std::vector<std::string>& args, std::optional<RunAs> as) const {
  std::vector<std::string> argv = AsUser(as);
  argv.insert(argv.end(), {SMOLVMCTL_BINARY, "--socket", socket_path(), "--json"});
  argv.insert(argv.end(), args.begin(), args.end());
  // No endpoint from our environment may win over --socket.
  return RunProcess(argv, {"SMOLVMD_ENDPOINT="});
}

ProcResult TestDaemon::RunInHostNetns(const std::vector<std::string>& command,
                                      std::optional<RunAs> as,
                                      const std::vector<std::string>& env) const {
  std::vector<std::string> argv = {"ip", "netns", "exec", netns_host_};
  std::vector<std::string> user = AsUser(as);
  argv.insert(argv.end(), user.begin(), user.end());
  argv.insert(argv.end(), command.begin(), command.end());
  return RunProcess(argv, env);
}

ProcResult TestDaemon::CtlInHostNetns(const std::vector<std::string>& args,
                                      std::optional<RunAs> as,
                                      const std::vector<std::string>& env) const {
  std::vector<std::string> argv = {SMOLVMCTL_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunInHostNetns(argv, as, env);
}

std::vector<pid_t> TestDaemon::QemuPids() const {
  std::vector<pid_t> pids;
  DIR* proc = opendir("/proc");
  if (!proc) return pids;
  while (dirent* e = readdir(proc)) {
    pid_t pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::string cmdline = ReadAll(absl::StrCat("/proc/", pid, "/cmdline"));
    std::string stat = ReadAll(absl::StrCat("/proc/", pid, "/stat"));
    auto paren = stat.rfind(')');
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') continue;
    if (cmdline.find("qemu-system") != std::string::npos &&
        cmdline.find(dir_ + "/") != std::string::npos) {
      pids.push_back(pid);
    }
  }
  closedir(proc);
  return pids;
}

}  // namespace smolvm::testing
