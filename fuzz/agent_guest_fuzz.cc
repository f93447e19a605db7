// Fuzz target: the guest agent's side of the protocol, as a hostile or
// broken host sees it. The input (after its first byte, which sets the read
// size so that frames arrive split at every boundary) is written into one end
// of a socketpair and that end is shut; the agent's Channel
// (guest/agent/channel.cc) reads the other end and DecodeFrames, the agent's
// reader loop, splits the bytes into frames. Agent::Dispatch runs commands
// and writes files, so it is not called; the callback reads each frame the
// way Dispatch does (its case, ids, the data it moves out).
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "guest/agent/channel.h"
#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"

namespace {

using smolvm::agent::FrameDecoder;
using smolvm::agent::v1::Frame;

// Well below the socket buffer, so that writing the input never blocks.
constexpr size_t kMaxInput = 64 << 10;

// Where Inspect leaves what it read, so that the reads are not optimized out.
volatile uint64_t sink;

void Inspect(Frame* frame) {
  switch (frame->msg_case()) {
    case Frame::kExecStart: {
      const auto& start = frame->exec_start();
      sink = start.id() + start.argv_size() + start.env_size() + start.cwd().size();
      break;
    }
    case Frame::kExecStdin: {
      std::string data = std::move(*frame->mutable_exec_stdin()->mutable_data());
      sink = frame->exec_stdin().id() + data.size() + frame->exec_stdin().eof();
      break;
    }
    case Frame::kFileData: {
      std::string data = std::move(*frame->mutable_file_data()->mutable_data());
      sink = frame->file_data().id() + data.size();
      break;
    }
    case Frame::kFileWriteStart:
      sink = frame->file_write_start().id() + frame->file_write_start().path().size();
      break;
    case Frame::kFileReadStart:
      sink = frame->file_read_start().id() + frame->file_read_start().path().size();
      break;
    case Frame::kExecCancel:
      sink = frame->exec_cancel().id();
      break;
    case Frame::kSetClock:
      sink = static_cast<uint64_t>(frame->set_clock().unix_time_ns());
      break;
    case Frame::kAddEntropy:
      sink = frame->add_entropy().seed().size();
      break;
    default:
      sink = static_cast<uint64_t>(frame->msg_case());
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInput) return 0;
  const size_t read_size = size_t{data[0]} * 64 + 1;  // 1 .. 16321 bytes
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  {
    smolvm::UniqueFd host(sv[1]);
    size_t off = 1;
    while (off < size) {
      ssize_t n = send(host.get(), data + off, size - off, MSG_NOSIGNAL);
      if (n <= 0) std::abort();
      off += static_cast<size_t>(n);
    }
  }  // Closed: the agent reads the input, then the end of the stream.
  smolvm::guest::Channel channel{smolvm::UniqueFd(sv[0])};
  FrameDecoder decoder;
  std::vector<char> buffer(read_size);
  while (true) {
    ssize_t n = channel.Read(buffer.data(), buffer.size());
    if (n <= 0) break;  // Agent::Run would reset the decoder and wait.
    smolvm::guest::DecodeFrames(decoder, buffer.data(), static_cast<size_t>(n), Inspect);
  }
  return 0;
}
