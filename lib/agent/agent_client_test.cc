// Unit tests of AgentClient against a fake guest agent on a socketpair:
// normal exec/upload traffic, and a hostile guest that floods, overflows or
// stops reading (issue 8, "hostile agent, fully bounded").
#include "lib/agent/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::agent {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

// The most one connection may hold queued, whatever the guest sends.
constexpr size_t kConnectionBound =
    kMaxConnectionQueuedBytes + kMaxOperations * kMaxResultQueuedBytes;

// A length-prefixed frame from raw serialized bytes.
std::string RawFrame(const std::string& body) {
  std::string out;
  size_t n = body.size();
  out.push_back(static_cast<char>((n >> 24) & 0xff));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  return out + body;
}

void AppendVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

// `frame` plus an unknown length-delimited field (number 1000) of `n` bytes.
std::string WithUnknownField(const v1::Frame& frame, size_t n) {
  std::string body = frame.SerializeAsString();
  AppendVarint((1000u << 3) | 2, &body);
  AppendVarint(n, &body);
  body.append(n, 'u');
  return RawFrame(body);
}

std::string Encoded(const v1::Frame& frame) {
  std::string out;
  EXPECT_TRUE(EncodeFrame(frame, &out));
  return out;
}

v1::Frame Output(uint64_t id, std::string data) {
  v1::Frame f;
  f.mutable_exec_output()->set_id(id);
  f.mutable_exec_output()->set_data(std::move(data));
  return f;
}

v1::Frame Exit(uint64_t id, int code) {
  v1::Frame f;
  f.mutable_exec_exit()->set_id(id);
  f.mutable_exec_exit()->set_exit_code(code);
  return f;
}

v1::Frame Result(uint64_t id, uint64_t bytes, std::string error = "") {
  v1::Frame f;
  f.mutable_op_result()->set_id(id);
  f.mutable_op_result()->set_bytes(bytes);
  f.mutable_op_result()->set_error(std::move(error));
  return f;
}

// The guest's end of the agent socket. Its reader thread answers
// HelloRequest with Hello and hands every other frame to `handler` (on the
// reader thread, which does not read while the handler runs). Writes block
// like a guest's: a host that does not read stalls them.
class FakeAgent {
 public:
  using Handler = std::function<void(FakeAgent&, const v1::Frame&)>;

  explicit FakeAgent(Handler handler, uint32_t protocol_version = v1::PROTOCOL_VERSION)
      : handler_(std::move(handler)), protocol_version_(protocol_version) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    host_fd_.Reset(sv[0]);
    fd_.Reset(sv[1]);
    reader_ = std::thread([this] { ReadLoop(); });
  }
  ~FakeAgent() {
    shutdown(fd_.get(), SHUT_RDWR);
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    reader_.join();
    for (auto& t : writers_) t.join();
  }

  UniqueFd TakeHostFd() { return std::move(host_fd_); }

  // Blocking write of raw bytes; false once the host is gone.
  bool WriteRaw(const std::string& bytes) {
    absl::MutexLock lock(&write_mu_);
    size_t off = 0;
    while (off < bytes.size()) {
      ssize_t n = send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  bool Write(const v1::Frame& frame) { return WriteRaw(Encoded(frame)); }

  // Runs `fn` on a thread of its own (joined at destruction).
  void Spawn(std::function<void()> fn) { writers_.emplace_back(std::move(fn)); }

  // The reader stops reading for good (a guest that hangs).
  void StopReading() {
    absl::MutexLock lock(&mu_);
    reading_ = false;
  }
  void ResumeReading() {
    absl::MutexLock lock(&mu_);
    reading_ = true;
  }

  // Frames seen so far other than HelloRequest and FileData without eof,
  // and the bytes of FileData.
  std::vector<v1::Frame> frames() {
    absl::MutexLock lock(&mu_);
    return frames_;
  }
  size_t file_bytes() {
    absl::MutexLock lock(&mu_);
    return file_bytes_;
  }
  bool WaitFor(const std::function<bool(const v1::Frame&)>& pred, absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto seen = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (const auto& f : frames_) {
        if (pred(f)) return true;
      }
      return false;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&seen), timeout);
  }
  // True once the host shut the connection down (POLLHUP on this end).
  bool WaitForHangUp(absl::Duration timeout) {
    absl::Time until = absl::Now() + timeout;
    while (absl::Now() < until) {
      pollfd p{fd_.get(), 0, 0};
      if (poll(&p, 1, 10) == 1 && (p.revents & POLLHUP)) return true;
    }
    return false;
  }

 private:
  void ReadLoop() {
    FrameDecoder decoder;
    char buf[65536];
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        auto go = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reading_ || stopping_; };
        mu_.Await(absl::Condition(&go));
        if (stopping_ && !reading_) return;
      }
      ssize_t n = read(fd_.get(), buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      decoder.Feed(buf, static_cast<size_t>(n));
      v1::Frame frame;
      while (decoder.Next(&frame) == FrameDecoder::Result::kFrame) {
        if (frame.has_hello_request()) {
          v1::Frame hello;
          hello.mutable_hello()->set_protocol_version(protocol_version_);
          hello.mutable_hello()->set_agent_version("fake");
          Write(hello);
          continue;
        }
        {
          absl::MutexLock lock(&mu_);
          if (frame.has_file_data()) file_bytes_ += frame.file_data().data().size();
          // Data chunks are counted, not kept.
          if (!frame.has_file_data() || frame.file_data().eof()) frames_.push_back(frame);
        }
        if (handler_) handler_(*this, frame);
      }
    }
  }

  Handler handler_;
  const uint32_t protocol_version_;
  UniqueFd host_fd_;
  UniqueFd fd_;
  absl::Mutex write_mu_;
  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<v1::Frame> frames_ ABSL_GUARDED_BY(mu_);
  size_t file_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread reader_;
  std::vector<std::thread> writers_;
};

std::shared_ptr<AgentClient> ConnectTo(FakeAgent& fake, AgentClientOptions options = {}) {
  auto client = AgentClient::ConnectFd(fake.TakeHostFd(), absl::Seconds(5), nullptr, options);
  EXPECT_THAT(client.status(), IsOk());
  if (!client.ok()) return nullptr;
  EXPECT_TRUE((*client)->has_agent());
  return *std::move(client);
}

// An endless upload source: `chunk` bytes per call, `total` bytes at most.
std::function<absl::StatusOr<std::string>()> Source(size_t chunk, size_t total,
                                                    std::atomic<size_t>* pulled = nullptr) {
  auto sent = std::make_shared<size_t>(0);
  return [=]() -> absl::StatusOr<std::string> {
    if (*sent >= total) return std::string();
    size_t n = std::min(chunk, total - *sent);
    *sent += n;
    if (pulled) *pulled += n;
    return std::string(n, 'd');
  };
}

// ---- Normal traffic ----

TEST(AgentClientTest, StreamsALargeExecWithinThePerOperationBound) {
  constexpr size_t kTotal = 20 << 20;
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_exec_start()) return;
    uint64_t id = frame.exec_start().id();
    f.Spawn([&f, id] {
      for (size_t sent = 0; sent < kTotal; sent += kMaxChunkBytes) {
        if (!f.Write(Output(id, std::string(kMaxChunkBytes, 'o')))) return;
      }
      f.Write(Exit(id, 7));
    });
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto exec = client->StartExec(ExecSpec{{"cat"}});
  ASSERT_THAT(exec.status(), IsOk());
  size_t got = 0;
  absl::SleepFor(absl::Milliseconds(200));  // let the queue fill up first
  while (true) {
    auto ev = (*exec)->Next(absl::Now() + absl::Seconds(20));
    ASSERT_THAT(ev.status(), IsOk());
    if (ev->kind == ExecEvent::Kind::kExit) {
      EXPECT_EQ(ev->exit_code, 7);
      break;
    }
    got += ev->data.size();
  }
  EXPECT_EQ(got, kTotal);
  EXPECT_GT(client->peak_queued_bytes(), kMaxQueuedBytes / 2);
  EXPECT_LE(client->peak_queued_bytes(), kMaxQueuedBytes);
  EXPECT_EQ(client->queued_bytes(), 0u);
}

TEST(AgentClientTest, ConcurrentExecsShareTheConnectionBound) {
  constexpr int kExecs = 6;
  constexpr size_t kEach = 6 << 20;  // 36 MiB in all, more than the bound
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_exec_start()) return;
    uint64_t id = frame.exec_start().id();
    f.Spawn([&f, id] {
      for (size_t sent = 0; sent < kEach; sent += kMaxChunkBytes) {
        if (!f.Write(Output(id, std::string(kMaxChunkBytes, 'o')))) return;
      }
      f.Write(Exit(id, 0));
    });
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  std::vector<std::unique_ptr<ExecHandle>> execs;
  for (int i = 0; i < kExecs; ++i) {
    auto exec = client->StartExec(ExecSpec{{"cat"}});
    ASSERT_THAT(exec.status(), IsOk());
    execs.push_back(*std::move(exec));
  }
  // Nobody reads yet: the queues fill (until one exec's queue or the
  // connection's bound is full) and stop.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_LE(client->queued_bytes(), kMaxConnectionQueuedBytes);
  EXPECT_GE(client->queued_bytes(), kMaxQueuedBytes - kMaxChunkBytes - kQueuedFrameOverhead);
  std::vector<std::thread> readers;
  std::vector<size_t> got(kExecs, 0);
  for (int i = 0; i < kExecs; ++i) {
    readers.emplace_back([&, i] {
      while (true) {
        auto ev = execs[i]->Next(absl::Now() + absl::Seconds(30));
        if (!ev.ok() || ev->kind == ExecEvent::Kind::kExit) return;
        got[i] += ev->data.size();
      }
    });
  }
  for (auto& t : readers) t.join();
  for (int i = 0; i < kExecs; ++i) EXPECT_EQ(got[i], kEach) << "exec " << i;
  EXPECT_LE(client->peak_queued_bytes(), kMaxConnectionQueuedBytes);
}

TEST(AgentClientTest, UploadsAndReportsTheResult) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_file_data() && frame.file_data().eof()) {
      f.Write(Result(frame.file_data().id(), f.file_bytes()));
    }
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto info = client->WriteFile({.path = "/x", .mode = 0644}, Source(100000, 5 << 20),
                                absl::Seconds(30));
  ASSERT_THAT(info.status(), IsOk());
  EXPECT_EQ(info->bytes, 5u << 20);
  EXPECT_EQ(fake.file_bytes(), 5u << 20);
  EXPECT_EQ(client->queued_bytes(), 0u);
}

TEST(AgentClientTest, AnEarlyErrorFromTheAgentEndsTheUpload) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_file_write_start()) {
      f.Write(Result(frame.file_write_start().id(), 0, "open /x: Permission denied"));
    }
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  std::atomic<size_t> pulled{0};
  constexpr size_t kTotal = size_t{1} << 30;
  auto info = client->WriteFile({.path = "/x", .mode = 0644}, Source(kMaxChunkBytes, kTotal, &pulled),
                                absl::Seconds(30));
  EXPECT_THAT(info.status(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      "upload /x: open /x: Permission denied"));
  EXPECT_LT(pulled.load(), kTotal);
  EXPECT_TRUE(client->healthy());
}

// The agent's errno sets the code: a missing file is NOT_FOUND, not a VM in
// the wrong state; without one it stays FAILED_PRECONDITION.
TEST(AgentClientTest, TheGuestsErrnoSetsTheCode) {
  const std::pair<int, absl::StatusCode> cases[] = {
      {ENOENT, absl::StatusCode::kNotFound},
      {EEXIST, absl::StatusCode::kAlreadyExists},
      {EACCES, absl::StatusCode::kPermissionDenied},
      {EPERM, absl::StatusCode::kPermissionDenied},
      {ENOSPC, absl::StatusCode::kResourceExhausted},
      {EISDIR, absl::StatusCode::kInvalidArgument},
      {ENOTDIR, absl::StatusCode::kInvalidArgument},
      {EINVAL, absl::StatusCode::kInvalidArgument},
      {EIO, absl::StatusCode::kFailedPrecondition},
      {0, absl::StatusCode::kFailedPrecondition},
  };
  for (const auto& [errnum, code] : cases) {
    FakeAgent fake([errnum = errnum](FakeAgent& f, const v1::Frame& frame) {
      if (frame.has_file_read_start()) {
        v1::Frame r = Result(frame.file_read_start().id(), 0, "open /f: it failed");
        r.mutable_op_result()->set_error_errno(errnum);
        f.Write(r);
      }
    });
    auto client = ConnectTo(fake);
    ASSERT_NE(client, nullptr);
    auto info = client->ReadFile({.path = "/f"}, [](const std::string&) { return absl::OkStatus(); },
                                 absl::Seconds(5));
    EXPECT_EQ(info.status().code(), code) << errnum << " " << info.status();
    EXPECT_TRUE(absl::StrContains(info.status().message(), "open /f: it failed"))
        << info.status();
  }
}

TEST(AgentClientTest, TooManyOperationsAreRefused) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  std::vector<std::unique_ptr<ExecHandle>> execs;
  for (size_t i = 0; i < kMaxOperations; ++i) {
    auto exec = client->StartExec(ExecSpec{{"sleep", "1"}});
    ASSERT_THAT(exec.status(), IsOk());
    execs.push_back(*std::move(exec));
  }
  EXPECT_THAT(client->StartExec(ExecSpec{{"sleep", "1"}}).status(),
              StatusIs(absl::StatusCode::kResourceExhausted));
  execs.pop_back();
  EXPECT_THAT(client->StartExec(ExecSpec{{"sleep", "1"}}).status(), IsOk());
}

// ---- (a) A guest that floods an upload with frames it never asked for ----

// While an upload is sending, the fake stops reading and sends `flood`
// (frames for the upload's id), then reads again.
void ExpectFloodFailsTheUpload(const std::function<std::string(uint64_t id)>& flood) {
  absl::Notification flooded;
  FakeAgent fake([&](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_file_write_start()) return;
    // On the reader thread: the host's data piles up unread meanwhile. The
    // host's reader must take all of it without waiting for anybody.
    EXPECT_TRUE(f.WriteRaw(flood(frame.file_write_start().id())));
    flooded.Notify();
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  std::atomic<size_t> pulled{0};
  constexpr size_t kTotal = size_t{4} << 30;
  absl::Time t0 = absl::Now();
  auto info = client->WriteFile({.path = "/x", .mode = 0644},
                                Source(kMaxChunkBytes, kTotal, &pulled), absl::Seconds(60));
  absl::Duration took = absl::Now() - t0;
  EXPECT_THAT(info.status(), StatusIs(absl::StatusCode::kResourceExhausted,
                                      "upload /x: the guest agent sent more than 65536 bytes "
                                      "this operation had not read"));
  // The host's reader took the whole flood without waiting for anybody.
  EXPECT_TRUE(flooded.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_LT(took, absl::Seconds(10));
  EXPECT_LT(pulled.load(), kTotal);
  EXPECT_LE(client->peak_queued_bytes(), kMaxResultQueuedBytes);
  EXPECT_EQ(client->queued_bytes(), 0u);
  // The connection, and everything else on it, carries on.
  EXPECT_TRUE(client->healthy());
  EXPECT_THAT(client->Ping(absl::Seconds(5)), IsOk());
}

TEST(AgentClientTest, OversizedFramesDuringAnUploadFailItPromptly) {
  ExpectFloodFailsTheUpload([](uint64_t id) {
    std::string out;
    // Data-carrying and plain result frames of up to ~1 MiB, 16 MiB in all.
    for (int i = 0; i < 16; ++i) {
      v1::Frame data;
      data.mutable_file_data()->set_id(id);
      data.mutable_file_data()->set_data(std::string(kMaxFrameBytes - 64, 'x'));
      out += Encoded(i % 2 ? data : Result(id, 0, std::string(kMaxFrameBytes - 64, 'e')));
    }
    return out;
  });
}

TEST(AgentClientTest, UnknownFieldsCountAgainstTheBound) {
  ExpectFloodFailsTheUpload([](uint64_t id) {
    std::string out;
    // 512 KiB in 64 small frames that are mostly unknown fields: each
    // counts its full size (a flat 64 bytes each would stay under the bound).
    for (int i = 0; i < 64; ++i) out += WithUnknownField(Exit(id, 0), 8192);
    return out;
  });
}

TEST(AgentClientTest, ManyTinyFramesCountTheirOverhead) {
  ExpectFloodFailsTheUpload([](uint64_t id) {
    std::string out;
    for (int i = 0; i < 100000; ++i) out += Encoded(Output(id, ""));
    return out;
  });
}

// ---- (b) A guest that stops reading ----

TEST(AgentClientTest, AGuestThatStopsReadingFailsTheSendAndTheConnection) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_file_write_start()) f.StopReading();
  });
  AgentClientOptions options;
  options.send_timeout = absl::Milliseconds(300);
  auto client = ConnectTo(fake, options);
  ASSERT_NE(client, nullptr);

  // A second operation started while the upload is stuck fails too, within
  // the send deadline, instead of waiting for the upload (or its own 60 s).
  absl::StatusOr<absl::Time> clock = absl::UnknownError("not run");
  absl::Duration clock_took;
  std::thread second([&] {
    absl::SleepFor(absl::Milliseconds(100));
    absl::Time t0 = absl::Now();
    clock = client->SetClock(absl::Now(), absl::Seconds(60));
    clock_took = absl::Now() - t0;
  });
  absl::Time t0 = absl::Now();
  auto info = client->WriteFile({.path = "/x", .mode = 0644}, Source(1 << 20, 256 << 20),
                                absl::Seconds(60));
  absl::Duration took = absl::Now() - t0;
  second.join();
  EXPECT_THAT(info.status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(info.status().message()), testing::HasSubstr("stopped reading"));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_THAT(clock.status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(clock_took, absl::Seconds(3));
  EXPECT_FALSE(client->healthy());

  // Every later operation fails at once.
  t0 = absl::Now();
  EXPECT_THAT(client->StartExec(ExecSpec{{"true"}}).status(),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client->Ping(absl::Seconds(10)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(500));

  // The connection was shut down (the guest's end sees the hang-up), and
  // the client goes away at once: no thread is left in a read or write.
  EXPECT_TRUE(fake.WaitForHangUp(absl::Seconds(2)));
  t0 = absl::Now();
  client.reset();
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(500));
}

TEST(AgentClientTest, ExecStdinToAGuestThatStopsReadingFails) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_exec_start()) f.StopReading();
  });
  AgentClientOptions options;
  options.send_timeout = absl::Milliseconds(300);
  auto client = ConnectTo(fake, options);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"cat"}};
  spec.stdin_data = std::string(16 << 20, 'i');
  absl::Time t0 = absl::Now();
  EXPECT_THAT(client->StartExec(spec).status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  EXPECT_FALSE(client->healthy());
}

TEST(AgentClientTest, AnUploadsDeadlineBoundsItsSends) {
  absl::Notification resume;
  FakeAgent fake([&](FakeAgent& f, const v1::Frame& frame) {
    // Stops reading until the end of the test.
    if (frame.has_file_write_start()) resume.WaitForNotificationWithTimeout(absl::Seconds(10));
  });
  auto client = ConnectTo(fake);  // the default 30 s send deadline
  ASSERT_NE(client, nullptr);
  absl::Time t0 = absl::Now();
  auto info = client->WriteFile({.path = "/x", .mode = 0644}, Source(1 << 20, 256 << 20),
                                absl::Milliseconds(300));
  EXPECT_THAT(info.status(), StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  resume.Notify();
}

// ---- (c) Cancel frees everything at once ----

TEST(AgentClientTest, DroppingAnExecFreesItsQueueAtOnce) {
  constexpr size_t kFlood = 12 << 20;  // more than the exec's bound
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_exec_start()) return;
    uint64_t id = frame.exec_start().id();
    f.Spawn([&f, id] {
      for (size_t sent = 0; sent < kFlood; sent += kMaxChunkBytes) {
        if (!f.Write(Output(id, std::string(kMaxChunkBytes, 'o')))) return;
      }
    });
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto exec = client->StartExec(ExecSpec{{"yes"}});
  ASSERT_THAT(exec.status(), IsOk());
  uint64_t id = 0;
  ASSERT_TRUE(fake.WaitFor([&](const v1::Frame& f) {
    if (f.has_exec_start()) id = f.exec_start().id();
    return f.has_exec_start();
  }, absl::Seconds(5)));
  // The queue fills to its bound and the reader waits (back-pressure).
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (client->queued_bytes() < kMaxQueuedBytes - 2 * kMaxChunkBytes && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_GE(client->queued_bytes(), kMaxQueuedBytes - 2 * kMaxChunkBytes);
  EXPECT_LE(client->queued_bytes(), kMaxQueuedBytes);
  // The client goes away: everything queued is freed before the handle's
  // destructor returns, and the guest is told.
  exec->reset();
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_TRUE(fake.WaitFor([&](const v1::Frame& f) {
    return f.has_exec_cancel() && f.exec_cancel().id() == id;
  }, absl::Seconds(5)));
  // The reader moved on: the rest of the flood is dropped, nothing queues,
  // and the connection still answers.
  EXPECT_THAT(client->Ping(absl::Seconds(10)), IsOk());
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_LE(client->peak_queued_bytes(), kMaxQueuedBytes);
}

TEST(AgentClientTest, ACancelledUploadFreesItsQueueAndIsAbandonedNotCommitted) {
  std::atomic<bool> saw_eof{false}, saw_cancel{false};
  FakeAgent fake([&](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_file_data() && frame.file_data().eof()) saw_eof = true;
    if (frame.has_exec_cancel()) saw_cancel = true;
    if (frame.has_file_data() && !frame.file_data().eof()) {
      // A while after the first data, something unasked-for under the
      // bound: it stays queued until the upload drains it.
      absl::SleepFor(absl::Milliseconds(200));
      f.Write(Output(frame.file_data().id(), std::string(30000, 'z')));
    }
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  int calls = 0;
  auto source = [&]() -> absl::StatusOr<std::string> {
    if (++calls == 1) return std::string(1000, 'd');
    absl::Time until = absl::Now() + absl::Seconds(5);
    while (client->queued_bytes() == 0 && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    EXPECT_GT(client->queued_bytes(), 30000u);
    return absl::CancelledError("the client went away");
  };
  EXPECT_THAT(client->WriteFile({.path = "/x", .mode = 0644}, source, absl::Seconds(30)).status(),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_TRUE(client->healthy());
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (!saw_cancel && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
  EXPECT_TRUE(saw_cancel) << "the agent was not told to abandon the upload";
  EXPECT_FALSE(saw_eof) << "an eof would make the agent commit the partial file";
}

TEST(AgentClientTest, AHostileGuestNeverExceedsTheConnectionBound) {
  // Large frames that are mostly unknown fields, for live execs nobody
  // reads and for ids that do not exist.
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_exec_start()) return;
    uint64_t id = frame.exec_start().id();
    f.Spawn([&f, id] {
      for (int i = 0; i < 24; ++i) {
        if (!f.WriteRaw(WithUnknownField(Output(id, std::string(1000, 'o')), 500000))) return;
        if (!f.WriteRaw(WithUnknownField(Output(id + 1000, ""), 500000))) return;
      }
    });
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  std::vector<std::unique_ptr<ExecHandle>> execs;
  for (int i = 0; i < 8; ++i) {
    auto exec = client->StartExec(ExecSpec{{"cat"}});
    ASSERT_THAT(exec.status(), IsOk());
    execs.push_back(*std::move(exec));
  }
  // The queues fill until one exec's queue or the connection's bound is full.
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (client->queued_bytes() < kMaxQueuedBytes - (1 << 20) && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_GE(client->queued_bytes(), kMaxQueuedBytes - (1 << 20));
  EXPECT_LE(client->queued_bytes(), kMaxConnectionQueuedBytes);
  EXPECT_LE(client->peak_queued_bytes(), kConnectionBound);
  EXPECT_LE(client->peak_queued_bytes(), kMaxConnectionQueuedBytes);
  // The clients go away: everything is freed and the connection goes on.
  execs.clear();
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_THAT(client->Ping(absl::Seconds(20)), IsOk());
  EXPECT_EQ(client->queued_bytes(), 0u);
}

// ---- Reidentify ----

GuestNetworkIdentity Identity() {
  GuestNetworkIdentity id;
  id.mac = "02:53:0a:c8:00:05";
  id.ipv4_address = "10.200.0.5";
  id.prefix_length = 24;
  id.gateway = "10.200.0.1";
  id.dns_server = "10.200.0.1";
  return id;
}

TEST(AgentClientTest, ReidentifyIsOneRequestAnsweredByOneResult) {
  const absl::Time guest_time = absl::FromUnixSeconds(1'900'000'000);
  FakeAgent fake([guest_time](FakeAgent& f, const v1::Frame& frame) {
    if (!frame.has_reidentify()) return;
    v1::Frame result = Result(frame.reidentify().id(), 64);
    result.mutable_op_result()->set_guest_time_ns(absl::ToUnixNanos(guest_time));
    f.Write(result);
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->protocol_version(), static_cast<uint32_t>(v1::PROTOCOL_VERSION));
  EXPECT_GE(client->protocol_version(), kReidentifyProtocolVersion);
  Reidentity r;
  r.clock = absl::FromUnixNanos(1'800'000'000'123'456'789);
  r.entropy_seed = std::string(64, 's');
  r.network = Identity();
  auto time = client->Reidentify(r, absl::Seconds(5));
  ASSERT_THAT(time.status(), IsOk());
  EXPECT_EQ(*time, guest_time);
  std::vector<v1::Frame> frames = fake.frames();
  ASSERT_EQ(frames.size(), 1u);
  ASSERT_TRUE(frames[0].has_reidentify());
  const v1::Reidentify& sent = frames[0].reidentify();
  EXPECT_EQ(sent.unix_time_ns(), 1'800'000'000'123'456'789);
  EXPECT_EQ(sent.entropy_seed(), std::string(64, 's'));
  ASSERT_TRUE(sent.has_network());
  EXPECT_EQ(sent.network().interface(), "eth0");
  EXPECT_EQ(sent.network().mac(), "02:53:0a:c8:00:05");
  EXPECT_EQ(sent.network().ipv4_address(), "10.200.0.5");
  EXPECT_EQ(sent.network().prefix_length(), 24u);
  EXPECT_EQ(sent.network().gateway(), "10.200.0.1");
  EXPECT_EQ(sent.network().dns_server(), "10.200.0.1");

  // Without a clock or a network: 0 (skip) and no network message.
  ASSERT_THAT(client->Reidentify(Reidentity{}, absl::Seconds(5)).status(), IsOk());
  frames = fake.frames();
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[1].reidentify().unix_time_ns(), 0);
  EXPECT_FALSE(frames[1].reidentify().has_network());
  EXPECT_EQ(client->queued_bytes(), 0u);
}

TEST(AgentClientTest, ReidentifyReportsWhatTheAgentSaysFailed) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_reidentify()) {
      f.Write(Result(frame.reidentify().id(), 0, "set eth0 down: No such device"));
    }
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  Reidentity r;
  r.network = Identity();
  EXPECT_THAT(client->Reidentify(r, absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "reidentify the guest: set eth0 down: No such device"));
  EXPECT_TRUE(client->healthy());
}

TEST(AgentClientTest, ReidentifyTimesOutOnASilentAgent) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->Reidentify(Reidentity{}, absl::Milliseconds(200)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
}

// An agent before protocol 2 would ignore the frame and never answer: it
// is never sent one.
TEST(AgentClientTest, AnOldAgentIsNeverSentReidentify) {
  FakeAgent fake(nullptr, /*protocol_version=*/1);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->protocol_version(), 1u);
  Reidentity r;
  r.network = Identity();
  EXPECT_THAT(client->Reidentify(r, absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_TRUE(fake.frames().empty());
}

// A protocol-2 agent would ignore `user` and run as root: never sent one.
// The user reaches a current agent on exec, upload and download.
TEST(AgentClientTest, AUserIsSentOnlyToAnAgentThatHonoursIt) {
  FakeAgent old(nullptr, /*protocol_version=*/2);
  auto client = ConnectTo(old);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"id"}};
  spec.user = "alice";
  EXPECT_THAT(client->StartExec(spec).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "protocol 2"));
  auto sink = [](const std::string&) { return absl::OkStatus(); };
  EXPECT_THAT(client->ReadFile({.path = "/f", .user = "alice"}, sink, absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(old.frames().empty());

  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_file_read_start()) f.Write(Result(frame.file_read_start().id(), 0));
    if (frame.has_exec_start()) {
      v1::Frame exit;
      exit.mutable_exec_exit()->set_id(frame.exec_start().id());
      f.Write(exit);
    }
  });
  client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  EXPECT_THAT((*exec)->Next(absl::Now() + absl::Seconds(5)).status(), IsOk());
  EXPECT_THAT(client->ReadFile({.path = "/f", .user = "bob"}, sink, absl::Seconds(5)).status(),
              IsOk());
  std::vector<std::string> users;
  for (const v1::Frame& f : fake.frames()) {
    if (f.has_exec_start()) users.push_back(f.exec_start().user());
    if (f.has_file_read_start()) users.push_back(f.file_read_start().user());
  }
  EXPECT_EQ(users, (std::vector<std::string>{"alice", "bob"}));
}

// Why an exec could not start sets the code: no such program NOT_FOUND
// (the CLI's 127), not executable PERMISSION_DENIED (126).
TEST(AgentClientTest, AnExecStartErrnoSetsTheCode) {
  for (const auto& [errnum, code] : std::vector<std::pair<int, absl::StatusCode>>{
           {ENOENT, absl::StatusCode::kNotFound},
           {EACCES, absl::StatusCode::kPermissionDenied},
           {EINVAL, absl::StatusCode::kInvalidArgument},
           {0, absl::StatusCode::kFailedPrecondition}}) {
    FakeAgent fake([errnum = errnum](FakeAgent& f, const v1::Frame& frame) {
      if (!frame.has_exec_start()) return;
      v1::Frame exit;
      exit.mutable_exec_exit()->set_id(frame.exec_start().id());
      exit.mutable_exec_exit()->set_start_error("exec nope: it failed");
      exit.mutable_exec_exit()->set_start_errno(errnum);
      f.Write(exit);
    });
    auto client = ConnectTo(fake);
    ASSERT_NE(client, nullptr);
    auto exec = client->StartExec(ExecSpec{{"nope"}});
    ASSERT_THAT(exec.status(), IsOk());
    EXPECT_THAT((*exec)->Next(absl::Now() + absl::Seconds(5)).status(),
                StatusIs(code, "exec in guest: exec nope: it failed"));
  }
}

TEST(AgentClientTest, AnInvalidNetworkIdentityIsRefusedBeforeSending) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(ValidateNetworkIdentity(Identity()), IsOk());
  GuestNetworkIdentity no_extras = Identity();
  no_extras.gateway.clear();
  no_extras.dns_server.clear();
  EXPECT_THAT(ValidateNetworkIdentity(no_extras), IsOk());
  std::vector<std::pair<std::function<void(GuestNetworkIdentity&)>, std::string>> bad = {
      {[](auto& id) { id.interface = ""; }, "interface name"},
      {[](auto& id) { id.interface = "a-very-long-name0"; }, "interface name"},
      {[](auto& id) { id.interface = "eth0:1"; }, "interface name"},
      {[](auto& id) { id.interface = "../x"; }, "interface name"},
      {[](auto& id) { id.mac = "02:53:0a:c8:00"; }, "MAC"},
      {[](auto& id) { id.mac = "02:53:0a:c8:00:5"; }, "MAC"},
      {[](auto& id) { id.mac = "02-53-0a-c8-00-05"; }, "MAC"},
      {[](auto& id) { id.mac = "+2:53:0a:c8:00:05"; }, "MAC"},
      {[](auto& id) { id.mac = "03:53:0a:c8:00:05"; }, "MAC"},  // multicast
      {[](auto& id) { id.mac = "00:00:00:00:00:00"; }, "MAC"},
      {[](auto& id) { id.ipv4_address = "10.200.0.256"; }, "guest address"},
      {[](auto& id) { id.ipv4_address = ""; }, "guest address"},
      {[](auto& id) { id.ipv4_address = "10.200.0.5; reboot"; }, "guest address"},
      {[](auto& id) { id.prefix_length = 0; }, "prefix length 0"},
      {[](auto& id) { id.prefix_length = 33; }, "prefix length 33"},
      {[](auto& id) { id.gateway = "gw"; }, "gateway"},
      {[](auto& id) { id.dns_server = "::1"; }, "DNS server"},
  };
  for (const auto& [mutate, what] : bad) {
    GuestNetworkIdentity id = Identity();
    mutate(id);
    Reidentity r;
    r.network = id;
    absl::Status s = client->Reidentify(r, absl::Seconds(5)).status();
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument)) << what;
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(what));
  }
  EXPECT_TRUE(fake.frames().empty());
}

// Filesystem calls and watches go only to agents of protocol 4; the reply
// is converted, errors carry their errno's code, a watch returns once the
// guest says WATCHING and is cancelled by its destruction.
TEST(AgentClientTest, FilesystemCallsAndWatches) {
  FakeAgent old(nullptr, /*protocol_version=*/3);
  auto client = ConnectTo(old);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->FileSystem({.op = FsCall::Op::kStat, .path = "/x"}, absl::Seconds(5))
                  .status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "protocol 3"));
  EXPECT_THAT(client->WatchDir("/x", "", false, absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(old.frames().empty());

  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_fs_request()) {
      const auto& r = frame.fs_request();
      v1::Frame reply;
      auto* fr = reply.mutable_fs_reply();
      fr->set_id(r.id());
      if (r.path() == "/missing") {
        fr->set_error("lstat /missing: No such file or directory");
        fr->set_error_errno(ENOENT);
      } else if (r.path() == "/full") {
        fr->set_error("rmdir /full: Directory not empty");
        fr->set_error_errno(ENOTEMPTY);
      } else {
        auto* e = fr->add_entries();
        e->set_path(r.path());
        e->set_type(v1::FsEntry::DIRECTORY);
        e->set_mode(0100755);
        fr->set_truncated(true);
        fr->set_created(true);
      }
      f.Write(reply);
    }
    if (frame.has_fs_watch()) {
      for (auto type : {v1::FsEvent::WATCHING, v1::FsEvent::RENAME}) {
        v1::Frame ev;
        ev.mutable_fs_event()->set_id(frame.fs_watch().id());
        ev.mutable_fs_event()->set_type(type);
        ev.mutable_fs_event()->set_path("/d/b");
        ev.mutable_fs_event()->set_old_path("/d/a");
        f.Write(ev);
      }
    }
  });
  client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto made = client->FileSystem(
      {.op = FsCall::Op::kMakeDir, .path = "/d", .user = "alice", .parents = true},
      absl::Seconds(5));
  ASSERT_THAT(made.status(), IsOk());
  ASSERT_EQ(made->entries.size(), 1u);
  EXPECT_EQ(made->entries[0].type, FsEntry::Type::kDirectory);
  EXPECT_EQ(made->entries[0].mode, 0755u);
  EXPECT_TRUE(made->created);
  EXPECT_TRUE(made->truncated);
  EXPECT_THAT(client->FileSystem({.op = FsCall::Op::kStat, .path = "/missing"}, absl::Seconds(5))
                  .status(),
              StatusIs(absl::StatusCode::kNotFound, "/missing"));
  EXPECT_THAT(client->FileSystem({.op = FsCall::Op::kRemove, .path = "/full"}, absl::Seconds(5))
                  .status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "recursive"));
  EXPECT_THAT(client->FileSystem({.op = FsCall::Op::kRename, .path = "/full"}, absl::Seconds(5))
                  .status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  {
    auto watch = client->WatchDir("/d", "alice", true, absl::Seconds(5));
    ASSERT_THAT(watch.status(), IsOk());
    auto change = (*watch)->Next(absl::Now() + absl::Seconds(5));
    ASSERT_THAT(change.status(), IsOk());
    EXPECT_EQ(change->kind, FsChange::Kind::kRename);
    EXPECT_EQ(change->old_path, "/d/a");
    EXPECT_THAT((*watch)->Next(absl::Now() + absl::Milliseconds(50)).status(),
                StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  // The handle's end cancelled the watch in the guest.
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  uint64_t watch_id = 0, cancelled = 0;
  while (absl::Now() < deadline && cancelled == 0) {
    for (const v1::Frame& f : fake.frames()) {
      if (f.has_fs_watch()) {
        watch_id = f.fs_watch().id();
        EXPECT_EQ(f.fs_watch().user(), "alice");
        EXPECT_TRUE(f.fs_watch().recursive());
      }
      if (f.has_exec_cancel()) cancelled = f.exec_cancel().id();
    }
    if (cancelled == 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_NE(watch_id, 0u);
  EXPECT_EQ(cancelled, watch_id);
}

// Process calls go only to agents of protocol 5; replies are converted, a
// refused attach is the first Next()'s error, and dropping an attach sends
// the cancel that detaches it.
TEST(AgentClientTest, BackgroundProcessCalls) {
  FakeAgent old(nullptr, /*protocol_version=*/4);
  auto client = ConnectTo(old);
  ASSERT_NE(client, nullptr);
  EXPECT_THAT(client->ListProcesses(absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "protocol 4"));
  EXPECT_THAT(client->AttachProcess(7, 0, true).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_TRUE(old.frames().empty());

  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    v1::Frame reply;
    if (frame.has_proc_start()) {
      auto* r = reply.mutable_proc_reply();
      r->set_id(frame.proc_start().id());
      auto* p = r->add_processes();
      p->set_pid(42);
      p->add_argv(frame.proc_start().argv(0));
      p->set_user(frame.proc_start().user());
      p->set_running(true);
      f.Write(reply);
    } else if (frame.has_proc_signal()) {
      auto* r = reply.mutable_proc_reply();
      r->set_id(frame.proc_signal().id());
      r->set_error("no process 9");
      r->set_error_errno(ESRCH);
      f.Write(reply);
    } else if (frame.has_proc_attach()) {
      const auto& a = frame.proc_attach();
      if (a.pid() != 42) {
        reply.mutable_proc_reply()->set_id(a.id());
        reply.mutable_proc_reply()->set_error("no process");
        reply.mutable_proc_reply()->set_error_errno(ESRCH);
        f.Write(reply);
        return;
      }
      auto* out = reply.mutable_exec_output();
      out->set_id(a.id());
      out->set_data("tail");
      out->set_skipped_bytes(5);
      f.Write(reply);
    }
  });
  client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"sleep", "9"}};
  spec.user = "alice";
  auto started = client->StartProcess(spec, absl::Seconds(5));
  ASSERT_THAT(started.status(), IsOk());
  EXPECT_EQ(started->pid, 42);
  EXPECT_EQ(started->argv, std::vector<std::string>{"sleep"});
  EXPECT_EQ(started->user, "alice");
  EXPECT_TRUE(started->running);
  EXPECT_THAT(client->SignalProcess(9, 15, true, absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kNotFound, "no process 9"));
  auto missing = client->AttachProcess(9, 0, true);
  ASSERT_THAT(missing.status(), IsOk());
  EXPECT_THAT((*missing)->Next(absl::Now() + absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kNotFound));
  uint64_t attach_id = 0;
  {
    auto attach = client->AttachProcess(42, 100, true);
    ASSERT_THAT(attach.status(), IsOk());
    auto ev = (*attach)->Next(absl::Now() + absl::Seconds(5));
    ASSERT_THAT(ev.status(), IsOk());
    EXPECT_EQ(ev->data, "tail");
    EXPECT_EQ(ev->skipped_bytes, 5u);
  }
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  uint64_t cancelled = 0;
  while (absl::Now() < deadline && cancelled == 0) {
    for (const v1::Frame& f : fake.frames()) {
      if (f.has_proc_attach() && f.proc_attach().pid() == 42) {
        attach_id = f.proc_attach().id();
        EXPECT_EQ(f.proc_attach().tail_bytes(), 100u);
      }
      if (f.has_exec_cancel() && f.exec_cancel().id() == attach_id) cancelled = attach_id;
    }
    if (cancelled == 0) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_NE(attach_id, 0u);
  EXPECT_EQ(cancelled, attach_id);
}

// A watch (or attach) whose consumer lags past the queue bound fails on its
// own; the VM's reader is not stalled, so other calls go on. A reply with
// more entries than the protocol allows closes the connection.
TEST(AgentClientTest, ALaggingFollowerFailsAloneAndOversizedRepliesClose) {
  FakeAgent fake([](FakeAgent& f, const v1::Frame& frame) {
    if (frame.has_fs_watch()) {
      v1::Frame ev;
      ev.mutable_fs_event()->set_id(frame.fs_watch().id());
      ev.mutable_fs_event()->set_type(v1::FsEvent::WATCHING);
      f.Write(ev);
      // ~6 MiB of events that nobody reads.
      ev.mutable_fs_event()->set_type(v1::FsEvent::CREATE);
      ev.mutable_fs_event()->set_path(std::string(60 << 10, 'p'));
      for (int i = 0; i < 100; ++i) f.Write(ev);
    }
    if (frame.has_fs_request()) {
      v1::Frame reply;
      reply.mutable_fs_reply()->set_id(frame.fs_request().id());
      for (int i = 0; i <= kMaxFsReplyEntries; ++i) reply.mutable_fs_reply()->add_entries();
      f.Write(reply);
    }
  });
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  auto watch = client->WatchDir("/d", "", false, absl::Seconds(5));
  ASSERT_THAT(watch.status(), IsOk());
  // The flood arrives while nobody reads; the reader keeps serving others.
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  absl::Status ended;
  for (int i = 0; i < 200 && ended.ok(); ++i) {
    auto change = (*watch)->Next(absl::Now() + absl::Seconds(5));
    ended = change.status();
  }
  EXPECT_THAT(ended, StatusIs(absl::StatusCode::kResourceExhausted, "behind"));
  watch->reset();  // Cancels the guest's watch.
  EXPECT_THAT(client->Ping(absl::Seconds(5)), IsOk());

  EXPECT_THAT(
      client->FileSystem({.op = FsCall::Op::kList, .path = "/"}, absl::Seconds(5)).status(),
      StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(client->healthy());
}

// ---- Interactive execs ----

v1::Frame StdinAck(uint64_t id, uint64_t consumed) {
  v1::Frame f;
  f.mutable_exec_stdin_ack()->set_id(id);
  f.mutable_exec_stdin_ack()->set_consumed_bytes(consumed);
  return f;
}

// The id of the exec the fake was asked to start with `argv0`.
uint64_t ExecIdOf(FakeAgent& fake, const std::string& argv0) {
  uint64_t id = 0;
  EXPECT_TRUE(fake.WaitFor(
      [&](const v1::Frame& f) {
        if (!f.has_exec_start() || f.exec_start().argv_size() == 0 ||
            f.exec_start().argv(0) != argv0) {
          return false;
        }
        id = f.exec_start().id();
        return true;
      },
      absl::Seconds(5)))
      << "no ExecStart for " << argv0;
  return id;
}

// What the fake received for exec `id` on its input side. Call after a
// Ping: the fake records frames in order, so everything sent before the
// ping's HelloRequest is recorded by the time the ping is answered.
struct ReceivedInput {
  std::string data;            // ExecStdin data, in order
  std::vector<size_t> chunks;  // the size of each ExecStdin frame
  int eofs = 0;                // ExecStdin frames with eof
  std::vector<int> signals;    // ExecSignal
  std::vector<std::pair<uint32_t, uint32_t>> resizes;  // ExecResize rows x cols
};
ReceivedInput InputOf(FakeAgent& fake, uint64_t id) {
  ReceivedInput in;
  for (const v1::Frame& f : fake.frames()) {
    if (f.has_exec_stdin() && f.exec_stdin().id() == id) {
      in.data += f.exec_stdin().data();
      in.chunks.push_back(f.exec_stdin().data().size());
      if (f.exec_stdin().eof()) ++in.eofs;
    }
    if (f.has_exec_signal() && f.exec_signal().id() == id) {
      in.signals.push_back(f.exec_signal().signal());
    }
    if (f.has_exec_resize() && f.exec_resize().id() == id) {
      in.resizes.emplace_back(f.exec_resize().size().rows(), f.exec_resize().size().cols());
    }
  }
  return in;
}

// Distinct bytes, so that a chunk out of order or twice shows.
std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 65536) % 26);
  return s;
}

// A WriteStdin on a thread of its own, with a far deadline.
class BlockedWrite {
 public:
  BlockedWrite(ExecHandle& exec, std::string data)
      : data_(std::move(data)), thread_([this, &exec] {
          auto r = exec.WriteStdin(data_, absl::Now() + absl::Seconds(30));
          absl::MutexLock lock(&mu_);
          result_ = std::move(r);
          done_ = true;
        }) {}
  ~BlockedWrite() {
    if (thread_.joinable()) thread_.join();
  }
  // Still waiting after `d`?
  bool StillWaitingAfter(absl::Duration d) {
    absl::SleepFor(d);
    absl::MutexLock lock(&mu_);
    return !done_;
  }
  // Its result, once it returned (UNKNOWN "still waiting" after 10 s).
  absl::StatusOr<size_t> Result() {
    absl::MutexLock lock(&mu_);
    if (!mu_.AwaitWithTimeout(absl::Condition(&done_), absl::Seconds(10))) {
      return absl::UnknownError("WriteStdin still waiting after 10 s");
    }
    return result_;
  }

 private:
  const std::string data_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<size_t> result_ ABSL_GUARDED_BY(mu_) = absl::UnknownError("not returned");
  std::thread thread_;
};

// Interactive execs go only to agents of protocol 6 (an older one would run
// them as plain execs: no tty, no signals, outliving their client); stdin
// goes through the handle; a plain exec's handle takes no input.
TEST(AgentClientTest, InteractiveExecsNeedProtocol6AndAnInteractiveHandle) {
  FakeAgent old(nullptr, /*protocol_version=*/5);
  auto client = ConnectTo(old);
  ASSERT_NE(client, nullptr);
  const std::string needs = absl::StrCat("(needs ", kInteractiveProtocolVersion, ")");
  ExecSpec interactive{{"sh"}};
  interactive.interactive = true;
  absl::Status refused = client->StartExec(interactive).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition, "protocol 5"));
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition, needs));
  ExecSpec with_tty = interactive;
  with_tty.tty = TerminalSize{24, 80};
  EXPECT_THAT(client->StartExec(with_tty).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, needs));
  ExecSpec tty_only{{"sh"}};
  tty_only.tty = TerminalSize{24, 80};
  EXPECT_THAT(client->StartExec(tty_only).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, needs));
  // A plain exec still goes to the old agent.
  auto plain_old = client->StartExec(ExecSpec{{"true"}});
  EXPECT_THAT(plain_old.status(), IsOk());
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  ASSERT_EQ(old.frames().size(), 1u);
  EXPECT_EQ(old.frames()[0].exec_start().argv(0), "true");

  FakeAgent fake(nullptr);
  client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec with_data = interactive;
  with_data.stdin_data = "data";
  EXPECT_THAT(client->StartExec(with_data).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(client->StartExec(tty_only).status(),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  EXPECT_TRUE(fake.frames().empty());

  // A plain exec's and an attach's handles take no input, and send none.
  auto plain = client->StartExec(ExecSpec{{"cat"}});
  ASSERT_THAT(plain.status(), IsOk());
  auto attach = client->AttachProcess(42, 0, true);
  ASSERT_THAT(attach.status(), IsOk());
  for (ExecHandle* h : {plain->get(), attach->get()}) {
    EXPECT_THAT(h->WriteStdin("x", absl::Now() + absl::Seconds(1)).status(),
                StatusIs(absl::StatusCode::kFailedPrecondition, "not an interactive exec"));
    EXPECT_THAT(h->CloseStdin(), StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(h->Signal(2), StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(h->Resize({40, 120}), StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  std::vector<v1::Frame> frames = fake.frames();
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_TRUE(frames[0].has_exec_start());
  EXPECT_FALSE(frames[0].exec_start().interactive());
  EXPECT_FALSE(frames[0].exec_start().ack_stdin());
  EXPECT_FALSE(frames[0].exec_start().stdin_follows());
  EXPECT_TRUE(frames[1].has_proc_attach());
}

// An interactive exec's ExecStart: interactive, acknowledged stdin that
// follows, the terminal's size; nothing else is sent until the handle is
// used (no stdin eof).
TEST(AgentClientTest, AnInteractiveExecStartsWithItsTerminal) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"bash", "-l"}};
  spec.interactive = true;
  spec.tty = TerminalSize{30, 100};
  spec.user = "alice";
  auto tty = client->StartExec(spec);
  ASSERT_THAT(tty.status(), IsOk());
  spec.argv = {"cat"};
  spec.tty.reset();
  auto no_tty = client->StartExec(spec);
  ASSERT_THAT(no_tty.status(), IsOk());
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  std::vector<v1::Frame> frames = fake.frames();
  ASSERT_EQ(frames.size(), 2u);
  ASSERT_TRUE(frames[0].has_exec_start());
  const v1::ExecStart& s = frames[0].exec_start();
  EXPECT_EQ(s.argv_size(), 2);
  EXPECT_EQ(s.user(), "alice");
  EXPECT_TRUE(s.interactive());
  EXPECT_TRUE(s.ack_stdin());
  EXPECT_TRUE(s.stdin_follows());
  ASSERT_TRUE(s.has_tty());
  EXPECT_EQ(s.tty().rows(), 30u);
  EXPECT_EQ(s.tty().cols(), 100u);
  ASSERT_TRUE(frames[1].has_exec_start());
  const v1::ExecStart& c = frames[1].exec_start();
  EXPECT_EQ(c.argv(0), "cat");
  EXPECT_TRUE(c.interactive());
  EXPECT_TRUE(c.ack_stdin());
  EXPECT_TRUE(c.stdin_follows());
  EXPECT_FALSE(c.has_tty());
}

// At most kStdinWindow bytes the agent has not acknowledged are in flight:
// WriteStdin sends what fits by its deadline, in 64 KiB frames, and waits
// for ExecStdinAck for the rest; an exit ends the wait.
TEST(AgentClientTest, InteractiveStdinIsBoundByTheWindow) {
  constexpr uint64_t kWindow = ExecHandle::kStdinWindow;
  static_assert(kWindow == 1 << 20);
  FakeAgent fake(nullptr);  // acknowledges nothing by itself
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"cat"}};
  spec.interactive = true;
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  const uint64_t id = ExecIdOf(fake, "cat");
  const std::string data = Pattern(kWindow + kWindow / 2);

  // Without acks, exactly the window goes out, then the deadline ends it.
  absl::Time t0 = absl::Now();
  auto sent = (*exec)->WriteStdin(data, absl::Now() + absl::Milliseconds(200));
  absl::Duration took = absl::Now() - t0;
  ASSERT_THAT(sent.status(), IsOk());
  EXPECT_EQ(*sent, kWindow);
  EXPECT_GE(took, absl::Milliseconds(190));
  EXPECT_LT(took, absl::Seconds(5));
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  ReceivedInput in = InputOf(fake, id);
  EXPECT_EQ(in.data.size(), *sent);
  EXPECT_TRUE(in.data == data.substr(0, *sent));
  EXPECT_EQ(in.chunks, std::vector<size_t>(kWindow / kMaxChunkBytes, kMaxChunkBytes));
  EXPECT_EQ(in.eofs, 0);
  // A deadline already passed: nothing.
  auto none = (*exec)->WriteStdin(data.substr(*sent), absl::Now());
  ASSERT_THAT(none.status(), IsOk());
  EXPECT_EQ(*none, 0u);

  // The command took half a MiB: the rest (half a MiB) fits.
  ASSERT_TRUE(fake.Write(StdinAck(id, data.size() - kWindow)));
  auto rest = (*exec)->WriteStdin(data.substr(*sent), absl::Now() + absl::Seconds(10));
  ASSERT_THAT(rest.status(), IsOk());
  EXPECT_EQ(*rest, data.size() - *sent);
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  in = InputOf(fake, id);
  EXPECT_EQ(in.data.size(), data.size());
  EXPECT_TRUE(in.data == data);
  EXPECT_EQ(in.chunks, std::vector<size_t>(data.size() / kMaxChunkBytes, kMaxChunkBytes));

  // The window is full again. A write with a far deadline waits for the ack
  // that makes room for all of it (one byte short is not enough)...
  {
    BlockedWrite write(**exec, "xyz");
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(100)));
    ASSERT_TRUE(fake.Write(StdinAck(id, data.size() + 3 - kWindow - 1)));
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(200)));
    ASSERT_TRUE(fake.Write(StdinAck(id, data.size() + 3 - kWindow)));
    auto r = write.Result();
    ASSERT_THAT(r.status(), IsOk());
    EXPECT_EQ(*r, 3u);
  }
  // ...and returns when the command exits instead.
  {
    BlockedWrite write(**exec, "more");
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(100)));
    ASSERT_TRUE(fake.Write(Exit(id, 0)));
    EXPECT_THAT(write.Result().status(), StatusIs(absl::StatusCode::kFailedPrecondition, "exited"));
  }
  auto ev = (*exec)->Next(absl::Now() + absl::Seconds(5));
  ASSERT_THAT(ev.status(), IsOk());
  EXPECT_EQ(ev->kind, ExecEvent::Kind::kExit);
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  EXPECT_TRUE(InputOf(fake, id).data == data + "xyz");
  EXPECT_TRUE(client->healthy());

  // After the exit a write is refused also with room in the window, and
  // nothing is sent.
  ExecSpec roomy{{"tee"}};
  roomy.interactive = true;
  auto tee = client->StartExec(roomy);
  ASSERT_THAT(tee.status(), IsOk());
  const uint64_t tee_id = ExecIdOf(fake, "tee");
  ASSERT_TRUE(fake.Write(Exit(tee_id, 0)));
  auto tee_exit = (*tee)->Next(absl::Now() + absl::Seconds(5));
  ASSERT_THAT(tee_exit.status(), IsOk());
  EXPECT_THAT((*tee)->WriteStdin("late", absl::Now() + absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "exited"));
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  EXPECT_TRUE(InputOf(fake, tee_id).data.empty());
}

// A write waiting for the window fails with the connection (and so does
// every input call after).
TEST(AgentClientTest, InteractiveStdinWaitFailsWhenTheConnectionBreaks) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"cat"}};
  spec.interactive = true;
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  // A whole window fits without waiting.
  absl::Time t0 = absl::Now();
  auto sent = (*exec)->WriteStdin(std::string(ExecHandle::kStdinWindow, 'i'),
                                  absl::Now() + absl::Seconds(10));
  ASSERT_THAT(sent.status(), IsOk());
  EXPECT_EQ(*sent, ExecHandle::kStdinWindow);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(5));
  {
    BlockedWrite write(**exec, "x");
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(100)));
    // A length prefix over kMaxFrameBytes: a corrupt stream closes the
    // connection.
    ASSERT_TRUE(fake.WriteRaw(std::string("\xff\xff\xff\xff", 4)));
    EXPECT_THAT(write.Result().status(), StatusIs(absl::StatusCode::kUnavailable));
  }
  EXPECT_FALSE(client->healthy());
  EXPECT_THAT((*exec)->WriteStdin("x", absl::Now() + absl::Seconds(1)).status(),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*exec)->Signal(2), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*exec)->Resize({40, 120}), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*exec)->CloseStdin(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT((*exec)->Next(absl::Now() + absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kUnavailable));
}

// ExecStdinAck is recorded by the reader, not queued: it reaches a waiting
// writer while the exec's output sits unread in its queue (which has room),
// and takes no room there.
TEST(AgentClientTest, InteractiveStdinAcksPassUnreadOutput) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"sh"}};
  spec.interactive = true;
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  const uint64_t id = ExecIdOf(fake, "sh");
  auto sent = (*exec)->WriteStdin(std::string(ExecHandle::kStdinWindow, 'i'),
                                  absl::Now() + absl::Seconds(10));
  ASSERT_THAT(sent.status(), IsOk());
  ASSERT_EQ(*sent, ExecHandle::kStdinWindow);
  // Half the exec's queue bound of output that nobody reads.
  constexpr size_t kOutput = kMaxQueuedBytes / 2;
  for (size_t n = 0; n < kOutput; n += kMaxChunkBytes) {
    ASSERT_TRUE(fake.Write(Output(id, std::string(kMaxChunkBytes, 'o'))));
  }
  absl::Time until = absl::Now() + absl::Seconds(5);
  while (client->queued_bytes() < kOutput && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  const size_t queued = client->queued_bytes();
  ASSERT_GE(queued, kOutput);
  ASSERT_LT(queued, kMaxQueuedBytes);
  {
    BlockedWrite write(**exec, "z");
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(100)));
    ASSERT_TRUE(fake.Write(StdinAck(id, 1)));
    auto r = write.Result();
    ASSERT_THAT(r.status(), IsOk());
    EXPECT_EQ(*r, 1u);
  }
  EXPECT_EQ(client->queued_bytes(), queued);
  // The output is all there, and nothing else.
  size_t got = 0;
  while (got < kOutput) {
    auto ev = (*exec)->Next(absl::Now() + absl::Seconds(5));
    ASSERT_THAT(ev.status(), IsOk());
    ASSERT_EQ(ev->kind, ExecEvent::Kind::kStdout);
    got += ev->data.size();
  }
  EXPECT_EQ(got, kOutput);
  EXPECT_THAT((*exec)->Next(absl::Now() + absl::Milliseconds(50)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(client->queued_bytes(), 0u);
}

// CloseStdin sends one eof however often it is called, and ends WriteStdin;
// Signal sends signals 1-64 only; Resize sends the size.
TEST(AgentClientTest, InteractiveCloseStdinSignalAndResize) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"sh"}};
  spec.interactive = true;
  spec.tty = TerminalSize{24, 80};
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  const uint64_t id = ExecIdOf(fake, "sh");
  auto sent = (*exec)->WriteStdin("echo hi\n", absl::Now() + absl::Seconds(5));
  ASSERT_THAT(sent.status(), IsOk());
  EXPECT_EQ(*sent, 8u);
  EXPECT_THAT((*exec)->CloseStdin(), IsOk());
  EXPECT_THAT((*exec)->CloseStdin(), IsOk());
  EXPECT_THAT((*exec)->WriteStdin("x", absl::Now() + absl::Seconds(5)).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "closed"));
  EXPECT_THAT((*exec)->CloseStdin(), IsOk());
  EXPECT_THAT((*exec)->Signal(2), IsOk());
  EXPECT_THAT((*exec)->Signal(0), StatusIs(absl::StatusCode::kInvalidArgument, "signal 0"));
  EXPECT_THAT((*exec)->Signal(65), StatusIs(absl::StatusCode::kInvalidArgument, "signal 65"));
  EXPECT_THAT((*exec)->Signal(-9), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT((*exec)->Signal(1), IsOk());
  EXPECT_THAT((*exec)->Signal(64), IsOk());
  EXPECT_THAT((*exec)->Resize({40, 120}), IsOk());
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());
  ReceivedInput in = InputOf(fake, id);
  EXPECT_EQ(in.data, "echo hi\n");
  EXPECT_EQ(in.chunks, (std::vector<size_t>{8, 0}));  // the data, then the bare eof
  EXPECT_EQ(in.eofs, 1);
  EXPECT_EQ(in.signals, (std::vector<int>{2, 1, 64}));
  EXPECT_EQ(in.resizes, (std::vector<std::pair<uint32_t, uint32_t>>{{40, 120}}));
  // In the order made.
  std::vector<v1::Frame::MsgCase> order;
  for (const v1::Frame& f : fake.frames()) order.push_back(f.msg_case());
  EXPECT_EQ(order, (std::vector<v1::Frame::MsgCase>{
                       v1::Frame::kExecStart, v1::Frame::kExecStdin, v1::Frame::kExecStdin,
                       v1::Frame::kExecSignal, v1::Frame::kExecSignal, v1::Frame::kExecSignal,
                       v1::Frame::kExecResize}));
  EXPECT_TRUE(client->healthy());
}

// An ExecStdinAck for an id nobody has (never used, or an exec that ended),
// or for another exec, changes nothing; nor does one behind an earlier ack
// (the count is a total).
TEST(AgentClientTest, InteractiveStdinAcksForOtherIdsOrBehindChangeNothing) {
  FakeAgent fake(nullptr);
  auto client = ConnectTo(fake);
  ASSERT_NE(client, nullptr);
  ExecSpec spec{{"first"}};
  spec.interactive = true;
  auto first = client->StartExec(spec);
  ASSERT_THAT(first.status(), IsOk());
  const uint64_t first_id = ExecIdOf(fake, "first");
  first->reset();  // ended: its id is unknown from here
  spec.argv = {"second"};
  auto exec = client->StartExec(spec);
  ASSERT_THAT(exec.status(), IsOk());
  const uint64_t id = ExecIdOf(fake, "second");
  ASSERT_NE(id, first_id);
  auto sent = (*exec)->WriteStdin(std::string(ExecHandle::kStdinWindow, 'i'),
                                  absl::Now() + absl::Seconds(10));
  ASSERT_THAT(sent.status(), IsOk());
  ASSERT_EQ(*sent, ExecHandle::kStdinWindow);
  {
    BlockedWrite write(**exec, "w");
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(50)));
    for (uint64_t other : {first_id, id + 1, uint64_t{999999}, ~uint64_t{0}}) {
      ASSERT_TRUE(fake.Write(StdinAck(other, ~uint64_t{0})));
    }
    ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());  // the acks were read
    EXPECT_TRUE(write.StillWaitingAfter(absl::Milliseconds(100)));
    EXPECT_EQ(client->queued_bytes(), 0u);
    EXPECT_TRUE(client->healthy());
    ASSERT_TRUE(fake.Write(StdinAck(id, 1)));
    auto r = write.Result();
    ASSERT_THAT(r.status(), IsOk());
    EXPECT_EQ(*r, 1u);
  }
  // Room for 256 KiB more, then a stale ack: the room stays.
  constexpr size_t kMore = 256 << 10;
  ASSERT_TRUE(fake.Write(StdinAck(id, 1 + kMore)));
  ASSERT_TRUE(fake.Write(StdinAck(id, 0)));
  ASSERT_THAT(client->Ping(absl::Seconds(5)), IsOk());  // both were read
  auto more = (*exec)->WriteStdin(std::string(kMore, 'm'), absl::Now() + absl::Seconds(2));
  ASSERT_THAT(more.status(), IsOk());
  EXPECT_EQ(*more, kMore);
  EXPECT_THAT((*exec)->Next(absl::Now() + absl::Milliseconds(50)).status(),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(client->queued_bytes(), 0u);
  EXPECT_TRUE(client->healthy());
}

}  // namespace
}  // namespace smolvm::agent
