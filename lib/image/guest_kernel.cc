#include "lib/image/guest_kernel.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/temp_dir.h"
#include "lib/base/unique_fd.h"

namespace smolvm::image {
namespace {

namespace fs = std::filesystem;

// Output kept per stream of a tool; errors quote the last 2000 bytes.
constexpr size_t kToolOutputCap = 256 << 10;
constexpr size_t kErrorTail = 2000;
// The bzImage setup header's magic "HdrS" (Documentation/x86/boot.rst).
constexpr off_t kBzImageMagicOffset = 0x202;
constexpr char kLocalDebHint[] = "SMOLVM_KERNEL_DEB=/path/to/linux-image-*.deb";

// The kernel directory's files (see guest_kernel.h).
constexpr char kVmlinuz[] = "vmlinuz";
constexpr char kModulesDir[] = "modules";
constexpr char kModulesOrder[] = "modules.order";
constexpr char kKernelVersion[] = "kernel-version";
constexpr char kPackageVersion[] = "package-version";
constexpr char kConfig[] = "config";

// The Debian package that provides each program we run.
std::string PackageOf(const std::string& program) {
  if (program == "dpkg-deb") return "dpkg";
  if (program == "apt-get" || program == "apt-cache") return "apt";
  if (program == "xz") return "xz-utils";
  if (program == "nsenter") return "util-linux";
  if (program == "env") return "coreutils";
  return program;  // zstd, gzip.
}

// Runs a tool with ctx's timeout and cancellation. A missing program is
// FAILED_PRECONDITION naming the package to install (and `why`, when set,
// instead of the generic text); a non-zero exit is left to the caller, who
// knows what it means.
absl::StatusOr<SubprocessResult> RunTool(const std::vector<std::string>& argv,
                                         const BuildContext& ctx, absl::string_view why = "") {
  if (ctx.IsCancelled()) {
    return absl::CancelledError(absl::StrCat("kernel fetch cancelled before ", argv[0]));
  }
  SubprocessOptions options;
  options.timeout = ctx.step_timeout;
  options.max_output_bytes = kToolOutputCap;
  options.cancelled = ctx.cancelled;
  auto result = RunSubprocess(argv, options);
  if (absl::IsCancelled(result.status())) {
    return absl::CancelledError(
        absl::StrCat("kernel fetch cancelled: ", result.status().message()));
  }
  if (absl::IsNotFound(result.status())) {
    if (!why.empty()) return absl::FailedPreconditionError(why);
    return absl::FailedPreconditionError(absl::StrCat(
        "'", argv[0], "' not found; install it (apt-get install -y ", PackageOf(argv[0]), ")"));
  }
  return result;
}

// How a tool failed, with the tail of what it said.
std::string FailureText(const SubprocessResult& r) {
  std::string why = r.term_signal != 0 ? absl::StrCat("killed by signal ", r.term_signal)
                                       : absl::StrCat("exited with ", r.exit_code);
  std::string said(absl::StripAsciiWhitespace(r.stderr_text + r.stdout_text));
  if (said.empty()) return why;
  return absl::StrCat(why, ": ", TailOf(said, kErrorTail));
}

bool OutOfSpace(const SubprocessResult& r) {
  for (absl::string_view text : {r.stderr_text, r.stdout_text}) {
    if (absl::StrContains(text, "No space left on device") ||
        absl::StrContains(text, "Disk quota exceeded")) {
      return true;
    }
  }
  return false;
}

// A failed tool run: RESOURCE_EXHAUSTED for a full disk, else `status`.
absl::Status ToolError(absl::Status status, const SubprocessResult& r) {
  if (OutOfSpace(r)) {
    return absl::ResourceExhaustedError(absl::StrCat("out of disk space: ", status.message()));
  }
  return status;
}

// Debian Policy 5.6.1: lower case letters, digits, + - . ; at least two
// characters, starting with a letter or digit.
bool ValidPackageName(absl::string_view p) {
  if (p.size() < 2 || p.size() > 128 || !absl::ascii_isalnum(p[0])) return false;
  for (char c : p) {
    bool ok = absl::ascii_isdigit(c) || (c >= 'a' && c <= 'z') || c == '+' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// Debian Policy 5.6.12: [epoch:]upstream[-revision], alphanumerics and . + ~ - :
bool ValidVersion(absl::string_view v) {
  if (v.empty() || v.size() > 128 || !absl::ascii_isdigit(v[0])) return false;
  for (char c : v) {
    if (!absl::ascii_isalnum(c) && !strchr(".+~-:", c)) return false;
  }
  return true;
}

// The wanted package and where it comes from.
struct Wanted {
  std::string package;
  std::string version;
  std::string deb;  // A local .deb; "" = apt-get download.
  std::string Spec() const { return absl::StrCat(package, "=", version); }
};

// "/a/b/" → "/a/b", absolute; refuses "" and "/".
absl::StatusOr<std::string> NormalizeDest(const std::string& dest) {
  if (dest.empty()) return absl::InvalidArgumentError("the kernel directory must not be empty");
  std::error_code ec;
  std::string abs = fs::absolute(dest, ec).lexically_normal().string();
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad kernel directory \"", dest, "\""));
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  if (abs == "/") return absl::InvalidArgumentError("the kernel directory must not be /");
  return abs;
}

std::string ParentOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

// Reads `n` bytes at `offset` of the regular file `path` (not following a
// final symlink); false when the file is shorter or cannot be read.
bool BytesAt(const std::string& path, off_t offset, char* buf, size_t n) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return false;
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd.get(), buf + done, n - done, offset + done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += r;
  }
  return true;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The kernel directory's modes (the script's, under umask 022), whatever
// the caller's umask: the files are 0644, the directories 0755.
absl::Status SetMode(const std::string& path, mode_t mode) {
  if (chmod(path.c_str(), mode) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", path));
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  SMOLVM_RETURN_IF_ERROR(WriteFileAtomic(path, text, 0644));
  return SetMode(path, 0644);
}

absl::Status CopyFile(const std::string& src, const std::string& dst) {
  SMOLVM_RETURN_IF_ERROR(SparseCopyFile(src, dst));  // fsyncs dst.
  return SetMode(dst, 0644);
}

// ---- which package ---------------------------------------------------------

// `dpkg-deb -f DEB FIELD`.
absl::StatusOr<std::string> DebField(const std::string& deb, const std::string& shown,
                                     const std::string& field, const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"dpkg-deb", "-f", deb, field}, ctx));
  if (r.exit_code != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is not a valid .deb: dpkg-deb ", FailureText(r)));
  }
  return std::string(absl::StripAsciiWhitespace(r.stdout_text));
}

absl::StatusOr<Wanted> WantedFromDeb(const std::string& deb_path, const BuildContext& ctx) {
  const std::string shown = absl::StrCat("kernel package ", deb_path);
  struct stat st;
  if (stat(deb_path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat(shown, " does not exist (", kLocalDebHint, ")"));
    }
    return absl::ErrnoToStatus(errno, shown);
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(shown, " is not a file"));
  }
  std::error_code ec;
  std::string deb = fs::canonical(deb_path, ec).string();
  if (ec) return absl::InvalidArgumentError(absl::StrCat(shown, ": ", ec.message()));
  Wanted w;
  w.deb = deb;
  SMOLVM_ASSIGN_OR_RETURN(w.package, DebField(deb, shown, "Package", ctx));
  SMOLVM_ASSIGN_OR_RETURN(w.version, DebField(deb, shown, "Version", ctx));
  if (!ValidPackageName(w.package) || !ValidVersion(w.version)) {
    return absl::InvalidArgumentError(
        absl::StrCat(shown, " is not a valid .deb: bad Package/Version fields \"",
                     absl::CHexEscape(w.package.substr(0, 200)), "\" / \"",
                     absl::CHexEscape(w.version.substr(0, 200)), "\""));
  }
  return w;
}

// `apt-cache depends META`: the first linux-image-<digit>... it depends on,
// "" when apt knows no such package.
absl::StatusOr<std::string> ResolveMeta(const std::string& meta, const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(
      auto r,
      RunTool({"apt-cache", "depends", meta}, ctx,
              absl::StrCat("'apt-cache' not found: fetching the kernel needs a Debian host with "
                           "apt (or a local package: ",
                           kLocalDebHint, ")")));
  for (absl::string_view line : absl::StrSplit(r.stdout_text, '\n')) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() >= 2 && absl::EndsWith(f[0], "Depends:") &&
        absl::StartsWith(f[1], "linux-image-") && f[1].size() > 12 &&
        absl::ascii_isdigit(f[1][12]) && ValidPackageName(f[1])) {
      return std::string(f[1]);
    }
  }
  return std::string();
}

// `apt-cache policy PKG`'s Candidate, "" when it has none.
absl::StatusOr<std::string> CandidateOf(const std::string& package, const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"apt-cache", "policy", package}, ctx));
  for (absl::string_view line : absl::StrSplit(r.stdout_text, '\n')) {
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() >= 2 && f[0] == "Candidate:") {
      return ValidVersion(f[1]) ? std::string(f[1]) : std::string();  // "(none)" → "".
    }
  }
  return std::string();
}

std::vector<std::string> Prefixed(const std::vector<std::string>& prefix,
                                  std::vector<std::string> argv) {
  argv.insert(argv.begin(), prefix.begin(), prefix.end());
  return argv;
}

absl::StatusOr<Wanted> WantedFromApt(const std::string& meta,
                                     const std::vector<std::string>& prefix,
                                     const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(std::string package, ResolveMeta(meta, ctx));
  std::string version;
  if (!package.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(version, CandidateOf(package, ctx));
  }
  if (!package.empty() && !version.empty()) return Wanted{package, version, ""};

  ctx.Report(absl::StrCat("kernel: apt-cache cannot resolve ", meta, "; running apt-get update"));
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool(Prefixed(prefix, {"apt-get", "update", "-qq"}), ctx));
  if (r.exit_code != 0) {
    if (absl::StrContains(r.stderr_text, "Permission denied") ||
        absl::StrContains(r.stderr_text, "are you root")) {
      return absl::FailedPreconditionError(absl::StrCat(
          "apt-get update failed; run 'apt-get update' as root and retry: ", FailureText(r)));
    }
    return ToolError(
        absl::UnavailableError(absl::StrCat(
            "apt-get update failed; run 'apt-get update' as root (network access to the Debian "
            "mirror is needed) and retry: ",
            FailureText(r))),
        r);
  }
  SMOLVM_ASSIGN_OR_RETURN(package, ResolveMeta(meta, ctx));
  if (package.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resolve ", meta,
        " to a linux-image-* package; check that bookworm 'main' is in the apt sources "
        "(/etc/apt/sources.list) and run 'apt-get update'"));
  }
  SMOLVM_ASSIGN_OR_RETURN(version, CandidateOf(package, ctx));
  if (version.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("package ", package,
                     " has no installable candidate; run 'apt-get update' and check the "
                     "apt sources"));
  }
  return Wanted{package, version, ""};
}

// ---- fetch and unpack ------------------------------------------------------

// `apt-get download` of the wanted package into `dir`; returns the .deb.
absl::StatusOr<std::string> Download(const Wanted& want, const std::string& dir,
                                     const std::vector<std::string>& prefix,
                                     const BuildContext& ctx) {
  if (mkdir(dir.c_str(), 0700) != 0) return absl::ErrnoToStatus(errno, "mkdir " + dir);
  // apt-get download writes into its working directory; `env -C` sets it
  // without a shell.
  std::vector<std::string> argv = {"env", "-C", dir, "apt-get", "download", "-qq"};
  // As root apt drops to the _apt user for downloads, which cannot write into
  // our private scratch dir; we only unpack the file, so download as root.
  if (geteuid() == 0) {
    argv.push_back("-o");
    argv.push_back("APT::Sandbox::User=root");
  }
  argv.push_back(want.Spec());
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool(Prefixed(prefix, argv), ctx));
  if (r.exit_code == 127 && absl::StrContains(r.stderr_text, "apt-get")) {
    return absl::FailedPreconditionError(absl::StrCat(
        "'apt-get' not found: fetching the kernel needs a Debian host with apt (or a local "
        "package: ",
        kLocalDebHint, ")"));
  }
  if (r.exit_code != 0) {
    return ToolError(
        absl::UnavailableError(absl::StrCat(
            "apt-get download ", want.Spec(),
            " failed; check network access to the Debian mirror and run 'apt-get update' (or use "
            "a local package: ",
            kLocalDebHint, "): ", FailureText(r))),
        r);
  }
  std::vector<std::string> names = ListDirNames(dir);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    if (absl::EndsWith(name, ".deb") && IsRegularFile(JoinPath(dir, name))) {
      return JoinPath(dir, name);
    }
  }
  return absl::UnavailableError(
      absl::StrCat("apt-get download produced no .deb for ", want.Spec(), "; retry"));
}

absl::Status Extract(const Wanted& want, const std::string& deb, const std::string& into,
                     const BuildContext& ctx) {
  ctx.Report(absl::StrCat("kernel: extracting ", BaseName(deb)));
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool({"dpkg-deb", "-x", deb, into}, ctx));
  if (r.exit_code == 0) return absl::OkStatus();
  if (!want.deb.empty()) {
    return ToolError(absl::InvalidArgumentError(absl::StrCat(
                         "dpkg-deb -x ", want.deb, " failed (a corrupt .deb?): ", FailureText(r))),
                     r);
  }
  return ToolError(absl::UnavailableError(
                       absl::StrCat("dpkg-deb -x of the downloaded ", BaseName(deb),
                                    " failed (a corrupt download?); retry: ", FailureText(r))),
                   r);
}

// What a package holds for the kernel directory.
struct Unpacked {
  std::string root;        // The unpacked package, a real path.
  std::string release;     // REL of boot/vmlinuz-REL.
  std::string image;       // boot/vmlinuz-REL.
  std::string module_dir;  // lib/modules/REL or usr/lib/modules/REL.
};

absl::StatusOr<Unpacked> FindKernel(const std::string& tree, const std::string& package) {
  const std::string boot = JoinPath(tree, "boot");
  std::vector<std::string> kernels;
  for (const std::string& name : ListDirNames(boot)) {
    if (absl::StartsWith(name, "vmlinuz-")) kernels.push_back(name);
  }
  if (kernels.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("expected exactly one /boot/vmlinuz-* in ",
                                                   package, ", found ", kernels.size(),
                                                   ": is it a linux-image-* kernel package?"));
  }
  Unpacked u;
  u.release = kernels[0].substr(strlen("vmlinuz-"));
  u.image = JoinPath(boot, kernels[0]);
  if (u.release.empty() || u.release == "." || u.release == ".." || !IsRegularFile(u.image)) {
    return absl::InvalidArgumentError(
        absl::StrCat("/boot/", kernels[0], " in ", package, " is not a kernel image file"));
  }
  char magic[4];
  if (!BytesAt(u.image, kBzImageMagicOffset, magic, sizeof(magic)) ||
      memcmp(magic, "HdrS", 4) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("/boot/", kernels[0], " in ", package,
                                                   " is not a bzImage (no HdrS magic at 0x202)"));
  }

  // The module tree must be a directory inside the unpacked package (a
  // symlink out of it would pick up the host's modules).
  std::error_code ec;
  u.root = fs::canonical(tree, ec).string();
  if (ec) return absl::InternalError(absl::StrCat("realpath ", tree, ": ", ec.message()));
  for (const char* dir : {"lib/modules/", "usr/lib/modules/"}) {
    const std::string candidate = JoinPath(tree, absl::StrCat(dir, u.release));
    if (!fs::is_directory(candidate, ec)) continue;
    const std::string real = fs::canonical(candidate, ec).string();
    if (ec || !absl::StartsWith(real, u.root + "/")) continue;
    u.module_dir = real;
    return u;
  }
  return absl::InvalidArgumentError(absl::StrCat("no lib/modules/", u.release, " in ", package));
}

// Regular files below `dir` (symlinks not followed) whose name is one of
// `names`, by name.
std::map<std::string, std::vector<std::string>> FindFiles(const std::string& dir,
                                                          const std::set<std::string>& names) {
  std::map<std::string, std::vector<std::string>> found;
  std::error_code ec;
  for (auto it =
           fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (names.count(name) == 0) continue;
    std::error_code st_ec;
    if (!fs::is_regular_file(it->symlink_status(st_ec)) || st_ec) continue;
    found[name].push_back(it->path().string());
  }
  for (auto& [name, paths] : found) std::sort(paths.begin(), paths.end());
  return found;
}

constexpr char kNinePModule[] = "9p";

bool IsNinePStack(const std::string& m) {
  return m == "netfs" || m == "fscache" || m == "9pnet" || m == "9pnet_virtio" || m == kNinePModule;
}

constexpr const char* kModuleSuffixes[] = {".ko", ".ko.xz", ".ko.zst", ".ko.gz"};

// `src` (a .ko, .ko.xz, .ko.zst or .ko.gz) as the plain module `out`.
absl::Status Decompress(const std::string& module, const std::string& src, const std::string& out,
                        const std::string& package, const BuildContext& ctx) {
  std::vector<std::string> argv;
  std::string tool_missing;
  std::string input = src;
  if (absl::EndsWith(src, ".ko")) {
    return CopyFile(src, out);
  } else if (absl::EndsWith(src, ".ko.zst")) {
    argv = {"zstd", "-q", "-d", "-o", out, "--", src};
    tool_missing = absl::StrCat(module, " is zstd-compressed; apt-get install -y zstd");
  } else {
    // xz and gzip have no output-file option: they decompress a copy in
    // place (x.ko.xz → x.ko).
    const bool xz = absl::EndsWith(src, ".ko.xz");
    input = absl::StrCat(out, xz ? ".xz" : ".gz");
    SMOLVM_RETURN_IF_ERROR(SparseCopyFile(src, input));
    argv = {xz ? "xz" : "gzip", "-d", "-q", "--", input};
    tool_missing = xz ? absl::StrCat(module, " is xz-compressed; apt-get install -y xz-utils")
                      : absl::StrCat(module, " is gzip-compressed; apt-get install -y gzip");
  }
  SMOLVM_ASSIGN_OR_RETURN(auto r, RunTool(argv, ctx, tool_missing));
  if (r.exit_code != 0) {
    return ToolError(
        absl::InvalidArgumentError(absl::StrCat("cannot decompress ", BaseName(src), " of ",
                                                package, ": ", argv[0], " ", FailureText(r))),
        r);
  }
  if (input != src) unlink(input.c_str());  // Gone already, unless the tool kept it.
  SMOLVM_RETURN_IF_ERROR(SetMode(out, 0644));
  return SyncPath(out);
}

// Fills `stage` (an empty directory) from the unpacked package.
absl::Status BuildKernelDir(const Unpacked& u, const std::string& tree, const Wanted& want,
                            const std::string& stage, const BuildContext& ctx) {
  const std::string modules = JoinPath(stage, kModulesDir);
  for (const std::string& dir : {stage, modules}) {
    if (mkdir(dir.c_str(), 0755) != 0) return absl::ErrnoToStatus(errno, "mkdir " + dir);
    SMOLVM_RETURN_IF_ERROR(SetMode(dir, 0755));
  }
  SMOLVM_RETURN_IF_ERROR(CopyFile(u.image, JoinPath(stage, kVmlinuz)));
  const std::string config = JoinPath(tree, absl::StrCat("boot/config-", u.release));
  if (IsRegularFile(config)) SMOLVM_RETURN_IF_ERROR(CopyFile(config, JoinPath(stage, kConfig)));

  std::vector<std::string> wanted = GuestKernelModules();
  const std::vector<std::string>& optional = OptionalGuestKernelModules();
  wanted.insert(wanted.end(), optional.begin(), optional.end());
  std::set<std::string> names;
  for (const std::string& m : wanted) {
    for (const char* suffix : kModuleSuffixes) names.insert(m + suffix);
  }
  const auto found = FindFiles(u.module_dir, names);
  auto sources = [&](const std::string& m) {
    std::vector<std::string> srcs;
    for (const char* suffix : kModuleSuffixes) {
      if (auto it = found.find(m + suffix); it != found.end()) {
        srcs.insert(srcs.end(), it->second.begin(), it->second.end());
      }
    }
    return srcs;
  };
  // The 9p stack only with 9p itself: netfs and fscache are modules of the
  // cloud flavour too, but useless (and slower to boot) without 9p.
  const bool with_9p = !sources(kNinePModule).empty();
  std::string order;
  for (const std::string& m : wanted) {
    if (ctx.IsCancelled()) return absl::CancelledError("kernel fetch cancelled");
    std::vector<std::string> srcs = sources(m);
    const bool is_optional = std::find(optional.begin(), optional.end(), m) != optional.end();
    if (is_optional && (srcs.empty() || (!with_9p && IsNinePStack(m)))) continue;  // Built in or absent.
    if (srcs.size() != 1) {
      std::vector<std::string> shown;
      for (const std::string& s : srcs) shown.push_back(s.substr(u.root.size()));
      return absl::InvalidArgumentError(
          absl::StrCat("expected one ", m, ".ko* in ", want.package, ", found ", srcs.size(),
                       srcs.empty() ? "" : absl::StrCat(" (", absl::StrJoin(shown, ", "), ")"),
                       ": is ", m, " built into this kernel or missing? (check boot/config-",
                       u.release, " of the package)"));
    }
    const std::string out = JoinPath(modules, m + ".ko");
    SMOLVM_RETURN_IF_ERROR(Decompress(m, srcs[0], out, want.package, ctx));
    char magic[4];
    if (!BytesAt(out, 0, magic, sizeof(magic)) || memcmp(magic, "\177ELF", 4) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(srcs[0].substr(u.root.size()), " in ", want.package, " is not an ELF object",
                       absl::EndsWith(srcs[0], ".ko") ? "" : " after decompression"));
    }
    absl::StrAppend(&order, m, ".ko\n");
  }
  SMOLVM_RETURN_IF_ERROR(WriteTextFile(JoinPath(stage, kModulesOrder), order));
  SMOLVM_RETURN_IF_ERROR(WriteTextFile(JoinPath(stage, kKernelVersion), u.release + "\n"));
  SMOLVM_RETURN_IF_ERROR(WriteTextFile(JoinPath(stage, kPackageVersion), want.Spec() + "\n"));
  SMOLVM_RETURN_IF_ERROR(SyncPath(modules));
  return SyncPath(stage);
}

// Puts `stage` in place of `dest` in one step: a plain rename when there is
// no `dest`, else an exchange (the old tree lands at `stage`, which the
// caller removes). Where the filesystem cannot exchange, `dest` is moved to
// `aside` first (then briefly missing), as guest/fetch-kernel.sh did.
absl::Status InstallDir(const std::string& stage, const std::string& dest,
                        const std::string& aside) {
  if (!PathExists(dest)) {
    if (rename(stage.c_str(), dest.c_str()) == 0) return SyncPath(ParentOf(dest));
    if (errno != EEXIST && errno != ENOTEMPTY && errno != ENOTDIR && errno != EISDIR) {
      return absl::ErrnoToStatus(errno, absl::StrCat("rename ", stage, " to ", dest));
    }
  }
  if (renameat2(AT_FDCWD, stage.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) != 0) {
    if (errno != EINVAL && errno != ENOSYS) {
      return absl::ErrnoToStatus(errno, absl::StrCat("exchange ", stage, " and ", dest));
    }
    if (rename(dest.c_str(), aside.c_str()) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("rename ", dest, " to ", aside));
    }
    if (rename(stage.c_str(), dest.c_str()) != 0) {
      absl::Status s = absl::ErrnoToStatus(errno, absl::StrCat("rename ", stage, " to ", dest));
      rename(aside.c_str(), dest.c_str());  // Put the old one back.
      return s;
    }
  }
  return SyncPath(ParentOf(dest));
}

absl::Status CheckRegularFile(const std::string& dir, const char* name) {
  const std::string path = JoinPath(dir, name);
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("kernel directory ", dir, " is incomplete: no ",
                                                    name, "; fetch it again (smolvm-fetch-kernel ",
                                                    dir, ")"));
}

absl::StatusOr<std::string> ReadVersionFile(const std::string& dir, const char* name) {
  const std::string path = JoinPath(dir, name);
  SMOLVM_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 4096));
  std::string value(absl::StripTrailingAsciiWhitespace(text));
  if (value.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is empty; fetch the kernel again (smolvm-fetch-kernel ", dir, ")"));
  }
  return value;
}

}  // namespace

const std::vector<std::string>& GuestKernelModules() {
  static const auto* modules = new std::vector<std::string>{
      "virtio_ring",           "virtio",     "virtio_mmio",    "virtio_pci_modern_dev",
      "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",     "failover",
      "net_failover",          "virtio_net", "virtio_console", "virtio-rng"};
  return *modules;
}

const std::vector<std::string>& OptionalGuestKernelModules() {
  // ext4 and what it needs (built into the cloud flavour, modules of the
  // generic one), then the virtio-9p stack of host mounts (generic only).
  static const auto* modules = new std::vector<std::string>{
      "crc16", "mbcache", "jbd2",         "crc32c_generic", "ext4",
      "netfs", "fscache", "9pnet", "9pnet_virtio",   "9p"};
  return *modules;
}

absl::StatusOr<KernelInfo> ReadKernelDir(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("kernel directory ", dir, " does not exist"));
    }
    return absl::ErrnoToStatus(errno, absl::StrCat("kernel directory ", dir));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("kernel directory ", dir, " is not a directory"));
  }
  for (const char* name : {kKernelVersion, kPackageVersion, kVmlinuz, kModulesOrder}) {
    SMOLVM_RETURN_IF_ERROR(CheckRegularFile(dir, name));
  }
  KernelInfo info;
  SMOLVM_ASSIGN_OR_RETURN(info.kernel_version, ReadVersionFile(dir, kKernelVersion));
  SMOLVM_ASSIGN_OR_RETURN(info.package_version, ReadVersionFile(dir, kPackageVersion));
  return info;
}

absl::StatusOr<KernelInfo> FetchKernel(const KernelFetchOptions& options, const BuildContext& ctx) {
  SMOLVM_ASSIGN_OR_RETURN(const std::string dest, NormalizeDest(options.dest_dir));
  std::vector<std::string> prefix = options.command_prefix;
  if (prefix.empty() && !ctx.download_netns.empty()) {
    prefix = {"nsenter", absl::StrCat("--net=", ctx.download_netns), "--"};
  }

  Wanted want;
  if (!options.deb_path.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(want, WantedFromDeb(options.deb_path, ctx));
  } else {
    if (!ValidPackageName(options.meta_package)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad kernel meta package name \"", absl::CHexEscape(options.meta_package.substr(0, 200)),
          "\": lower case letters, digits and + - . (e.g. linux-image-cloud-amd64)"));
    }
    SMOLVM_ASSIGN_OR_RETURN(want, WantedFromApt(options.meta_package, prefix, ctx));
  }

  if (auto have = ReadKernelDir(dest); have.ok() && have->package_version == want.Spec()) {
    ctx.Report(absl::StrCat("kernel: ", dest, " already holds ", want.Spec(), " (",
                            have->kernel_version, "); nothing to do"));
    return *std::move(have);
  }

  const std::string parent = ParentOf(dest);
  if (!PathExists(parent)) SMOLVM_RETURN_IF_ERROR(MakeDirs(parent, 0755));
  // Beside `dest`, so the result is renamed into place; it also takes the
  // old kernel directory once that was swapped out.
  SMOLVM_ASSIGN_OR_RETURN(TempDir scratch, TempDir::Create(dest + ".tmp-"));
  std::string deb = want.deb;
  if (deb.empty()) {
    ctx.Report(absl::StrCat("kernel: downloading ", want.Spec()));
    SMOLVM_ASSIGN_OR_RETURN(deb, Download(want, scratch.Join("download"), prefix, ctx));
  }
  const std::string tree = scratch.Join("x");
  SMOLVM_RETURN_IF_ERROR(Extract(want, deb, tree, ctx));
  SMOLVM_ASSIGN_OR_RETURN(Unpacked unpacked, FindKernel(tree, want.package));
  const std::string stage = scratch.Join("stage");
  SMOLVM_RETURN_IF_ERROR(BuildKernelDir(unpacked, tree, want, stage, ctx));
  if (ctx.IsCancelled()) return absl::CancelledError("kernel fetch cancelled");
  SMOLVM_RETURN_IF_ERROR(InstallDir(stage, dest, scratch.Join("old")));
  ctx.Report(absl::StrCat("kernel: installed ", want.Spec(), " (kernel ", unpacked.release,
                          ") into ", dest));
  return KernelInfo{unpacked.release, want.Spec()};
}

}  // namespace smolvm::image
