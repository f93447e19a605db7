#include "tests/e2e/test_daemon.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
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
}

TestDaemon::~TestDaemon() {
  Stop();
  for (pid_t pid : QemuPids()) kill(pid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!QemuPids().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (std::getenv("SMOLVM_TEST_KEEP_DIR") == nullptr) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

absl::Status TestDaemon::Start(const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = {SMOLVMD_BINARY,
                                   "--socket", socket_path(),
                                   "--state-dir", state_dir(),
                                   "--run-dir", run_dir(),
                                   "--accelerator", "auto",
                                   "--guest-kernel-dir", KernelDir(),
                                   "--guest-recipe-dir", SMOLVM_SOURCE_GUEST_DIR,
                                   "--log-level", "debug"};
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
