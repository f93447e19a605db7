// File: guest_payload.h
//
// What the daemon puts into every image, whatever its userland, and the
// files a VM boots from. The payload lives under /.smolvm in the root
// filesystem so it never collides with the image's own files:
//
//   /.smolvm/bin/busybox (+ applet symlinks in /.smolvm/bin)  the tools init uses
//   /.smolvm/init    guest/rootfs-init.sh: PID 1 (the initramfs picks it)
//   /.smolvm/agent   the statically linked guest agent, stripped
//
// plus what a userland needs to be usable as a VM (/etc/hostname, /etc/hosts,
// /etc/resolv.conf, /root, /tmp, /proc, /sys, /dev, /run mount points) when
// the image lacks them. The initramfs (initrd.img) holds busybox, the
// virtio modules of the kernel and guest/initramfs-init.sh as /init; when the
// kernel command line has no init=, it starts /.smolvm/init (or /sbin/init
// in images made before the payload existed).
//
// A userland is untrusted content (an OCI image may hold /etc -> /host/etc):
// everything here writes beneath the root through directory descriptors,
// one component at a time with O_NOFOLLOW, and never follows a symlink in
// the tree. External programs (strip, mkfs.ext4, e2fsck, resize2fs) are
// found in PATH or the sbin dirs; a missing one is FAILED_PRECONDITION
// naming the Debian package.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/image/build_context.h"

namespace smolvm::image {

struct GuestPayload {
  std::string busybox_path = "/bin/busybox";  // Debian's busybox-static.
  std::string agent_path;                     // Static ELF; "" = none.
  std::string recipe_dir;                     // Holds the guest/*.sh scripts.
};

// Fails (FAILED_PRECONDITION, naming the fix) when busybox is missing or
// dynamically linked, the agent is not a static x86-64 ELF, or a script is
// missing.
absl::Status CheckPayload(const GuestPayload& payload);

// The busybox userland of the `minimal` image into an empty dir (created if
// missing; INVALID_ARGUMENT if not empty): busybox with its applets at the
// paths `busybox --list-full` names, /etc/passwd, group, shadow (0600),
// hostname, hosts, resolv.conf (empty), profile, os-release (naming
// `kernel_version`), fstab, and the usual dirs (/tmp 1777, /root 0700). No
// init: InjectPayload adds /.smolvm/init.
absl::Status BuildMinimalRootfs(const GuestPayload& payload, const std::string& rootfs_dir,
                                const std::string& kernel_version);

// Adds the payload (see above) to a finished userland: /.smolvm/* is
// written (replacing an earlier payload; /.smolvm/agent is removed when
// `agent_path` is empty), applet links never replace an entry; /etc/hostname,
// /etc/hosts and the mount-point dirs are added only where missing, and
// /etc/resolv.conf when missing or a symlink that does not resolve to a file
// inside the tree (it is then replaced by an empty file). INVALID_ARGUMENT
// when /.smolvm, /.smolvm/bin or /etc is a symlink or not a directory; on
// error the tree may hold part of the payload.
absl::Status InjectPayload(const GuestPayload& payload, const std::string& rootfs_dir);

// The initramfs from a kernel dir (vmlinuz, modules/, modules.order, made by
// FetchKernel in guest_kernel.h): a gzip'd newc cpio, deterministic for the same
// inputs, written to `out_path`.
absl::Status BuildInitrd(const GuestPayload& payload, const std::string& kernel_dir,
                         const std::string& out_path, const BuildContext& ctx);

// A sparse ext4 disk of `rootfs_dir` (owners, modes, xattrs kept): its size
// is the tree's allocated size * 1.25 + 64 MiB, at least `min_size_mib`,
// rounded up to a MiB (`mkfs.ext4 -d`, 4 KiB blocks, label smolvm-root).
// `out_path` is created or overwritten, and removed if mkfs fails. Returns
// the size in bytes.
absl::StatusOr<uint64_t> MakeExt4(const std::string& rootfs_dir, const std::string& out_path,
                                  uint64_t min_size_mib, const BuildContext& ctx);

// Grows an ext4 disk file (not mounted, not in use) to `size_mib`: e2fsck
// -fy, sparse truncate, resize2fs. INVALID_ARGUMENT if it would shrink (the
// same size is a no-op); DATA_LOSS if e2fsck cannot repair the filesystem.
// If resize2fs fails the file is left longer than its filesystem (still
// usable; a retry finishes the job).
absl::Status GrowExt4(const std::string& path, uint64_t size_mib, const BuildContext& ctx);

namespace internal {
// Whether `path` is a 64-bit little-endian x86-64 ELF executable (ET_EXEC,
// or ET_DYN for static-pie) without a PT_INTERP program header, i.e. linked
// -static. Reads only the headers. Error only if it cannot be opened.
absl::StatusOr<bool> IsStaticX86_64Elf(const std::string& path);
}  // namespace internal

}  // namespace smolvm::image
