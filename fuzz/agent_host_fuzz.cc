// Fuzz target: the host side of the guest-agent protocol, as a hostile guest
// sees it. The real AgentClient (lib/agent/agent_client.cc, its reader
// thread and lib/agent/frame_codec.cc) talks over a socketpair to a fake
// guest that answers the greeting and then, once the operation under test
// has sent its first frame (so its id, 1, is registered), sends the input's
// bytes (after the first, which picks the operation) and ends the stream.
// The operation runs to its end: an answer, an error, or UNAVAILABLE when
// the stream ends or turns out corrupt. Mode "greeting" instead sends the
// bytes before the greeting (the legacy "SMOLVM_READY" line, garbage).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/agent/agent_client.h"
#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"

namespace {

using smolvm::UniqueFd;
using smolvm::agent::AgentClient;
using smolvm::agent::FrameDecoder;
using smolvm::agent::v1::Frame;

// No call should wait for this long: the stream always ends.
constexpr absl::Duration kTimeout = absl::Seconds(20);

void SendAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
    if (n <= 0) return;  // The client closed the connection (corrupt stream).
    data += n;
    size -= static_cast<size_t>(n);
  }
}

std::string HelloFrame() {
  Frame hello;
  hello.mutable_hello()->set_protocol_version(smolvm::agent::v1::PROTOCOL_VERSION);
  hello.mutable_hello()->set_agent_version("fuzz");
  std::string out;
  smolvm::agent::EncodeFrame(hello, &out);
  return out;
}

// The fake guest: reads the host's frames until the first one that is not
// a HelloRequest, then sends `input` and shuts its side for writing; keeps
// reading (so that the host's writes never block) until the host closes.
void FakeGuest(int fd, const std::string& input) {
  FrameDecoder decoder;
  bool sent = false;
  char buf[65536];
  while (true) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    if (sent) continue;
    decoder.Feed(buf, static_cast<size_t>(n));
    Frame frame;
    while (!sent && decoder.Next(&frame) == FrameDecoder::Result::kFrame) {
      if (frame.has_hello_request()) continue;
      SendAll(fd, input.data(), input.size());
      shutdown(fd, SHUT_WR);
      sent = true;
    }
  }
}

void RunOperation(AgentClient& client, int op) {
  auto discard = [](const std::string&) { return absl::OkStatus(); };
  switch (op) {
    case 0: {
      smolvm::agent::ExecSpec spec;
      spec.argv = {"true"};
      auto exec = client.StartExec(spec);
      if (!exec.ok()) return;
      while (true) {
        auto event = (*exec)->Next(absl::Now() + kTimeout);
        if (!event.ok() || event->kind == smolvm::agent::ExecEvent::Kind::kExit) break;
      }
      break;
    }
    case 1:
      (void)client.ReadFile({.path = "/fuzz"}, discard, kTimeout);
      break;
    case 2: {
      bool sent = false;
      auto one_chunk = [&sent]() -> absl::StatusOr<std::string> {
        if (sent) return std::string();
        sent = true;
        return std::string("data");
      };
      (void)client.WriteFile({.path = "/fuzz", .mode = 0644}, one_chunk, kTimeout);
      break;
    }
    case 3:
      (void)client.SetClock(absl::Now(), kTimeout);
      break;
    default:
      (void)client.AddEntropy("seed", kTimeout);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 6;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  UniqueFd guest(sv[1]);

  if (mode == 5) {  // greeting
    std::thread writer([&] {
      SendAll(guest.get(), input.data(), input.size());
      shutdown(guest.get(), SHUT_WR);
    });
    {
      auto client = AgentClient::ConnectFd(UniqueFd(sv[0]), kTimeout);
      if (client.ok()) (void)(*client)->Ping(absl::Milliseconds(1));
    }
    writer.join();
    return 0;
  }

  const std::string hello = HelloFrame();
  SendAll(guest.get(), hello.data(), hello.size());
  std::thread fake_guest(FakeGuest, guest.get(), std::cref(input));
  {
    auto client = AgentClient::ConnectFd(UniqueFd(sv[0]), kTimeout);
    if (!client.ok()) std::abort();  // It was greeted properly.
    RunOperation(**client, mode);
  }  // Closing the client ends the fake guest's reads.
  fake_guest.join();
  return 0;
}
