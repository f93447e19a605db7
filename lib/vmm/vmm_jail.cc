#include "lib/vmm/vmm_jail.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "lib/base/unique_fd.h"
#include "lib/vmm/vm_cgroups.h"

namespace smolvm::vmm {
namespace {

// One step of the child's work, prepared by the parent. `what` names the
// step in an error report.
struct Step {
  enum Kind { kMkdir, kTouch, kSymlink, kBind, kRemountBind, kAttachTree, kProc } kind;
  std::string a;  // Path inside the jail (or bind source).
  std::string b;  // Bind target / symlink target.
  unsigned long flags = 0;  // Mount flags; the tree's descriptor for kAttachTree.
  std::string what;
};

// The child's error report: "<step>: errno <n>", written with plain
// system calls (no allocation after fork).
[[noreturn]] void ChildFail(int err_fd, const char* what, int err) {
  char buf[512];
  size_t n = 0;
  for (const char* p = what; *p && n < sizeof(buf) - 24; ++p) buf[n++] = *p;
  const char mid[] = ": errno ";
  for (const char* p = mid; *p; ++p) buf[n++] = *p;
  char digits[12];
  int d = 0;
  unsigned v = static_cast<unsigned>(err);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && d < 11);
  while (d) buf[n++] = digits[--d];
  (void)!write(err_fd, buf, n);
  _exit(127);
}

bool WaitReadable(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  int ms = static_cast<int>(absl::ToInt64Milliseconds(timeout));
  while (true) {
    int rc = poll(&p, 1, ms);
    if (rc < 0 && errno == EINTR) continue;
    return rc > 0;
  }
}

}  // namespace

std::vector<JailMount> BaseJailMounts(bool with_kvm) {
  std::vector<JailMount> mounts;
  mounts.push_back({"/usr", false, true, ""});
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}) {
    struct stat st;
    if (lstat(top, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[256];
      ssize_t n = readlink(top, target, sizeof(target) - 1);
      if (n <= 0) continue;
      mounts.push_back({top, false, true, std::string(target, n)});
    } else if (S_ISDIR(st.st_mode)) {
      mounts.push_back({top, false, true, ""});
    }
  }
  // Without the cache the dynamic loader may miss multiarch library dirs.
  if (access("/etc/ld.so.cache", R_OK) == 0) mounts.push_back({"/etc/ld.so.cache"});
  for (const char* dev : {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"}) {
    mounts.push_back({dev, true});
  }
  if (with_kvm) mounts.push_back({"/dev/kvm", true});
  return mounts;
}

absl::StatusOr<pid_t> SpawnJailed(const JailSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty() || spec.argv[0][0] != '/') {
    return absl::InvalidArgumentError("jail: argv[0] must be an absolute path");
  }
  if (spec.uid == 0 || spec.gid == 0) {
    return absl::InvalidArgumentError("jail: the VMM must not run as uid or gid 0");
  }
  struct stat mp;
  if (stat(spec.mount_point.c_str(), &mp) != 0 || !S_ISDIR(mp.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("jail: mount point ", spec.mount_point, " is not a directory"));
  }
  const std::string& root = spec.mount_point;

  // Plan every step in the parent.
  std::vector<Step> steps;
  std::set<std::string> made_dirs;
  auto mkdirs = [&](const std::string& path, bool include_self) {
    // Every proper prefix of `path` (and `path` itself if asked).
    for (size_t pos = 1; pos <= path.size(); ++pos) {
      if (pos != path.size() && path[pos] != '/') continue;
      if (pos == path.size() && !include_self) break;
      std::string prefix = path.substr(0, pos);
      if (made_dirs.insert(prefix).second) {
        steps.push_back({Step::kMkdir, root + prefix, "", 0, "mkdir " + prefix});
      }
    }
  };
  for (const JailMount& m : spec.mounts) {
    if (m.path.empty() || m.path[0] != '/' || m.path.find("/..") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("jail: bad path '", m.path, "'"));
    }
    if (!m.symlink_to.empty()) {
      mkdirs(m.path, false);
      steps.push_back({Step::kSymlink, root + m.path, m.symlink_to, 0, "symlink " + m.path});
      continue;
    }
    struct stat st;
    if ((m.source_tree_fd >= 0 ? fstat(m.source_tree_fd, &st) : stat(m.path.c_str(), &st)) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("jail: ", m.path));
    }
    const bool dir = S_ISDIR(st.st_mode);
    const bool device = S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode);
    mkdirs(m.path, dir);
    if (!dir) steps.push_back({Step::kTouch, root + m.path, "", 0, "create " + m.path});
    if (m.source_tree_fd >= 0) {
      steps.push_back({Step::kAttachTree, "", root + m.path,
                       static_cast<unsigned long>(m.source_tree_fd), "attach " + m.path});
    } else {
      steps.push_back({Step::kBind, m.path, root + m.path, 0, "bind " + m.path});
    }
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID;
    if (!m.writable) flags |= MS_RDONLY;
    if (!m.executable) flags |= MS_NOEXEC;
    if (!device) flags |= MS_NODEV;
    steps.push_back({Step::kRemountBind, "", root + m.path, flags, "remount " + m.path});
  }

  if (spec.proc) {
    mkdirs("/proc", true);
    steps.push_back({Step::kProc, "", root + "/proc", 0, "mount /proc"});
  }

  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  UniqueFd devnull(open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devnull.valid()) return absl::ErrnoToStatus(errno, "open /dev/null");
  int pid_pipe[2], err_pipe[2];
  if (pipe2(pid_pipe, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd pid_r(pid_pipe[0]), pid_w(pid_pipe[1]);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  UniqueFd err_r(err_pipe[0]), err_w(err_pipe[1]);
  const int n_pass = static_cast<int>(spec.pass_fds.size());
  const int output = spec.output_fd >= 0 ? spec.output_fd : devnull.get();

  pid_t first = fork();
  if (first < 0) return absl::ErrnoToStatus(errno, "fork for the vmm");
  if (first == 0) {
    // First child: a new session, then the VMM's own process, then exit so
    // the VMM is reparented (not smolvmd's child: nothing to reap, and it
    // outlives a daemon restart).
    int ef = err_w.get();
    if (setsid() < 0) ChildFail(ef, "setsid", errno);
    pid_t vmm = fork();
    if (vmm < 0) ChildFail(ef, "fork", errno);
    if (vmm > 0) {
      (void)!write(pid_w.get(), &vmm, sizeof(vmm));
      _exit(0);
    }
    // The VMM's process. Its room first (the mount trees of host mounts are
    // still open here), then its descriptors.
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (int err = VmCgroups::JoinFromChild(spec.cgroup_procs); err != 0) {
      ChildFail(ef, "join the vm's cgroups", err);
    }
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0) ChildFail(ef, "unshare", errno);
    // Nothing mounted here may propagate back to the host.
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      ChildFail(ef, "make mounts private", errno);
    }
    if (mount("smolvm-vmm", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0755,size=1m,nr_inodes=4096") != 0) {
      ChildFail(ef, "mount jail tmpfs", errno);
    }
    for (const Step& s : steps) {
      int rc = 0;
      switch (s.kind) {
        case Step::kMkdir:
          rc = mkdir(s.a.c_str(), 0755);
          if (rc != 0 && errno == EEXIST) rc = 0;
          break;
        case Step::kTouch: {
          int fd = open(s.a.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
          rc = fd < 0 ? -1 : close(fd);
          break;
        }
        case Step::kSymlink:
          rc = symlink(s.b.c_str(), s.a.c_str());
          break;
        case Step::kBind:
          rc = mount(s.a.c_str(), s.b.c_str(), nullptr, MS_BIND | MS_REC, nullptr);
          break;
        case Step::kRemountBind:
          rc = mount(nullptr, s.b.c_str(), nullptr, s.flags, nullptr);
          break;
        case Step::kProc:
          rc = mount("proc", s.b.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                     "hidepid=invisible,subset=pid");
          break;
        case Step::kAttachTree:
          rc = move_mount(static_cast<int>(s.flags), "", AT_FDCWD, s.b.c_str(),
                          MOVE_MOUNT_F_EMPTY_PATH);
          break;
      }
      if (rc != 0) ChildFail(ef, s.what.c_str(), errno);
    }
    if (mount(nullptr, root.c_str(), nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV |
                                                 MS_NOEXEC, nullptr) != 0) {
      ChildFail(ef, "remount jail read-only", errno);
    }
    // Then descriptors: 0-2, the passed ones at 3.., the error pipe above
    // them (close-on-exec), nothing else (the mount trees were needed above).
    ef = fcntl(err_w.get(), F_DUPFD_CLOEXEC, 3 + n_pass);
    if (ef < 0) _exit(126);
    int moved[64];
    if (n_pass > 64) ChildFail(ef, "too many descriptors", E2BIG);
    for (int i = 0; i < n_pass; ++i) {
      moved[i] = fcntl(spec.pass_fds[i], F_DUPFD_CLOEXEC, 3 + n_pass);
      if (moved[i] < 0) ChildFail(ef, "dup passed descriptor", errno);
    }
    if (dup2(devnull.get(), 0) < 0 || dup2(output, 1) < 0 || dup2(output, 2) < 0) {
      ChildFail(ef, "dup2 stdio", errno);
    }
    for (int i = 0; i < n_pass; ++i) {
      if (dup2(moved[i], 3 + i) < 0) ChildFail(ef, "dup2 passed descriptor", errno);
    }
    close_range(3 + n_pass, ef - 1, 0);
    close_range(ef + 1, ~0U, 0);

    // The jail becomes "/" and the host's tree is detached entirely.
    if (chdir(root.c_str()) != 0) ChildFail(ef, "chdir jail", errno);
    if (syscall(SYS_pivot_root, ".", ".") != 0) ChildFail(ef, "pivot_root", errno);
    if (umount2(".", MNT_DETACH) != 0) ChildFail(ef, "detach host root", errno);
    if (chdir("/") != 0) ChildFail(ef, "chdir /", errno);

    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);  // Guest RAM must not land in a core file.
    for (int cap = 0; cap <= 63; ++cap) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
        ChildFail(ef, "drop capability bounding set", errno);
      }
    }
    if (setgroups(spec.groups.size(), spec.groups.data()) != 0) {
      ChildFail(ef, "setgroups", errno);
    }
    if (setresgid(spec.gid, spec.gid, spec.gid) != 0) ChildFail(ef, "setresgid", errno);
    // All uids non-zero: the kernel clears every capability.
    if (setresuid(spec.uid, spec.uid, spec.uid) != 0) ChildFail(ef, "setresuid", errno);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ChildFail(ef, "no_new_privs", errno);
    execve(argv[0], argv.data(), envp.data());
    ChildFail(ef, "exec", errno);
  }

  pid_w.Reset();
  err_w.Reset();
  int status = 0;
  while (waitpid(first, &status, 0) < 0 && errno == EINTR) {
  }
  pid_t vmm = 0;
  if (WaitReadable(pid_r.get(), absl::Seconds(5))) {
    if (read(pid_r.get(), &vmm, sizeof(vmm)) != static_cast<ssize_t>(sizeof(vmm))) vmm = 0;
  }
  // EOF on the error pipe: the VMM exec'd (the pipe is close-on-exec), or
  // every copy died. A message: the step that failed.
  std::string error;
  char buf[512];
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline && WaitReadable(err_r.get(), deadline - absl::Now())) {
    ssize_t n = read(err_r.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    error.append(buf, n);
  }
  if (!error.empty()) {
    return absl::InternalError(absl::StrCat("confine the vmm: ", error));
  }
  if (vmm <= 0) {
    return absl::InternalError(absl::StrCat(
        "confine the vmm: the launcher exited without starting it (status ", status, ")"));
  }
  return vmm;
}

}  // namespace smolvm::vmm
