// File: op_input.h
//
// OpInput: the bytes the host streams into one operation (ExecStdin for an
// exec, FileData for an upload), the controls of an interactive exec
// (ExecSignal, ExecResize) and the operation's cancel request.
//
// Thread-safety: one producer (the agent's reader thread, which must never
// block, so Push only queues) and one consumer (the operation's thread, which
// either polls wake_fd() or blocks in WaitPop). The queue is bounded by
// kMaxQueuedBytes; a Push beyond it marks the input overflowed, drops the
// data and everything after it, and wakes the consumer, which then fails the
// operation.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>

#include "lib/base/unique_fd.h"

namespace smolvm::guest {

class OpInput {
 public:
  static constexpr size_t kMaxQueuedBytes = size_t{16} << 20;
  // Controls queued and not yet applied; more are dropped (a host sending
  // faster than one poll round applies them gains nothing: signals to one
  // group coalesce anyway, and only the last size matters).
  static constexpr size_t kMaxQueuedControls = 64;

  // A signal to deliver (signal != 0) or a terminal size to set.
  struct Control {
    int signal = 0;
    unsigned rows = 0;
    unsigned cols = 0;
  };

  enum class Pop { kData, kEmpty, kEof, kAborted };

  OpInput();
  OpInput(const OpInput&) = delete;
  OpInput& operator=(const OpInput&) = delete;

  // False if the operation could not be set up (no eventfd).
  bool ok() const { return wake_fd_.valid(); }

  // Producer side. Queues `data` (and then the end of input if `eof`).
  // Returns false when the limit is exceeded (the input is then overflowed).
  // Data after eof, overflow or cancel is dropped.
  bool Push(std::string data, bool eof);
  // Asks the consumer to abort (ExecCancel, host disconnected).
  void Cancel();
  // Queues a control for the consumer; dropped beyond kMaxQueuedControls.
  void PushControl(const Control& control);

  // Consumer side. wake_fd() becomes readable whenever Push or Cancel ran;
  // ClearWake() resets it.
  int wake_fd() const { return wake_fd_.get(); }
  void ClearWake();
  // Non-blocking: kData (one chunk in *out), kEmpty, or kEof (all data
  // consumed and eof seen). Never kAborted: check cancelled()/overflowed().
  Pop TryPop(std::string* out);
  // Blocks until a chunk, the end of input, or an abort (kAborted).
  Pop WaitPop(std::string* out);
  // Non-blocking: the oldest queued control, if any.
  bool TryPopControl(Control* out);

  bool cancelled() const;
  bool overflowed() const;

 private:
  void Wake();

  UniqueFd wake_fd_;  // eventfd
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> chunks_;  // guarded by mu_
  std::deque<Control> controls_;    // guarded by mu_
  size_t queued_bytes_ = 0;         // guarded by mu_
  bool eof_ = false;                // guarded by mu_
  bool cancelled_ = false;          // guarded by mu_
  bool overflowed_ = false;         // guarded by mu_
};

}  // namespace smolvm::guest
