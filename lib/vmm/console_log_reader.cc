#include "lib/vmm/console_log_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace smolvm::vmm {
namespace {

UniqueFd OpenFile(const std::string& path) {
  return UniqueFd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
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
  if (!current.valid()) return absl::NotFoundError(absl::StrCat("no console log at ", log_path));
  const uint64_t size = SizeOf(current.get());
  UniqueFd rotated = OpenFile(log_path + ".1");
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
      return absl::NotFoundError(absl::StrCat("no console log at ", log_path_));
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
    offset_ = 0;
    if (rotated.valid() && !Names(rotated_path, file_.get())) {
      file_ = std::move(rotated);
      then_ = std::move(current);
    } else {
      file_ = std::move(current);
    }
    if (!file_.valid()) return absl::NotFoundError(absl::StrCat("no console log at ", log_path_));
  }
  return std::string();
}

}  // namespace smolvm::vmm
