// File: unix_listener.h
//
// The daemon's Unix socket, accepted by the daemon itself rather than by
// gRPC, so that each connection's peer credentials can be read from the
// kernel (caller_resolver.h): every accepted fd is handed to the gRPC server
// with AddInsecureChannelFromFd, where its peer is named "fd:<n>".
//
// The socket is root:<group> mode 0660 from the moment its name exists: it
// is bound inside a private (0700) directory, given its owner and mode
// there, and renamed into place.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "lib/base/unique_fd.h"

namespace smolvm::daemon {

// True if a process accepts connections on the Unix socket `path`.
bool AnswersOn(const std::string& path);

class UnixListener {
 public:
  // Binds and listens on `path` (replacing a stale socket there) for
  // members of `group` (and root). FAILED_PRECONDITION if a live process
  // answers on `path` (another smolvmd): it is never taken over.
  static absl::StatusOr<std::unique_ptr<UnixListener>> Create(const std::string& path,
                                                              gid_t group);
  ~UnixListener();  // Stop()s, and removes the socket if `path` is still ours.
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Accepts connections on a thread of its own and gives them to `server`,
  // which must outlive Stop().
  void Serve(grpc::Server* server);
  // Stops accepting; connections already handed over stay with the server.
  void Stop();

  const std::string& path() const { return path_; }

 private:
  UnixListener(std::string path, UniqueFd fd, UniqueFd wake);
  void AcceptLoop(grpc::Server* server);

  const std::string path_;
  dev_t dev_ = 0;  // The socket file we created (see the destructor).
  ino_t ino_ = 0;
  UniqueFd fd_;
  UniqueFd wake_;  // eventfd that ends the accept loop.
  std::thread thread_;
};

}  // namespace smolvm::daemon
