// File: vmm_jail.h
//
// Starts a VMM process confined to an "empty room" (issue 8): its own mount
// namespace whose root is a fresh read-only tmpfs holding only the host's
// /usr (read-only, for the binary and its libraries), a few device nodes and
// the VM's own files bind-mounted at their usual paths; its own IPC and UTS
// namespaces; a per-VM uid/gid with no supplementary groups, an empty
// capability bounding set and no_new_privs; its cgroups joined before exec.
// QEMU then adds its own seccomp filter (-sandbox).
//
// The process is detached like a daemon (new session, reparented away from
// smolvmd by a double fork) so that VMs survive a daemon restart; QEMU's own
// -daemonize cannot be used because its fork and setsid come after its
// seccomp filter is installed (spawn=deny / elevateprivileges=deny kill it).
//
// Everything the child does between fork and exec is a plain system call on
// data prepared by the parent: smolvmd is multi-threaded, so the child may
// not allocate or take locks.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace smolvm::vmm {

struct JailMount {
  std::string path;  // Absolute host path, mounted at the same path inside.
  bool writable = false;
  bool executable = false;  // Else mounted noexec.
  // When set, `path` becomes this symlink inside instead of a mount (how
  // /bin, /lib ... point into /usr on merged-/usr hosts).
  std::string symlink_to;
  // When >= 0: a detached mount tree (open_tree with OPEN_TREE_CLONE, held
  // open by the caller until SpawnJailed returns) attached at `path`
  // inside instead of a bind of the host's `path` (host mounts: the jail
  // gets exactly the directory the caller resolved, whatever its name
  // points to now; a bind could not take it, being in the host's mount
  // namespace).
  int source_tree_fd = -1;
};

struct JailSpec {
  // argv[0] must be an absolute path visible inside the jail.
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "K=V"; nothing is inherited.
  // An empty directory on the host to mount the jail's tmpfs root on (only
  // inside the child's private mount namespace).
  std::string mount_point;
  std::vector<JailMount> mounts;  // Files or directories.
  // Mounts a procfs at /proc that shows only the VMM's own processes
  // (hidepid=invisible, subset=pid). QEMU's 9p server needs it: it sets
  // the modes of the files it creates through /proc/self/fd.
  bool proc = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  // Supplementary groups (e.g. the group of /dev/kvm); usually none.
  std::vector<gid_t> groups;
  // cgroup.procs files the child joins (writes "0") before exec.
  std::vector<std::string> cgroup_procs;
  // Descriptors the VMM inherits, renumbered 3, 4, ... in this order; every
  // other descriptor is closed.
  std::vector<int> pass_fds;
  // stdout and stderr of the VMM (an open file); /dev/null when < 0.
  int output_fd = -1;
};

// The usual rooms for a VMM: /usr read-only, /bin /lib /lib64 /sbin as on the
// host (symlinks into /usr on merged-/usr systems, read-only binds
// otherwise), /etc/ld.so.cache, and /dev/{null,zero,random,urandom} (+ kvm).
std::vector<JailMount> BaseJailMounts(bool with_kvm);

// Starts the confined process and returns its pid once it has exec'd (or
// the reason it could not: the failing step and errno). The process is not
// a child of the caller (nothing to reap).
absl::StatusOr<pid_t> SpawnJailed(const JailSpec& spec);

}  // namespace smolvm::vmm
