#include "lib/base/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "lib/base/unique_fd.h"

namespace smolvm {
namespace {

absl::Status PathError(int err, const std::string& op, const std::string& path) {
  return absl::ErrnoToStatus(err, absl::StrCat(op, " ", path));
}

absl::Status WriteAll(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return PathError(errno, "write", path);
    }
    data += w;
    n -= w;
  }
  return absl::OkStatus();
}

std::string DirOf(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Copies bytes [off, end) of `in` to the same offsets of `out` with
// copy_file_range, or read/write where the kernel refuses (EXDEV across
// filesystems of different types, or a filesystem without support).
absl::Status CopyRange(int in, int out, off_t off, off_t end, const std::string& src,
                       const std::string& dst) {
  off_t in_off = off, out_off = off;
  bool plain = false;
  std::vector<char> buf;
  while (in_off < end) {
    if (!plain) {
      ssize_t n = copy_file_range(in, &in_off, out, &out_off, end - in_off, 0);
      if (n > 0) continue;
      if (n == 0) return absl::OkStatus();  // Source shrank under us.
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != EOPNOTSUPP && errno != ENOSYS) {
        return PathError(errno, absl::StrCat("copy to ", dst, " from"), src);
      }
      plain = true;
      buf.resize(1 << 20);
    }
    size_t want = std::min<off_t>(end - in_off, buf.size());
    ssize_t n = pread(in, buf.data(), want, in_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return PathError(errno, "read", src);
    }
    if (n == 0) return absl::OkStatus();  // Source shrank under us.
    for (ssize_t done = 0; done < n;) {
      ssize_t w = pwrite(out, buf.data() + done, n - done, out_off + done);
      if (w < 0) {
        if (errno == EINTR) continue;
        return PathError(errno, "write", dst);
      }
      done += w;
    }
    in_off += n;
    out_off += n;
  }
  return absl::OkStatus();
}

// The copy behind SparseCopyFile and SparseCopyFromFd; `src` names the
// source in errors.
absl::Status SparseCopy(int in, const std::string& src, const std::string& dst) {
  struct stat st;
  if (fstat(in, &st) != 0) return PathError(errno, "stat", src);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("copy ", src, ": not a regular file"));
  }
  UniqueFd out(open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out.valid()) return PathError(errno, "create", dst);
  auto fail = [&](absl::Status s) {
    unlink(dst.c_str());
    return s;
  };
  if (ftruncate(out.get(), st.st_size) != 0) {
    return fail(PathError(errno, "truncate", dst));
  }
  off_t pos = 0;
  while (pos < st.st_size) {
    off_t data = lseek(in, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // Only a hole remains.
      return fail(PathError(errno, "seek data in", src));
    }
    off_t hole = lseek(in, data, SEEK_HOLE);
    if (hole < 0) return fail(PathError(errno, "seek hole in", src));
    // The size was fixed by ftruncate: bytes appended since are not copied.
    hole = std::min<off_t>(hole, st.st_size);
    if (data >= hole) break;
    if (auto s = CopyRange(in, out.get(), data, hole, src, dst); !s.ok()) return fail(s);
    pos = hole;
  }
  if (fsync(out.get()) != 0) return fail(PathError(errno, "fsync", dst));
  return absl::OkStatus();
}

}  // namespace

std::string JoinPath(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

std::string ReadFileTail(const std::string& path, size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return "";
  off_t size = lseek(fd.get(), 0, SEEK_END);
  if (size <= 0) return "";
  off_t start = size > static_cast<off_t>(max_bytes) ? size - max_bytes : 0;
  std::string out(size - start, '\0');
  ssize_t n = pread(fd.get(), out.data(), out.size(), start);
  out.resize(n < 0 ? 0 : n);
  return out;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path,
                                             size_t max_bytes) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PathError(errno, "open", path);
  std::string out;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return PathError(errno, "read", path);
    }
    if (n == 0) break;
    out.append(buf, n);
    if (out.size() > max_bytes) {
      return absl::ResourceExhaustedError(
          absl::StrCat("read ", path, ": file is larger than ", max_bytes, " bytes"));
    }
  }
  return out;
}

absl::Status SyncPath(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return PathError(errno, "open", path);
  if (fsync(fd.get()) != 0) return PathError(errno, "fsync", path);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, const std::string& data,
                             int mode) {
  std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    UniqueFd fd(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd.valid()) return PathError(errno, "create", tmp);
    if (auto s = WriteAll(fd.get(), data.data(), data.size(), tmp); !s.ok()) {
      unlink(tmp.c_str());
      return s;
    }
    if (fsync(fd.get()) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      return PathError(err, "fsync", tmp);
    }
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return PathError(err, "rename to", path);
  }
  return SyncPath(DirOf(path));
}

absl::Status SparseCopyFile(const std::string& src, const std::string& dst) {
  UniqueFd in(open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return PathError(errno, "open", src);
  return SparseCopy(in.get(), src, dst);
}

absl::Status SparseCopyFromFd(int src_fd, const std::string& dst) {
  return SparseCopy(src_fd, absl::StrCat("source fd ", src_fd), dst);
}

absl::Status MakeDirs(const std::string& path, int mode) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return PathError(ec.value(), "mkdir", path);
  (void)mode;
  chmod(path.c_str(), mode);
  return absl::OkStatus();
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return PathError(ec.value(), "remove", path);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> AllocatedBytes(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return PathError(errno, "stat", path);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

absl::StatusOr<uint64_t> FreeBytes(const std::string& path) {
  struct statvfs vfs;
  if (statvfs(path.c_str(), &vfs) != 0) return PathError(errno, "statvfs", path);
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

}  // namespace smolvm

namespace smolvm {

std::vector<std::string> ListDirNames(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  return names;
}

}  // namespace smolvm
