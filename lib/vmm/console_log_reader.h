// File: console_log_reader.h
//
// Reads a VM's console as ConsoleRecorder keeps it (console_recorder.h):
// `console.log`, renamed to `console.log.1` at half the cap and replaced by
// a fresh file. A reader starts with the last `tail_bytes` and then
// follows: each Read returns what was written since, across rotations. It
// follows a file by an open descriptor, not by name, so a file renamed (or
// even unlinked, by a second rotation) is still read to its end before the
// next one; only output of a file that came and went entirely between two
// reads (the cap and a half in one poll interval) is missed. Not
// thread-safe; one per stream.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "lib/base/unique_fd.h"

namespace smolvm::vmm {

class ConsoleLogReader {
 public:
  // NOT_FOUND if `log_path` does not exist (the VM is not running).
  static absl::StatusOr<ConsoleLogReader> Open(const std::string& log_path, uint64_t tail_bytes);
  ConsoleLogReader(ConsoleLogReader&&) = default;
  ConsoleLogReader& operator=(ConsoleLogReader&&) = default;

  // What the console got since the last Read (the tail, the first time),
  // at most `max_bytes` (the rest comes with the next Read); "" if nothing.
  // NOT_FOUND once the log is gone (the VM stopped).
  absl::StatusOr<std::string> Read(size_t max_bytes);

 private:
  explicit ConsoleLogReader(std::string log_path) : log_path_(std::move(log_path)) {}

  std::string log_path_;
  UniqueFd file_;      // The file being read.
  uint64_t offset_ = 0;
  UniqueFd then_;      // The file after it, when known already.
};

}  // namespace smolvm::vmm
