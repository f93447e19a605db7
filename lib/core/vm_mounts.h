// File: vm_mounts.h
//
// Host mounts (VMConfig.mounts, lib/model/mounts.h) on the host side: each
// host path resolved beneath the operator's [mounts] allowed_dirs into a
// descriptor the VMM's jail binds (so the check and the use name the same
// directory), and the guest-side detach/attach around snapshots, run by
// the agent.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/agent/guest_agent.h"
#include "lib/base/unique_fd.h"
#include "lib/image/host_paths.h"
#include "lib/model/mounts.h"
#include "lib/vmm/hypervisor.h"

namespace smolvm {

// A VM's mounts resolved for one launch: the descriptors stay open as long
// as this lives (until the VMM was started).
struct OpenedMounts {
  std::vector<UniqueFd> fds;
  std::vector<vmm::HostMount> mounts;  // dir_fd borrowed from `fds`.
};

// Resolves every mount's host_path with `allowed` (null: the operator
// allows none). PERMISSION_DENIED naming the setting when mounts are not
// allowed or a path lies outside the allowed dirs, has a symlink or crosses
// a mount point; NOT_FOUND for a missing directory; INVALID_ARGUMENT for a
// non-directory.
absl::StatusOr<std::shared_ptr<OpenedMounts>> OpenMounts(const image::HostPathResolver* allowed,
                                                         const std::vector<Mount>& mounts);

// Unmounts (attach = false) or mounts (attach = true) the VM's
// detach_on_snapshot mounts in the guest, through the agent; mounting skips
// a path already mounted, so it is safe to repeat. FAILED_PRECONDITION with
// the guest's output when the guest refused (e.g. a file still open).
absl::Status SetGuestMountsAttached(agent::GuestAgent& guest, const std::vector<Mount>& mounts,
                                    bool attach);

}  // namespace smolvm
