#include "lib/vmm/qemu_backend.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "spdlog/spdlog.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/unique_fd.h"
#include "lib/vmm/console_recorder.h"
#include "lib/vmm/qmp_client.h"
#include "lib/vmm/vmm_jail.h"

namespace smolvm::vmm {
namespace {

bool ProcessExists(int64_t pid) {
  if (pid <= 0) return false;
  auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"), 4096);
  if (!stat.ok()) return false;
  // Field 3, after the parenthesised command name, is the state.
  auto close_paren = stat->rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat->size()) return false;
  char state = (*stat)[close_paren + 2];
  return state != 'Z' && state != 'X';
}

// Waits up to `timeout` for the VMM `pid` of `vm_id` to be gone; true if it is.
bool WaitForExit(int64_t pid, const std::string& vm_id, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (IsQemuOf(pid, vm_id)) {
    if (absl::Now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// SIGKILLs the VMM `pid` of `vm_id` if it is still that VMM, and waits for
// it to be gone (a cgroup can only be removed after its last task).
void KillAndWait(int64_t pid, const std::string& vm_id) {
  if (pid > 0 && IsQemuOf(pid, vm_id)) kill(static_cast<pid_t>(pid), SIGKILL);
  (void)WaitForExit(pid, vm_id, absl::Seconds(5));
}

class QemuInstance : public VmInstance {
 public:
  QemuInstance(std::string vm_id, int64_t pid, std::string run_dir,
               std::unique_ptr<QmpClient> qmp, uint64_t console_log_max_bytes,
               VmCgroups* cgroups)
      : vm_id_(std::move(vm_id)), pid_(pid), run_dir_(std::move(run_dir)),
        qmp_(std::move(qmp)), cgroups_(cgroups),
        console_(ConsoleSocketPath(run_dir_), ConsoleLogPath(run_dir_),
                 console_log_max_bytes) {}

  int64_t pid() const override { return pid_; }
  bool IsAlive() const override { return IsQemuOf(pid_, vm_id_); }

  std::string agent_socket_path() const override { return AgentSocketPath(run_dir_); }

  absl::Status Pause() override { return qmp_->Execute("stop").status(); }
  absl::Status Resume() override { return qmp_->Execute("cont").status(); }
  absl::StatusOr<std::string> QueryRunState() override { return qmp_->QueryStatus(); }

  absl::Status SaveDeviceState(const std::string& path) override {
    return WithVmmLog(qmp_->MigrateToFile(path, absl::Minutes(5)));
  }
  absl::Status LoadDeviceState(const std::string& path) override {
    return WithVmmLog(qmp_->MigrateFromFile(path, absl::Minutes(5)));
  }

  absl::Status Shutdown(absl::Duration grace) override {
    SMOLVM_RETURN_IF_ERROR(EndProcess(grace));
    return cgroups_ ? cgroups_->Remove(vm_id_) : absl::OkStatus();
  }

  std::string ExitCause() const override {
    if (!cgroups_) return "";
    auto kills = cgroups_->OomKills(vm_id_);
    if (!kills.ok() || *kills == 0) return "";
    auto limit = cgroups_->MemoryLimit(vm_id_);
    return absl::StrCat(
        "the kernel's OOM killer ended the VMM: its cgroup reached the memory limit",
        limit.ok() ? absl::StrCat(" of ", *limit >> 20, " MiB") : std::string(),
        " (guest RAM + VMM overhead; raise --vmm-memory-overhead-mib or lower the guest's "
        "memory use)");
  }

 private:
  absl::Status EndProcess(absl::Duration grace) {
    if (!IsAlive()) return absl::OkStatus();
    // "quit" may race with QEMU closing the socket; the pid check decides.
    (void)qmp_->Execute("quit", nlohmann::json::object(), absl::Seconds(2));
    if (WaitForExit(pid_, vm_id_, grace)) return absl::OkStatus();
    kill(static_cast<pid_t>(pid_), SIGKILL);
    if (!WaitForExit(pid_, vm_id_, absl::Seconds(10))) {
      return absl::InternalError(absl::StrCat(
          "vm ", vm_id_, ": qemu pid ", pid_, " did not exit after SIGKILL"));
    }
    return absl::OkStatus();
  }

 public:
  // Adds what QEMU reported on stderr to an error: QMP alone often says
  // just "failed".
  absl::Status WithVmmLog(absl::Status s) const {
    if (s.ok()) return s;
    std::string log = TailOf(ReadFileTail(VmmLogPath(run_dir_), 1000), 1000);
    if (log.empty()) return s;
    return absl::Status(s.code(), absl::StrCat(s.message(), "; qemu: ", log));
  }

  std::string ConsoleTail(size_t max_bytes) const override {
    return TailOf(console_.Tail(max_bytes, !IsAlive()), max_bytes);
  }

 private:
  std::string vm_id_;
  int64_t pid_;
  std::string run_dir_;
  std::unique_ptr<QmpClient> qmp_;
  VmCgroups* cgroups_;  // Owned by the hypervisor; null when unconfined.
  ConsoleRecorder console_;
};

// Absolute path of `binary` (PATH lookup as execvp does).
std::string ResolveBinary(const std::string& binary) {
  if (binary.find('/') != std::string::npos) return binary;
  const char* path = getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = JoinPath(std::string(dir), binary);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return binary;
}

bool Under(const std::string& path, const std::string& dir) {
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

}  // namespace

bool IsQemuOf(int64_t pid, const std::string& vm_id) {
  if (!ProcessExists(pid)) return false;
  auto cmdline = ReadFileToString(absl::StrCat("/proc/", pid, "/cmdline"), 1 << 20);
  if (!cmdline.ok()) return false;
  std::vector<std::string> args = absl::StrSplit(*cmdline, '\0');
  std::string name = QemuProcessName(vm_id);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "-name" && args[i + 1] == name) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<QemuHypervisor>> QemuHypervisor::Create(
    QemuSettings settings) {
  SubprocessOptions opts;
  opts.timeout = absl::Seconds(30);
  auto r = RunSubprocess({settings.binary, "--version"}, opts);
  if (!r.ok() || r->exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot run ", settings.binary,
        ": install the qemu-system-x86 package or pass --qemu-binary"));
  }
  std::string first_line = std::string(absl::StripAsciiWhitespace(
      r->stdout_text.substr(0, r->stdout_text.find('\n'))));
  std::string binary_path = ResolveBinary(settings.binary);
  std::unique_ptr<VmCgroups> cgroups;
  if (settings.confine) {
    if (binary_path.empty() || binary_path[0] != '/') {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot find ", settings.binary, " in PATH: pass an absolute --qemu-binary"));
    }
    SMOLVM_RETURN_IF_ERROR(MakeDirs(settings.jail_mount_point, 0700));
    struct stat kvm;
    if (settings.accelerator == "kvm" && stat("/dev/kvm", &kvm) == 0 &&
        (kvm.st_mode & 0006) != 0006 && ((kvm.st_mode & 0060) != 0060 || kvm.st_gid == 0)) {
      // A confined VMM gets the device's group and nothing more.
      return absl::FailedPreconditionError(absl::StrCat(
          "/dev/kvm is mode ", absl::StrFormat("%04o", kvm.st_mode & 0777), " owned by gid ",
          kvm.st_gid,
          ": confined VMMs need it group read-write (Debian's udev rule makes it 0660 "
          "root:kvm: `chgrp kvm /dev/kvm && chmod 0660 /dev/kvm`), or use --accelerator tcg"));
    }
    SMOLVM_ASSIGN_OR_RETURN(cgroups,
                            VmCgroups::Open(settings.cgroup_fs_root, settings.cgroup_parent));
  }
  return std::unique_ptr<QemuHypervisor>(new QemuHypervisor(
      std::move(settings), first_line, std::move(binary_path), std::move(cgroups)));
}

std::string QemuHypervisor::DescribeConfinement() const {
  if (!cgroups_) return "unconfined (--vmm-confinement=off)";
  return absl::StrCat("per-VM uid, private mount/IPC/UTS namespaces, seccomp (-sandbox), ",
                      cgroups_->Describe());
}

absl::StatusOr<UniqueFd> OpenTap(const std::string& name) {
  UniqueFd fd(open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "open /dev/net/tun");
  ifreq ifr{};
  if (name.size() >= sizeof(ifr.ifr_name)) {
    return absl::InvalidArgumentError(absl::StrCat("tap name too long: ", name));
  }
  memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd.get(), TUNSETIFF, &ifr) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("attach to tap ", name));
  }
  return fd;
}

absl::StatusOr<int64_t> QemuHypervisor::StartUnconfined(const LaunchSpec& spec) {
  SubprocessOptions opts;
  opts.timeout = absl::Seconds(60);
  opts.stderr_path = VmmLogPath(spec.run_dir);
  // Unconfined (debugging only): QEMU opens the resolved directory by the
  // name it has now.
  std::vector<std::string> mount_paths;
  for (const HostMount& m : spec.mounts) {
    char buf[PATH_MAX];
    const std::string link = absl::StrCat("/proc/self/fd/", m.dir_fd);
    ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (n <= 0) return absl::ErrnoToStatus(errno, absl::StrCat("readlink ", link));
    mount_paths.emplace_back(buf, n);
  }
  auto started = RunSubprocess(BuildQemuArgv(settings_, spec, mount_paths), opts);
  if (!started.ok()) return started.status();
  if (started->exit_code != 0) {
    return absl::InternalError(absl::StrCat(
        "start qemu for vm ", spec.vm_id, " failed (exit ", started->exit_code,
        "): ", TailOf(started->stderr_text, 2000)));
  }
  auto pid_text = ReadFileToString(PidFilePath(spec.run_dir), 64);
  int64_t pid = 0;
  if (!pid_text.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*pid_text), &pid)) {
    return absl::InternalError(absl::StrCat(
        "start qemu for vm ", spec.vm_id, ": no pid file at ", PidFilePath(spec.run_dir)));
  }
  return pid;
}

absl::StatusOr<int64_t> QemuHypervisor::StartConfined(const LaunchSpec& spec) {
  const uint32_t uid = spec.vmm_uid;
  if (uid == 0) {
    return absl::InternalError(absl::StrCat("vm ", spec.vm_id, ": no vmm uid allocated"));
  }
  // The VM's own files become the VMM user's; nothing else on the host is
  // (its root is the jail, and the state dir is root-only).
  auto give = [&](const std::string& path, mode_t mode) -> absl::Status {
    if (chown(path.c_str(), uid, uid) != 0 || chmod(path.c_str(), mode) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("give ", path, " to the vmm user"));
    }
    return absl::OkStatus();
  };
  SMOLVM_RETURN_IF_ERROR(give(spec.run_dir, 0700));
  SMOLVM_RETURN_IF_ERROR(give(spec.disk_path, 0600));
  std::vector<JailMount> mounts = BaseJailMounts(settings_.accelerator == "kvm");
  if (!Under(binary_path_, "/usr")) mounts.push_back({binary_path_, false, true, ""});
  mounts.push_back({spec.run_dir, true});
  mounts.push_back({spec.disk_path, true});
  mounts.push_back({spec.kernel_path, false});
  if (!spec.initrd_path.empty()) mounts.push_back({spec.initrd_path, false});
  // Host mounts: a detached copy of the mount of exactly the directory the
  // manager resolved (by descriptor), attached inside the jail. A read-only
  // mount is read-only in the jail too, not only to QEMU.
  std::vector<UniqueFd> mount_trees;
  for (const HostMount& m : spec.mounts) {
    UniqueFd tree(open_tree(m.dir_fd, "",
                            OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE));
    if (!tree.valid()) {
      return absl::ErrnoToStatus(errno, absl::StrCat("vm ", spec.vm_id, ": clone the mount of ",
                                                     m.tag, " for the jail"));
    }
    JailMount jm{JailMountPath(m.tag), !m.read_only};
    jm.source_tree_fd = tree.get();
    mounts.push_back(std::move(jm));
    mount_trees.push_back(std::move(tree));
  }
  if (!Under(spec.mem_path, spec.run_dir)) {
    // A snapshot's mem.bin, mapped privately (copy-on-write) by every clone.
    // QEMU 7.2 opens a memory-backend-file read-write even for a private
    // mapping (the read-only fallback came in 8.2), so each clone's uid must
    // be able to open it for writing: it is mode 0666 under the root-only
    // state dir, and only the jails of that snapshot's clones can reach it.
    // (Snapshots are created so; only older ones are changed here, once.)
    struct stat mem;
    if (stat(spec.mem_path.c_str(), &mem) != 0 ||
        ((mem.st_mode & 0777) != 0666 && chmod(spec.mem_path.c_str(), 0666) != 0)) {
      return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", spec.mem_path));
    }
    mounts.push_back({spec.mem_path, true});
  }

  VmCgroups::Created groups;
  CgroupLimits limits;
  limits.memory_max_bytes =
      (uint64_t{spec.memory_mib} + settings_.vmm_memory_overhead_mib) << 20;
  limits.cpu_max_percent = spec.vcpu_count * 100;
  limits.pids_max = settings_.vmm_pids_max;
  limits.io_weight = settings_.vmm_io_weight;
  SMOLVM_ASSIGN_OR_RETURN(groups, cgroups_->Create(spec.vm_id, limits));
  for (const auto& w : groups.warnings) spdlog::warn("vm {}: cgroup: {}", spec.vm_id, w);
  auto remove_group = absl::MakeCleanup([&] { (void)cgroups_->Remove(spec.vm_id); });

  UniqueFd tap;
  if (!spec.tap_device.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(tap, OpenTap(spec.tap_device));
  }
  UniqueFd log(open(VmmLogPath(spec.run_dir).c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log.valid()) return absl::ErrnoToStatus(errno, "open " + VmmLogPath(spec.run_dir));
  (void)fchown(log.get(), uid, uid);

  JailSpec jail;
  jail.argv = BuildQemuArgv(settings_, spec);
  jail.argv[0] = binary_path_;
  jail.env = {"PATH=/usr/bin:/bin", "LANG=C"};
  jail.mount_point = settings_.jail_mount_point;
  jail.mounts = std::move(mounts);
  jail.proc = !spec.mounts.empty();
  jail.uid = jail.gid = uid;
  if (struct stat kvm; settings_.accelerator == "kvm" && stat("/dev/kvm", &kvm) == 0 &&
                       kvm.st_gid != 0) {
    // /dev/kvm is usually 0660 root:kvm: the VMM needs that group, no other.
    jail.groups.push_back(kvm.st_gid);
  }
  jail.cgroup_procs = groups.procs_files;
  if (tap.valid()) jail.pass_fds.push_back(tap.get());  // Becomes kTapFdInVmm.
  jail.output_fd = log.get();
  SMOLVM_ASSIGN_OR_RETURN(pid_t pid, SpawnJailed(jail));
  std::move(remove_group).Cancel();
  return pid;
}

absl::StatusOr<std::unique_ptr<VmInstance>> QemuHypervisor::Launch(
    const LaunchSpec& spec) {
  SMOLVM_RETURN_IF_ERROR(MakeDirs(spec.run_dir));
  for (const auto& stale : {QmpSocketPath(spec.run_dir), AgentSocketPath(spec.run_dir),
                            PidFilePath(spec.run_dir), ConsoleLogPath(spec.run_dir),
                            ConsoleLogPath(spec.run_dir) + ".1",
                            ConsoleSocketPath(spec.run_dir), VmmLogPath(spec.run_dir)}) {
    unlink(stale.c_str());
  }
  if (Under(spec.mem_path, spec.run_dir)) {
    // The RAM file of a cold boot lives on the run dir's filesystem (tmpfs):
    // a guest must not start where its RAM cannot fit.
    auto free_bytes = FreeBytes(spec.run_dir);
    uint64_t need = uint64_t{spec.memory_mib} << 20;
    if (free_bytes.ok() && *free_bytes < need) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "vm ", spec.vm_id, ": the run dir ", spec.run_dir, " has ", *free_bytes >> 20,
          " MiB free but the guest's RAM file needs ", spec.memory_mib,
          " MiB: free space there (or enlarge that tmpfs), or ask for less memory_mib"));
    }
  }
  absl::StatusOr<int64_t> started =
      settings_.confine ? StartConfined(spec) : StartUnconfined(spec);
  if (!started.ok()) return started.status();
  const int64_t pid = *started;
  // From here on a failure must not leave the VMM (or its cgroup) behind.
  auto kill_on_error = absl::MakeCleanup([&] { EndVmm(pid, spec.vm_id); });
  // A confined QEMU initializes after it was started: wait for its QMP
  // socket, or for its exit (then its log says why).
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!PathExists(QmpSocketPath(spec.run_dir)) && absl::Now() < deadline) {
    if (!IsQemuOf(pid, spec.vm_id)) {
      std::string log = TailOf(ReadFileTail(VmmLogPath(spec.run_dir), 2000), 2000);
      return absl::InternalError(absl::StrCat("start qemu for vm ", spec.vm_id,
                                              " failed: ", log.empty() ? "it exited" : log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  SMOLVM_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect(QmpSocketPath(spec.run_dir),
                                                       absl::Seconds(30)));
  auto instance = std::make_unique<QemuInstance>(spec.vm_id, pid, spec.run_dir,
                                                 std::move(qmp),
                                                 settings_.console_log_max_bytes,
                                                 cgroups_.get());
  if (spec.incoming_state_path) {
    SMOLVM_RETURN_IF_ERROR(instance->LoadDeviceState(*spec.incoming_state_path));
  }
  std::move(kill_on_error).Cancel();
  return instance;
}

absl::StatusOr<std::unique_ptr<VmInstance>> QemuHypervisor::Attach(
    const std::string& vm_id, int64_t pid, const std::string& run_dir) {
  if (!IsQemuOf(pid, vm_id)) {
    return absl::NotFoundError(absl::StrCat(
        "vm ", vm_id, ": qemu process ", pid, " is gone"));
  }
  SMOLVM_ASSIGN_OR_RETURN(auto qmp,
                          QmpClient::Connect(QmpSocketPath(run_dir), absl::Seconds(10)));
  return std::make_unique<QemuInstance>(vm_id, pid, run_dir, std::move(qmp),
                                        settings_.console_log_max_bytes, cgroups_.get());
}

void QemuHypervisor::EndStrayProcess(const std::string& vm_id,
                                     const std::string& run_dir) {
  // Also when there is no process: the group of a VMM that is gone (it
  // died, or the daemon was killed before it removed it).
  auto text = ReadFileToString(PidFilePath(run_dir), 64);
  int64_t pid = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid)) pid = 0;
  EndVmm(pid, vm_id);
}

void QemuHypervisor::EndVmm(int64_t pid, const std::string& vm_id) {
  KillAndWait(pid, vm_id);
  if (cgroups_) (void)cgroups_->Remove(vm_id);
}

}  // namespace smolvm::vmm
