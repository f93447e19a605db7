#include "lib/image/guest_payload.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/unique_fd.h"

namespace smolvm::image {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr const char* kBusyboxFix = "apt-get install -y busybox-static";

// Applets that initramfs-init.sh and rootfs-init.sh run; a busybox without
// one of them would fail only inside the guest.
constexpr const char* kRequiredApplets[] = {
    "sh",    "mount",  "umount", "insmod", "switch_root", "poweroff", "reboot",
    "halt",  "sleep",  "usleep", "mkdir",  "cat",         "tr",       "findfs",
    "ls",    "dmesg",  "hostname", "ip",   "kill",        "sync",     "ln",
    "printf"};
// The applet links of the initramfs (what its /init needs).
constexpr const char* kInitrdApplets[] = {"sh",    "mount", "umount", "insmod", "switch_root",
                                          "poweroff", "reboot", "sleep", "usleep", "mkdir",
                                          "cat",   "tr",    "findfs", "ls",     "dmesg"};

absl::Status PathError(int err, absl::string_view op, absl::string_view path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

std::string ScriptPath(const GuestPayload& payload, absl::string_view name) {
  return JoinPath(payload.recipe_dir, std::string(name));
}

// ---- external programs -----------------------------------------------------

// `name` from PATH, or from the sbin dirs a daemon's PATH may lack.
absl::StatusOr<std::string> FindTool(const std::string& name, absl::string_view package) {
  const char* env = getenv("PATH");
  std::vector<std::string> dirs =
      absl::StrSplit(env != nullptr ? env : "", ':', absl::SkipEmpty());
  for (const char* extra : {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                            "/bin"}) {
    dirs.push_back(extra);
  }
  for (const std::string& dir : dirs) {
    std::string path = JoinPath(dir, name);
    struct stat st;
    if (stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(path.c_str(), X_OK) == 0) {
      return path;
    }
  }
  return absl::FailedPreconditionError(
      absl::StrCat("'", name, "' not found; apt-get install -y ", package));
}

// Runs a host tool for a build step: CANCELLED before it starts if the build
// was cancelled, bounded by the step timeout.
absl::StatusOr<SubprocessResult> RunTool(const BuildContext& ctx, std::vector<std::string> argv,
                                         absl::string_view package, bool checked) {
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");
  SMOLVM_ASSIGN_OR_RETURN(argv[0], FindTool(argv[0], package));
  SubprocessOptions options;
  options.timeout = ctx.step_timeout;
  return checked ? RunChecked(argv, options) : RunSubprocess(argv, options);
}

// ---- ELF -------------------------------------------------------------------

uint64_t LittleEndian(const unsigned char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool ReadAt(int fd, void* buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(fd, static_cast<char*>(buf) + done, n - done, off + done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    done += r;
  }
  return true;
}

// The busybox applet names, from `busybox --list`.
absl::StatusOr<std::vector<std::string>> BusyboxApplets(const std::string& busybox) {
  SubprocessOptions options;
  options.timeout = absl::Seconds(30);
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult r, RunChecked({busybox, "--list"}, options));
  std::vector<std::string> applets;
  for (absl::string_view line : absl::StrSplit(r.stdout_text, '\n', absl::SkipWhitespace())) {
    line = absl::StripAsciiWhitespace(line);
    // Names only: a slash or dot-name could point a link anywhere.
    if (line.find('/') != absl::string_view::npos || line == "." || line == "..") continue;
    applets.emplace_back(line);
  }
  return applets;
}

absl::Status CheckApplets(const std::string& busybox) {
  SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> applets, BusyboxApplets(busybox));
  std::set<std::string> have(applets.begin(), applets.end());
  for (const char* applet : kRequiredApplets) {
    if (have.count(applet) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          busybox, " has no '", applet, "' applet (use Debian's busybox-static: ", kBusyboxFix,
          ")"));
    }
  }
  return absl::OkStatus();
}

// ---- writing beneath an untrusted root -------------------------------------
//
// An image's tree is untrusted content (an OCI layer can hold /etc ->
// /host/etc). Everything below is done relative to descriptors, one path
// component at a time with O_NOFOLLOW, so no symlink inside the tree is ever
// followed while writing; a symlink where a directory is needed is refused.

class Tree {
 public:
  static absl::StatusOr<Tree> Open(const std::string& dir) {
    int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PathError(errno, "open root filesystem dir", dir);
    return Tree(dir, UniqueFd(fd));
  }

  int fd() const { return fd_.get(); }
  std::string Show(absl::string_view rel) const { return absl::StrCat(dir_, "/", rel); }

  // The directory `rel` ("" = the root, "usr/bin"), created (with `mode`,
  // not masked) where missing when `create`.
  absl::StatusOr<UniqueFd> Dir(absl::string_view rel, bool create, mode_t mode = 0755) const {
    UniqueFd cur(dup(fd_.get()));
    if (!cur.valid()) return PathError(errno, "dup fd of", dir_);
    std::string done;
    for (absl::string_view part : absl::StrSplit(rel, '/', absl::SkipEmpty())) {
      if (part == "." || part == "..") {
        return absl::InvalidArgumentError(absl::StrCat("bad path ", Show(rel)));
      }
      std::string name(part);
      done = done.empty() ? name : absl::StrCat(done, "/", name);
      int fd = openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT && create) {
        if (mkdirat(cur.get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
          return PathError(errno, "mkdir", Show(done));
        }
        fd = openat(cur.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && fchmod(fd, mode) != 0) {
          int err = errno;
          close(fd);
          return PathError(err, "chmod", Show(done));
        }
      }
      if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR) {
          return absl::InvalidArgumentError(absl::StrCat(
              Show(done),
              " is not a directory (a symlink or a file); refusing to write through it"));
        }
        return PathError(errno, "open", Show(done));
      }
      cur.Reset(fd);
    }
    return cur;
  }

 private:
  Tree(std::string dir, UniqueFd fd) : dir_(std::move(dir)), fd_(std::move(fd)) {}
  std::string dir_;
  UniqueFd fd_;
};

std::pair<std::string, std::string> SplitParent(absl::string_view rel) {
  size_t slash = rel.rfind('/');
  if (slash == absl::string_view::npos) return {"", std::string(rel)};
  return {std::string(rel.substr(0, slash)), std::string(rel.substr(slash + 1))};
}

bool ExistsAt(int dir_fd, const std::string& name) {
  struct stat st;
  return fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

absl::Status WriteAllFd(int fd, const char* data, size_t n, absl::string_view what) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return PathError(errno, "write", what);
    data += w;
    n -= w;
  }
  return absl::OkStatus();
}

// Writes `name` in `dir_fd` (replacing whatever entry is there, never
// following it) from `data`, or from the host file `src` when `data` is null.
absl::Status PutFileAt(int dir_fd, const std::string& name, const std::string* data,
                       const std::string& src, mode_t mode, absl::string_view shown) {
  std::string tmp = absl::StrCat(".", name, ".smolvm-tmp");
  if (unlinkat(dir_fd, tmp.c_str(), 0) != 0 && errno != ENOENT) {
    return PathError(errno, "remove", absl::StrCat(shown, ".smolvm-tmp"));
  }
  UniqueFd out(openat(dir_fd, tmp.c_str(),
                      O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out.valid()) return PathError(errno, "create", shown);
  absl::Cleanup remove_tmp = [&] { unlinkat(dir_fd, tmp.c_str(), 0); };
  if (data != nullptr) {
    SMOLVM_RETURN_IF_ERROR(WriteAllFd(out.get(), data->data(), data->size(), shown));
  } else {
    UniqueFd in(open(src.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in.valid()) return PathError(errno, "open", src);
    std::vector<char> buf(1 << 20);
    for (;;) {
      ssize_t n = read(in.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return PathError(errno, "read", src);
      if (n == 0) break;
      SMOLVM_RETURN_IF_ERROR(WriteAllFd(out.get(), buf.data(), n, shown));
    }
  }
  if (fchmod(out.get(), mode) != 0) return PathError(errno, "chmod", shown);
  if (renameat(dir_fd, tmp.c_str(), dir_fd, name.c_str()) != 0) {
    return PathError(errno, "rename into place", shown);
  }
  std::move(remove_tmp).Cancel();
  return absl::OkStatus();
}

enum class IfExists { kReplace, kKeep };

// Writes the file `rel` beneath the tree (parents made 0755 where missing).
absl::Status PutFile(const Tree& tree, absl::string_view rel, const std::string* data,
                     const std::string& src, mode_t mode, IfExists if_exists) {
  auto [parent, name] = SplitParent(rel);
  SMOLVM_ASSIGN_OR_RETURN(UniqueFd dir, tree.Dir(parent, /*create=*/true));
  if (if_exists == IfExists::kKeep && ExistsAt(dir.get(), name)) return absl::OkStatus();
  return PutFileAt(dir.get(), name, data, src, mode, tree.Show(rel));
}

absl::Status PutText(const Tree& tree, absl::string_view rel, const std::string& text,
                     mode_t mode = 0644, IfExists if_exists = IfExists::kReplace) {
  return PutFile(tree, rel, &text, "", mode, if_exists);
}

absl::Status PutCopy(const Tree& tree, absl::string_view rel, const std::string& src,
                     mode_t mode, IfExists if_exists = IfExists::kReplace) {
  return PutFile(tree, rel, nullptr, src, mode, if_exists);
}

// A symlink `rel` -> `target` unless something (anything) is there already.
absl::Status PutSymlinkIfMissing(const Tree& tree, absl::string_view rel,
                                 const std::string& target) {
  auto [parent, name] = SplitParent(rel);
  SMOLVM_ASSIGN_OR_RETURN(UniqueFd dir, tree.Dir(parent, /*create=*/true));
  if (symlinkat(target.c_str(), dir.get(), name.c_str()) != 0 && errno != EEXIST) {
    return PathError(errno, "symlink", tree.Show(rel));
  }
  return absl::OkStatus();
}

// Directory `rel` with exactly `mode` if it is missing; left alone (whatever
// it is) if present.
absl::Status DirIfMissing(const Tree& tree, absl::string_view rel, mode_t mode) {
  auto [parent, name] = SplitParent(rel);
  SMOLVM_ASSIGN_OR_RETURN(UniqueFd dir, tree.Dir(parent, /*create=*/true));
  if (ExistsAt(dir.get(), name)) return absl::OkStatus();
  return tree.Dir(rel, /*create=*/true, mode).status();
}

// Whether `rel` resolves to a regular file when its symlinks are resolved as
// the guest will (absolute targets relative to the tree's root). Resolving
// only opens with O_PATH beneath the root; nothing outside is touched.
// Kernels without openat2 report true (keep what the image has).
bool ResolvesToFileInRoot(const Tree& tree, const std::string& rel) {
  struct open_how how = {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(syscall(SYS_openat2, tree.fd(), rel.c_str(), &how, sizeof how));
  if (fd < 0) return errno == ENOSYS;
  UniqueFd owned(fd);
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

// ---- cpio (newc) + gzip ------------------------------------------------------

struct CpioEntry {
  uint32_t mode = 0;  // With the file type bits.
  std::string data;   // File contents, or a symlink's target.
};

void AppendHeader(std::string* out, uint32_t ino, uint32_t mode, uint32_t nlink,
                  uint32_t file_size, const std::string& name) {
  char header[111];
  uint32_t name_size = static_cast<uint32_t>(name.size() + 1);
  // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
  // rdevmajor, rdevminor, namesize, check.
  std::snprintf(header, sizeof header,
                "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0u, 0u,
                nlink, 0u, file_size, 0u, 0u, 0u, 0u, name_size, 0u);
  out->append(header, 110);
  out->append(name);
  out->push_back('\0');
  while (out->size() % 4 != 0) out->push_back('\0');
}

// A newc archive of `entries` in name order: uid/gid 0, mtime 0, inode
// numbers by position, so the same inputs give the same bytes.
std::string NewcArchive(const std::map<std::string, CpioEntry>& entries) {
  std::string out;
  uint32_t ino = 0;
  for (const auto& [name, entry] : entries) {
    bool dir = S_ISDIR(entry.mode);
    AppendHeader(&out, ++ino, entry.mode, dir ? 2 : 1, static_cast<uint32_t>(entry.data.size()),
                 name);
    out.append(entry.data);
    while (out.size() % 4 != 0) out.push_back('\0');
  }
  AppendHeader(&out, 0, 0, 1, 0, "TRAILER!!!");
  return out;
}

// gzip (RFC 1952) at level 9 with mtime 0 and no name: deterministic.
absl::StatusOr<std::string> Gzip(const std::string& in) {
  z_stream zs = {};
  if (deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    return absl::InternalError("deflateInit2 failed");
  }
  absl::Cleanup end = [&] { deflateEnd(&zs); };
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  if (deflate(&zs, Z_FINISH) != Z_STREAM_END) return absl::InternalError("gzip: deflate failed");
  out.resize(zs.total_out);
  return out;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  return ReadFileToString(path, 256 << 20);
}

// ---- tree size ---------------------------------------------------------------

// Allocated bytes of everything beneath `dir_fd`, not following symlinks and
// not crossing into other filesystems.
absl::StatusOr<uint64_t> TreeBytes(int dir_fd, dev_t dev, const std::string& shown) {
  int fd = dup(dir_fd);
  if (fd < 0) return PathError(errno, "dup fd of", shown);
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    close(fd);
    return PathError(err, "read dir", shown);
  }
  absl::Cleanup close_dir = [d] { closedir(d); };
  uint64_t total = 0;
  while (struct dirent* e = readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st;
    if (fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return PathError(errno, "stat", JoinPath(shown, e->d_name));
    }
    total += static_cast<uint64_t>(st.st_blocks) * 512;
    if (S_ISDIR(st.st_mode) && st.st_dev == dev) {
      UniqueFd sub(openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub.valid()) return PathError(errno, "open", JoinPath(shown, e->d_name));
      SMOLVM_ASSIGN_OR_RETURN(uint64_t sub_total,
                              TreeBytes(sub.get(), dev, JoinPath(shown, e->d_name)));
      total += sub_total;
    }
  }
  return total;
}

absl::Status SetFileSize(const std::string& path, uint64_t size, bool create) {
  int flags = O_WRONLY | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0);
  UniqueFd fd(open(path.c_str(), flags, 0644));
  if (!fd.valid()) return PathError(errno, "open", path);
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return PathError(errno, "truncate", path);
  return absl::OkStatus();
}

}  // namespace

// ---- public ------------------------------------------------------------------

namespace internal {

absl::StatusOr<bool> IsStaticX86_64Elf(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PathError(errno, "open", path);
  unsigned char eh[64];
  if (!ReadAt(fd.get(), eh, sizeof eh, 0)) return false;
  if (std::memcmp(eh, "\177ELF", 4) != 0) return false;
  // ELF64, little-endian, x86-64 (EM_X86_64 = 62).
  if (eh[4] != 2 || eh[5] != 1 || LittleEndian(eh + 18, 2) != 62) return false;
  uint64_t type = LittleEndian(eh + 16, 2);
  if (type != 2 && type != 3) return false;  // ET_EXEC, or ET_DYN (static-pie)
  uint64_t phoff = LittleEndian(eh + 32, 8);
  uint64_t phentsize = LittleEndian(eh + 54, 2);
  uint64_t phnum = LittleEndian(eh + 56, 2);
  if (phnum == 0 || phentsize < 4) return false;
  for (uint64_t i = 0; i < phnum; ++i) {
    unsigned char p_type[4];
    if (!ReadAt(fd.get(), p_type, 4, phoff + i * phentsize)) return false;
    if (LittleEndian(p_type, 4) == 3) return false;  // PT_INTERP: needs ld.so + libc
  }
  return true;
}

}  // namespace internal

absl::Status CheckPayload(const GuestPayload& payload) {
  const std::string& bb = payload.busybox_path;
  struct stat st;
  if (bb.empty() || stat(bb.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
      access(bb.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("busybox ", bb, " is not an executable file; ", kBusyboxFix));
  }
  SMOLVM_ASSIGN_OR_RETURN(bool bb_static, internal::IsStaticX86_64Elf(bb));
  if (!bb_static) {
    return absl::FailedPreconditionError(absl::StrCat(
        "busybox ", bb,
        " is not a statically linked x86-64 ELF executable (the guest has no libc); ",
        kBusyboxFix));
  }
  SubprocessOptions options;
  options.timeout = absl::Seconds(30);
  auto ran = RunSubprocess({bb, "true"}, options);
  if (!ran.ok() || ran->exit_code != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("busybox ", bb, " does not run; ", kBusyboxFix));
  }
  if (absl::Status s = CheckApplets(bb); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }

  if (!payload.agent_path.empty()) {
    const std::string& agent = payload.agent_path;
    if (stat(agent.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        access(agent.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "agent ", agent, " is not an executable file; build the CMake target smolvm-agent"));
    }
    SMOLVM_ASSIGN_OR_RETURN(bool agent_static, internal::IsStaticX86_64Elf(agent));
    if (!agent_static) {
      return absl::FailedPreconditionError(absl::StrCat(
          "agent ", agent,
          " is not a statically linked x86-64 ELF executable (the guest has no libc); build "
          "the CMake target smolvm-agent"));
    }
  }

  for (const char* script : {"initramfs-init.sh", "rootfs-init.sh"}) {
    std::string path = ScriptPath(payload, script);
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, " missing; the recipe dir must be the source tree's guest/ directory"));
    }
  }
  return absl::OkStatus();
}

absl::Status BuildMinimalRootfs(const GuestPayload& payload, const std::string& rootfs_dir,
                                const std::string& kernel_version) {
  SMOLVM_RETURN_IF_ERROR(MakeDirs(rootfs_dir, 0755));
  if (!ListDirNames(rootfs_dir).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("minimal rootfs dir ", rootfs_dir, " is not empty"));
  }
  SMOLVM_ASSIGN_OR_RETURN(Tree tree, Tree::Open(rootfs_dir));
  if (fchmod(tree.fd(), 0755) != 0) return PathError(errno, "chmod", rootfs_dir);

  const std::pair<const char*, mode_t> dirs[] = {
      {"bin", 0755},  {"sbin", 0755},    {"usr/bin", 0755}, {"usr/sbin", 0755},
      {"etc", 0755},  {"dev", 0755},     {"proc", 0755},    {"sys", 0755},
      {"run", 0755},  {"tmp", 01777},    {"root", 0700},    {"mnt", 0755},
      {"var/log", 0755}, {"var/tmp", 01777}, {"home", 0755}};
  for (const auto& [dir, mode] : dirs) SMOLVM_RETURN_IF_ERROR(DirIfMissing(tree, dir, mode));
  SMOLVM_RETURN_IF_ERROR(PutCopy(tree, "bin/busybox", payload.busybox_path, 0755));

  // Applet links (what `busybox --install -s` would do) at the paths busybox
  // reports; never over an existing entry.
  std::vector<std::string> applet_paths;
  SubprocessOptions options;
  options.timeout = absl::Seconds(30);
  auto full = RunSubprocess({payload.busybox_path, "--list-full"}, options);
  if (full.ok() && full->exit_code == 0 && !full->stdout_text.empty()) {
    applet_paths = absl::StrSplit(full->stdout_text, '\n', absl::SkipWhitespace());
  } else {
    SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> names,
                            BusyboxApplets(payload.busybox_path));
    for (const std::string& name : names) applet_paths.push_back("bin/" + name);
  }
  for (std::string& path : applet_paths) {
    path = std::string(absl::StripAsciiWhitespace(path));
    // No /sbin/init: /.smolvm/init is the init, and the initramfs falls
    // back to /sbin/init only for images made before the payload existed.
    if (path.empty() || path == "linuxrc" || path == "sbin/init" || path[0] == '/') continue;
    SMOLVM_RETURN_IF_ERROR(PutSymlinkIfMissing(tree, path, "/bin/busybox"));
  }

  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/passwd",
                                 "root:x:0:0:root:/root:/bin/sh\n"
                                 "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/shadow",
                                 "root:*:19000:0:99999:7:::\n"
                                 "nobody:*:19000:0:99999:7:::\n",
                                 0600));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/hostname", "smolvm\n"));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/hosts",
                                 "127.0.0.1\tlocalhost\n"
                                 "127.0.1.1\tsmolvm\n"
                                 "::1\tlocalhost ip6-localhost ip6-loopback\n"));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/resolv.conf", ""));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/profile",
                                 "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
                                 "export HOME=/root\n"));
  SMOLVM_RETURN_IF_ERROR(PutText(
      tree, "etc/os-release",
      absl::StrCat("ID=smolvm\nNAME=\"smolvm guest\"\nPRETTY_NAME=\"smolvm guest (busybox, kernel ",
                   kernel_version, ")\"\n")));
  return PutText(tree, "etc/fstab", "# rootfs is mounted by the initramfs; nothing else here\n");
}

absl::Status InjectPayload(const GuestPayload& payload, const std::string& rootfs_dir) {
  SMOLVM_ASSIGN_OR_RETURN(Tree tree, Tree::Open(rootfs_dir));
  // /etc is written into below: refuse a symlinked one before writing anything.
  if (ExistsAt(tree.fd(), "etc")) SMOLVM_RETURN_IF_ERROR(tree.Dir("etc", false).status());

  // /.smolvm is ours: its files are replaced, stale ones removed.
  SMOLVM_ASSIGN_OR_RETURN(UniqueFd smolvm_dir, tree.Dir(".smolvm", /*create=*/true));
  if (fchmod(smolvm_dir.get(), 0755) != 0) return PathError(errno, "chmod", tree.Show(".smolvm"));
  SMOLVM_RETURN_IF_ERROR(PutCopy(tree, ".smolvm/bin/busybox", payload.busybox_path, 0755));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> applets,
                          BusyboxApplets(payload.busybox_path));
  for (const std::string& applet : applets) {
    if (applet == "busybox") continue;
    SMOLVM_RETURN_IF_ERROR(PutSymlinkIfMissing(tree, ".smolvm/bin/" + applet, "busybox"));
  }
  SMOLVM_RETURN_IF_ERROR(
      PutCopy(tree, ".smolvm/init", ScriptPath(payload, "rootfs-init.sh"), 0755));

  if (payload.agent_path.empty()) {
    if (unlinkat(smolvm_dir.get(), "agent", 0) != 0 && errno != ENOENT) {
      return PathError(errno, "remove", tree.Show(".smolvm/agent"));
    }
  } else {
    // Debug info is of no use in the guest (a third of the size). Stripped
    // into a private temp dir, then copied in through the tree's fds.
    std::string agent = payload.agent_path;
    std::string tmp_dir = "/tmp/smolvm-agent-strip-XXXXXX";
    if (mkdtemp(tmp_dir.data()) == nullptr) return PathError(errno, "mkdtemp", tmp_dir);
    absl::Cleanup remove_tmp = [&] { RemoveTree(tmp_dir).IgnoreError(); };
    if (auto strip = FindTool("strip", "binutils"); strip.ok()) {
      std::string stripped = JoinPath(tmp_dir, "agent");
      SubprocessOptions options;
      options.timeout = absl::Minutes(2);
      auto r = RunChecked({*strip, "--strip-all", "-o", stripped, agent}, options);
      if (!r.ok()) {
        return absl::InternalError(absl::StrCat("strip ", agent, ": ", r.status().message()));
      }
      agent = stripped;
    }
    SMOLVM_RETURN_IF_ERROR(PutCopy(tree, ".smolvm/agent", agent, 0755));
  }

  // What a userland needs to boot as a VM, only where the image lacks it.
  const std::pair<const char*, mode_t> dirs[] = {{"proc", 0755}, {"sys", 0755}, {"dev", 0755},
                                                 {"run", 0755},  {"tmp", 01777}, {"root", 0700},
                                                 {"etc", 0755}};
  for (const auto& [dir, mode] : dirs) SMOLVM_RETURN_IF_ERROR(DirIfMissing(tree, dir, mode));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/hostname", "smolvm\n", 0644, IfExists::kKeep));
  SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/hosts",
                                 "127.0.0.1\tlocalhost\n"
                                 "127.0.1.1\tsmolvm\n"
                                 "::1\tlocalhost ip6-localhost ip6-loopback\n",
                                 0644, IfExists::kKeep));
  // init writes the nameserver of smolvm.net= into /etc/resolv.conf: it must
  // be a file, or a link to one that exists in the guest (images often
  // link it to /run/systemd/resolve/..., which will not exist).
  SMOLVM_ASSIGN_OR_RETURN(UniqueFd etc, tree.Dir("etc", /*create=*/false));
  struct stat st;
  if (fstatat(etc.get(), "resolv.conf", &st, AT_SYMLINK_NOFOLLOW) != 0) {
    SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/resolv.conf", ""));
  } else if (S_ISLNK(st.st_mode) && !ResolvesToFileInRoot(tree, "etc/resolv.conf")) {
    SMOLVM_RETURN_IF_ERROR(PutText(tree, "etc/resolv.conf", ""));  // replaces the link
  }
  return absl::OkStatus();
}

absl::Status BuildInitrd(const GuestPayload& payload, const std::string& kernel_dir,
                         const std::string& out_path, const BuildContext& ctx) {
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");
  ctx.Report("initramfs");
  std::string order_path = JoinPath(kernel_dir, "modules.order");
  if (!PathExists(order_path)) {
    return absl::FailedPreconditionError(absl::StrCat(
        order_path, " missing; run smolvm-fetch-kernel ", kernel_dir, " first"));
  }
  SMOLVM_ASSIGN_OR_RETURN(std::string order, ReadFileToString(order_path));
  SMOLVM_RETURN_IF_ERROR(CheckApplets(payload.busybox_path));

  std::map<std::string, CpioEntry> entries;
  for (const char* dir : {"bin", "sbin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"}) {
    entries[dir] = {S_IFDIR | 0755, ""};
  }
  SMOLVM_ASSIGN_OR_RETURN(std::string busybox, ReadWholeFile(payload.busybox_path));
  entries["bin/busybox"] = {S_IFREG | 0755, std::move(busybox)};
  for (const char* applet : kInitrdApplets) {
    entries[absl::StrCat("bin/", applet)] = {S_IFLNK | 0777, "busybox"};
  }
  for (absl::string_view line : absl::StrSplit(order, '\n', absl::SkipWhitespace())) {
    std::string ko(absl::StripAsciiWhitespace(line));
    if (ko.find('/') != std::string::npos || ko == "." || ko == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(order_path, ": bad module name '", ko, "' (a file name in modules/)"));
    }
    std::string ko_path = JoinPath(JoinPath(kernel_dir, "modules"), ko);
    if (!PathExists(ko_path)) {
      return absl::FailedPreconditionError(absl::StrCat(
          ko_path, " listed in modules.order but missing; run smolvm-fetch-kernel ",
          kernel_dir));
    }
    SMOLVM_ASSIGN_OR_RETURN(std::string data, ReadWholeFile(ko_path));
    entries["lib/modules/" + ko] = {S_IFREG | 0644, std::move(data)};
  }
  entries["lib/modules/modules.order"] = {S_IFREG | 0644, std::move(order)};
  SMOLVM_ASSIGN_OR_RETURN(std::string init,
                          ReadWholeFile(ScriptPath(payload, "initramfs-init.sh")));
  entries["init"] = {S_IFREG | 0755, std::move(init)};
  // The kernel's built-in initramfs supplies /dev/console, so no device
  // nodes are needed; /init mounts devtmpfs first thing.

  SMOLVM_ASSIGN_OR_RETURN(std::string gz, Gzip(NewcArchive(entries)));
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");
  SMOLVM_RETURN_IF_ERROR(WriteFileAtomic(out_path, gz, 0644));
  ctx.Report("initramfs", gz.size());
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> MakeExt4(const std::string& rootfs_dir, const std::string& out_path,
                                  uint64_t min_size_mib, const BuildContext& ctx) {
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled");
  UniqueFd root(open(rootfs_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return PathError(errno, "open", rootfs_dir);
  struct stat st;
  if (fstat(root.get(), &st) != 0) return PathError(errno, "stat", rootfs_dir);
  SMOLVM_ASSIGN_OR_RETURN(uint64_t tree, TreeBytes(root.get(), st.st_dev, rootfs_dir));
  if (min_size_mib > (uint64_t{1} << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("disk size ", min_size_mib, " MiB is too big"));
  }
  // Room for ext4's metadata and for the guest to write.
  uint64_t size = std::max(min_size_mib * kMiB, tree + tree / 4 + 64 * kMiB);
  size = (size + kMiB - 1) / kMiB * kMiB;

  ctx.Report("mkfs.ext4", 0);
  SMOLVM_RETURN_IF_ERROR(SetFileSize(out_path, size, /*create=*/true));
  // -b 4096: images < 512 MiB would otherwise get the "small" 1 KiB blocks.
  auto r = RunTool(ctx,
                   {"mkfs.ext4", "-q", "-F", "-L", "smolvm-root", "-b", "4096", "-m", "0", "-E",
                    "root_owner=0:0", "-d", rootfs_dir, out_path},
                   "e2fsprogs", /*checked=*/true);
  if (!r.ok()) {
    unlink(out_path.c_str());
    return r.status();
  }
  ctx.Report("mkfs.ext4", size);
  return size;
}

absl::Status GrowExt4(const std::string& path, uint64_t size_mib, const BuildContext& ctx) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return PathError(errno, "stat", path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  if (size_mib > (uint64_t{1} << 24)) {
    return absl::InvalidArgumentError(absl::StrCat("disk size ", size_mib, " MiB is too big"));
  }
  uint64_t size = size_mib * kMiB;
  uint64_t current = static_cast<uint64_t>(st.st_size);
  if (size < current) {
    return absl::InvalidArgumentError(absl::StrCat("grow ", path, " to ", size_mib,
                                                   " MiB: it is already ", current / kMiB,
                                                   " MiB; disks are never shrunk"));
  }
  if (size == current) return absl::OkStatus();
  ctx.Report("resize2fs", 0);
  // resize2fs insists on a freshly checked filesystem. e2fsck: 0 = clean,
  // 1 = errors corrected; anything else is a disk we should not touch.
  SMOLVM_ASSIGN_OR_RETURN(SubprocessResult fsck,
                          RunTool(ctx, {"e2fsck", "-fy", path}, "e2fsprogs", /*checked=*/false));
  if (fsck.exit_code != 0 && fsck.exit_code != 1) {
    return absl::DataLossError(absl::StrCat("e2fsck -fy ", path, " exited with ", fsck.exit_code,
                                            ": ", TailOf(fsck.stdout_text + fsck.stderr_text,
                                                         2000)));
  }
  SMOLVM_RETURN_IF_ERROR(SetFileSize(path, size, /*create=*/false));
  SMOLVM_RETURN_IF_ERROR(
      RunTool(ctx, {"resize2fs", path}, "e2fsprogs", /*checked=*/true).status());
  ctx.Report("resize2fs", size);
  return absl::OkStatus();
}

}  // namespace smolvm::image
