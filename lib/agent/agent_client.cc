#include "lib/agent/agent_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/agent/frame_codec.h"

namespace smolvm::agent {
namespace {

constexpr char kLegacyReady[] = "SMOLVM_READY";

size_t FrameBytes(const v1::Frame& f) {
  switch (f.msg_case()) {
    case v1::Frame::kExecOutput: return f.exec_output().data().size();
    case v1::Frame::kFileData: return f.file_data().data().size();
    default: return 64;
  }
}

absl::StatusOr<UniqueFd> ConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("agent socket path too long: ", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("connect ", path));
  }
  return fd;
}

}  // namespace

// ---- OpChannel ----

absl::StatusOr<v1::Frame> OpChannel::Next(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || !broken_.ok();
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (!queue_.empty()) {
    v1::Frame f = std::move(queue_.front());
    queue_.pop_front();
    queued_bytes_ -= FrameBytes(f);
    return f;
  }
  if (!broken_.ok()) return broken_;
  return absl::DeadlineExceededError("no answer from the guest agent in time");
}

void OpChannel::Push(v1::Frame frame) {
  absl::MutexLock lock(&mu_);
  // Back-pressure: a consumer that is behind stalls this VM's reader, which
  // stalls the guest's writes; nothing is dropped and nothing grows.
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queued_bytes_ < kMaxQueuedBytes || abandoned_ || !broken_.ok();
  };
  mu_.Await(absl::Condition(&room));
  if (abandoned_ || !broken_.ok()) return;
  queued_bytes_ += FrameBytes(frame);
  queue_.push_back(std::move(frame));
}

void OpChannel::Fail(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (broken_.ok()) broken_ = std::move(status);
}

// ---- ExecHandle ----

ExecHandle::~ExecHandle() {
  if (!done_ && client_->healthy()) {
    v1::Frame cancel;
    cancel.mutable_exec_cancel()->set_id(id_);
    (void)client_->Send(cancel);
  }
  client_->Unregister(id_);
}

absl::StatusOr<ExecEvent> ExecHandle::Next(absl::Time deadline) {
  if (done_) return absl::FailedPreconditionError("exec already finished");
  while (true) {
    auto frame = channel_->Next(deadline);
    if (!frame.ok()) return frame.status();
    ExecEvent ev;
    if (frame->has_exec_output()) {
      ev.kind = frame->exec_output().stream() == v1::ExecOutput::STDERR
                    ? ExecEvent::Kind::kStderr
                    : ExecEvent::Kind::kStdout;
      ev.data = std::move(*frame->mutable_exec_output()->mutable_data());
      return ev;
    }
    if (frame->has_exec_exit()) {
      const auto& e = frame->exec_exit();
      done_ = true;
      if (!e.start_error().empty()) {
        return absl::FailedPreconditionError(absl::StrCat("exec in guest: ", e.start_error()));
      }
      ev.kind = ExecEvent::Kind::kExit;
      ev.exit_code = e.exit_code();
      ev.signal = e.signal();
      ev.timed_out = e.timed_out();
      return ev;
    }
    // Anything else for this id is a confused guest; ignore it.
  }
}

// ---- AgentClient ----

AgentClient::AgentClient(UniqueFd fd) : fd_(std::move(fd)) {}

AgentClient::~AgentClient() {
  Close(absl::UnavailableError("agent connection closed"));
  shutdown(fd_.get(), SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
}

absl::StatusOr<std::shared_ptr<AgentClient>> AgentClient::Connect(
    const std::string& socket_path, absl::Duration timeout,
    const std::function<absl::Status()>& abort_check) {
  absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<UniqueFd> fd;
  while (true) {
    fd = ConnectUnix(socket_path);
    if (fd.ok()) break;
    if (abort_check) {
      if (auto s = abort_check(); !s.ok()) return s;
    }
    if (absl::Now() > deadline) return fd.status();
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::shared_ptr<AgentClient> client(new AgentClient(*std::move(fd)));
  client->reader_ = std::thread([c = client.get()] { c->ReaderLoop(); });
  v1::Frame hello;
  hello.mutable_hello_request()->set_host_protocol_version(v1::PROTOCOL_VERSION);
  while (true) {
    if (auto s = client->Send(hello); !s.ok()) return s;
    {
      absl::MutexLock lock(&client->mu_);
      auto greeted = [c = client.get()]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
        return c->hello_seen_ || c->legacy_ready_ || c->broken_.load();
      };
      client->mu_.AwaitWithTimeout(absl::Condition(&greeted), absl::Milliseconds(100));
      if (client->hello_seen_) {
        client->has_agent_ = true;
        return client;
      }
      if (client->legacy_ready_) return client;
    }
    if (client->broken_) {
      return absl::UnavailableError(absl::StrCat("agent on ", socket_path,
                                                 " closed the connection during the greeting"));
    }
    if (abort_check) {
      if (auto s = abort_check(); !s.ok()) return s;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "the guest agent did not answer within ", absl::FormatDuration(timeout)));
    }
  }
}

void AgentClient::Close(absl::Status why) {
  broken_ = true;
  std::map<uint64_t, std::shared_ptr<OpChannel>> ops;
  {
    absl::MutexLock lock(&mu_);
    ops = ops_;
  }
  for (auto& [id, op] : ops) op->Fail(why);
}

void AgentClient::ReaderLoop() {
  FrameDecoder decoder;
  bool any_frame = false;
  std::string prefix;  // Bytes before the first frame, for the legacy line.
  char buf[65536];
  while (!broken_) {
    ssize_t n = read(fd_.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Close(absl::UnavailableError("the guest agent connection was closed"));
      return;
    }
    if (!any_frame && prefix.size() < 64) {
      prefix.append(buf, std::min<size_t>(n, 64 - prefix.size()));
      if (absl::StartsWith(prefix, kLegacyReady)) {
        absl::MutexLock lock(&mu_);
        legacy_ready_ = true;
        continue;  // An image without an agent: nothing else will come.
      }
    }
    decoder.Feed(buf, n);
    v1::Frame frame;
    while (true) {
      auto r = decoder.Next(&frame);
      if (r == FrameDecoder::Result::kNeedMore) break;
      if (r == FrameDecoder::Result::kError) {
        Close(absl::UnavailableError(
            absl::StrCat("the guest agent sent a corrupt stream: ", decoder.error())));
        return;
      }
      any_frame = true;
      uint64_t id = 0;
      switch (frame.msg_case()) {
        case v1::Frame::kHello: {
          absl::MutexLock lock(&mu_);
          if (!hello_seen_) agent_version_ = frame.hello().agent_version();
          hello_seen_ = true;
          ++hellos_;
          continue;
        }
        case v1::Frame::kExecOutput: id = frame.exec_output().id(); break;
        case v1::Frame::kExecExit: id = frame.exec_exit().id(); break;
        case v1::Frame::kFileData: id = frame.file_data().id(); break;
        case v1::Frame::kOpResult: id = frame.op_result().id(); break;
        default: continue;  // Not something a guest sends; ignore.
      }
      std::shared_ptr<OpChannel> op;
      {
        absl::MutexLock lock(&mu_);
        auto it = ops_.find(id);
        if (it != ops_.end()) op = it->second;
      }
      if (op) op->Push(std::move(frame));
    }
  }
}

absl::Status AgentClient::Send(const v1::Frame& frame) {
  if (broken_) return absl::UnavailableError("the guest agent connection is closed");
  std::string bytes;
  if (!EncodeFrame(frame, &bytes)) return absl::InvalidArgumentError("agent frame too large");
  absl::MutexLock lock(&write_mu_);
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      Close(absl::UnavailableError(absl::StrCat("write to the guest agent: ", strerror(errno))));
      return absl::UnavailableError("the guest agent connection is closed");
    }
    off += n;
  }
  return absl::OkStatus();
}

std::pair<uint64_t, std::shared_ptr<OpChannel>> AgentClient::Register() {
  auto op = std::make_shared<OpChannel>();
  absl::MutexLock lock(&mu_);
  uint64_t id = next_id_++;
  ops_[id] = op;
  if (broken_) op->Fail(absl::UnavailableError("the guest agent connection is closed"));
  return {id, op};
}

AgentClient::OpLease AgentClient::Lease() {
  auto [id, channel] = Register();
  return OpLease(this, id, std::move(channel));
}

void AgentClient::Unregister(uint64_t id) {
  std::shared_ptr<OpChannel> op;
  {
    absl::MutexLock lock(&mu_);
    auto it = ops_.find(id);
    if (it == ops_.end()) return;
    op = it->second;
    ops_.erase(it);
  }
  // Frames still queued or in flight for it are dropped, and a reader
  // waiting for room in its queue moves on.
  absl::MutexLock lock(&op->mu_);
  op->abandoned_ = true;
}

absl::StatusOr<std::unique_ptr<ExecHandle>> AgentClient::StartExec(const ExecSpec& spec) {
  if (!has_agent_) {
    return absl::FailedPreconditionError(
        "the guest has no smolvm agent (custom image?); exec needs the default image's agent");
  }
  auto [id, op] = Register();
  std::unique_ptr<ExecHandle> handle(new ExecHandle(shared_from_this(), id, op));
  v1::Frame start;
  auto* s = start.mutable_exec_start();
  s->set_id(id);
  for (const auto& a : spec.argv) s->add_argv(a);
  for (const auto& [k, v] : spec.env) (*s->mutable_env())[k] = v;
  s->set_cwd(spec.cwd);
  s->set_timeout_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(spec.timeout)));
  s->set_stdin_follows(spec.stdin_data.has_value());
  if (auto st = Send(start); !st.ok()) return st;
  if (spec.stdin_data) {
    const std::string& data = *spec.stdin_data;
    size_t off = 0;
    do {
      v1::Frame in;
      auto* chunk = in.mutable_exec_stdin();
      chunk->set_id(id);
      size_t len = std::min(kMaxChunkBytes, data.size() - off);
      chunk->set_data(data.substr(off, len));
      off += len;
      chunk->set_eof(off >= data.size());
      if (auto st = Send(in); !st.ok()) return st;
    } while (off < data.size());
  }
  return handle;
}

absl::StatusOr<v1::OpResult> AgentClient::AwaitResult(OpChannel& channel, uint64_t id,
                                                      absl::Time deadline,
                                                      const std::string& what) {
  while (true) {
    auto frame = channel.Next(deadline);
    if (!frame.ok()) {
      return absl::Status(frame.status().code(),
                          absl::StrCat(what, ": ", frame.status().message()));
    }
    if (!frame->has_op_result()) continue;
    if (!frame->op_result().error().empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": ", frame->op_result().error()));
    }
    return frame->op_result();
  }
}

absl::StatusOr<FileInfo> AgentClient::WriteFile(
    const std::string& path, uint32_t mode, bool tar, bool make_parents,
    const std::function<absl::StatusOr<std::string>()>& next_chunk, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  OpLease lease = Lease();
  const uint64_t id = lease.id;
  OpChannel* op = lease.channel.get();
  absl::Time deadline = absl::Now() + timeout;
  v1::Frame start;
  auto* s = start.mutable_file_write_start();
  s->set_id(id);
  s->set_path(path);
  s->set_mode(mode);
  s->set_tar(tar);
  s->set_make_parents(make_parents);
  if (auto st = Send(start); !st.ok()) return st;
  while (true) {
    auto chunk = next_chunk();
    if (!chunk.ok()) {
      // Tell the agent the upload ended so it drops its temp file; the
      // caller's error wins.
      v1::Frame end;
      end.mutable_file_data()->set_id(id);
      end.mutable_file_data()->set_eof(true);
      (void)Send(end);
      return chunk.status();
    }
    // Split caller chunks to the protocol's chunk size.
    size_t off = 0;
    do {
      v1::Frame data;
      auto* d = data.mutable_file_data();
      d->set_id(id);
      size_t len = std::min(kMaxChunkBytes, chunk->size() - off);
      d->set_data(chunk->substr(off, len));
      off += len;
      d->set_eof(chunk->empty());
      if (auto st = Send(data); !st.ok()) return st;
    } while (off < chunk->size());
    if (chunk->empty()) break;
  }
  auto result = AwaitResult(*op, id, deadline, absl::StrCat("upload ", path));
  if (!result.ok()) return result.status();
  return FileInfo{result->bytes(), result->mode()};
}

absl::StatusOr<FileInfo> AgentClient::ReadFile(
    const std::string& path, bool tar,
    const std::function<absl::Status(const std::string&)>& sink, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  OpLease lease = Lease();
  const uint64_t id = lease.id;
  OpChannel* op = lease.channel.get();
  absl::Time deadline = absl::Now() + timeout;
  v1::Frame start;
  auto* s = start.mutable_file_read_start();
  s->set_id(id);
  s->set_path(path);
  s->set_tar(tar);
  if (auto st = Send(start); !st.ok()) return st;
  const std::string what = absl::StrCat("download ", path);
  while (true) {
    auto frame = op->Next(deadline);
    if (!frame.ok()) {
      return absl::Status(frame.status().code(), absl::StrCat(what, ": ", frame.status().message()));
    }
    if (frame->has_file_data()) {
      if (!frame->file_data().data().empty()) {
        if (auto st = sink(frame->file_data().data()); !st.ok()) return st;
      }
      continue;
    }
    if (frame->has_op_result()) {
      if (!frame->op_result().error().empty()) {
        return absl::FailedPreconditionError(absl::StrCat(what, ": ", frame->op_result().error()));
      }
      return FileInfo{frame->op_result().bytes(), frame->op_result().mode()};
    }
  }
}

absl::StatusOr<absl::Time> AgentClient::SetClock(absl::Time now, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  OpLease lease = Lease();
  const uint64_t id = lease.id;
  OpChannel* op = lease.channel.get();
  v1::Frame f;
  f.mutable_set_clock()->set_id(id);
  f.mutable_set_clock()->set_unix_time_ns(absl::ToUnixNanos(now));
  absl::StatusOr<v1::OpResult> r = absl::UnknownError("not sent");
  if (absl::Status sent = Send(f); !sent.ok()) {
    r = sent;
  } else {
    r = AwaitResult(*op, id, absl::Now() + timeout, "set the guest clock");
  }
  if (!r.ok()) return r.status();
  return absl::FromUnixNanos(r->guest_time_ns());
}

absl::Status AgentClient::AddEntropy(const std::string& seed, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  OpLease lease = Lease();
  const uint64_t id = lease.id;
  OpChannel* op = lease.channel.get();
  v1::Frame f;
  f.mutable_add_entropy()->set_id(id);
  f.mutable_add_entropy()->set_seed(seed);
  absl::StatusOr<v1::OpResult> r = absl::UnknownError("not sent");
  if (absl::Status sent = Send(f); !sent.ok()) {
    r = sent;
  } else {
    r = AwaitResult(*op, id, absl::Now() + timeout, "reseed the guest's entropy");
  }
  return r.status();
}

absl::Status AgentClient::Ping(absl::Duration timeout) {
  uint64_t before;
  {
    absl::MutexLock lock(&mu_);
    before = hellos_;
  }
  v1::Frame f;
  f.mutable_hello_request()->set_host_protocol_version(v1::PROTOCOL_VERSION);
  if (auto s = Send(f); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto answered = [this, before]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return hellos_ > before || broken_.load();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&answered), timeout)) {
    return absl::DeadlineExceededError("agent ping timed out");
  }
  if (hellos_ == before) return absl::UnavailableError("the guest agent connection is closed");
  return absl::OkStatus();
}

}  // namespace smolvm::agent
