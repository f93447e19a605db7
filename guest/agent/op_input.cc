#include "guest/agent/op_input.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <utility>

namespace smolvm::guest {

OpInput::OpInput() : wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

bool OpInput::Push(std::string data, bool eof) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (eof_ || cancelled_ || overflowed_) return !overflowed_;
    if (queued_bytes_ + data.size() > kMaxQueuedBytes) {
      overflowed_ = true;
      chunks_.clear();
      queued_bytes_ = 0;
    } else {
      queued_bytes_ += data.size();
      if (!data.empty()) chunks_.push_back(std::move(data));
      eof_ = eof;
    }
  }
  cv_.notify_one();
  Wake();
  return !overflowed();
}

void OpInput::Cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_one();
  Wake();
}

void OpInput::PushControl(const Control& control) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_ || controls_.size() >= kMaxQueuedControls) return;
    controls_.push_back(control);
  }
  Wake();
}

bool OpInput::TryPopControl(Control* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (controls_.empty()) return false;
  *out = controls_.front();
  controls_.pop_front();
  return true;
}

void OpInput::Wake() {
  uint64_t one = 1;
  // EAGAIN only when the counter is saturated: it is readable anyway.
  (void)!write(wake_fd_.get(), &one, sizeof one);
}

void OpInput::ClearWake() {
  uint64_t value;
  (void)!read(wake_fd_.get(), &value, sizeof value);
}

OpInput::Pop OpInput::TryPop(std::string* out) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!chunks_.empty()) {
    *out = std::move(chunks_.front());
    chunks_.pop_front();
    queued_bytes_ -= out->size();
    return Pop::kData;
  }
  return eof_ ? Pop::kEof : Pop::kEmpty;
}

OpInput::Pop OpInput::WaitPop(std::string* out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !chunks_.empty() || eof_ || cancelled_ || overflowed_; });
  if (cancelled_ || overflowed_) return Pop::kAborted;
  if (!chunks_.empty()) {
    *out = std::move(chunks_.front());
    chunks_.pop_front();
    queued_bytes_ -= out->size();
    return Pop::kData;
  }
  return Pop::kEof;
}

bool OpInput::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool OpInput::overflowed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return overflowed_;
}

}  // namespace smolvm::guest
