// File: channel.h
//
// Channel: the agent's end of the host connection, either the virtio-serial
// port /dev/vportNpM or (for tests) an already-connected stream socket.
//
// A virtio-serial port has no accept(): while no host is connected a read
// returns 0 at once and a write would block, and poll() reports POLLHUP.
// The fd is therefore non-blocking: Read() waits in poll() for data, and
// Send() drops the frame (instead of blocking forever) when the host is gone.
//
// DecodeFrames() turns the bytes Read() returns into frames.
//
// Thread-safety: Send() may be called from any thread; frames are written
// whole under a mutex and never interleave. Read() is for the one reader
// thread only.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <mutex>

#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

class Channel {
 public:
  // Takes ownership of `fd` and makes it non-blocking and close-on-exec.
  explicit Channel(UniqueFd fd);
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Encodes and writes one frame. Returns false if the frame was dropped:
  // too big, or the host went away (then a partly written frame is cut off).
  bool Send(const agent::v1::Frame& frame);

  // Blocks until bytes arrive. Returns > 0 bytes read, 0 at end of stream
  // (no host connected / peer closed), or -1 with errno set.
  ssize_t Read(char* buffer, size_t size);

 private:
  UniqueFd fd_;
  std::mutex write_mu_;
};

// Feeds `n` bytes read from the host to `decoder` and calls `dispatch` with
// each complete frame, in order. On a corrupt stream (an oversized or
// unparsable frame) logs, drops the buffered bytes (the rest of this read
// included) by resetting `decoder`, and returns false.
bool DecodeFrames(agent::FrameDecoder& decoder, const char* data, size_t n,
                  const std::function<void(agent::v1::Frame*)>& dispatch);

}  // namespace smolvm::guest
