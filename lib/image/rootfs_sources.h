// File: rootfs_sources.h
//
// The userland of an image, produced into an empty directory from one of
// the sources the daemon supports. Nothing here knows about the guest
// payload (init, agent) or the disk format: lib/image/guest_payload adds
// the former and makes the ext4 disk afterwards.
//
//   Debian     mmdebstrap from the Debian archive the host's apt reaches;
//              downloaded .debs are kept in a cache directory and reused.
//   OCI        an OCI image layout directory or a `docker save` /
//              `podman save` tarball (no registry access), converted with
//              skopeo and unpacked with umoci (layer order, whiteouts and
//              paths escaping the root are umoci's job).
//   Directory  a host directory (the caller checked it is allow-listed).
//   Tarball    a rootfs tarball on the host, unpacked without letting any
//              entry escape the root.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/image/build_context.h"

namespace smolvm::image {

struct DebianSource {
  std::string suite = "bookworm";     // [a-z][a-z0-9-]{0,31}: bookworm, trixie.
  std::vector<std::string> packages;  // Debian package names.
  std::string variant = "minbase";    // mmdebstrap --variant.
  std::string mirror;                 // "" = deb.debian.org (as the host).
};

struct OciSource {
  // An OCI image layout directory (has oci-layout and index.json) or a
  // tarball of one, or a `docker save` tarball (has manifest.json).
  std::string path;
  // The tag inside the layout/archive; "" = the only image there.
  std::string reference;
};

// What the image's config says a process should start with; kept in the
// image manifest and applied to every Exec in VMs of the image.
struct ExecDefaults {
  std::vector<std::string> env;  // "KEY=VALUE", in the image's order.
  std::string working_dir;       // "" = unset.
  std::string user;              // "" = unset; "name", "uid" or "uid:gid".
};

// `defaults.env` as a map (entries without a name or "=" are dropped; a
// later entry wins, as in the image's own order).
std::map<std::string, std::string> EnvMap(const ExecDefaults& defaults);

// Each function fills `rootfs_dir`, which exists and is empty (else
// FAILED_PRECONDITION). On error the directory may hold a partial tree: the
// caller removes it. Scratch space (OCI, Tarball) is a directory beside
// `rootfs_dir`, ".<name>.oci-XXXXXX" / ".<name>.tar-XXXXXX", removed before
// the call returns; on success `rootfs_dir` may have been replaced by a
// rename (same path, new inode, the image root's owner and mode).
// Errors: INVALID_ARGUMENT for bad input (a bad name, an unknown suite or
// package, a corrupt archive, several images and no reference), NOT_FOUND
// for a missing path, FAILED_PRECONDITION for a missing host tool (naming
// the package to install), UNAVAILABLE when the Debian archive cannot be
// reached, RESOURCE_EXHAUSTED for a full disk, CANCELLED when ctx says so,
// DEADLINE_EXCEEDED when a program outlives ctx.step_timeout. The messages
// say what to fix. Every program gets ctx.cancelled and ctx.step_timeout.

// Runs `mmdebstrap --mode=root --variant=<variant> --include=<packages>
// <suite> rootfs_dir [mirror]` (as root) in a private mount namespace, so
// its /dev, /proc and /sys mounts in the chroot vanish with it even when
// it is killed. Without a mirror: http://deb.debian.org/debian plus the
// updates and security suites of a stable release. The names are checked
// before anything runs: suite [a-z][a-z0-9-]{0,31}, packages
// [a-z0-9][a-z0-9+.-]+ (no versions), variant one of essential, apt,
// required, minbase, buildd, important, debootstrap, standard, mirror an
// http(s) URL. `cache_dir` holds downloaded .debs across builds (created
// if missing; safe to share between concurrent builds); the image itself
// keeps no .debs, apt lists, resolv.conf or hostname of the host.
absl::Status BuildDebianRootfs(const DebianSource& source, const std::string& rootfs_dir,
                               const std::string& cache_dir, const BuildContext& ctx);

// Unpacks an OCI layout directory, an OCI layout tarball (oci-archive) or
// a `docker save` tarball: `skopeo copy` into a scratch OCI layout, then
// `umoci raw unpack`. umoci applies layers in order with their whiteouts
// and resolves every entry inside the root: "../x", absolute names and
// writes through symlinks pointing outside all land inside `rootfs_dir`; a
// hard link to a file outside it is INVALID_ARGUMENT. `reference` is a tag
// (an index.json "org.opencontainers.image.ref.name", or a docker RepoTag
// such as "app:v1", "docker.io/library/app:v1").
absl::StatusOr<ExecDefaults> UnpackOciRootfs(const OciSource& source, const std::string& rootfs_dir,
                                             const BuildContext& ctx);

// `cp -a -x` of the tree: owners, modes, times, xattrs, hard links, device
// nodes, FIFOs; symlinks are copied as symlinks, never followed; mounts
// below `source_dir` are not entered. `source_dir` itself must not be a
// symlink (INVALID_ARGUMENT) nor contain `rootfs_dir`.
absl::Status CopyDirectoryRootfs(const std::string& source_dir, const std::string& rootfs_dir,
                                 const BuildContext& ctx);

// A tar, plain or gzip/xz/zstd/lz4-compressed (bzip2 is refused), made the
// only layer of a scratch OCI image and unpacked like UnpackOciRootfs, so
// no entry can land outside `rootfs_dir`.
absl::Status UnpackRootfsTarball(const std::string& tarball, const std::string& rootfs_dir,
                                 const BuildContext& ctx);

}  // namespace smolvm::image
