#include "lib/agent/frame_codec.h"

namespace smolvm::agent {

bool EncodeFrame(const v1::Frame& frame, std::string* out) {
  size_t size = frame.ByteSizeLong();
  if (size > kMaxFrameBytes) return false;
  char header[4] = {static_cast<char>((size >> 24) & 0xff),
                    static_cast<char>((size >> 16) & 0xff),
                    static_cast<char>((size >> 8) & 0xff),
                    static_cast<char>(size & 0xff)};
  out->append(header, 4);
  return frame.AppendToString(out);
}

FrameDecoder::Result FrameDecoder::Next(v1::Frame* frame) {
  if (!error_.empty()) return Result::kError;
  size_t available = buffer_.size() - offset_;
  if (available < 4) {
    // Compact once everything before offset_ has been consumed.
    buffer_.erase(0, offset_);
    offset_ = 0;
    return Result::kNeedMore;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + offset_);
  size_t size = (size_t{p[0]} << 24) | (size_t{p[1]} << 16) | (size_t{p[2]} << 8) | p[3];
  if (size > kMaxFrameBytes) {
    error_ = "frame of " + std::to_string(size) + " bytes exceeds the 1 MiB limit";
    return Result::kError;
  }
  if (available < 4 + size) {
    buffer_.erase(0, offset_);
    offset_ = 0;
    return Result::kNeedMore;
  }
  if (!frame->ParseFromArray(buffer_.data() + offset_ + 4, static_cast<int>(size))) {
    error_ = "unparsable frame of " + std::to_string(size) + " bytes";
    return Result::kError;
  }
  offset_ += 4 + size;
  return Result::kFrame;
}

}  // namespace smolvm::agent
