#include "lib/vmm/vm_cgroups.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <set>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"

namespace smolvm::vmm {
namespace {

constexpr uint64_t kCpuPeriodUs = 100000;
constexpr uint32_t kMaxIoWeight = 10000;

// v1 controllers we use, each with the directory names it may be mounted
// under (systemd mounts cpu and cpuacct together as "cpu,cpuacct" and links
// "cpu" to it; some hosts only have the combined name).
struct V1Controller {
  const char* name;
  std::vector<const char*> mounts;
};
const std::vector<V1Controller>& V1Controllers() {
  static const auto* controllers = new std::vector<V1Controller>{
      {"memory", {"memory"}},
      {"cpu", {"cpu", "cpu,cpuacct"}},
      {"pids", {"pids"}},
      {"blkio", {"blkio"}},
  };
  return *controllers;
}

// v2 controllers we enable, in this order.
const char* const kV2Controllers[] = {"memory", "cpu", "pids", "io"};

// One path component: a VM's group name. The character set leaves no way to
// name another directory ("/" is not in it, "." and ".." are refused), and no
// leading dot keeps clear of hidden names.
absl::Status ValidateName(absl::string_view what, absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " \"", absl::CEscape(name), "\" ", why,
        ": use 1-255 characters of letters, digits, '.', '_' and '-', not "
        "starting with '.' and without \"..\""));
  };
  if (name.empty() || name.size() > 255) return bad("has a bad length");
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' &&
        c != '-') {
      return bad("has a character that is not allowed");
    }
  }
  if (name[0] == '.' || absl::StrContains(name, "..")) {
    return bad("starts with '.' or contains \"..\"");
  }
  return absl::OkStatus();
}

absl::Status ValidateVmId(const std::string& vm_id) { return ValidateName("vm id", vm_id); }

// A parent comes from the daemon's configuration or from the kernel (our own
// v2 cgroup, whose systemd names may hold '@' or "\x2d"), not from clients:
// it only has to stay below fs_root.
absl::StatusOr<std::string> CleanParent(absl::string_view parent) {
  absl::string_view rel = absl::StripSuffix(absl::StripPrefix(parent, "/"), "/");
  for (absl::string_view part : absl::StrSplit(rel, '/')) {
    if (part.empty() || part == "." || part == ".." ||
        part.find_first_of(absl::string_view("\0\n", 2)) != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cgroup parent \"", absl::CEscape(parent),
          "\" must be a relative path without empty, \".\" or \"..\" components"));
    }
  }
  return std::string(rel);
}

absl::Status PathError(int err, absl::string_view op, const std::string& path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

// cgroupfs files are written with one write(2) each: the kernel parses every
// write as a whole value. No O_CREAT: the kernel makes these files, and a
// missing one means a missing controller, never something to create. O_TRUNC
// is ignored by cgroupfs and keeps the regular files of fake trees exact.
absl::Status WriteCgroupFile(const std::string& path, absl::string_view value) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd.valid()) return PathError(errno, "open", path);
  ssize_t n;
  do {
    n = write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return PathError(errno, absl::StrCat("write \"", value, "\" to"), path);
  if (static_cast<size_t>(n) != value.size()) {
    return absl::InternalError(absl::StrCat("short write of \"", value, "\" to ", path));
  }
  return absl::OkStatus();
}

absl::Status WriteIfPresent(const std::string& path, absl::string_view value) {
  if (!PathExists(path)) return absl::OkStatus();
  return WriteCgroupFile(path, value);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// mkdir that accepts an existing directory (a group reused after a daemon
// restart). Sets *created when it made the directory. cgroupfs ignores
// the mode's meaning for access to the files inside; 0755 is what every
// cgroup manager uses.
absl::Status MakeGroup(const std::string& path, bool* created = nullptr) {
  if (created != nullptr) *created = false;
  if (mkdir(path.c_str(), 0755) == 0) {
    if (created != nullptr) *created = true;
    return absl::OkStatus();
  }
  if (errno != EEXIST) return PathError(errno, "mkdir", path);
  // EEXIST also answers for a name that collides with a control file (a vm
  // id "memory.max" under v2): never treat such a file as a group.
  if (!IsDir(path)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a cgroup directory"));
  }
  return absl::OkStatus();
}

// Each component of `rel` under `base`, created as needed.
absl::Status MakeGroups(const std::string& base, const std::string& rel) {
  std::string path = base;
  for (absl::string_view part : absl::StrSplit(rel, '/', absl::SkipEmpty())) {
    path = JoinPath(path, std::string(part));
    SMOLVM_RETURN_IF_ERROR(MakeGroup(path));
  }
  return absl::OkStatus();
}

// rmdir of a group. A group is EBUSY while it still has tasks, and a killed
// QEMU stays listed for a moment after waitpid() while the kernel finishes
// its exit, so retry for about a second. ENOENT: already gone.
absl::Status RemoveGroup(const std::string& path) {
  constexpr auto kStep = std::chrono::milliseconds(20);
  for (int attempt = 0;; ++attempt) {
    if (rmdir(path.c_str()) == 0 || errno == ENOENT) return absl::OkStatus();
    if (errno != EBUSY || attempt >= 50) {
      absl::Status status = PathError(errno, "rmdir", path);
      if (errno == EBUSY) {
        return absl::FailedPreconditionError(absl::StrCat(
            status.message(), " (processes or child groups are still in it)"));
      }
      return status;
    }
    std::this_thread::sleep_for(kStep);
  }
}

// The value of `key` in a "key value" per line file (memory.events,
// memory.oom_control); 0 if the line is absent.
absl::StatusOr<uint64_t> ReadKeyedCounter(const std::string& path, absl::string_view key) {
  SMOLVM_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 1 << 16));
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(' ', 1));
    if (kv.first != key) continue;
    uint64_t value;
    if (!absl::SimpleAtoi(kv.second, &value)) {
      return absl::InternalError(absl::StrCat("cannot parse \"", line, "\" in ", path));
    }
    return value;
  }
  return 0;
}

// A memory limit file: a byte count, "max" (v2) or v1's "unlimited", which
// is LONG_MAX rounded down to a page (9223372036854771712).
absl::StatusOr<uint64_t> ReadLimitFile(const std::string& path) {
  SMOLVM_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 4096));
  absl::string_view value = absl::StripAsciiWhitespace(text);
  if (value == "max") return VmCgroups::kNoLimit;
  uint64_t bytes;
  if (!absl::SimpleAtoi(value, &bytes)) {
    return absl::InternalError(absl::StrCat("cannot parse \"", value, "\" in ", path));
  }
  if (bytes >= 0x7FFFFFFFFFFFF000ull) return VmCgroups::kNoLimit;
  return bytes;
}

// The smallest limit in `file` from `dir` up to `top` (inclusive): the one
// the kernel enforces, since a group can use no more than any ancestor.
absl::StatusOr<uint64_t> SmallestLimitUpTo(std::string dir, const std::string& top,
                                           const std::string& file) {
  uint64_t smallest = VmCgroups::kNoLimit;
  bool found = false;
  while (true) {
    std::string path = JoinPath(dir, file);
    if (PathExists(path)) {
      SMOLVM_ASSIGN_OR_RETURN(uint64_t limit, ReadLimitFile(path));
      smallest = std::min(smallest, limit);
      found = true;
    }
    size_t slash = dir.rfind('/');
    if (dir.size() <= top.size() || slash == std::string::npos || slash == 0) break;
    dir.resize(slash);
  }
  if (!found) {
    return absl::FailedPreconditionError(
        absl::StrCat("no ", file, " between ", top, " and its VM groups"));
  }
  return smallest;
}

std::string Missing(const std::string& path, absl::string_view limit,
                    absl::string_view fix) {
  return absl::StrCat(limit, " not applied: ", path, " is missing (", fix, ")");
}

absl::Status RequiredMissing(const std::string& path, absl::string_view limit,
                             absl::string_view fix) {
  return absl::FailedPreconditionError(
      absl::StrCat(limit, " is required but ", path, " is missing: ", fix));
}

// The daemon's own v2 cgroup from /proc/self/cgroup's "0::<path>" line.
absl::StatusOr<std::string> OwnV2Cgroup(const std::string& self_cgroup_file) {
  SMOLVM_ASSIGN_OR_RETURN(std::string text, ReadFileToString(self_cgroup_file, 1 << 16));
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "0::")) return std::string(line);
  }
  return absl::FailedPreconditionError(
      absl::StrCat(self_cgroup_file, " has no cgroup v2 line (\"0::/...\")"));
}

struct EnableResult {
  std::vector<std::string> enabled, unavailable, refused;
};

// Enables in dir/cgroup.subtree_control each controller we use that `dir`
// is offered, one write each so that an error names the controller. memory
// and pids must succeed. cpu (the kernel refuses it while a realtime thread
// runs in the subtree) and io may fail: VMs then run without those limits
// and Create() warns.
absl::StatusOr<EnableResult> EnableControllers(const std::string& dir) {
  SMOLVM_ASSIGN_OR_RETURN(std::string offered,
                          ReadFileToString(JoinPath(dir, "cgroup.controllers")));
  std::set<std::string> available =
      absl::StrSplit(offered, absl::ByAnyChar(" \n"), absl::SkipEmpty());
  std::string subtree = JoinPath(dir, "cgroup.subtree_control");
  EnableResult result;
  for (std::string c : kV2Controllers) {
    if (!available.count(c)) {
      result.unavailable.push_back(c);
      continue;
    }
    absl::Status status = WriteCgroupFile(subtree, absl::StrCat("+", c));
    if (status.ok()) {
      result.enabled.push_back(c);
    } else if (absl::IsUnavailable(status)) {  // EBUSY
      return absl::FailedPreconditionError(absl::StrCat(
          status.message(), ": processes are still in ", dir, ", and v2 allows them only in "
          "leaf groups once controllers are enabled (only smolvmd may run in the cgroup "
          "systemd gives it; look for ExecStartPre leftovers)"));
    } else if (c == "memory" || c == "pids") {
      return status;
    } else {
      result.refused.push_back(std::string(status.message()));
    }
  }
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<VmCgroups>> VmCgroups::Open(
    const std::string& fs_root, const std::string& parent,
    const std::string& self_cgroup_file) {
  std::unique_ptr<VmCgroups> cg(new VmCgroups());
  cg->fs_root_ = fs_root;
  cg->v2_ = PathExists(JoinPath(fs_root, "cgroup.controllers"));

  if (!cg->v2_) {
    SMOLVM_ASSIGN_OR_RETURN(std::string group, CleanParent(parent.empty() ? "smolvm" : parent));
    cg->v1_group_ = group;
    std::vector<std::string> mounts, missing;
    for (const V1Controller& c : V1Controllers()) {
      for (const char* mount : c.mounts) {
        std::string root = JoinPath(fs_root, mount);
        if (!PathExists(JoinPath(root, "cgroup.procs"))) continue;
        SMOLVM_RETURN_IF_ERROR(MakeGroups(root, group));
        cg->v1_parents_[c.name] = JoinPath(root, group);
        mounts.push_back(mount);
        break;
      }
      if (!cg->v1_parents_.count(c.name)) missing.push_back(c.name);
    }
    if (mounts.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no cgroup hierarchy under ", fs_root, ": neither cgroup v2 (cgroup.controllers) "
          "nor v1 memory, cpu, pids or blkio mounts; mount cgroup2 there or run on a "
          "host with cgroups"));
    }
    cg->describe_ = absl::StrCat("cgroup v1 under ", fs_root, "/{", absl::StrJoin(mounts, ","),
                                 "}/", group);
    if (!missing.empty()) {
      absl::StrAppend(&cg->describe_, " (not mounted: ", absl::StrJoin(missing, ","), ")");
    }
    return cg;
  }

  // v2. Only a leaf may hold processes once controllers are enabled below
  // it ("no internal processes"), so the daemon and the VMs each get one.
  std::string vms_dir, note;
  if (!parent.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(std::string rel, CleanParent(parent));
    SMOLVM_RETURN_IF_ERROR(MakeGroups(fs_root, rel));
    vms_dir = JoinPath(fs_root, rel);
  } else {
    SMOLVM_ASSIGN_OR_RETURN(std::string own, OwnV2Cgroup(self_cgroup_file));
    if (own.empty() || own == "/") {
      return absl::FailedPreconditionError(absl::StrCat(
          "smolvmd runs in the root cgroup (", self_cgroup_file, "), which it must not "
          "manage: start it from systemd with Delegate=yes (systemd/smolvmd.service) or "
          "name a cgroup parent to use"));
    }
    SMOLVM_ASSIGN_OR_RETURN(std::string rel, CleanParent(own));
    // A daemon that re-opens (or was re-executed) already sits in
    // <own>/daemon: manage <own>, not a nested <own>/daemon.
    if (absl::EndsWith(rel, "/daemon")) rel.resize(rel.size() - std::string("/daemon").size());
    std::string own_dir = JoinPath(fs_root, rel);
    std::string daemon_dir = JoinPath(own_dir, "daemon");
    SMOLVM_RETURN_IF_ERROR(MakeGroup(daemon_dir));
    // "0" moves the writer (all its threads) into the group.
    SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(JoinPath(daemon_dir, "cgroup.procs"), "0"));
    vms_dir = JoinPath(own_dir, "vms");
    note = absl::StrCat("smolvmd itself in ", daemon_dir);
    // Enable in <own> first, so that <own>/vms is offered the controllers.
    SMOLVM_RETURN_IF_ERROR(EnableControllers(own_dir).status());
    SMOLVM_RETURN_IF_ERROR(MakeGroup(vms_dir));
  }
  SMOLVM_ASSIGN_OR_RETURN(EnableResult result, EnableControllers(vms_dir));
  cg->v2_vms_dir_ = vms_dir;
  std::vector<std::string> parts = {
      result.enabled.empty() ? "no controllers" : absl::StrJoin(result.enabled, ",")};
  if (!result.unavailable.empty()) {
    parts.push_back(absl::StrCat("unavailable: ", absl::StrJoin(result.unavailable, ",")));
  }
  if (!result.refused.empty()) {
    parts.push_back(absl::StrCat("refused: ", absl::StrJoin(result.refused, "; ")));
  }
  if (!note.empty()) parts.push_back(note);
  cg->describe_ = absl::StrCat("cgroup v2 under ", vms_dir, " (",
                               absl::StrJoin(parts.begin(), parts.end(), "; "), ")");
  return cg;
}

std::string VmCgroups::Describe() const { return describe_; }

std::string VmCgroups::GroupDir(const std::string& controller, const std::string& vm_id) const {
  if (v2_) return JoinPath(v2_vms_dir_, vm_id);
  auto it = v1_parents_.find(controller);
  return it == v1_parents_.end() ? "" : JoinPath(it->second, vm_id);
}

std::vector<std::string> VmCgroups::GroupDirs(const std::string& vm_id) const {
  if (v2_) return {JoinPath(v2_vms_dir_, vm_id)};
  std::vector<std::string> dirs;
  for (const auto& [controller, parent] : v1_parents_) dirs.push_back(JoinPath(parent, vm_id));
  return dirs;
}

absl::StatusOr<VmCgroups::Created> VmCgroups::Create(const std::string& vm_id,
                                                     const CgroupLimits& limits) {
  SMOLVM_RETURN_IF_ERROR(ValidateVmId(vm_id));
  if (limits.io_weight > kMaxIoWeight) {
    return absl::InvalidArgumentError(absl::StrCat(
        "io weight ", limits.io_weight, " is out of range: use 1-10000 (0 = default)"));
  }
  Created created;
  std::vector<std::string> made;
  absl::Status status = [&]() -> absl::Status {
    for (const std::string& dir : GroupDirs(vm_id)) {
      bool is_new = false;
      SMOLVM_RETURN_IF_ERROR(MakeGroup(dir, &is_new));
      if (is_new) made.push_back(dir);
      created.procs_files.push_back(JoinPath(dir, "cgroup.procs"));
    }
    return WriteLimits(vm_id, limits, created.warnings);
  }();
  if (!status.ok()) {
    // Leave no half-configured group that a later Create would reuse.
    for (const std::string& dir : made) rmdir(dir.c_str());
    return status;
  }
  return created;
}

absl::Status VmCgroups::WriteLimits(const std::string& vm_id, const CgroupLimits& limits,
                                    std::vector<std::string>& warnings) const {
  if (v2_) return WriteLimitsV2(JoinPath(v2_vms_dir_, vm_id), limits, warnings);
  return WriteLimitsV1(vm_id, limits, warnings);
}

absl::Status VmCgroups::WriteLimitsV2(const std::string& dir, const CgroupLimits& limits,
                                      std::vector<std::string>& warnings) const {
  const std::string enable_fix = absl::StrCat(
      "the controller is not enabled in ", v2_vms_dir_, "/cgroup.subtree_control; run "
      "smolvmd from systemd with Delegate=yes, or enable it in every ancestor's "
      "cgroup.subtree_control");
  std::string memory_max = JoinPath(dir, "memory.max");
  if (limits.memory_max_bytes > 0) {
    if (!PathExists(memory_max)) {
      return RequiredMissing(memory_max, "the memory limit",
                             absl::StrCat("the memory ", enable_fix));
    }
    SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(memory_max, absl::StrCat(limits.memory_max_bytes)));
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(memory_max, "max"));
  }
  // Guest RAM must not be swapped: a swapped-out guest slows down by orders
  // of magnitude with nothing in the guest or the API saying why, its memory
  // (keys, tenant data) lands on the host's swap device, and the VM would
  // hold memory_max plus swap. At the limit the kernel OOM-kills the VMM
  // instead, which OomKills() reports.
  SMOLVM_RETURN_IF_ERROR(WriteIfPresent(JoinPath(dir, "memory.swap.max"), "0"));
  // An OOM kill takes the whole group: a VMM that lost a helper process is
  // a broken VM better stopped whole.
  SMOLVM_RETURN_IF_ERROR(WriteIfPresent(JoinPath(dir, "memory.oom.group"), "1"));

  std::string cpu_max = JoinPath(dir, "cpu.max");
  if (limits.cpu_max_percent > 0) {
    if (PathExists(cpu_max)) {
      SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(
          cpu_max, absl::StrCat(uint64_t{limits.cpu_max_percent} * kCpuPeriodUs / 100, " ",
                                kCpuPeriodUs)));
    } else {
      warnings.push_back(Missing(cpu_max, absl::StrCat("cpu limit ", limits.cpu_max_percent, "%"),
                                 absl::StrCat("the cpu ", enable_fix)));
    }
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(cpu_max, absl::StrCat("max ", kCpuPeriodUs)));
  }

  std::string pids_max = JoinPath(dir, "pids.max");
  if (limits.pids_max > 0) {
    if (!PathExists(pids_max)) {
      return RequiredMissing(pids_max, "the pids limit", absl::StrCat("the pids ", enable_fix));
    }
    SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(pids_max, absl::StrCat(limits.pids_max)));
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(pids_max, "max"));
  }

  if (limits.io_weight > 0) {
    std::string io_weight = JoinPath(dir, "io.weight");
    if (PathExists(io_weight)) {
      SMOLVM_RETURN_IF_ERROR(
          WriteCgroupFile(io_weight, absl::StrCat("default ", limits.io_weight)));
    } else {
      warnings.push_back(Missing(io_weight, absl::StrCat("io weight ", limits.io_weight),
                                 absl::StrCat("the io ", enable_fix)));
    }
  }
  return absl::OkStatus();
}

absl::Status VmCgroups::WriteLimitsV1(const std::string& vm_id, const CgroupLimits& limits,
                                      std::vector<std::string>& warnings) const {
  // Where a controller is not mounted, messages name the file it would have.
  auto file = [&](const std::string& controller, const std::string& name) {
    std::string dir = GroupDir(controller, vm_id);
    if (dir.empty()) dir = absl::StrCat(fs_root_, "/", controller, "/", v1_group_, "/", vm_id);
    return JoinPath(dir, name);
  };
  const std::string mount_fix = " (mount it, or boot with cgroup_enable=<controller>)";

  std::string memory_limit = file("memory", "memory.limit_in_bytes");
  std::string memsw_limit = file("memory", "memory.memsw.limit_in_bytes");
  if (limits.memory_max_bytes > 0 && !PathExists(memory_limit)) {
    return RequiredMissing(memory_limit, "the memory limit",
                           absl::StrCat("the v1 memory controller is not available", mount_fix));
  }
  // memsw (memory + swap) may never be below the memory limit: lift it
  // first, set the memory limit, then pin memsw to it so that the guest's
  // RAM is never swapped (see WriteLimitsV2 for why). Without swap
  // accounting (no memsw file) v1 cannot forbid swap per group.
  SMOLVM_RETURN_IF_ERROR(WriteIfPresent(memsw_limit, "-1"));
  if (limits.memory_max_bytes > 0) {
    std::string bytes = absl::StrCat(limits.memory_max_bytes);
    SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(memory_limit, bytes));
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(memsw_limit, bytes));
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(memory_limit, "-1"));
  }

  std::string period = file("cpu", "cpu.cfs_period_us");
  std::string quota = file("cpu", "cpu.cfs_quota_us");
  if (limits.cpu_max_percent > 0) {
    if (PathExists(period) && PathExists(quota)) {
      SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(period, absl::StrCat(kCpuPeriodUs)));
      SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(
          quota, absl::StrCat(uint64_t{limits.cpu_max_percent} * kCpuPeriodUs / 100)));
    } else {
      warnings.push_back(Missing(quota, absl::StrCat("cpu limit ", limits.cpu_max_percent, "%"),
                                 "no v1 cpu controller with CFS bandwidth control"));
    }
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(quota, "-1"));
  }

  std::string pids_max = file("pids", "pids.max");
  if (limits.pids_max > 0) {
    if (!PathExists(pids_max)) {
      return RequiredMissing(pids_max, "the pids limit",
                             absl::StrCat("the v1 pids controller is not available", mount_fix));
    }
    SMOLVM_RETURN_IF_ERROR(WriteCgroupFile(pids_max, absl::StrCat(limits.pids_max)));
  } else {
    SMOLVM_RETURN_IF_ERROR(WriteIfPresent(pids_max, "max"));
  }

  if (limits.io_weight > 0) {
    // The weight keeps its meaning relative to the default on each scale:
    // blkio.weight is 10..1000 with default 500 (systemd's conversion,
    // clamp(w * 500 / 100)); blkio.bfq.weight is 1..1000 with default 100,
    // the default of io.weight too. A plain w / 10 would put a VM at the
    // v2 default of 100 at the v1 minimum of 10.
    std::string cfq = file("blkio", "blkio.weight");
    std::string bfq = file("blkio", "blkio.bfq.weight");
    uint64_t w = limits.io_weight;
    if (PathExists(cfq)) {
      SMOLVM_RETURN_IF_ERROR(
          WriteCgroupFile(cfq, absl::StrCat(std::clamp<uint64_t>(w * 500 / 100, 10, 1000))));
    } else if (PathExists(bfq)) {
      SMOLVM_RETURN_IF_ERROR(
          WriteCgroupFile(bfq, absl::StrCat(std::clamp<uint64_t>(w, 1, 1000))));
    } else {
      warnings.push_back(Missing(cfq, absl::StrCat("io weight ", limits.io_weight),
                                 "no v1 blkio controller with a weight-based scheduler "
                                 "(CFQ or BFQ) on this kernel"));
    }
  }
  return absl::OkStatus();
}

absl::Status VmCgroups::Remove(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateVmId(vm_id));
  absl::Status first;
  for (const std::string& dir : GroupDirs(vm_id)) first.Update(RemoveGroup(dir));
  return first;
}

absl::StatusOr<uint64_t> VmCgroups::OomKills(const std::string& vm_id) const {
  SMOLVM_RETURN_IF_ERROR(ValidateVmId(vm_id));
  std::string dir = GroupDir("memory", vm_id);
  if (dir.empty()) {
    return absl::FailedPreconditionError("the v1 memory controller is not mounted");
  }
  if (!IsDir(dir)) return absl::NotFoundError(absl::StrCat("no cgroup ", dir));
  // v2: memory.events counts this group and its descendants. v1: only
  // kernels since 4.13 print the oom_kill line.
  return ReadKeyedCounter(JoinPath(dir, v2_ ? "memory.events" : "memory.oom_control"),
                          "oom_kill");
}

absl::StatusOr<uint64_t> VmCgroups::MemoryLimit(const std::string& vm_id) const {
  SMOLVM_RETURN_IF_ERROR(ValidateVmId(vm_id));
  std::string dir = GroupDir("memory", vm_id);
  if (dir.empty()) {
    return absl::FailedPreconditionError("the v1 memory controller is not mounted");
  }
  if (!IsDir(dir)) return absl::NotFoundError(absl::StrCat("no cgroup ", dir));
  if (v2_) return SmallestLimitUpTo(dir, fs_root_, "memory.max");
  return SmallestLimitUpTo(dir, JoinPath(fs_root_, "memory"), "memory.limit_in_bytes");
}

std::vector<std::string> VmCgroups::ListVmGroups() const {
  std::vector<std::string> parents;
  if (v2_) {
    parents.push_back(v2_vms_dir_);
  } else {
    for (const auto& [controller, parent] : v1_parents_) parents.push_back(parent);
  }
  std::set<std::string> ids;
  for (const std::string& parent : parents) {
    DIR* d = opendir(parent.c_str());
    if (d == nullptr) continue;
    while (struct dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (ValidateVmId(name).ok() && IsDir(JoinPath(parent, name))) ids.insert(name);
    }
    closedir(d);
  }
  return {ids.begin(), ids.end()};
}

int VmCgroups::JoinFromChild(const std::vector<std::string>& procs_files) {
  for (const std::string& path : procs_files) {
    int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno;
    ssize_t n;
    do {
      n = write(fd, "0", 1);
    } while (n < 0 && errno == EINTR);
    int err = n == 1 ? 0 : (n < 0 ? errno : EIO);
    close(fd);
    if (err != 0) return err;
  }
  return 0;
}

}  // namespace smolvm::vmm
