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
using ::testing::ElementsAre;

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
      ssize_t n = read(fd.get(), buf, sizeof(buf));
      if (n <= 0) return;  // The client closed its end.
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

// Regression: A malformed query-migrate reply is an error, never an exception.
TEST(QmpClientTest, QueryMigrateOfTheWrongShapeIsAnErrorNotACrash) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") return Reply::Return(json::array());
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateToFile("/tmp/x", absl::Seconds(1)),
              StatusIs(absl::StatusCode::kInternal));
}

TEST(QmpClientTest, MigrateToFileEnablesIgnoreSharedStartsAndPollsToCompletion) {
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
  const std::string path = "/var/lib/smolvmd/snapshots/.tmp-it's mine/vmstate.bin";
  ASSERT_THAT(client->MigrateToFile(path, absl::Seconds(5)), IsOk());

  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "migrate",
                          "query-migrate", "query-migrate", "query-migrate"));
  std::vector<json> requests = fake.Requests();
  EXPECT_EQ(RequestFor(requests, "migrate-set-capabilities")["arguments"],
            json::parse(R"({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})"));
  EXPECT_EQ(RequestFor(requests, "migrate")["arguments"],
            json({{"uri", "exec:cat > '/var/lib/smolvmd/snapshots/.tmp-it'\\''s mine/vmstate.bin'"}}));
}

class QmpTempDirTest : public ::testing::Test {
 protected:
  smolvm_testing::TempDir temp_{"smolvm-qmp-test"};
  std::string dir_ = temp_.path();
};

TEST_F(QmpTempDirTest, MigrateToFileUriWritesToExactlyThatPath) {
  // QEMU runs the part after "exec:" with /bin/sh -c; run it the same way
  // for a path with a quote, spaces and shell metacharacters.
  const std::string path = dir_ + "/it's $(touch pwned) `x` ; & \"q\".bin";
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") return Reply::Return({{"status", "completed"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ASSERT_THAT(client->MigrateToFile(path, absl::Seconds(5)), IsOk());
  std::string uri = RequestFor(fake.Requests(), "migrate")["arguments"].value("uri", "");
  ASSERT_EQ(uri.rfind("exec:", 0), 0u);

  SubprocessOptions opts;
  opts.timeout = absl::Seconds(5);
  auto r = RunSubprocess({"sh", "-c", "echo state | " + uri.substr(5)}, opts);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 0) << r->stderr_text;
  auto written = ReadFileToString(path);
  EXPECT_THAT(written, IsOk());
  if (written.ok()) {
    EXPECT_EQ(*written, "state\n");
  }
  EXPECT_FALSE(PathExists("pwned"));
  EXPECT_FALSE(PathExists(dir_ + "/pwned"));
}

TEST(QmpClientTest, FailedMigrationReturnsTheErrorDesc) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") {
      return Reply::Return({{"status", "failed"},
                            {"error-desc", "Unable to write to command: Broken pipe"}});
    }
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto s = client->MigrateToFile("/tmp/vmstate.bin", absl::Seconds(5));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInternal,
                          "Unable to write to command: Broken pipe"));
}

TEST(QmpClientTest, RejectedMigrateCommandStopsBeforePolling) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "migrate") return Reply::Error("There's a migration process in progress");
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateToFile("/tmp/vmstate.bin", absl::Seconds(5)),
              StatusIs(absl::StatusCode::kFailedPrecondition, "migration process in progress"));
  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "migrate"));
}

TEST(QmpClientTest, MigrationThatNeverCompletesHitsTheTimeout) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-migrate") return Reply::Return({{"status", "active"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  absl::Time start = absl::Now();
  EXPECT_THAT(client->MigrateToFile("/tmp/vmstate.bin", absl::Milliseconds(150)),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(QmpClientTest, MigrateFromFilePollsUntilTheVmLeavesInmigrate) {
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
  const std::string path = "/var/lib/smolvmd/snapshots/snap-1/vmstate.bin";
  ASSERT_THAT(client->MigrateFromFile(path, absl::Seconds(5)), IsOk());
  EXPECT_THAT(WithoutTuning(fake.Commands()),
              ElementsAre("qmp_capabilities", "migrate-set-capabilities", "migrate-incoming",
                          "query-status", "query-status", "query-status"));
  std::vector<json> requests = fake.Requests();
  EXPECT_EQ(RequestFor(requests, "migrate-set-capabilities")["arguments"],
            json::parse(R"({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})"));
  EXPECT_EQ(RequestFor(requests, "migrate-incoming")["arguments"],
            json({{"uri", "exec:cat '" + path + "'"}}));
}

TEST(QmpClientTest, MigrateFromFileEndingInAnUnexpectedStateIsInternal) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-status") return Reply::Return({{"status", "internal-error"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateFromFile("/snap/vmstate.bin", absl::Seconds(5)),
              StatusIs(absl::StatusCode::kInternal, "internal-error"));
}

TEST(QmpClientTest, MigrateFromFileStuckInInmigrateHitsTheTimeout) {
  FakeQmpServer fake([](const json& req) {
    if (req["execute"] == "query-status") return Reply::Return({{"status", "inmigrate"}});
    return Reply::Return(json::object());
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->MigrateFromFile("/snap/vmstate.bin", absl::Milliseconds(150)),
              StatusIs(absl::StatusCode::kDeadlineExceeded, "/snap/vmstate.bin"));
}

TEST(ShellQuoteTest, QuotesForSh) {
  EXPECT_EQ(ShellQuote("/a/b"), "'/a/b'");
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  EXPECT_EQ(ShellQuote("''"), "''\\'''\\'''");
}

TEST(ShellQuoteTest, ShReadsBackTheOriginal) {
  for (const std::string s : {"plain", "it's", "'", "a b\tc\nd", "$(id) `id` $HOME",
                              "\\ \" ; & | < > * ? ~ !", "'\\''"}) {
    auto r = RunSubprocess({"sh", "-c", "printf %s " + ShellQuote(s)});
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->stdout_text, s);
  }
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
