#include "guest/agent/fs_ops.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "lib/base/unique_fd.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)  // <linux/fs.h>
#endif

namespace smolvm::guest {
namespace {

using agent::v1::FsEntry;
using agent::v1::FsReply;
using agent::v1::FsRequest;
using agent::v1::Frame;

// `dir`/`name` for a normalized absolute `dir`.
std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

// The last component of a normalized absolute path ("/" for "/").
std::string BaseName(const std::string& path) {
  if (path == "/") return path;
  return path.substr(path.find_last_of('/') + 1);
}

// The parent of a normalized absolute path other than "/".
std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Opens directory `name` under `dirfd` without following a symlink.
int OpenDirAt(int dirfd, const char* name) {
  return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
}

// The names in open directory `fd` (without "." and ".."), sorted. False
// with errno set on failure. Reads through a duplicate of `fd`, which stays
// open; read a directory fd only once (the duplicate shares its offset).
bool ReadNames(int fd, std::vector<std::string>* names) {
  int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) return false;
  DIR* dir = fdopendir(dup_fd);
  if (dir == nullptr) {
    int e = errno;
    close(dup_fd);
    errno = e;
    return false;
  }
  int error = 0;
  for (;;) {
    errno = 0;
    struct dirent* d = readdir(dir);
    if (d == nullptr) {
      error = errno;
      break;
    }
    if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
    names->emplace_back(d->d_name);
  }
  closedir(dir);
  if (error != 0) {
    errno = error;
    return false;
  }
  std::sort(names->begin(), names->end());
  return true;
}

// A symlink's target ("" if it cannot be read).
std::string ReadLinkAt(int dirfd, const char* name, off_t size_hint) {
  size_t size = size_hint > 0 ? static_cast<size_t>(size_hint) + 1 : 256;
  for (;;) {
    std::string target(size, '\0');
    ssize_t n = readlinkat(dirfd, name, target.data(), target.size());
    if (n < 0) return "";
    // A full buffer may be a cut-off target: retry larger (targets are at
    // most PATH_MAX on Linux).
    if (static_cast<size_t>(n) < target.size() || size >= 65536) {
      target.resize(static_cast<size_t>(n));
      return target;
    }
    size *= 2;
  }
}

FsEntry::Type TypeOf(mode_t mode) {
  if (S_ISREG(mode)) return FsEntry::FILE;
  if (S_ISDIR(mode)) return FsEntry::DIRECTORY;
  if (S_ISLNK(mode)) return FsEntry::SYMLINK;
  return FsEntry::OTHER;
}

// Fills `entry` from `st` (an lstat of `name` under `dirfd`, i.e. `path`).
void FillEntry(const std::string& path, const std::string& name, const struct stat& st,
               int dirfd, const char* at_name, FsEntry* entry) {
  entry->set_path(path);
  entry->set_name(name);
  entry->set_type(TypeOf(st.st_mode));
  entry->set_size(static_cast<uint64_t>(st.st_size));
  entry->set_mode(st.st_mode & 07777);
  entry->set_uid(st.st_uid);
  entry->set_gid(st.st_gid);
  entry->set_mtime_ns(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 +
                      static_cast<int64_t>(st.st_mtim.tv_nsec));
  if (S_ISLNK(st.st_mode)) entry->set_symlink_target(ReadLinkAt(dirfd, at_name, st.st_size));
}

// Appends the lstat of `path` to the reply.
FsError AddStat(const std::string& path, FsReply* reply) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return FsErrnoError("lstat", path, errno);
  FillEntry(path, BaseName(path), st, AT_FDCWD, path.c_str(), reply->add_entries());
  return {};
}

// Breadth-first: all entries of a directory (sorted by name) come before
// those of its subdirectories, which are visited in the order they were
// listed. Symlinks to directories are listed, never entered.
FsError List(const std::string& path, uint32_t depth_request, FsReply* reply) {
  const uint32_t depth = depth_request == 0 ? 1 : depth_request;
  if (depth > kMaxListDepth) {
    return {"list " + path + ": depth " + std::to_string(depth) + " is more than " +
                std::to_string(kMaxListDepth),
            EINVAL};
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return FsErrnoError("lstat", path, errno);
  if (!S_ISDIR(st.st_mode)) return FsErrnoError("opendir", path, ENOTDIR);

  struct Dir {
    std::string path;
    uint32_t level;  // the depth of its entries: 1 for the listed directory
  };
  std::deque<Dir> queue;
  queue.push_back({path, 1});
  bool top = true;
  size_t bytes = 0;
  while (!queue.empty()) {
    Dir dir = std::move(queue.front());
    queue.pop_front();
    UniqueFd fd(OpenDirAt(AT_FDCWD, dir.path.c_str()));
    std::vector<std::string> names;
    if (!fd.valid() || !ReadNames(fd.get(), &names)) {
      // An unreadable (or meanwhile replaced) subdirectory is listed, its
      // contents are not; only the listed directory itself is an error.
      if (top) return FsErrnoError("opendir", path, errno);
      continue;
    }
    top = false;
    for (const std::string& name : names) {
      if (fstatat(fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
      FsEntry entry;
      FillEntry(JoinPath(dir.path, name), name, st, fd.get(), name.c_str(), &entry);
      const size_t size = entry.ByteSizeLong();
      if (static_cast<size_t>(reply->entries_size()) >= kMaxListEntries ||
          bytes + size > kMaxListBytes) {
        reply->set_truncated(true);
        return {};
      }
      bytes += size;
      if (S_ISDIR(st.st_mode) && dir.level < depth) queue.push_back({entry.path(), dir.level + 1});
      *reply->add_entries() = std::move(entry);
    }
  }
  return {};
}

// mkdir -p for the parents of `path` (0755 each, before the umask).
FsError MakeParents(const std::string& path) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string prefix = path.substr(0, slash);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return FsErrnoError("mkdir", prefix, errno);
    }
  }
  return {};
}

FsError Mkdir(const std::string& path, uint32_t mode_request, bool parents, FsReply* reply) {
  const mode_t mode = mode_request != 0 ? static_cast<mode_t>(mode_request & 07777) : 0755;
  bool created = true;
  int rc = mkdir(path.c_str(), mode);
  if (rc != 0 && errno == ENOENT && parents) {
    if (FsError e = MakeParents(path); e.failed()) return e;
    rc = mkdir(path.c_str(), mode);
  }
  if (rc != 0) {
    if (errno != EEXIST || !parents) return FsErrnoError("mkdir", path, errno);
    // With parents an existing directory is fine (not a symlink to one:
    // the reply describes the path itself).
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return FsErrnoError("lstat", path, errno);
    if (!S_ISDIR(st.st_mode)) return FsErrnoError("mkdir", path, EEXIST);
    created = false;
  }
  if (FsError e = AddStat(path, reply); e.failed()) return e;
  reply->set_created(created);
  return {};
}

// Removes everything in open directory `dirfd` (at `dir_path`), depth-first,
// through directory fds only: a symlink is unlinked, never followed, and a
// directory swapped for a symlink meanwhile cannot redirect the removal.
// Does not cross into another file system (a mount point is EBUSY), so a
// mount under the tree (/proc, a volume) is never emptied.
//
// Each level holds one fd (the agent's limit is 1024, shared with every
// other operation): deeper than kMaxRemoveDepth is ELOOP, before any fd
// runs out.
FsError RemoveContents(int dirfd, const std::string& dir_path, dev_t dev, int depth) {
  if (depth > kMaxRemoveDepth) return FsErrnoError("remove", dir_path, ELOOP);
  std::vector<std::string> names;
  if (!ReadNames(dirfd, &names)) return FsErrnoError("opendir", dir_path, errno);
  for (const std::string& name : names) {
    const std::string path = JoinPath(dir_path, name);
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;
      return FsErrnoError("lstat", path, errno);
    }
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) return FsErrnoError("rmdir", path, EBUSY);
      UniqueFd child(OpenDirAt(dirfd, name.c_str()));
      if (child.valid()) {
        // The directory actually opened must be on the same file system
        // (not one mounted there since the fstatat).
        struct stat opened;
        if (fstat(child.get(), &opened) != 0) return FsErrnoError("fstat", path, errno);
        if (opened.st_dev != dev) return FsErrnoError("rmdir", path, EBUSY);
        if (FsError e = RemoveContents(child.get(), path, dev, depth + 1); e.failed()) return e;
        child.Reset();
        if (unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
          return FsErrnoError("rmdir", path, errno);
        }
        continue;
      }
      if (errno == ENOENT) continue;
      if (errno != ENOTDIR && errno != ELOOP) return FsErrnoError("open", path, errno);
      // Replaced by a non-directory since the fstatat: unlink that.
    }
    if (unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) {
      return FsErrnoError("unlink", path, errno);
    }
  }
  return {};
}

FsError Remove(const std::string& path, bool recursive) {
  const std::string name = BaseName(path);
  // "/" and "x/.." (which would empty x's parent) are refused, as rm does.
  if (path == "/" || name == "..") return FsErrnoError("remove", path, EINVAL);
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return FsErrnoError("lstat", path, errno);
  if (!S_ISDIR(st.st_mode)) {
    if (unlink(path.c_str()) != 0) return FsErrnoError("unlink", path, errno);
    return {};
  }
  if (!recursive) {
    if (rmdir(path.c_str()) != 0) return FsErrnoError("rmdir", path, errno);
    return {};
  }
  const std::string parent = DirName(path);
  UniqueFd parent_fd(open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent_fd.valid()) return FsErrnoError("open", parent, errno);
  UniqueFd fd(OpenDirAt(parent_fd.get(), name.c_str()));
  if (!fd.valid()) {
    if (errno != ENOTDIR && errno != ELOOP) return FsErrnoError("open", path, errno);
    // Replaced by a non-directory since the lstat: remove that.
    if (unlinkat(parent_fd.get(), name.c_str(), 0) != 0) return FsErrnoError("unlink", path, errno);
    return {};
  }
  struct stat top;
  if (fstat(fd.get(), &top) != 0) return FsErrnoError("fstat", path, errno);
  if (FsError e = RemoveContents(fd.get(), path, top.st_dev, 1); e.failed()) return e;
  fd.Reset();
  if (unlinkat(parent_fd.get(), name.c_str(), AT_REMOVEDIR) != 0) {
    return FsErrnoError("rmdir", path, errno);
  }
  return {};
}

FsError Rename(const std::string& from, const std::string& to, bool overwrite, FsReply* reply) {
  int rc;
  if (overwrite) {
    rc = rename(from.c_str(), to.c_str());
  } else {
    rc = static_cast<int>(
        syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE));
    if (rc != 0 && (errno == ENOSYS || errno == EINVAL)) {
      // A kernel or file system without RENAME_NOREPLACE (or a genuinely
      // invalid rename, which rename() then reports again): check, then
      // rename. Racy, as `mv -n` is on such systems. Any other failure of
      // the check reports renameat2's own errno.
      const int renameat2_errno = errno;
      struct stat st;
      if (lstat(to.c_str(), &st) == 0) {
        errno = EEXIST;
      } else if (errno == ENOENT) {
        rc = rename(from.c_str(), to.c_str());
      } else {
        errno = renameat2_errno;
      }
    }
  }
  if (rc != 0) {
    int e = errno;
    return {"rename " + from + " -> " + to + ": " + std::strerror(e), e};
  }
  return AddStat(to, reply);
}

FsError RunOp(const FsRequest& request, FsReply* reply) {
  GuestUser user;
  if (FsError e = BecomeFsUser(request.user(), &user); e.failed()) return e;
  std::string path;
  switch (request.op()) {
    case FsRequest::STAT:
      if (FsError e = ResolveFsPath(user, "lstat", request.path(), &path); e.failed()) return e;
      return AddStat(path, reply);
    case FsRequest::LIST:
      if (FsError e = ResolveFsPath(user, "list", request.path(), &path); e.failed()) return e;
      return List(path, request.depth(), reply);
    case FsRequest::MKDIR:
      if (FsError e = ResolveFsPath(user, "mkdir", request.path(), &path); e.failed()) return e;
      return Mkdir(path, request.mode(), request.parents(), reply);
    case FsRequest::REMOVE:
      if (FsError e = ResolveFsPath(user, "remove", request.path(), &path); e.failed()) return e;
      return Remove(path, request.recursive());
    case FsRequest::RENAME: {
      std::string to;
      if (FsError e = ResolveFsPath(user, "rename", request.path(), &path); e.failed()) return e;
      if (FsError e = ResolveFsPath(user, "rename", request.new_path(), &to); e.failed()) return e;
      return Rename(path, to, request.overwrite(), reply);
    }
    default:
      return {"fs op " + std::to_string(static_cast<int>(request.op())) + ": " +
                  std::strerror(EINVAL),
              EINVAL};
  }
}

}  // namespace

FsError FsErrnoError(const std::string& op, const std::string& path, int error) {
  return {op + " " + path + ": " + std::strerror(error), error};
}

FsError BecomeFsUser(const std::string& user_spec, GuestUser* user) {
  std::string error;
  if (!ResolveUser(user_spec, user, &error)) return {error, EINVAL};
  if (int e = SwitchThreadToUser(*user); e != 0) {
    return {"switch to user " + user_spec + ": " + std::strerror(e), e};
  }
  return {};
}

FsError ResolveFsPath(const GuestUser& user, const std::string& op, const std::string& path,
                      std::string* out) {
  if (path.find('\0') != std::string::npos) {
    std::string printable = path;
    std::replace(printable.begin(), printable.end(), '\0', '?');
    return {op + " " + printable + ": path contains a NUL byte", EINVAL};
  }
  *out = PathFromHome(user, path);
  return {};
}

void RunFsRequest(Channel* channel, const FsRequest& request) {
  Frame frame;
  FsReply* reply = frame.mutable_fs_reply();
  FsError error = RunOp(request, reply);
  if (error.failed()) {
    reply->Clear();
    reply->set_error(std::move(error.text));
    reply->set_error_errno(error.errnum);
  }
  reply->set_id(request.id());
  channel->Send(frame);
}

}  // namespace smolvm::guest
