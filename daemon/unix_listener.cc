#include "daemon/unix_listener.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "grpcpp/server_posix.h"
#include "lib/base/file_util.h"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {
namespace {

absl::Status Errno(const std::string& what) { return absl::ErrnoToStatus(errno, what); }

}  // namespace

bool AnswersOn(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return false;
  // A Unix connect does not wait for accept(): it succeeds as soon as the
  // listener's backlog has room, or fails with ECONNREFUSED (no listener:
  // a stale socket), ENOENT, or EAGAIN (a full backlog: someone is there).
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return true;
  return errno == EAGAIN;
}

UnixListener::UnixListener(std::string path, UniqueFd fd, UniqueFd wake)
    : path_(std::move(path)), fd_(std::move(fd)), wake_(std::move(wake)) {}

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Create(const std::string& path,
                                                                   gid_t group) {
  const std::string dir = path.substr(0, path.rfind('/'));
  // The private staging dir: nobody but root can reach the socket before it
  // has its final owner and mode.
  const std::string staging = JoinPath(dir, absl::StrCat(".smolvmd-sock-", getpid()));
  (void)RemoveTree(staging);
  if (mkdir(staging.c_str(), 0700) != 0) return Errno("create " + staging);
  const std::string staged = JoinPath(staging, "s");
  auto cleanup = [&] { (void)RemoveTree(staging); };

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (staged.size() >= sizeof(addr.sun_path) || path.size() >= sizeof(addr.sun_path)) {
    cleanup();
    return absl::InvalidArgumentError(absl::StrCat(
        "socket path ", path, " is too long for a Unix socket (at most ",
        sizeof(addr.sun_path) - 1 - 20, " characters)"));
  }
  std::memcpy(addr.sun_path, staged.c_str(), staged.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    cleanup();
    return Errno("socket");
  }
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      chown(staged.c_str(), 0, group) != 0 || chmod(staged.c_str(), 0660) != 0 ||
      listen(fd.get(), 128) != 0) {
    absl::Status s = Errno("bind " + staged);
    cleanup();
    return s;
  }
  // A socket some live process (another smolvmd) still answers on is never
  // taken over: its clients and VMs would be cut off from it.
  if (AnswersOn(path)) {
    cleanup();
    return absl::FailedPreconditionError(absl::StrCat(
        "another process (another smolvmd?) is serving on ", path,
        "; stop it, or give this daemon its own --socket (and --state-dir)"));
  }
  // rename() replaces a stale socket of a previous run atomically.
  if (rename(staged.c_str(), path.c_str()) != 0) {
    absl::Status s = Errno("rename the socket to " + path);
    cleanup();
    return s;
  }
  cleanup();
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return Errno("stat " + path);
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) return Errno("eventfd");
  auto listener =
      std::unique_ptr<UnixListener>(new UnixListener(path, std::move(fd), std::move(wake)));
  listener->dev_ = st.st_dev;
  listener->ino_ = st.st_ino;
  return listener;
}

UnixListener::~UnixListener() {
  Stop();
  // Only our own socket: if another daemon has since bound this path, its
  // socket stays.
  struct stat st;
  if (stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    unlink(path_.c_str());
  }
}

void UnixListener::Serve(grpc::Server* server) {
  thread_ = std::thread([this, server] { AcceptLoop(server); });
}

void UnixListener::Stop() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof(one));
  thread_.join();
}

void UnixListener::AcceptLoop(grpc::Server* server) {
  while (true) {
    pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("unix socket {}: poll: {}", path_, strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if ((fds[0].revents & POLLIN) == 0) continue;
    int conn = accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      // EMFILE and friends: keep serving the connections we have.
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        spdlog::warn("unix socket {}: accept: {}", path_, strerror(errno));
        usleep(100 * 1000);
      }
      continue;
    }
    // gRPC owns `conn` from here on.
    grpc::AddInsecureChannelFromFd(server, conn);
  }
}

}  // namespace smolvm::daemon
