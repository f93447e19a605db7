// File: vm_cgroups.h
//
// VmCgroups puts each VM's QEMU (and everything it forks) into a cgroup of
// its own with memory, CPU, pids and IO limits, on cgroup v2 (production
// hosts) and on v1 (the development machines; see DESIGN.md).
//
// The daemon never moves a running QEMU: Create() returns the cgroup.procs
// files, and the freshly forked child writes "0" into each before exec
// (JoinFromChild), so nothing the VMM starts ever runs outside its group.
//
// Layout:
//   v1: <fs_root>/<controller>/<parent>/<vm_id> for each mounted controller
//       among memory, cpu (or "cpu,cpuacct"), pids, blkio.
//   v2: <fs_root>/<parent>/<vm_id>, or with an empty parent the subtree
//       systemd delegated to us (Delegate=yes):
//         <own>/daemon    smolvmd itself (v2 allows processes only in leaves)
//         <own>/vms/<id>  one group per VM
//
// The object holds no state beyond paths: groups survive a daemon restart
// and Create() reuses them. Calls for different vm ids may run concurrently.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace smolvm::vmm {

struct CgroupLimits {
  uint64_t memory_max_bytes = 0;  // 0 = no limit
  uint32_t cpu_max_percent = 0;   // 100 = one full CPU; 0 = no limit
  uint64_t pids_max = 0;          // 0 = no limit
  uint32_t io_weight = 0;         // v2 scale 1..10000; 0 = leave default
};

class VmCgroups {
 public:
  // MemoryLimit() of a group that no limit applies to.
  static constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

  // fs_root: normally "/sys/fs/cgroup". v2 when fs_root/cgroup.controllers
  // exists, else v1.
  // parent: v1: the group created under each controller (default "smolvm");
  //   may nest ("a/b"). v2: a path relative to fs_root whose
  //   cgroup.controllers offers memory and pids (we enable them in its
  //   cgroup.subtree_control), or empty for the delegated subtree of the
  //   daemon's own cgroup, read from self_cgroup_file ("0::/<path>"): the
  //   daemon moves itself into <own>/daemon, enables the available
  //   controllers among memory cpu pids io in <own> and in <own>/vms.
  // FAILED_PRECONDITION when there is nothing usable (no controllers, or v2
  // and the daemon in the root cgroup), with the fix in the message.
  static absl::StatusOr<std::unique_ptr<VmCgroups>> Open(
      const std::string& fs_root, const std::string& parent,
      const std::string& self_cgroup_file = "/proc/self/cgroup");

  std::string version() const { return v2_ ? "v2" : "v1"; }
  // One line for the startup log, e.g. "cgroup v1 under
  // /sys/fs/cgroup/{memory,cpu,pids,blkio}/smolvm"; names unavailable
  // controllers.
  std::string Describe() const;

  struct Created {
    std::vector<std::string> procs_files;  // For JoinFromChild.
    std::vector<std::string> warnings;     // Limits that could not be applied.
  };
  // Creates (or reuses, after a daemon restart) the VM's group(s) and writes
  // every limit, including "no limit" for zero fields, so a reused group
  // never keeps an old value. A cpu or io limit whose file is absent is
  // skipped with a warning; a memory or pids limit whose file is absent is
  // FAILED_PRECONDITION naming the file and the fix. On error the groups
  // this call created are removed again. INVALID_ARGUMENT for a bad vm_id
  // (only [A-Za-z0-9._-], no "..", not starting with ".") or io_weight
  // above 10000.
  absl::StatusOr<Created> Create(const std::string& vm_id, const CgroupLimits& limits);

  // Removes the VM's group(s); kills nothing, so the VMM must be gone. OK if
  // already gone. Retries for about a second while the kernel still lists
  // exiting tasks (EBUSY).
  absl::Status Remove(const std::string& vm_id);

  // OOM kills recorded for the VM's group (v2 memory.events, v1
  // memory.oom_control; 0 if the kernel has no "oom_kill" line).
  absl::StatusOr<uint64_t> OomKills(const std::string& vm_id) const;

  // The memory limit in force for the VM in bytes: the smallest of its
  // group's and its ancestors' limits (kNoLimit if none), for error messages.
  absl::StatusOr<uint64_t> MemoryLimit(const std::string& vm_id) const;

  // Sorted vm ids that have a group, so startup can remove the groups of
  // VMs that no longer exist.
  std::vector<std::string> ListVmGroups() const;

  // For the child between fork and exec: writes "0" into each file, moving
  // the calling process. Async-signal-safe (no allocation, no locks).
  // Returns 0, or the errno of the first failure.
  static int JoinFromChild(const std::vector<std::string>& procs_files);

 private:
  VmCgroups() = default;

  // The VM's group dir for a v1 controller ("memory", "cpu", "pids",
  // "blkio") or, on v2, for any controller; "" if that controller is not
  // mounted (v1).
  std::string GroupDir(const std::string& controller, const std::string& vm_id) const;
  // Every group dir of the VM (v2: one; v1: one per mounted controller).
  std::vector<std::string> GroupDirs(const std::string& vm_id) const;
  absl::Status WriteLimits(const std::string& vm_id, const CgroupLimits& limits,
                           std::vector<std::string>& warnings) const;
  absl::Status WriteLimitsV1(const std::string& vm_id, const CgroupLimits& limits,
                             std::vector<std::string>& warnings) const;
  absl::Status WriteLimitsV2(const std::string& dir, const CgroupLimits& limits,
                             std::vector<std::string>& warnings) const;

  bool v2_ = false;
  std::string fs_root_;
  // v1: controller name -> <fs_root>/<mount>/<parent>, mounted ones only.
  std::map<std::string, std::string> v1_parents_;
  std::string v1_group_;  // <parent>, for messages about unmounted ones.
  // v2: the dir that holds the VM groups.
  std::string v2_vms_dir_;
  std::string describe_;
};

}  // namespace smolvm::vmm
