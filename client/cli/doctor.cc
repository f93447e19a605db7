#include "client/cli/doctor.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli_format.h"
#include "client/connection.h"
#include "lib/vmm/accelerator.h"

namespace smolvm::cli {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
// CGROUP2_SUPER_MAGIC from <linux/magic.h>.
constexpr long kCgroup2Magic = 0x63677270;

CheckResult Ok(std::string name, std::string detail) {
  return {std::move(name), CheckLevel::kOk, std::move(detail), ""};
}
CheckResult Problem(CheckLevel level, std::string name, std::string detail, std::string fix) {
  return {std::move(name), level, std::move(detail), std::move(fix)};
}

CheckResult CheckKvm(const DoctorPaths& paths) {
  // The daemon's own choice (lib/vmm/accelerator.h), so the two never differ.
  absl::StatusOr<vmm::AcceleratorChoice> choice =
      vmm::ChooseAccelerator("auto", paths.dev_kvm, paths.sys_module);
  if (!choice.ok()) return Problem(CheckLevel::kFail, "kvm", std::string(choice.status().message()), "");
  if (choice->name == "kvm") return Ok("kvm", "smolvmd would use kvm: " + choice->reason);
  std::string fix = "guests run under TCG (emulation, ~10x slower); ";
  struct stat st;
  if (stat(paths.dev_kvm.c_str(), &st) != 0) {
    absl::StrAppend(&fix, "enable virtualization (VT-x/AMD-V) and load kvm_intel or kvm_amd");
  } else {
    absl::StrAppend(&fix, "make ", paths.dev_kvm, " readable and writable by smolvmd (group kvm)");
  }
  return Problem(CheckLevel::kWarn, "kvm", "smolvmd would use tcg: " + choice->reason, fix);
}

CheckResult CheckSocket(const DoctorPaths& paths, const std::function<absl::Status()>& ping) {
  if (!paths.socket.empty()) {
    struct stat st;
    if (stat(paths.socket.c_str(), &st) != 0) {
      return Problem(CheckLevel::kFail, "socket",
                     absl::StrCat(paths.socket, ": ", std::strerror(errno)),
                     "start smolvmd (systemctl start smolvmd), or point --socket / "
                     "$SMOLVMD_SOCKET at it");
    }
    if (!S_ISSOCK(st.st_mode)) {
      return Problem(CheckLevel::kFail, "socket", paths.socket + " is not a socket",
                     "remove it and restart smolvmd");
    }
    if (absl::Status probe = ProbeUnixSocket(paths.socket); !probe.ok()) {
      const bool denied = probe.code() == absl::StatusCode::kPermissionDenied;
      return Problem(CheckLevel::kFail, "socket", std::string(probe.message()),
                     denied ? "add yourself to the socket's group (then log in again), or "
                              "run as root"
                            : "start smolvmd (systemctl start smolvmd)");
    }
  }
  if (absl::Status s = ping(); !s.ok()) {
    return Problem(CheckLevel::kFail, "daemon", std::string(s.message()),
                   "see `journalctl -u smolvmd`");
  }
  return Ok("daemon", paths.socket.empty() ? "smolvmd answers"
                                           : absl::StrCat("smolvmd answers on ", paths.socket));
}

// FindInPath returns the full path of `program` in $PATH (and the sbin
// directories, which a user's PATH may lack), or "".
std::string FindInPath(const std::string& program) {
  const char* env = std::getenv("PATH");
  std::string path = absl::StrCat(env == nullptr ? "" : env, ":/usr/sbin:/sbin");
  for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", program);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

std::vector<CheckResult> CheckNetwork(const DoctorPaths& paths) {
  std::vector<CheckResult> results;
  // smolvmd programs nftables through libnftables (lib/net).
  void* lib = dlopen("libnftables.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (lib != nullptr) dlclose(lib);
  const std::string nft = FindInPath("nft");
  if (lib == nullptr) {
    results.push_back(Problem(CheckLevel::kFail, "nftables", "libnftables.so.1 not found",
                              "apt-get install libnftables1 nftables"));
  } else {
    results.push_back(Ok("nftables", nft.empty() ? "libnftables present (no nft command)"
                                                 : "libnftables present; " + nft));
  }
  struct stat st;
  if (stat((paths.sys_module + "/bridge").c_str(), &st) == 0) {
    results.push_back(Ok("bridge", "bridge module loaded"));
  } else {
    results.push_back(Problem(CheckLevel::kWarn, "bridge", "bridge module not loaded",
                              "smolvmd loads it when it makes its bridge; if that fails: "
                              "modprobe bridge"));
  }
  return results;
}

CheckResult CheckDisk(const DoctorPaths& paths) {
  // The state dir may not exist yet: its nearest existing parent holds it.
  std::string dir = paths.state_dir;
  struct statvfs vfs;
  while (statvfs(dir.c_str(), &vfs) != 0) {
    if (errno != ENOENT || dir.size() <= 1) {
      return Problem(CheckLevel::kWarn, "disk", absl::StrCat(dir, ": ", std::strerror(errno)),
                     "run as root to check the state dir");
    }
    const size_t slash = dir.rfind('/');
    dir = slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
  }
  const uint64_t free_bytes = uint64_t{vfs.f_bavail} * vfs.f_frsize;
  const std::string detail =
      absl::StrCat(FormatBytes(free_bytes), " free for ", paths.state_dir);
  if (free_bytes < kGiB) {
    return Problem(CheckLevel::kFail, "disk", detail,
                   "free space: each VM needs its root disk, each snapshot its memory");
  }
  if (free_bytes < 5 * kGiB) {
    return Problem(CheckLevel::kWarn, "disk", detail, "a few VMs and snapshots will fill it");
  }
  return Ok("disk", detail);
}

CheckResult CheckCgroups(const DoctorPaths& paths) {
  struct statfs fs;
  if (statfs(paths.cgroup_root.c_str(), &fs) != 0) {
    return Problem(CheckLevel::kWarn, "cgroups",
                   absl::StrCat(paths.cgroup_root, ": ", std::strerror(errno)),
                   "mount cgroup2 on /sys/fs/cgroup (VM resource limits need it)");
  }
  if (static_cast<long>(fs.f_type) == kCgroup2Magic) {
    return Ok("cgroups", "cgroup v2 (unified) at " + paths.cgroup_root);
  }
  return Problem(CheckLevel::kWarn, "cgroups", "cgroup v1 (legacy or hybrid)",
                 "boot with systemd.unified_cgroup_hierarchy=1 for cgroup v2");
}

const char* LevelName(CheckLevel level) {
  switch (level) {
    case CheckLevel::kOk:
      return "OK";
    case CheckLevel::kWarn:
      return "WARN";
    case CheckLevel::kFail:
      return "FAIL";
  }
  return "?";
}

}  // namespace

std::vector<CheckResult> RunDoctorChecks(const DoctorPaths& paths,
                                         const std::function<absl::Status()>& ping) {
  std::vector<CheckResult> results = {CheckKvm(paths), CheckSocket(paths, ping)};
  for (CheckResult& r : CheckNetwork(paths)) results.push_back(std::move(r));
  results.push_back(CheckDisk(paths));
  results.push_back(CheckCgroups(paths));
  return results;
}

std::string RenderChecks(const std::vector<CheckResult>& checks) {
  std::string text;
  for (const CheckResult& check : checks) {
    absl::StrAppend(&text, absl::StrFormat("%-4s  %-8s  %s\n", LevelName(check.level), check.name,
                                           EscapeForTerminal(check.detail)));
    if (!check.fix.empty()) absl::StrAppend(&text, "      fix: ", EscapeForTerminal(check.fix), "\n");
  }
  return text;
}

nlohmann::ordered_json ChecksToJson(const std::vector<CheckResult>& checks) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const CheckResult& check : checks) {
    std::string status = LevelName(check.level);
    for (char& c : status) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.push_back({{"check", check.name},
                   {"status", status},
                   {"detail", check.detail},
                   {"fix", check.fix}});
  }
  return out;
}

}  // namespace smolvm::cli
