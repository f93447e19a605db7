// File: qmp_client.h
//
// QmpClient speaks the QEMU Machine Protocol over a Unix socket: greeting,
// qmp_capabilities, then one command at a time. Asynchronous events that
// arrive between replies are skipped. Every read is bounded in time and size
// so a wedged or hostile VMM cannot stall or exhaust the daemon.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/base/unique_fd.h"
#include "nlohmann/json.hpp"

namespace smolvm::vmm {

class QmpClient {
 public:
  // Longest line accepted from the VMM.
  static constexpr size_t kMaxLineBytes = 1 << 20;

  // Connects to `socket_path`, retrying until `timeout` (QEMU may still be
  // creating the socket), and negotiates capabilities.
  static absl::StatusOr<std::unique_ptr<QmpClient>> Connect(
      const std::string& socket_path, absl::Duration timeout);
  // Negotiates over an already connected stream (tests use a socketpair).
  static absl::StatusOr<std::unique_ptr<QmpClient>> FromFd(
      UniqueFd fd, absl::Duration timeout);

  // Runs `command` and returns its "return" value. A QMP error reply becomes
  // FAILED_PRECONDITION with QEMU's "desc"; a closed connection UNAVAILABLE;
  // no reply within `timeout` DEADLINE_EXCEEDED.
  absl::StatusOr<nlohmann::json> Execute(
      const std::string& command,
      const nlohmann::json& arguments = nlohmann::json::object(),
      absl::Duration timeout = absl::Seconds(30));

  // Like Execute, sending `pass_fd` with the command (SCM_RIGHTS).
  absl::StatusOr<nlohmann::json> ExecuteWithFd(
      const std::string& command, const nlohmann::json& arguments, int pass_fd,
      absl::Duration timeout = absl::Seconds(30));
  // QMP getfd: QEMU keeps a duplicate of `fd` under `name` (fd:<name> URIs).
  absl::Status PassFd(const std::string& name, int fd);
  static constexpr char kMigrationFdName[] = "smolvm-migration";

  // query-status → "running", "paused", "inmigrate", ...
  absl::StatusOr<std::string> QueryStatus();

  // Enables x-ignore-shared, starts an outgoing migration into `path` (which
  // the daemon opens and passes as a descriptor) and waits for it to
  // complete. The VM must be stopped.
  absl::Status MigrateToFile(const std::string& path, absl::Duration timeout);
  // Enables x-ignore-shared, loads `path` into a VMM started with
  // "-incoming defer" and waits until it is loaded.
  absl::Status MigrateFromFile(const std::string& path, absl::Duration timeout);

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  absl::StatusOr<nlohmann::json> ReadMessage(absl::Time deadline);
  absl::Status Handshake(absl::Duration timeout);

  UniqueFd fd_;
  std::string buffer_;
};


}  // namespace smolvm::vmm
