#include "lib/image/host_paths.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <filesystem>
#include <memory>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"

namespace smolvm::image {
namespace {

namespace fs = std::filesystem;


// A path for an error message: escaped (it may come from a client) and cut.
std::string Shown(const std::string& path) {
  return absl::CHexEscape(path.size() > 200 ? path.substr(0, 200) + "..." : path);
}

// Checks that `path` is absolute, without NUL, "." or ".." components, and
// returns it with repeated and trailing slashes removed.
absl::StatusOr<std::string> NormalizeAbsolute(const std::string& path, absl::string_view what) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", Shown(path), "\" ", why));
  };
  if (path.empty() || path[0] != '/') return bad("is not an absolute path");
  if (path.find('\0') != std::string::npos) return bad("contains a NUL byte");
  if (path.size() >= PATH_MAX) return bad("is too long");
  std::string out;
  for (absl::string_view comp : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (comp == "." || comp == "..") return bad("has a \".\" or \"..\" component");
    absl::StrAppend(&out, "/", comp);
  }
  return out.empty() ? "/" : out;
}

// Whether `a` is `b` or lies beneath it, lexically.
bool SameOrBeneath(const std::string& a, const std::string& b) {
  if (a == b || b == "/") return true;
  return a.size() > b.size() && a.compare(0, b.size(), b) == 0 && a[b.size()] == '/';
}

// Whether the directory `dir_fd` is the directory (dev, ino) or lies
// beneath it, walking ".." up to the root. Catches what paths miss when a
// name differs from the one given (bind mounts, hard-to-see aliases).
bool InodeSameOrBeneath(int dir_fd, dev_t dev, ino_t ino) {
  UniqueFd cur(fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
  for (int depth = 0; cur.valid() && depth < 256; ++depth) {
    struct stat st;
    if (fstat(cur.get(), &st) != 0) return false;
    if (st.st_dev == dev && st.st_ino == ino) return true;
    UniqueFd up(openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
    struct stat up_st;
    if (!up.valid() || fstat(up.get(), &up_st) != 0) return false;
    if (up_st.st_dev == st.st_dev && up_st.st_ino == st.st_ino) return false;  // The root.
    cur = std::move(up);
  }
  return false;
}

std::string KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symlink";
  return "not a regular file";
}

absl::Status NotRegular(mode_t mode) {
  return absl::InvalidArgumentError(absl::StrCat("is ", KindOf(mode), ", not a regular file"));
}

// The error of a failed resolution, for Open to prefix with the path.
absl::Status BeneathError(int err) {
  switch (err) {
    case ELOOP:
      return absl::PermissionDeniedError(
          "has a symlink in it: symlinks are not followed, name the file itself");
    case EXDEV:
      return absl::PermissionDeniedError("crosses a mount point below its allowed directory");
    case ENOENT:
      return absl::NotFoundError("does not exist");
    case ENOTDIR:
      return absl::NotFoundError("does not exist (a component is not a directory)");
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError("cannot be read by the daemon");
    case EAGAIN:
      return absl::UnavailableError("changed while it was opened; retry");
    default:
      return absl::ErrnoToStatus(err, "open");
  }
}

// openat2 beneath `dir_fd`; returns the fd or -errno.
int OpenAt2(int dir_fd, const std::string& rel, uint64_t flags) {
  struct open_how how = {};
  how.flags = flags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  // EAGAIN: a rename or mount raced the lookup; the kernel asks for a retry.
  for (int tries = 0;; ++tries) {
    long fd = syscall(SYS_openat2, dir_fd, rel.c_str(), &how, sizeof(how));
    if (fd >= 0) return static_cast<int>(fd);
    if (errno == EINTR || (errno == EAGAIN && tries < 16)) continue;
    return -errno;
  }
}

// The same without openat2 (kernels before 5.6): one component at a time
// with O_NOFOLLOW, refusing symlinks (S_ISLNK of an O_PATH open) and a
// change of device (a mount point). Returns the fd or -errno.
int WalkBeneath(int dir_fd, const std::string& rel, int flags) {
  std::vector<std::string> comps = absl::StrSplit(rel, '/', absl::SkipEmpty());
  if (comps.empty()) return -ENOENT;
  struct stat parent;
  if (fstat(dir_fd, &parent) != 0) return -errno;
  UniqueFd cur;
  for (size_t i = 0; i < comps.size(); ++i) {
    bool last = i + 1 == comps.size();
    int f = last ? flags | O_NOFOLLOW : O_PATH | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd next(openat(cur.valid() ? cur.get() : dir_fd, comps[i].c_str(), f));
    if (!next.valid()) return -errno;
    struct stat st;
    if (fstat(next.get(), &st) != 0) return -errno;
    if (S_ISLNK(st.st_mode)) return -ELOOP;
    if (st.st_dev != parent.st_dev) return -EXDEV;
    if (!last && !S_ISDIR(st.st_mode)) return -ENOTDIR;
    parent = st;
    cur = std::move(next);
  }
  return cur.Release();
}

// One resolution; clears `use_openat2` when the kernel lacks openat2.
int Resolve(int dir_fd, const std::string& rel, int flags, bool& use_openat2) {
  if (use_openat2) {
    int r = OpenAt2(dir_fd, rel, static_cast<uint64_t>(flags));
    if (r != -ENOSYS) return r;
    use_openat2 = false;
  }
  return WalkBeneath(dir_fd, rel, flags);
}

using EvpCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

// Reads `file` from offset 0 to its end through its fd and returns the
// SHA-256 of what it read (lowercase hex), writing the bytes to `out_fd`
// too unless it is -1.
absl::StatusOr<std::string> HashAndCopy(const OpenedHostFile& file, int out_fd,
                                        const std::string& out_path) {
  EvpCtx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("SHA-256 initialisation failed (OpenSSL)");
  }
  std::vector<char> buf(1 << 20);
  off_t off = 0;
  while (true) {
    ssize_t n = pread(file.fd.get(), buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("read ", Shown(file.path)));
    }
    if (n == 0) break;
    off += n;
    if (EVP_DigestUpdate(ctx.get(), buf.data(), n) != 1) {
      return absl::InternalError("SHA-256 update failed (OpenSSL)");
    }
    for (ssize_t done = 0; out_fd >= 0 && done < n;) {
      ssize_t w = write(out_fd, buf.data() + done, n - done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return absl::ErrnoToStatus(errno, absl::StrCat("write ", out_path));
      }
      done += w;
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) {
    return absl::InternalError("SHA-256 finalisation failed (OpenSSL)");
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

absl::StatusOr<std::string> Sha256OfFile(const std::string& path) {
  OpenedHostFile file;
  file.path = path;
  file.fd = UniqueFd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!file.fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  return HashAndCopy(file, -1, "");
}

std::string Sha256OfString(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

namespace internal {

absl::StatusOr<UniqueFd> OpenBeneath(int dir_fd, const std::string& rel, bool use_openat2) {
  // O_PATH first: looking at what the name resolves to opens nothing, so a
  // FIFO (which would block) or a device (whose open has effects) is
  // refused before it is ever opened for reading.
  int r = Resolve(dir_fd, rel, O_PATH | O_CLOEXEC, use_openat2);
  if (r < 0) return BeneathError(-r);
  UniqueFd probe(r);
  struct stat seen;
  if (fstat(probe.get(), &seen) != 0) return absl::ErrnoToStatus(errno, "stat");
  if (!S_ISREG(seen.st_mode)) return NotRegular(seen.st_mode);

  r = Resolve(dir_fd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, use_openat2);
  if (r < 0) return BeneathError(-r);
  UniqueFd fd(r);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return absl::ErrnoToStatus(errno, "stat");
  if (!S_ISREG(st.st_mode)) return NotRegular(st.st_mode);
  if (st.st_dev != seen.st_dev || st.st_ino != seen.st_ino) {
    return absl::UnavailableError("was replaced while it was opened; retry");
  }
  // Reads of a regular file ignore O_NONBLOCK; clear it for any later user.
  int fl = fcntl(fd.get(), F_GETFL);
  if (fl >= 0) (void)fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

}  // namespace internal

absl::StatusOr<HostPathResolver> HostPathResolver::Create(HostPathPolicy policy,
                                                          std::vector<std::string> forbidden_dirs,
                                                          std::string setting) {
  // The forbidden dirs, lexically and canonically (they may not exist yet).
  struct Forbidden {
    std::string path;
    std::string real;
    bool exists = false;
    struct stat st = {};
  };
  std::vector<Forbidden> forbidden;
  for (const auto& f : forbidden_dirs) {
    if (f.empty()) continue;
    Forbidden entry;
    SMOLVM_ASSIGN_OR_RETURN(entry.path, NormalizeAbsolute(f, "state/run directory"));
    std::error_code ec;
    entry.real = fs::weakly_canonical(entry.path, ec).string();
    if (ec || entry.real.empty()) entry.real = entry.path;
    entry.exists = stat(entry.path.c_str(), &entry.st) == 0 && S_ISDIR(entry.st.st_mode);
    forbidden.push_back(std::move(entry));
  }

  std::vector<AllowedDir> dirs;
  for (const auto& d : policy.allowed_dirs) {
    SMOLVM_ASSIGN_OR_RETURN(std::string path,
                            NormalizeAbsolute(d, absl::StrCat(setting, ": directory")));
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(setting, ": \"", Shown(path), "\" ", why));
    };
    UniqueFd fd(open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) {
      if (errno == ENOENT) return bad("does not exist");
      if (errno == ENOTDIR) return bad("is not a directory");
      return absl::ErrnoToStatus(errno, absl::StrCat(setting, ": open ", Shown(path)));
    }
    char real_buf[PATH_MAX];
    std::string real = realpath(path.c_str(), real_buf) != nullptr ? real_buf : path;
    for (const auto& f : forbidden) {
      bool overlap = false;
      for (const std::string& a : {path, real}) {
        for (const std::string& b : {f.path, f.real}) {
          overlap = overlap || SameOrBeneath(a, b) || SameOrBeneath(b, a);
        }
      }
      if (!overlap && f.exists) {
        // Allowed dir inside (or equal to) the forbidden one by inode.
        overlap = InodeSameOrBeneath(fd.get(), f.st.st_dev, f.st.st_ino);
        // Forbidden dir inside the allowed one by inode.
        struct stat ast;
        UniqueFd ffd(open(f.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!overlap && ffd.valid() && fstat(fd.get(), &ast) == 0) {
          overlap = InodeSameOrBeneath(ffd.get(), ast.st_dev, ast.st_ino);
        }
      }
      if (overlap) {
        return bad(absl::StrCat("overlaps the daemon's own directory ", f.path,
                                ": tenants could name other tenants' disks and the "
                                "daemon's state; allow a separate directory"));
      }
    }
    dirs.push_back(AllowedDir{path, real == path ? "" : real, std::move(fd)});
  }
  return HostPathResolver(std::move(dirs), std::move(setting));
}

std::vector<std::string> HostPathResolver::allowed_dirs() const {
  std::vector<std::string> out;
  for (const auto& d : dirs_) out.push_back(d.path);
  return out;
}

absl::Status HostPathResolver::Denied(const std::string& path, absl::string_view field,
                                      absl::string_view hint) const {
  std::vector<std::string> quoted;
  for (const auto& d : dirs_) quoted.push_back(absl::StrCat("\"", Shown(d.path), "\""));
  return absl::PermissionDeniedError(
      absl::StrCat(field, " \"", Shown(path), "\" is outside the directories the operator allows (",
                   setting_, ": ", quoted.empty() ? "none" : absl::StrJoin(quoted, ", "),
                   "); ", hint));
}

absl::StatusOr<HostPathResolver::Found> HostPathResolver::Find(const std::string& path,
                                                               absl::string_view field,
                                                               absl::string_view hint) const {
  SMOLVM_ASSIGN_OR_RETURN(std::string norm, NormalizeAbsolute(path, field));
  // The most specific allowed dir the path is lexically beneath, by its
  // configured name or its real one.
  const AllowedDir* dir = nullptr;
  size_t best = 0;
  for (const auto& d : dirs_) {
    for (const std::string* prefix : {&d.path, &d.real}) {
      if (prefix->empty() || !SameOrBeneath(norm, *prefix)) continue;
      if (dir == nullptr || prefix->size() > best) {
        dir = &d;
        best = prefix->size();
      }
    }
  }
  if (dir == nullptr) return Denied(path, field, hint);
  std::string rel = norm.size() > best ? norm.substr(best) : "";
  while (!rel.empty() && rel[0] == '/') rel.erase(0, 1);
  return Found{dir, std::move(rel)};
}

absl::Status HostPathResolver::Prefixed(const std::string& path, absl::string_view field,
                                        const absl::Status& s) const {
  std::string msg = absl::StrCat(field, " \"", Shown(path), "\" ", s.message());
  if (absl::IsPermissionDenied(s)) absl::StrAppend(&msg, " (", setting_, ")");
  return absl::Status(s.code(), msg);
}

absl::StatusOr<OpenedHostFile> HostPathResolver::Open(const std::string& path,
                                                      absl::string_view field) const {
  SMOLVM_ASSIGN_OR_RETURN(Found found,
                          Find(path, field, "leave it empty for the default image"));
  const AllowedDir* dir = found.dir;
  const std::string& rel = found.rel;
  auto prefixed = [&](const absl::Status& s) { return Prefixed(path, field, s); };
  if (rel.empty()) return prefixed(NotRegular(S_IFDIR));

  auto fd = internal::OpenBeneath(dir->fd.get(), rel, /*use_openat2=*/true);
  if (!fd.ok()) return prefixed(fd.status());
  struct stat st;
  if (fstat(fd->get(), &st) != 0) return absl::ErrnoToStatus(errno, "stat");
  return OpenedHostFile{*std::move(fd), path, static_cast<uint64_t>(st.st_size)};
}

absl::StatusOr<UniqueFd> HostPathResolver::OpenDirectory(const std::string& path,
                                                          absl::string_view field) const {
  SMOLVM_ASSIGN_OR_RETURN(
      Found found,
      Find(path, field, "name a directory beneath one of them, or ask the operator to allow it"));
  if (found.rel.empty()) {
    // The allowed directory itself: the descriptor opened at startup.
    int fd = fcntl(found.dir->fd.get(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return absl::ErrnoToStatus(errno, "dup");
    return UniqueFd(fd);
  }
  bool use_openat2 = true;
  // O_PATH: nothing is opened for reading; the caller binds what it names.
  // Without O_DIRECTORY, so a file is "not a directory" rather than "missing".
  int r = Resolve(found.dir->fd.get(), found.rel, O_PATH | O_CLOEXEC, use_openat2);
  if (r < 0) return Prefixed(path, field, BeneathError(-r));
  UniqueFd fd(r);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return absl::ErrnoToStatus(errno, "stat");
  if (!S_ISDIR(st.st_mode)) {
    return Prefixed(path, field, absl::InvalidArgumentError("is not a directory"));
  }
  return fd;
}

absl::StatusOr<std::string> ImportFile(const OpenedHostFile& file, const std::string& store_dir) {
  if (!file.fd.valid()) return absl::InvalidArgumentError("ImportFile: no open file");
  if (!PathExists(store_dir)) SMOLVM_RETURN_IF_ERROR(MakeDirs(store_dir));
  // First only hash: a file imported before (every launch of the same
  // kernel) is then not written again.
  SMOLVM_ASSIGN_OR_RETURN(std::string digest, HashAndCopy(file, -1, ""));
  std::string entry = JoinPath(store_dir, "sha256-" + digest);
  if (IsRegularFile(entry)) return entry;

  // Copy and hash in one pass, so the name matches the bytes written even
  // if the source changed since.
  std::string tmp = JoinPath(store_dir, ".import-XXXXXX");
  UniqueFd out(mkostemp(tmp.data(), O_CLOEXEC));
  if (!out.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("create ", tmp));
  auto remove_tmp = absl::MakeCleanup([&] { unlink(tmp.c_str()); });
  if (fchmod(out.get(), 0644) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("chmod ", tmp));
  SMOLVM_ASSIGN_OR_RETURN(digest, HashAndCopy(file, out.get(), tmp));
  if (fsync(out.get()) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("fsync ", tmp));
  out.Reset();
  entry = JoinPath(store_dir, "sha256-" + digest);
  // Same name, same content: replacing a concurrent import's entry is fine.
  if (rename(tmp.c_str(), entry.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("rename ", tmp, " to ", entry));
  }
  std::move(remove_tmp).Cancel();
  SMOLVM_RETURN_IF_ERROR(SyncPath(store_dir));
  return entry;
}

}  // namespace smolvm::image
