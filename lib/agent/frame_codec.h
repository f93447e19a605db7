// File: frame_codec.h
//
// Framing of the guest-agent protocol (proto/smolvm/agent/v1/agent.proto):
// a 4-byte big-endian length, then a serialized Frame. Shared by the host
// (lib/agent) and the guest agent (guest/agent), so it depends on nothing
// but the generated protocol: no Abseil, no exceptions, no allocation beyond
// the bounded buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::agent {

// Largest frame either side accepts; a larger length prefix is an error.
inline constexpr size_t kMaxFrameBytes = 1 << 20;
// Largest payload put in one data-carrying message.
inline constexpr size_t kMaxChunkBytes = 64 << 10;

// Appends the encoded frame to `out`. Returns false if the frame is too big.
bool EncodeFrame(const v1::Frame& frame, std::string* out);

// Splits a byte stream into frames. Feed bytes as they arrive, then call
// Next until it returns kNeedMore.
class FrameDecoder {
 public:
  enum class Result { kFrame, kNeedMore, kError };

  void Feed(const char* data, size_t n) { buffer_.append(data, n); }
  // kFrame: `frame` holds the next frame. kError: the stream is corrupt
  // (oversized or unparsable frame); error() says why and the decoder must
  // not be used further (the connection is dropped).
  Result Next(v1::Frame* frame);
  const std::string& error() const { return error_; }
  size_t buffered() const { return buffer_.size() - offset_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
  std::string error_;
};

}  // namespace smolvm::agent
