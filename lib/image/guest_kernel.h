// File: guest_kernel.h
//
// The guest kernel directory: Debian's cloud kernel, fetched WITHOUT
// installing it on the host (`apt-get download` + `dpkg-deb -x` into a
// scratch dir), reduced to what a VM boots from. The C++ form of
// guest/fetch-kernel.sh it replaced, with the same result on disk:
//
//   vmlinuz          the bzImage (boot/vmlinuz-REL of the package)
//   modules/<m>.ko   exactly the modules the initramfs loads, plain
//                    (uncompressed) ELF objects so busybox insmod loads them
//   modules.order    the .ko file names, one per line, in load order
//   kernel-version   the release, e.g. "6.1.0-56-cloud-amd64" (uname -r)
//   package-version  "<package>=<version>", e.g.
//                    "linux-image-6.1.0-56-cloud-amd64=6.1.192-2"
//   config           boot/config-REL (when the package has one)
//
// Each text file ends with a newline; files are 0644, directories 0755.
// lib/image/guest_payload.h BuildInitrd reads the directory.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/image/build_context.h"

namespace smolvm::image {

// The meta packages of the two kernels: the cloud flavour every VM boots,
// and the generic flavour (same version, 9p as modules) booted by VMs with
// host mounts (docs/decisions.md, "Host mounts").
inline constexpr char kCloudKernelMeta[] = "linux-image-cloud-amd64";
inline constexpr char kMountsKernelMeta[] = "linux-image-amd64";

struct KernelFetchOptions {
  // The kernel directory to fill. Its parent is created when missing; the
  // scratch dir is made beside it (same filesystem), so it needs room for
  // the unpacked package (~100 MB) for the duration of the call.
  std::string dest_dir;
  // A local linux-image-*.deb to use instead of apt (offline hosts); ""
  // = resolve `meta_package` with apt and download the package.
  std::string deb_path;
  // The meta package apt resolves to a concrete linux-image-<release>
  // package (the first linux-image-<digit>... it depends on).
  std::string meta_package = kCloudKernelMeta;
  // Put before `apt-get update` and `apt-get download` (the only programs
  // that reach the network), e.g. {"nsenter", "--net=/proc/N/ns/net", "--"}.
  // When empty and ctx.download_netns is set, {"nsenter",
  // "--net=<download_netns>", "--"} is used.
  std::vector<std::string> command_prefix;
};

// What a kernel directory holds.
struct KernelInfo {
  std::string kernel_version;   // kernel-version, e.g. "6.1.0-56-cloud-amd64".
  std::string package_version;  // package-version, e.g. "linux-image-...=6.1.192-2".
};

// The modules the kernel directory holds, in load order (each needs only
// ones before it).
const std::vector<std::string>& GuestKernelModules();

// Modules taken, after those, when the package has them as modules: the
// ext4 stack (built into the cloud flavour) and the virtio-9p stack of host
// mounts (only in the generic flavour; all of it or none, keyed by 9p.ko).
const std::vector<std::string>& OptionalGuestKernelModules();


// Makes `options.dest_dir` hold the wanted kernel and returns what it holds.
// The wanted package is "<Package>=<Version>" of `deb_path` or, with apt,
// the concrete package `meta_package` depends on at its candidate version
// (running `apt-get update` once when apt-cache cannot resolve it). When
// dest_dir already holds that package=version (ReadKernelDir succeeds and
// names it) nothing is touched. Otherwise the package is unpacked and the
// directory built in a scratch dir "<dest_dir>.tmp-XXXXXX" beside it, synced,
// then renamed into place: a reader sees the old directory or the new one,
// never a mix; an old dest_dir is replaced. The scratch dir is removed on
// every path. apt-get download runs as the caller (with
// -o APT::Sandbox::User=root when root). Every program gets ctx.cancelled
// and ctx.step_timeout; steps are reported with ctx.Report("kernel: ...").
//
// Errors (the messages say what to fix):
//   INVALID_ARGUMENT    a bad dest_dir or meta_package; deb_path not a
//                       regular file, not a .deb, or not a kernel package:
//                       no single boot/vmlinuz-*, no bzImage "HdrS" magic,
//                       no lib/modules/REL, not exactly one <m>.ko{,.xz,.zst,
//                       .gz} per module, or one that is no ELF object
//   NOT_FOUND           deb_path does not exist
//   FAILED_PRECONDITION a missing host tool (naming the package to
//                       install); apt cannot resolve meta_package (run
//                       `apt-get update`, check the apt sources)
//   UNAVAILABLE         `apt-get update` or `apt-get download` failed (the
//                       mirror cannot be reached)
//   RESOURCE_EXHAUSTED  out of disk space
//   CANCELLED / DEADLINE_EXCEEDED  from ctx
absl::StatusOr<KernelInfo> FetchKernel(const KernelFetchOptions& options, const BuildContext& ctx);

// Reads a kernel directory's kernel-version and package-version (trailing
// whitespace removed). NOT_FOUND when `dir` does not exist;
// FAILED_PRECONDITION, naming the missing file and the fix, when it lacks one
// of vmlinuz, modules.order, kernel-version, package-version (regular files)
// or a version file is empty.
absl::StatusOr<KernelInfo> ReadKernelDir(const std::string& dir);

}  // namespace smolvm::image
