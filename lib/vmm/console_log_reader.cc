#include "lib/vmm/console_log_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace smolvm::vmm {
namespace {

// The run dir is writable by the (jailed) VMM: only a regular file is read
// (a FIFO would block the reader, a symlink lead elsewhere).
UniqueFd OpenFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return UniqueFd();
  return fd;
}

bool SameFile(int a, int b) {
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
         sa.st_dev == sb.st_dev;
}

// The recorder renames console.log, then creates the next: for a moment
// the name is missing while the VM runs. Gone for good is the run dir.
bool RunDirGone(const std::string& log_path) {
  const size_t slash = log_path.rfind('/');
  return slash != std::string::npos && access(log_path.substr(0, slash).c_str(), F_OK) != 0;
}

uint64_t SizeOf(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Whether `path` names the file open as `fd`.
bool Names(const std::string& path, int fd) {
  struct stat a, b;
  return stat(path.c_str(), &a) == 0 && fstat(fd, &b) == 0 && a.st_ino == b.st_ino &&
         a.st_dev == b.st_dev;
}

std::string ReadAt(int fd, uint64_t offset, size_t max_bytes) {
  std::string out(max_bytes, '\0');
  ssize_t got = pread(fd, out.data(), out.size(), static_cast<off_t>(offset));
  out.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return out;
}

}  // namespace

absl::StatusOr<ConsoleLogReader> ConsoleLogReader::Open(const std::string& log_path,
                                                        uint64_t tail_bytes) {
  ConsoleLogReader reader(log_path);
  UniqueFd current = OpenFile(log_path);
  for (int i = 0; i < 20 && !current.valid() && !RunDirGone(log_path); ++i) {
    usleep(5000);  // Between a rotation's rename and create.
    current = OpenFile(log_path);
  }
  if (!current.valid()) return absl::NotFoundError(absl::StrCat("no console log at ", log_path));
  const uint64_t size = SizeOf(current.get());
  UniqueFd rotated = OpenFile(log_path + ".1");
  // Rotated between the two opens: both are the same file, read once.
  if (rotated.valid() && SameFile(rotated.get(), current.get())) rotated.Reset();
  if (tail_bytes <= size || !rotated.valid()) {
    reader.offset_ = size - std::min(size, tail_bytes);
    reader.file_ = std::move(current);
  } else {
    // The rest of the tail is the end of the rotated half.
    const uint64_t old_size = SizeOf(rotated.get());
    reader.offset_ = old_size - std::min(old_size, tail_bytes - size);
    reader.file_ = std::move(rotated);
    reader.then_ = std::move(current);
  }
  return reader;
}

absl::StatusOr<std::string> ConsoleLogReader::Read(size_t max_bytes) {
  for (int step = 0; step < 4; ++step) {
    std::string data = ReadAt(file_.get(), offset_, max_bytes);
    if (!data.empty()) {
      offset_ += data.size();
      return data;
    }
    if (then_.valid()) {
      file_ = std::move(then_);
      offset_ = 0;
      continue;
    }
    // At the end of our file: is it still the one being written?
    if (access(log_path_.c_str(), F_OK) != 0) {
      if (RunDirGone(log_path_)) {
        return absl::NotFoundError(absl::StrCat("no console log at ", log_path_));
      }
      return std::string();  // Mid-rotation: the next Read sees the new file.
    }
    if (Names(log_path_, file_.get())) return std::string();
    // Rotated. The recorder renames before it writes to the new file, so
    // what our file got before the rename is there now.
    data = ReadAt(file_.get(), offset_, max_bytes);
    if (!data.empty()) {
      offset_ += data.size();
      return data;
    }
    // Next: .1 if it is not ours any more (rotated twice: it is the file
    // after ours), then console.log.
    const std::string rotated_path = log_path_ + ".1";
    UniqueFd rotated = OpenFile(rotated_path);
    UniqueFd current = OpenFile(log_path_);
    if (!current.valid()) {
      // Mid-rotation (or not a regular file): stay on ours, try again later.
      if (RunDirGone(log_path_)) {
        return absl::NotFoundError(absl::StrCat("no console log at ", log_path_));
      }
      return std::string();
    }
    if (rotated.valid() && !SameFile(rotated.get(), file_.get()) &&
        !SameFile(rotated.get(), current.get())) {
      file_ = std::move(rotated);
      then_ = std::move(current);
    } else {
      file_ = std::move(current);
    }
    offset_ = 0;
  }
  return std::string();
}

}  // namespace smolvm::vmm
