#include "lib/vmm/qmp_client.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "lib/base/file_util.h"
#include "lib/base/subprocess.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::vmm {
namespace {

using ::nlohmann::json;
using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::Not;

constexpr char kGreeting[] =
    R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7},)"
    R"( "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}})";
constexpr char kEvent[] =
    R"({"timestamp": {"seconds": 1700000000, "microseconds": 1}, "event": "RTC_CHANGE",)"
    R"( "data": {"offset": 1}})";

// What the fake sends back for one request.
struct Reply {
  std::vector<std::string> lines;  // Each sent followed by "\n".
  std::string raw;                 // Sent verbatim after the lines.
  bool close = false;              // Close the connection afterwards.

  static Reply Return(const json& value) {
    return Reply{{json{{"return", value}}.dump()}};
  }
  static Reply Error(const std::string& desc) {
    return Reply{{json{{"error", {{"class", "GenericError"}, {"desc", desc}}}}.dump()}};
  }
  static Reply Silence() { return Reply{}; }
};

// A fake QEMU on the other end of a stream socket: sends the greeting,
// answers qmp_capabilities, and hands every other request to `handler`
// (called on the fake's own thread). Records every request.
class FakeQmpServer {
 public:
  using Handler = std::function<Reply(const json& request)>;

  // Serves one end of a fresh socketpair; the client gets the other end
  // from TakeClientFd().
  explicit FakeQmpServer(Handler handler, std::string greeting = kGreeting)
      : handler_(std::move(handler)), greeting_(std::move(greeting)) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    client_fd_.Reset(sv[0]);
    UniqueFd server(sv[1]);
    StartStopPipe();
    thread_ = std::thread([this, fd = std::move(server)]() mutable { Serve(std::move(fd)); });
  }

  // Binds a Unix socket at `path` after `delay`, accepts one connection
  // and serves it.
  FakeQmpServer(Handler handler, const std::string& path, absl::Duration delay)
      : handler_(std::move(handler)), greeting_(kGreeting) {
    StartStopPipe();
    thread_ = std::thread([this, path, delay] {
      absl::SleepFor(delay);
      UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
      if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
          listen(listener.get(), 1) != 0) {
        ADD_FAILURE() << "bind/listen " << path << ": " << strerror(errno);
        return;
      }
      if (!WaitReadable(listener.get())) return;
      UniqueFd conn(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn.valid()) Serve(std::move(conn));
    });
  }

  ~FakeQmpServer() {
    char c = 'x';
    (void)!write(stop_w_.get(), &c, 1);
    if (thread_.joinable()) thread_.join();
  }

  UniqueFd TakeClientFd() { return std::move(client_fd_); }

  std::vector<json> Requests() const {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  // Descriptors received with requests (getfd), in order.
  std::vector<UniqueFd> TakeFds() {
    absl::MutexLock lock(&mu_);
    return std::move(fds_);
  }
  std::vector<std::string> Commands() const {
    std::vector<std::string> commands;
    for (const json& r : Requests()) commands.push_back(r.value("execute", "<none>"));
    return commands;
  }

 private:
  void StartStopPipe() {
    int p[2];
    EXPECT_EQ(pipe2(p, O_CLOEXEC), 0);
    stop_r_.Reset(p[0]);
    stop_w_.Reset(p[1]);
  }

  // False once the test asked the fake to stop.
  bool WaitReadable(int fd) {
    pollfd pfds[2] = {{fd, POLLIN, 0}, {stop_r_.get(), POLLIN, 0}};
    while (poll(pfds, 2, -1) < 0) {
      if (errno != EINTR) return false;
    }
    return (pfds[1].revents & POLLIN) == 0;
  }

  static bool Send(int fd, const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += n;
    }
    return true;
  }

  void Serve(UniqueFd fd) {
    if (!greeting_.empty() && !Send(fd.get(), greeting_ + "\n")) return;
    std::string buffer;
    char buf[4096];
    while (WaitReadable(fd.get())) {
      // recvmsg, so descriptors sent with getfd (SCM_RIGHTS) are kept.
      iovec iov{buf, sizeof(buf)};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      ssize_t n = recvmsg(fd.get(), &msg, MSG_CMSG_CLOEXEC);
      if (n <= 0) return;  // The client closed its end.
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
          int received;
          memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
          absl::MutexLock lock(&mu_);
          fds_.emplace_back(received);
        }
      }
      buffer.append(buf, n);
      for (auto nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n')) {
        json request = json::parse(buffer.substr(0, nl), nullptr, false);
        buffer.erase(0, nl + 1);
        {
          absl::MutexLock lock(&mu_);
          requests_.push_back(request);
        }
        Reply reply = request.value("execute", "") == "qmp_capabilities"
                          ? Reply::Return(json::object())
                          : handler_(request);
        for (const auto& line : reply.lines) {
          if (!Send(fd.get(), line + "\n")) return;
        }
        if (!reply.raw.empty() && !Send(fd.get(), reply.raw)) return;
        if (reply.close) return;
      }
    }
  }

  Handler handler_;
  std::string greeting_;
  UniqueFd client_fd_;
  UniqueFd stop_r_, stop_w_;
  mutable absl::Mutex mu_;
  std::vector<json> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<UniqueFd> fds_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// Connects a QmpClient to `fake` over its socketpair.
std::unique_ptr<QmpClient> ConnectTo(FakeQmpServer& fake) {
  auto client = QmpClient::FromFd(fake.TakeClientFd(), absl::Seconds(5));
  EXPECT_THAT(client, IsOk());
  return client.ok() ? *std::move(client) : nullptr;
}

// The first request for `command`, or null.
json RequestFor(const std::vector<json>& requests, const std::string& command) {
  for (const json& r : requests) {
    if (r.value("execute", "") == command) return r;
  }
  return nullptr;
}

// `commands` without the ones that only tune the migration (migrate-set-
// parameters), which the sequence checks below do not pin down.
std::vector<std::string> WithoutTuning(std::vector<std::string> commands) {
  std::erase(commands, "migrate-set-parameters");
  return commands;
}

TEST(QmpClientTest, HandshakeThenExecuteReturnsTheReturnValue) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-status") {
      return Reply::Return({{"status", "running"}, {"singlestep", false}, {"running", true}});
    }
    return Reply::Error("unexpected");
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);

  auto r = client->Execute("query-status");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ((*r)["status"], "running");
  EXPECT_EQ((*r)["running"], true);
  auto status = client->QueryStatus();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(*status, "running");

  std::vector<json> requests = fake.Requests();
  ASSERT_EQ(requests.size(), 3u);
  // Capabilities first; no "arguments" member when there are none.
  EXPECT_EQ(requests[0], json({{"execute", "qmp_capabilities"}}));
  EXPECT_EQ(requests[1], json({{"execute", "query-status"}}));
}

TEST(QmpClientTest, ExecutePassesArguments) {
  FakeQmpServer fake([](const json& req) { return Reply::Return(json::object()); });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  json args = {{"device", "virtio-rng-pci"}, {"id", "rng0"}};
  ASSERT_THAT(client->Execute("device_add", args), IsOk());
  ASSERT_EQ(fake.Requests().size(), 2u);
  EXPECT_EQ(fake.Requests()[1], json({{"execute", "device_add"}, {"arguments", args}}));
}

TEST(QmpClientTest, EventsBeforeTheReplyAreSkipped) {
  FakeQmpServer fake([](const json& req) {
    return Reply{{kEvent, "", "\r", R"({"event": "STOP", "timestamp": {}})", kEvent,
                  R"({"return": {"status": "paused"}})"}};
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto status = client->QueryStatus();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(*status, "paused");
}

TEST(QmpClientTest, EventsDuringTheHandshakeAreSkipped) {
  FakeQmpServer fake([](const json&) { return Reply::Return(json::object()); },
                     std::string(kGreeting) + "\n" + kEvent);
  EXPECT_THAT(QmpClient::FromFd(fake.TakeClientFd(), absl::Seconds(5)), IsOk());
}

TEST(QmpClientTest, ErrorReplyIsFailedPreconditionWithTheDesc) {
  FakeQmpServer fake([](const json&) {
    return Reply::Error("Device 'nope' not found");
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("device_del", {{"id", "nope"}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "Device 'nope' not found"));
  EXPECT_THAT(client->Execute("device_del", {{"id", "nope"}}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "device_del"));
}

TEST(QmpClientTest, ReplyOfAnUnknownShapeIsInternal) {
  FakeQmpServer fake([](const json&) { return Reply{{R"({"QMP-surprise": 1})"}}; });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("query-status"),
              StatusIs(absl::StatusCode::kInternal, "unexpected reply"));
}

TEST(QmpClientTest, PeerClosingIsUnavailable) {
  FakeQmpServer fake([](const json&) { return Reply{.close = true}; });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("quit"),
              StatusIs(absl::StatusCode::kUnavailable, "closed the connection"));
  // The connection stays dead.
  EXPECT_THAT(client->Execute("query-status"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(QmpClientTest, PeerClosingAfterAPartialLineIsUnavailable) {
  FakeQmpServer fake([](const json&) { return Reply{.raw = R"({"return": {"sta)", .close = true}; });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("query-status"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(QmpClientTest, PeerClosingBeforeTheGreetingIsUnavailable) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd client_end(sv[0]);
  close(sv[1]);
  EXPECT_THAT(QmpClient::FromFd(std::move(client_end), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(QmpClientTest, WrongGreetingIsInternal) {
  FakeQmpServer fake([](const json&) { return Reply::Silence(); },
                     R"({"hello": "not qemu"})");
  EXPECT_THAT(QmpClient::FromFd(fake.TakeClientFd(), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInternal, "unexpected greeting"));
}

TEST(QmpClientTest, MissingGreetingIsDeadlineExceeded) {
  FakeQmpServer fake([](const json&) { return Reply::Silence(); }, /*greeting=*/"");
  absl::Time start = absl::Now();
  EXPECT_THAT(QmpClient::FromFd(fake.TakeClientFd(), absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(QmpClientTest, NoReplyIsDeadlineExceededWithinTheTimeout) {
  FakeQmpServer fake([](const json&) { return Reply::Silence(); });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  absl::Time start = absl::Now();
  EXPECT_THAT(client->Execute("stop", json::object(), absl::Milliseconds(250)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "stop: "));
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(240));
  EXPECT_LT(took, absl::Seconds(1));
}

TEST(QmpClientTest, EndlessEventsStillHitTheDeadline) {
  // A VMM that keeps sending events but never replies must not hold the
  // caller beyond its timeout.
  FakeQmpServer fake([](const json&) {
    Reply r;  // ~5 MB of events, more than the client reads in 200 ms.
    for (int i = 0; i < 50000; ++i) r.raw += std::string(kEvent) + "\n";
    return r;
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  absl::Time start = absl::Now();
  EXPECT_THAT(client->Execute("stop", json::object(), absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(QmpClientTest, OverlongLineIsResourceExhausted) {
  FakeQmpServer fake([](const json&) {
    return Reply{.raw = R"({"return": ")" + std::string(QmpClient::kMaxLineBytes + 100, 'x')};
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("query-status", json::object(), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kResourceExhausted, "longer than 1 MiB"));
}

TEST(QmpClientTest, MalformedJsonIsInternal) {
  FakeQmpServer fake([](const json&) { return Reply{{R"({"return": {"status": )"}}; });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("query-status"),
              StatusIs(absl::StatusCode::kInternal, "malformed message"));
}

TEST(QmpClientTest, NonObjectJsonIsInternal) {
  FakeQmpServer fake([](const json&) { return Reply{{"[1, 2, 3]"}}; });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("query-status"),
              StatusIs(absl::StatusCode::kInternal, "malformed message"));
}

TEST(QmpClientTest, QueryStatusWithoutAStatusIsInternal) {
  FakeQmpServer fake([](const json&) { return Reply::Return({{"running", true}}); });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->QueryStatus(), StatusIs(absl::StatusCode::kInternal, "no status"));
}

// Regression: A malformed QMP error reply is an error, never an exception out of the daemon.
TEST(QmpClientTest, ErrorReplyOfTheWrongShapeIsAnErrorNotACrash) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "a") return Reply{{R"({"error": "boom"})"}};
    return Reply{{R"({"error": {"class": "GenericError", "desc": 42}})"}};
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Execute("a"), StatusIs(absl::StatusCode::kFailedPrecondition, "boom"));
  EXPECT_THAT(client->Execute("b"), StatusIs(absl::StatusCode::kFailedPrecondition, "42"));
}

class QmpTempDirTest : public ::testing::Test {
 protected:
  smolvm_testing::TempDir temp_{"smolvm-qmp-test"};
  std::string dir_ = temp_.path();
};

// Regression: A malformed query-migrate reply is an error, never an exception.
TEST_F(QmpTempDirTest, QueryMigrateOfTheWrongShapeIsAnErrorNotACrash) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") return Reply::Return(json::array());
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateToFile(dir_ + "/x", absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInternal));
}

TEST_F(QmpTempDirTest, MigrateToFilePassesTheOpenedFileAndPollsToCompletion) {
  int polls = 0;  // Only touched on the fake's thread.
  FakeQmpServer fake([&polls](const json& req) {
    if (req["execute"] == "query-migrate") {
      ++polls;
      if (polls <= 2) {
        return Reply{{kEvent, json{{"return", {{"status", "active"}}}}.dump()}};
      }
      return Reply::Return({{"status", "completed"}, {"total-time", 12}});
    }
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  // A path no shell could mangle: nothing is run through one any more.
  const std::string path = dir_ + "/it's $(touch pwned) `x` ; & \"q\".bin";
  ASSERT_THAT(client->MigrateToFile(path, absl::Seconds(5)), IsOk());

  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "getfd", "migrate",
                          "query-migrate", "query-migrate", "query-migrate"));
  std::vector<json> requests = fake.Requests();
  EXPECT_EQ(RequestFor(requests, "migrate-set-capabilities")["arguments"],
            json::parse(R"({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})"));
  EXPECT_EQ(RequestFor(requests, "getfd")["arguments"],
            json({{"fdname", QmpClient::kMigrationFdName}}));
  EXPECT_EQ(RequestFor(requests, "migrate")["arguments"],
            json({{"uri", std::string("fd:") + QmpClient::kMigrationFdName}}));
  // The descriptor QEMU got writes exactly that file.
  std::vector<UniqueFd> fds = fake.TakeFds();
  ASSERT_EQ(fds.size(), 1u);
  ASSERT_EQ(write(fds[0].get(), "state", 5), 5);
  auto written = ReadFileToString(path);
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, "state");
  EXPECT_FALSE(PathExists(dir_ + "/pwned"));
}

TEST_F(QmpTempDirTest, MigrateToAnUnwritablePathFailsBeforeQemuIsAsked) {
  FakeQmpServer fake([](const json&) { return Reply::Return(json::object()); });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateToFile(dir_ + "/missing/vmstate.bin", absl::Seconds(5)),
              StatusIs(absl::StatusCode::kNotFound, "missing/vmstate.bin"));
  EXPECT_THAT(fake.Commands(), Not(Contains("migrate")));
}

TEST_F(QmpTempDirTest, FailedMigrationReturnsTheErrorDesc) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") {
      return Reply::Return({{"status", "failed"},
                            {"error-desc", "Unable to write to command: Broken pipe"}});
    }
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto s = client->MigrateToFile(dir_ + "/vmstate.bin", absl::Seconds(5));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInternal,
                          "Unable to write to command: Broken pipe"));
}

TEST_F(QmpTempDirTest, RejectedMigrateCommandStopsBeforePolling) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "migrate") return Reply::Error("There's a migration process in progress");
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateToFile(dir_ + "/vmstate.bin", absl::Seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition, "migration process in progress"));
  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "getfd", "migrate"));
}

TEST_F(QmpTempDirTest, MigrationThatNeverCompletesHitsTheTimeout) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") return Reply::Return({{"status", "active"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  absl::Time start = absl::Now();
  EXPECT_THAT(client->MigrateToFile(dir_ + "/vmstate.bin", absl::Milliseconds(150)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(QmpTempDirTest, MigrateFromFilePassesTheFileAndPollsUntilTheVmLeavesInmigrate) {
  int polls = 0;
  FakeQmpServer fake([&polls](const json& req) {
    if (req["execute"] == "query-status") {
      ++polls;
      return Reply::Return({{"status", polls <= 2 ? "inmigrate" : "paused"},
                            {"running", false}});
    }
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  const std::string path = dir_ + "/vmstate.bin";
  ASSERT_THAT(WriteFileAtomic(path, "saved"), IsOk());
  ASSERT_THAT(client->MigrateFromFile(path, absl::Seconds(5)), IsOk());
  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "getfd",
                          "migrate-incoming",
                          "query-status", "query-status", "query-status"));
  std::vector<json> requests = fake.Requests();
  EXPECT_EQ(RequestFor(requests, "migrate-set-capabilities")["arguments"],
            json::parse(R"({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})"));
  EXPECT_EQ(RequestFor(requests, "migrate-incoming")["arguments"],
            json({{"uri", std::string("fd:") + QmpClient::kMigrationFdName}}));
  std::vector<UniqueFd> fds = fake.TakeFds();
  ASSERT_EQ(fds.size(), 1u);
  char buf[16] = {};
  EXPECT_EQ(read(fds[0].get(), buf, sizeof(buf)), 5);
  EXPECT_EQ(std::string(buf), "saved");
}

TEST_F(QmpTempDirTest, MigrateFromFileEndingInAnUnexpectedStateIsInternal) {
  ASSERT_THAT(WriteFileAtomic(dir_ + "/vmstate.bin", "saved"), IsOk());
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-status") return Reply::Return({{"status", "internal-error"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateFromFile(dir_ + "/vmstate.bin", absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInternal, "internal-error"));
}

TEST_F(QmpTempDirTest, MigrateFromFileStuckInInmigrateHitsTheTimeout) {
  ASSERT_THAT(WriteFileAtomic(dir_ + "/vmstate.bin", "saved"), IsOk());
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-status") return Reply::Return({{"status", "inmigrate"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateFromFile(dir_ + "/vmstate.bin", absl::Milliseconds(150)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "/vmstate.bin"));
}

TEST_F(QmpTempDirTest, MissingSocketIsUnavailableAfterTheTimeout) {
  const std::string path = JoinPath(dir_, "qmp.sock");
  absl::Time start = absl::Now();
  EXPECT_THAT(QmpClient::Connect(path, absl::Milliseconds(200)),
              StatusIs(absl::StatusCode::kUnavailable, path));
  absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Seconds(2));
}

TEST_F(QmpTempDirTest, TooLongPathIsInvalidArgument) {
  const std::string path = "/tmp/" + std::string(120, 'p') + "/qmp.sock";
  absl::Time start = absl::Now();
  EXPECT_THAT(QmpClient::Connect(path, absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInvalidArgument, "longer than 107 bytes"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  // 108 bytes with the terminating NUL does not fit either.
  EXPECT_THAT(QmpClient::Connect("/" + std::string(107, 'p'), absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(QmpTempDirTest, WaitsForTheSocketToAppear) {
  const std::string path = JoinPath(dir_, "qmp.sock");
  FakeQmpServer fake(
      [](const json& req) { return Reply::Return({{"status", "prelaunch"}}); }, path,
      absl::Milliseconds(150));
  auto client = QmpClient::Connect(path, absl::Seconds(5));
  ASSERT_THAT(client, IsOk());
  auto status = (*client)->QueryStatus();
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(*status, "prelaunch");
}

}  // namespace
}  // namespace smolvm::vmm
