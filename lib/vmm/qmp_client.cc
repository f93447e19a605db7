#include "lib/vmm/qmp_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"

namespace smolvm::vmm {
namespace {

using nlohmann::json;

// Writes `data`; when `pass_fd` >= 0 it travels as SCM_RIGHTS with the first
// byte, which is how QMP's getfd receives a descriptor.
absl::Status WriteAll(int fd, const std::string& data, int pass_fd = -1) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n;
    if (pass_fd >= 0 && off == 0) {
      iovec iov{const_cast<char*>(data.data()), data.size()};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
      cmsg->cmsg_level = SOL_SOCKET;
      cmsg->cmsg_type = SCM_RIGHTS;
      cmsg->cmsg_len = CMSG_LEN(sizeof(int));
      memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
      n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } else {
      n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(
          absl::StrCat("qmp: write failed: ", strerror(errno)));
    }
    off += n;
  }
  return absl::OkStatus();
}

// A string member of a VMM reply, "" when absent or of another type: a
// hostile VMM must not be able to throw out of the daemon.
std::string StringField(const json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : "";
}

// Polls query-migrate until it leaves the active states.
absl::Status WaitMigration(QmpClient& qmp, absl::Duration timeout,
                           const char* what) {
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto info = qmp.Execute("query-migrate");
    if (!info.ok()) return info.status();
    if (!info->is_object()) {
      return absl::InternalError(absl::StrCat(what, ": query-migrate reply is not an object"));
    }
    std::string status = StringField(*info, "status");
    if (status == "completed") return absl::OkStatus();
    if (status == "failed" || status == "cancelled") {
      return absl::InternalError(absl::StrCat(
          what, " failed: ",
          StringField(*info, "error-desc").empty() ? status : StringField(*info, "error-desc")));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          what, " did not complete within ", absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace

absl::Status QmpClient::PassFd(const std::string& name, int fd) {
  return ExecuteWithFd("getfd", {{"fdname", name}}, fd).status();
}

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(
    const std::string& socket_path, absl::Duration timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qmp socket path ", socket_path, " is longer than ",
        sizeof(addr.sun_path) - 1, " bytes: use a shorter state/run dir"));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return FromFd(std::move(fd), deadline - absl::Now());
    }
    int err = errno;
    if (absl::Now() > deadline) {
      return absl::UnavailableError(absl::StrCat(
          "connect to qmp socket ", socket_path, ": ", strerror(err)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::FromFd(
    UniqueFd fd, absl::Duration timeout) {
  std::unique_ptr<QmpClient> client(new QmpClient(std::move(fd)));
  if (auto s = client->Handshake(timeout); !s.ok()) return s;
  return client;
}

absl::Status QmpClient::Handshake(absl::Duration timeout) {
  auto greeting = ReadMessage(absl::Now() + timeout);
  if (!greeting.ok()) return greeting.status();
  if (!greeting->contains("QMP")) {
    return absl::InternalError(
        absl::StrCat("qmp: unexpected greeting: ", greeting->dump().substr(0, 200)));
  }
  auto caps = Execute("qmp_capabilities", json::object(), timeout);
  return caps.status();
}

absl::StatusOr<json> QmpClient::ReadMessage(absl::Time deadline) {
  while (true) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      json msg = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (msg.is_discarded() || !msg.is_object()) {
        return absl::InternalError(
            absl::StrCat("qmp: malformed message: ", line.substr(0, 200)));
      }
      return msg;
    }
    if (buffer_.size() > kMaxLineBytes) {
      return absl::ResourceExhaustedError("qmp: message longer than 1 MiB");
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("qmp: no reply from the VMM in time");
    }
    pollfd pfd{fd_.get(), POLLIN, 0};
    int rc = poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return absl::ErrnoToStatus(errno, "qmp: poll");
    if (rc == 0) continue;
    char buf[8192];
    ssize_t n = read(fd_.get(), buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      return absl::UnavailableError("qmp: the VMM closed the connection");
    }
    buffer_.append(buf, n);
  }
}

absl::StatusOr<json> QmpClient::Execute(const std::string& command,
                                        const json& arguments,
                                        absl::Duration timeout) {
  return ExecuteWithFd(command, arguments, -1, timeout);
}

absl::StatusOr<json> QmpClient::ExecuteWithFd(const std::string& command,
                                              const json& arguments, int pass_fd,
                                              absl::Duration timeout) {
  json request = {{"execute", command}};
  if (!arguments.empty()) request["arguments"] = arguments;
  std::string line;
  try {
    line = request.dump() + "\n";
  } catch (const json::exception& e) {  // Not UTF-8: refuse, never throw.
    return absl::InvalidArgumentError(absl::StrCat("qmp ", command, ": ", e.what()));
  }
  if (auto s = WriteAll(fd_.get(), line, pass_fd); !s.ok()) return s;
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto msg = ReadMessage(deadline);
    if (!msg.ok()) {
      return absl::Status(msg.status().code(),
                          absl::StrCat(command, ": ", msg.status().message()));
    }
    if (msg->contains("event")) continue;  // Asynchronous; not our reply.
    if (msg->contains("return")) return (*msg)["return"];
    if (msg->contains("error")) {
      const json& err = (*msg)["error"];
      std::string desc = StringField(err, "desc");
      return absl::FailedPreconditionError(absl::StrCat(
          "qmp ", command, ": ", desc.empty() ? err.dump().substr(0, 200) : desc));
    }
    return absl::InternalError(
        absl::StrCat("qmp ", command, ": unexpected reply ", msg->dump().substr(0, 200)));
  }
}

absl::StatusOr<std::string> QmpClient::QueryStatus() {
  auto r = Execute("query-status");
  if (!r.ok()) return r.status();
  if (!r->is_object() || !(*r)["status"].is_string()) {
    return absl::InternalError("qmp query-status: reply has no status");
  }
  return (*r)["status"].get<std::string>();
}

absl::Status QmpClient::MigrateToFile(const std::string& path,
                                      absl::Duration timeout) {
  json caps = {{"capabilities",
                json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}};
  if (auto r = Execute("migrate-set-capabilities", caps); !r.ok()) return r.status();
  // The default cap (128 MiB/s) throttles a local file write; RAM that
  // travels in the stream (restored sources) would crawl.
  json params = {{"max-bandwidth", int64_t{1} << 40}};
  if (auto r = Execute("migrate-set-parameters", params); !r.ok()) return r.status();
  // The daemon opens the file and hands QEMU the descriptor: a sandboxed
  // QEMU (-sandbox spawn=deny) cannot run exec: URIs, and a jailed one cannot
  // see the snapshot directory at all.
  UniqueFd file(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!file.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  SMOLVM_RETURN_IF_ERROR(PassFd(kMigrationFdName, file.get()));
  json args = {{"uri", absl::StrCat("fd:", kMigrationFdName)}};
  if (auto r = Execute("migrate", args); !r.ok()) return r.status();
  return WaitMigration(*this, timeout, "save device state");
}

absl::Status QmpClient::MigrateFromFile(const std::string& path,
                                        absl::Duration timeout) {
  json caps = {{"capabilities",
                json::array({{{"capability", "x-ignore-shared"}, {"state", true}}})}};
  if (auto r = Execute("migrate-set-capabilities", caps); !r.ok()) return r.status();
  UniqueFd file(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  SMOLVM_RETURN_IF_ERROR(PassFd(kMigrationFdName, file.get()));
  json args = {{"uri", absl::StrCat("fd:", kMigrationFdName)}};
  if (auto r = Execute("migrate-incoming", args); !r.ok()) return r.status();
  // The destination leaves "inmigrate" once the whole state is loaded.
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    auto status = QueryStatus();
    if (!status.ok()) return status.status();
    if (*status != "inmigrate") {
      if (*status == "paused" || *status == "running" || *status == "prelaunch") {
        return absl::OkStatus();
      }
      return absl::InternalError(absl::StrCat(
          "load device state from ", path, ": VMM ended in state ", *status));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "load device state from ", path, " did not complete within ",
          absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

}  // namespace smolvm::vmm
