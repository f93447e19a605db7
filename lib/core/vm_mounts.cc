#include "lib/core/vm_mounts.h"

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"

namespace smolvm {
namespace {

constexpr char kSetting[] = "[mounts] allowed_dirs in smolvmd.toml";

// The guest's commands for one mount. Guest paths and tags are
// NormalizeMounts' characters only ([A-Za-z0-9._@+-/]), so they need no
// quoting. The options are the guest init's (rootfs-init.sh).
std::string MountCommand(const Mount& m, size_t index) {
  return absl::StrCat("grep -q ' ", m.guest_path, " 9p ' /proc/mounts || mount -t 9p -o ",
                      "trans=virtio,version=9p2000.L,msize=262144,cache=none",
                      m.read_only ? ",ro" : "", " ", MountTag(index), " ", m.guest_path);
}

std::string UnmountCommand(const Mount& m) {
  return absl::StrCat("! grep -q ' ", m.guest_path, " 9p ' /proc/mounts || umount ",
                      m.guest_path);
}

}  // namespace

absl::StatusOr<std::shared_ptr<OpenedMounts>> OpenMounts(const image::HostPathResolver* allowed,
                                                         const std::vector<Mount>& mounts) {
  auto opened = std::make_shared<OpenedMounts>();
  if (mounts.empty()) return opened;
  if (allowed == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(
        "this daemon allows no host mounts: remove mounts, or ask the operator to allow a "
        "directory (",
        kSetting, ")"));
  }
  for (size_t i = 0; i < mounts.size(); ++i) {
    SMOLVM_ASSIGN_OR_RETURN(
        UniqueFd fd,
        allowed->OpenDirectory(mounts[i].host_path, absl::StrCat("mounts[", i, "].host_path")));
    opened->mounts.push_back(vmm::HostMount{MountTag(i), fd.get(), mounts[i].read_only});
    opened->fds.push_back(std::move(fd));
  }
  return opened;
}

absl::Status SetGuestMountsAttached(agent::GuestAgent& guest, const std::vector<Mount>& mounts,
                                    bool attach) {
  // The payload's busybox, as the guest's init uses (the mounts come from
  // that init, so every image with mounts has it), so shell-less images work.
  std::string script = "PATH=/.smolvm/bin:$PATH\nset -e";
  bool any = false;
  for (size_t i = 0; i < mounts.size(); ++i) {
    if (!mounts[i].detach_on_snapshot) continue;
    any = true;
    absl::StrAppend(&script, "\n",
                    attach ? MountCommand(mounts[i], i) : UnmountCommand(mounts[i]));
  }
  if (!any) return absl::OkStatus();
  agent::ExecSpec spec;
  spec.argv = {"/.smolvm/bin/sh", "-c", script};
  spec.timeout = absl::Seconds(10);
  SMOLVM_ASSIGN_OR_RETURN(auto exec, guest.StartExec(spec));
  std::string output;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (true) {
    SMOLVM_ASSIGN_OR_RETURN(agent::ExecEvent ev, exec->Next(deadline));
    if (ev.kind != agent::ExecEvent::Kind::kExit) {
      if (output.size() < 4096) output += ev.data;
      continue;
    }
    if (ev.exit_code == 0 && ev.signal == 0 && !ev.timed_out) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat(
        attach ? "mount" : "unmount", " the host mounts in the guest failed",
        attach ? "" : " (is a guest process still using files in them?)", ": ",
        output.empty() ? absl::StrCat("exit ", ev.exit_code) : output));
  }
}

}  // namespace smolvm
