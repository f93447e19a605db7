// Fuzz target: the QMP client (lib/vmm/qmp_client.cc) reading what a hostile
// or broken VMM sends. The input is written whole into one end of a
// socketpair, which is then shut for writing; the real QmpClient reads the
// other end: its greeting and capabilities handshake, then, until the
// stream ends, query-status, plain commands and (picked by the input's first
// byte) the snapshot migrations' polling loops, whose replies it parses.
// Everything is in the socket before the client reads, so no call waits;
// what the client writes is discarded.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "absl/time/time.h"
#include "lib/base/unique_fd.h"
#include "lib/vmm/qmp_client.h"

namespace {

// Well below the socket buffer, so that writing the input never blocks.
constexpr size_t kMaxInput = 64 << 10;

// Discards what the client has sent so far (commands, passed descriptors),
// so that its writes never fill the socket and block.
void Drain(int fd) {
  char buf[4096];
  while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > kMaxInput) return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
  smolvm::UniqueFd vmm(sv[1]);
  const uint8_t mode = data[0];
  size_t off = 1;
  while (off < size) {
    ssize_t n = send(vmm.get(), data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) std::abort();
    off += static_cast<size_t>(n);
  }
  shutdown(vmm.get(), SHUT_WR);

  auto qmp = smolvm::vmm::QmpClient::FromFd(smolvm::UniqueFd(sv[0]), absl::Seconds(5));
  if (!qmp.ok()) return 0;
  Drain(vmm.get());
  // Each call reads at least one line, so the loop ends with the input.
  for (int i = 0; i < 1000; ++i) {
    absl::Status s;
    switch ((mode + i) % 4) {
      case 0: s = (*qmp)->QueryStatus().status(); break;
      case 1: s = (*qmp)->Execute("stop", {{"arg", i}}).status(); break;
      // With a zero timeout the polling loops make one query each.
      case 2: s = (*qmp)->MigrateToFile("/dev/null", absl::ZeroDuration()); break;
      case 3: s = (*qmp)->MigrateFromFile("/dev/null", absl::ZeroDuration()); break;
    }
    if (absl::IsUnavailable(s)) break;  // The VMM's stream ended.
    Drain(vmm.get());
  }
  return 0;
}
