#include "guest/agent/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "guest/agent/log.h"
#include "lib/agent/frame_codec.h"

namespace smolvm::guest {

Channel::Channel(UniqueFd fd) : fd_(std::move(fd)) {
  int flags = fcntl(fd_.get(), F_GETFL);
  if (flags >= 0) fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK);
  fcntl(fd_.get(), F_SETFD, FD_CLOEXEC);
}

bool Channel::Send(const agent::v1::Frame& frame) {
  std::string bytes;
  if (!agent::EncodeFrame(frame, &bytes)) {
    Log("dropping an outgoing frame of %zu bytes: over the frame limit", frame.ByteSizeLong());
    return false;
  }
  std::lock_guard<std::mutex> lock(write_mu_);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd_.get(), bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      // Full (wait) or no host connected (POLLHUP: drop, a write would only
      // complete after the next connect and confuse that host).
      pollfd p = {fd_.get(), POLLOUT, 0};
      int r = poll(&p, 1, -1);
      if (r < 0 && errno != EINTR) return false;
      if (r > 0 && !(p.revents & POLLOUT) && (p.revents & (POLLHUP | POLLERR | POLLNVAL))) {
        return false;
      }
      continue;
    }
    return false;  // EPIPE, ECONNRESET, ...: the host is gone.
  }
  return true;
}

ssize_t Channel::Read(char* buffer, size_t size) {
  for (;;) {
    pollfd p = {fd_.get(), POLLIN, 0};
    int r = poll(&p, 1, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    ssize_t n = read(fd_.get(), buffer, size);
    if (n >= 0) return n;
    if (errno == EINTR || errno == EAGAIN) {
      // POLLHUP without data on a virtio port whose read still says EAGAIN
      // would spin; treat it as end of stream.
      if (errno == EAGAIN && (p.revents & POLLHUP)) return 0;
      continue;
    }
    return -1;
  }
}

bool DecodeFrames(agent::FrameDecoder& decoder, const char* data, size_t n,
                  const std::function<void(agent::v1::Frame*)>& dispatch) {
  decoder.Feed(data, n);
  agent::v1::Frame frame;
  for (;;) {
    agent::FrameDecoder::Result result = decoder.Next(&frame);
    if (result == agent::FrameDecoder::Result::kNeedMore) return true;
    if (result == agent::FrameDecoder::Result::kError) {
      Log("dropping %zu buffered bytes: %s", decoder.buffered(), decoder.error().c_str());
      decoder = agent::FrameDecoder();
      return false;
    }
    dispatch(&frame);
  }
}

}  // namespace smolvm::guest
