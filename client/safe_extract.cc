// SafeExtractTar (see safe_extract.h): libarchive reads and parses the
// stream; every write is an *at() call relative to a directory descriptor
// reached from the target directory one component at a time with
// O_NOFOLLOW, so neither a symlink from the archive nor one already on disk
// can redirect a write. Entries are created under a temporary name and
// renamed over their own, which replaces whatever non-directory was there
// (a symlink or a hard link is replaced, never written through).

#include "client/safe_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "lib/base/unique_fd.h"

namespace smolvm {

namespace {

constexpr size_t kReadBlockSize = 64 * 1024;
// kMaxFailedHeaders bounds the unreadable headers skipped in a row before
// the stream is given up as corrupt.
constexpr int kMaxFailedHeaders = 100;

// A refused entry travels up as a Status carrying this payload; any other
// error stops the extraction.
constexpr absl::string_view kRefusedPayload = "smolvm.client/refused-entry";

absl::Status Refused(absl::string_view reason) {
  absl::Status status(absl::StatusCode::kFailedPrecondition, reason);
  status.SetPayload(kRefusedPayload, absl::Cord());
  return status;
}

bool IsRefusal(const absl::Status& status) {
  return status.GetPayload(kRefusedPayload).has_value();
}

// SysError reports a failed *at() call on an entry: an error of the host (no
// space, I/O, permissions) stops the extraction; anything else comes from
// the archive's content (the name exists as something else, is too long,
// ...) and refuses the entry.
absl::Status SysError(absl::string_view what, int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EIO:
    case EROFS:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case EACCES:
    case EBADF:
    case EFAULT:
      return absl::ErrnoToStatus(err, what);
    default:
      return Refused(absl::StrCat(what, ": ", std::strerror(err)));
  }
}

using Fd = UniqueFd;  // lib/base/unique_fd.h

using Path = std::vector<std::string>;

// SplitEntryPath returns the components of an archive path, without empty
// and "." ones; refuses absolute paths and `..`.
absl::StatusOr<Path> SplitEntryPath(absl::string_view path) {
  if (absl::StartsWith(path, "/")) return Refused("absolute path");
  Path parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") return Refused("'..' in the path");
    parts.emplace_back(part);
  }
  return parts;
}

// SymlinkStaysInside tells whether the symlink `target`, read in a real
// directory `depth` levels below the root, resolves inside the root: it is
// relative and its `..` components are all leading and no more than
// `depth`. The rest only descends, and the symlinks it may meet on the way
// were all held to the same rule, so resolution never climbs above the
// root.
bool SymlinkStaysInside(absl::string_view target, size_t depth) {
  if (target.empty() || target.front() == '/') return false;
  size_t ups = 0;
  bool descended = false;
  for (absl::string_view part :
       absl::StrSplit(target, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (descended) return false;
      ++ups;
    } else {
      descended = true;
    }
  }
  return ups <= depth;
}

std::string Show(absl::Span<const std::string> parts) {
  return parts.empty() ? "." : absl::StrJoin(parts, "/");
}

// MtimeOf returns {now, the entry's mtime} for utimensat, if it has one.
std::optional<std::pair<timespec, timespec>> MtimeOf(archive_entry* entry) {
  if (!archive_entry_mtime_is_set(entry)) return std::nullopt;
  timespec atime{0, UTIME_NOW};
  timespec mtime{archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)};
  return std::make_pair(atime, mtime);
}

class Extractor {
 public:
  Extractor(Fd root, std::string dir)
      : root_(std::move(root)), dir_(std::move(dir)) {}

  // Extract writes `entry` (its data read from `archive`) or records why
  // not; returns an error only when the extraction must stop.
  absl::Status Extract(archive* archive, archive_entry* entry) {
    const char* raw = archive_entry_pathname(entry);
    const std::string path = raw != nullptr ? raw : "";
    absl::Status status = ExtractEntry(archive, entry, path);
    if (IsRefusal(status)) {
      Refuse(path, status.message());
      return absl::OkStatus();
    }
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("extract ", path, " into ", dir_, ": ",
                                       status.message()));
    }
    return absl::OkStatus();
  }

  // Refuse records a refused entry.
  void Refuse(absl::string_view path, absl::string_view reason) {
    ++result_.refused_count;
    if (result_.refused.size() < kMaxListedRefusals) {
      result_.refused.push_back(absl::StrCat(path, ": ", reason));
    }
  }

  // FinishDirectories applies the directory entries' modes and times, deepest
  // first, once nothing more is written into them.
  absl::Status FinishDirectories() {
    std::stable_sort(directories_.begin(), directories_.end(),
                     [](const Directory& a, const Directory& b) {
                       return a.parts.size() > b.parts.size();
                     });
    for (const Directory& dir : directories_) {
      absl::Status status = FinishDirectory(dir);
      if (IsRefusal(status)) {
        Refuse(Show(dir.parts), status.message());
      } else if (!status.ok()) {
        return absl::Status(status.code(),
                            absl::StrCat("set the mode of ", Show(dir.parts),
                                         " in ", dir_, ": ", status.message()));
      }
    }
    return absl::OkStatus();
  }

  TarExtraction TakeResult() && { return std::move(result_); }

 private:
  struct Directory {
    Path parts;
    mode_t mode;
    std::optional<std::pair<timespec, timespec>> times;
  };

  absl::Status ExtractEntry(archive* archive, archive_entry* entry,
                            absl::string_view path) {
    absl::StatusOr<Path> parts = SplitEntryPath(path);
    if (!parts.ok()) return parts.status();
    if (const char* target = archive_entry_hardlink(entry)) {
      return HardLink(*parts, target);
    }
    switch (archive_entry_filetype(entry)) {
      case AE_IFREG:
        return RegularFile(archive, entry, *parts);
      case AE_IFDIR:
        return MakeDirectory(entry, *parts);
      case AE_IFLNK:
        return Symlink(entry, *parts);
      case AE_IFCHR:
        return Refused("character device");
      case AE_IFBLK:
        return Refused("block device");
      case AE_IFIFO:
        return Refused("FIFO");
      case AE_IFSOCK:
        return Refused("socket");
      default:
        return Refused("unknown file type");
    }
  }

  // OpenDirectory opens the directory `parts` below the root, creating
  // missing ones (mode 0777 less the umask) when `create`, and refuses a
  // path through a symlink or a non-directory. The result is an O_PATH
  // descriptor, good for *at() calls.
  absl::StatusOr<Fd> OpenDirectory(absl::Span<const std::string> parts,
                                   bool create) {
    constexpr int kFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    Fd dir(::openat(root_.get(), ".", kFlags));
    if (!dir.valid()) return absl::ErrnoToStatus(errno, "open " + dir_);
    for (size_t i = 0; i < parts.size(); ++i) {
      const char* name = parts[i].c_str();
      Fd next(::openat(dir.get(), name, kFlags));
      if (!next.valid() && errno == ENOENT && create) {
        if (::mkdirat(dir.get(), name, 0777) != 0 && errno != EEXIST) {
          return SysError(
              absl::StrCat("create directory ", Show(parts.subspan(0, i + 1))),
              errno);
        }
        next = Fd(::openat(dir.get(), name, kFlags));
      }
      if (!next.valid()) {
        const int err = errno;
        const std::string prefix = Show(parts.subspan(0, i + 1));
        struct stat st;
        if ((err == ENOTDIR || err == ELOOP) &&
            ::fstatat(dir.get(), name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
          return Refused(absl::StrCat(
              "goes through ", prefix,
              S_ISLNK(st.st_mode) ? ", a symlink" : ", not a directory"));
        }
        return SysError(absl::StrCat("open directory ", prefix), err);
      }
      dir = std::move(next);
    }
    return dir;
  }

  // MakeTemp calls `make(name)`, a *at() call that creates `name` in the
  // entry's directory and returns -1 with errno on failure, with fresh
  // names until one is free; returns that name.
  absl::StatusOr<std::string> MakeTemp(absl::FunctionRef<int(const char*)> make,
                                       absl::string_view what) {
    for (int attempt = 0; attempt < 100; ++attempt) {
      std::string name =
          absl::StrCat(".smolvm-extract-", ::getpid(), "-", ++temp_counter_);
      if (make(name.c_str()) >= 0) return name;
      if (errno != EEXIST) return SysError(what, errno);
    }
    return Refused(absl::StrCat(what, ": no free temporary name"));
  }

  // Publish renames `temp` over `name` in `dir`; on failure `temp` goes.
  static absl::Status Publish(int dir, const std::string& temp,
                              const std::string& name) {
    if (::renameat(dir, temp.c_str(), dir, name.c_str()) == 0) {
      return absl::OkStatus();
    }
    const int err = errno;
    ::unlinkat(dir, temp.c_str(), 0);
    if (err == EISDIR || err == ENOTEMPTY || err == EEXIST) {
      return Refused("exists as a directory");
    }
    return SysError("rename into place", err);
  }

  absl::Status RegularFile(archive* archive, archive_entry* entry,
                           const Path& parts) {
    if (parts.empty()) return Refused("names the target directory");
    absl::StatusOr<Fd> parent =
        OpenDirectory(absl::MakeConstSpan(parts).first(parts.size() - 1),
                      /*create=*/true);
    if (!parent.ok()) return parent.status();
    Fd file;
    absl::StatusOr<std::string> temp = MakeTemp(
        [&](const char* name) {
          file = Fd(::openat(
              parent->get(), name,
              O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
          return file.get();
        },
        "create file");
    if (!temp.ok()) return temp.status();
    absl::Cleanup remove_temp = [&] {
      ::unlinkat(parent->get(), temp->c_str(), 0);
    };

    for (;;) {
      const void* data = nullptr;
      size_t size = 0;
      la_int64_t offset = 0;
      const int r = archive_read_data_block(archive, &data, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN || offset < 0) {
        return absl::DataLossError(absl::StrCat(
            "read data: ",
            offset < 0 ? "negative offset" : archive_error_string(archive)));
      }
      const char* bytes = static_cast<const char*>(data);
      while (size > 0) {
        const ssize_t n = ::pwrite(file.get(), bytes, size, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return SysError("write", errno);
        bytes += n;
        size -= static_cast<size_t>(n);
        offset += n;
      }
    }
    // The size covers a hole at the end of a sparse file.
    if (archive_entry_size_is_set(entry) &&
        ::ftruncate(file.get(), archive_entry_size(entry)) != 0) {
      return SysError("set size", errno);
    }
    if (::fchmod(file.get(), archive_entry_perm(entry) & 0777) != 0) {
      return SysError("chmod", errno);
    }
    if (auto times = MtimeOf(entry)) {
      const timespec ts[2] = {times->first, times->second};
      if (::futimens(file.get(), ts) != 0) return SysError("set times", errno);
    }
    if (::close(file.Release()) != 0) return SysError("close", errno);
    std::move(remove_temp).Cancel();
    return Publish(parent->get(), *temp, parts.back());
  }

  absl::Status MakeDirectory(archive_entry* entry, const Path& parts) {
    // The target directory itself keeps its mode.
    if (parts.empty()) return absl::OkStatus();
    absl::StatusOr<Fd> parent =
        OpenDirectory(absl::MakeConstSpan(parts).first(parts.size() - 1),
                      /*create=*/true);
    if (!parent.ok()) return parent.status();
    // 0700 until FinishDirectories: its final mode could forbid writing
    // the entries that follow.
    if (::mkdirat(parent->get(), parts.back().c_str(), 0700) != 0 &&
        errno != EEXIST) {
      return SysError("create directory", errno);
    }
    struct stat st;
    if (::fstatat(parent->get(), parts.back().c_str(), &st,
                  AT_SYMLINK_NOFOLLOW) != 0) {
      return SysError("stat", errno);
    }
    if (!S_ISDIR(st.st_mode)) return Refused("exists and is not a directory");
    directories_.push_back(
        Directory{parts, archive_entry_perm(entry) & 0777, MtimeOf(entry)});
    return absl::OkStatus();
  }

  absl::Status FinishDirectory(const Directory& dir) {
    absl::StatusOr<Fd> parent = OpenDirectory(
        absl::MakeConstSpan(dir.parts).first(dir.parts.size() - 1),
        /*create=*/false);
    if (!parent.ok()) return parent.status();
    Fd self(::openat(parent->get(), dir.parts.back().c_str(),
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!self.valid()) return SysError("open", errno);
    if (::fchmod(self.get(), dir.mode) != 0) return SysError("chmod", errno);
    if (dir.times) {
      const timespec ts[2] = {dir.times->first, dir.times->second};
      if (::futimens(self.get(), ts) != 0) return SysError("set times", errno);
    }
    return absl::OkStatus();
  }

  absl::Status Symlink(archive_entry* entry, const Path& parts) {
    if (parts.empty()) return Refused("names the target directory");
    const char* target = archive_entry_symlink(entry);
    if (target == nullptr || !SymlinkStaysInside(target, parts.size() - 1)) {
      return Refused(absl::StrCat("symlink to ", target ? target : "",
                                  " leaves the directory"));
    }
    absl::StatusOr<Fd> parent =
        OpenDirectory(absl::MakeConstSpan(parts).first(parts.size() - 1),
                      /*create=*/true);
    if (!parent.ok()) return parent.status();
    absl::StatusOr<std::string> temp = MakeTemp(
        [&](const char* name) {
          return ::symlinkat(target, parent->get(), name);
        },
        "create symlink");
    if (!temp.ok()) return temp.status();
    if (auto times = MtimeOf(entry)) {
      const timespec ts[2] = {times->first, times->second};
      if (::utimensat(parent->get(), temp->c_str(), ts, AT_SYMLINK_NOFOLLOW) !=
          0) {
        const int err = errno;
        ::unlinkat(parent->get(), temp->c_str(), 0);
        return SysError("set times", err);
      }
    }
    return Publish(parent->get(), *temp, parts.back());
  }

  absl::Status HardLink(const Path& parts, absl::string_view target) {
    if (parts.empty()) return Refused("names the target directory");
    absl::StatusOr<Path> target_parts = SplitEntryPath(target);
    if (!target_parts.ok()) {
      return Refused(absl::StrCat("hard link to ", target, ": ",
                                  target_parts.status().message()));
    }
    if (target_parts->empty()) return Refused("hard link to a directory");
    absl::StatusOr<Fd> target_parent = OpenDirectory(
        absl::MakeConstSpan(*target_parts).first(target_parts->size() - 1),
        /*create=*/false);
    if (!target_parent.ok()) {
      if (!IsRefusal(target_parent.status())) return target_parent.status();
      return Refused(absl::StrCat("hard link to ", target, ": ",
                                  target_parent.status().message()));
    }
    const char* target_name = target_parts->back().c_str();
    struct stat st;
    if (::fstatat(target_parent->get(), target_name, &st,
                  AT_SYMLINK_NOFOLLOW) != 0) {
      return SysError(absl::StrCat("hard link to ", target), errno);
    }
    // A link to a symlink would move it to another depth, where its target
    // may leave the directory.
    if (!S_ISREG(st.st_mode)) {
      return Refused(
          absl::StrCat("hard link to ", target, ", not a regular file"));
    }
    absl::StatusOr<Fd> parent =
        OpenDirectory(absl::MakeConstSpan(parts).first(parts.size() - 1),
                      /*create=*/true);
    if (!parent.ok()) return parent.status();
    absl::StatusOr<std::string> temp = MakeTemp(
        [&](const char* name) {
          return ::linkat(target_parent->get(), target_name, parent->get(),
                          name, 0);
        },
        "create hard link");
    if (!temp.ok()) return temp.status();
    absl::Status published = Publish(parent->get(), *temp, parts.back());
    // Renaming a link over another link to the same file does nothing and
    // leaves the temporary name.
    ::unlinkat(parent->get(), temp->c_str(), 0);
    return published;
  }

  Fd root_;
  const std::string dir_;
  std::vector<Directory> directories_;
  uint64_t temp_counter_ = 0;
  TarExtraction result_;
};

// Drain reads `fd` to its end.
absl::Status Drain(int fd) {
  std::string buffer(kReadBlockSize, '\0');
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "read the tar stream");
    if (n == 0) return absl::OkStatus();
  }
}

}  // namespace

absl::StatusOr<TarExtraction> SafeExtractTar(int input_fd,
                                             const std::string& dir) {
  Fd root(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return absl::ErrnoToStatus(errno, "open " + dir);
  struct archive* archive = archive_read_new();
  if (archive == nullptr) {
    return absl::ResourceExhaustedError("extract: archive_read_new failed");
  }
  absl::Cleanup free_archive = [archive] { archive_read_free(archive); };
  // Plain tar only (ustar, pax, GNU): the daemon sends what the guest's
  // `tar -c` wrote; no other format or decompressor is exposed to the guest.
  archive_read_support_format_tar(archive);
  archive_read_support_filter_none(archive);
  auto corrupt = [&](absl::string_view what) {
    const char* why = archive_error_string(archive);
    return absl::DataLossError(absl::StrCat("extract into ", dir, ": ", what,
                                            why ? ": " : "", why ? why : ""));
  };
  if (archive_read_open_fd(archive, input_fd, kReadBlockSize) != ARCHIVE_OK) {
    return corrupt("open the tar stream");
  }

  Extractor extractor(std::move(root), dir);
  int failed_headers = 0;
  for (;;) {
    archive_entry* entry = nullptr;
    const int r = archive_read_next_header(archive, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r == ARCHIVE_FATAL) return corrupt("read the tar stream");
    if (r == ARCHIVE_FAILED || r == ARCHIVE_RETRY) {
      if (++failed_headers > kMaxFailedHeaders) {
        return corrupt("too many unreadable entries");
      }
      const char* path =
          entry != nullptr ? archive_entry_pathname(entry) : nullptr;
      const char* why = archive_error_string(archive);
      extractor.Refuse(path ? path : "",
                       absl::StrCat("unreadable: ", why ? why : "?"));
      continue;
    }
    failed_headers = 0;
    if (absl::Status s = extractor.Extract(archive, entry); !s.ok()) return s;
  }
  if (absl::Status s = extractor.FinishDirectories(); !s.ok()) return s;
  if (absl::Status s = Drain(input_fd); !s.ok()) return s;
  return std::move(extractor).TakeResult();
}

}  // namespace smolvm
