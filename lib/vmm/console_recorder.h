// File: console_recorder.h
//
// ConsoleRecorder keeps a VM's serial console on disk within a fixed size.
// QEMU serves the console on a Unix socket (it never writes a file itself,
// so a guest writing to its serial port forever cannot fill the run dir,
// where every guest's RAM lives); the recorder reads it on a thread of its
// own and writes `console.log`, rotating it to `console.log.1` when it
// reaches half the cap, so the two files together never exceed the cap and
// the newest output is always kept. While nobody reads the socket (the
// daemon restarting) QEMU drops the output; a guest writing faster than the
// recorder stores is slowed by the socket's back-pressure, nothing grows.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "lib/base/unique_fd.h"

namespace smolvm::vmm {

class ConsoleRecorder {
 public:
  // Starts recording `socket_path` into `log_path` (+ ".1"), together at
  // most `max_bytes` (at least 8 KiB). Connects in the background, retrying
  // while the socket is not there yet.
  ConsoleRecorder(std::string socket_path, std::string log_path, uint64_t max_bytes);
  ~ConsoleRecorder();  // Stops the thread; the files stay.
  ConsoleRecorder(const ConsoleRecorder&) = delete;
  ConsoleRecorder& operator=(const ConsoleRecorder&) = delete;

  // The last `max_bytes` of the console. If the VMM is gone, first waits
  // (up to `drain`) for what it wrote last to reach the file.
  std::string Tail(size_t max_bytes, bool vmm_gone,
                   std::chrono::milliseconds drain = std::chrono::milliseconds(500)) const;

 private:
  void Run();
  void Append(const char* data, size_t n);

  const std::string socket_path_, log_path_;
  const uint64_t half_;
  UniqueFd wake_;  // eventfd: ends Run().
  UniqueFd log_;   // console.log, O_APPEND.
  uint64_t log_bytes_ = 0;
  std::atomic<bool> eof_{false};  // The VMM closed the console.
  std::thread thread_;
};

}  // namespace smolvm::vmm
