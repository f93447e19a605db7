#include "lib/vmm/console_recorder.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "lib/base/file_util.h"

namespace smolvm::vmm {
namespace {

// The run dir is writable by the (jailed, unprivileged) VMM: what it may
// have put at `path` is never followed (a symlink), waited on (a FIFO) or
// truncated unless it is a regular file.
UniqueFd OpenLog(const std::string& path, bool truncate) {
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                   0600));
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
    return UniqueFd();
  }
  if (truncate && ftruncate(fd.get(), 0) != 0) return UniqueFd();
  return fd;
}

}  // namespace

ConsoleRecorder::ConsoleRecorder(std::string socket_path, std::string log_path,
                                 uint64_t max_bytes)
    : socket_path_(std::move(socket_path)),
      log_path_(std::move(log_path)),
      half_(std::max<uint64_t>(max_bytes, 8192) / 2),
      wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  // Re-attaching after a daemon restart continues the existing log.
  log_ = OpenLog(log_path_, /*truncate=*/false);
  struct stat st;
  if (log_.valid() && fstat(log_.get(), &st) == 0) log_bytes_ = st.st_size;
  thread_ = std::thread([this] { Run(); });
}

ConsoleRecorder::~ConsoleRecorder() {
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void ConsoleRecorder::Append(const char* data, size_t n) {
  while (n > 0) {
    if (log_bytes_ >= half_) {
      // Rotate: the previous half goes to .1, a fresh file takes over.
      (void)rename(log_path_.c_str(), (log_path_ + ".1").c_str());
      log_ = OpenLog(log_path_, /*truncate=*/true);
      log_bytes_ = 0;
    }
    size_t take = std::min<uint64_t>(n, half_ - log_bytes_);
    if (log_.valid()) (void)!write(log_.get(), data, take);
    log_bytes_ += take;
    data += take;
    n -= take;
  }
}

void ConsoleRecorder::Run() {
  UniqueFd sock;
  // Connect: QEMU creates the socket while starting; retry until then.
  while (!sock.valid()) {
    UniqueFd s(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path_.size() < sizeof(addr.sun_path)) {
      std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
      if (s.valid() && connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
        sock = std::move(s);
        break;
      }
    }
    pollfd wake{wake_.get(), POLLIN, 0};
    if (poll(&wake, 1, 50) > 0) return;
    // A socket that never appears (the VMM died before creating it) stops
    // mattering once the owner destroys us.
  }
  char buf[16384];
  while (true) {
    pollfd fds[2] = {{sock.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents != 0) {
      ssize_t n = read(sock.get(), buf, sizeof(buf));
      if (n > 0) {
        Append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      break;  // EOF: the VMM is gone.
    }
    if (fds[1].revents != 0) return;
  }
  eof_ = true;
}

std::string ConsoleRecorder::Tail(size_t max_bytes, bool vmm_gone,
                                  std::chrono::milliseconds drain) const {
  if (vmm_gone) {
    auto until = std::chrono::steady_clock::now() + drain;
    while (!eof_ && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  std::string current = ReadFileTail(log_path_, max_bytes);
  if (current.size() >= max_bytes) return current;
  return ReadFileTail(log_path_ + ".1", max_bytes - current.size()) + current;
}

}  // namespace smolvm::vmm
