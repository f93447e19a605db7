// File: mounts.h
//
// Host mounts (VMConfig.mounts): a host directory the operator allows,
// shown to the guest at a path over virtio-9p and mounted by the guest's
// init. This file holds the request's shape and its syntax rules, the tags
// that name each export, and the guest kernel parameter that tells init what
// to mount. Which host directory a path names (allow list, symlinks) is
// lib/core/vm_mounts.h's business; QEMU's devices are lib/vmm's.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace smolvm {

struct Mount {
  // Absolute host path beneath one of the operator's [mounts] allowed_dirs.
  std::string host_path;
  // Absolute path in the guest where init mounts it (created if missing).
  std::string guest_path;
  bool read_only = false;
  // QEMU cannot migrate an active 9p export, so a VM with mounts cannot be
  // snapshotted; with this set, the agent unmounts it before a snapshot and
  // mounts it again after (and in restored clones).
  bool detach_on_snapshot = false;

  bool operator==(const Mount&) const = default;
};

inline constexpr size_t kMaxMounts = 8;
// Guest paths travel on the kernel command line (2048 bytes on x86).
inline constexpr size_t kMaxMountGuestPath = 128;

// INVALID_ARGUMENT naming the rule: at most kMaxMounts; host_path absolute
// without NUL, "." or ".." components (at most 4096 bytes); guest_path
// absolute, 2-128 characters of [A-Za-z0-9._@+-/], no "." or ".."
// components, not "/" nor under /proc, /sys, /dev, /run or /.smolvm;
// guest paths distinct and none inside another. Trailing slashes are removed.
absl::Status NormalizeMounts(std::vector<Mount>& mounts);

// The 9p mount tag of the i-th mount ("smolvm-m0", ...).
std::string MountTag(size_t index);

// The kernel parameters that make the guest's init mount `mounts`:
// " smolvm.mount=<tag>:<guest path>:<ro|rw>" per mount ("" for none).
std::string MountCmdline(const std::vector<Mount>& mounts);

// The mounts a snapshot would be refused for (not detach_on_snapshot), as
// "guest:host" names for the message; empty when a snapshot may proceed.
std::vector<std::string> UndetachableMounts(const std::vector<Mount>& mounts);

}  // namespace smolvm
