#include "lib/agent/agent_client.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cstring>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/agent/frame_codec.h"
#include "lib/base/status_macros.h"

namespace smolvm::agent {
namespace {

constexpr char kLegacyReady[] = "SMOLVM_READY";

// What a queued frame counts against the bounds: its full encoded size
// (unknown fields included) plus the bookkeeping around it.
size_t QueuedSize(const v1::Frame& f) { return f.ByteSizeLong() + kQueuedFrameOverhead; }

// A failed guest operation as a status: the agent's errno says what kind of
// failure it was (a missing file is NOT_FOUND, not the VM's state), the
// message names the step and path. No errno: FAILED_PRECONDITION, as before.
absl::Status GuestErrnoError(int errnum, const std::string& message) {
  switch (errnum) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
    case ENOTEMPTY:
      return absl::AlreadyExistsError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ESRCH:
      return absl::NotFoundError(message);
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
    case EAGAIN:
      return absl::ResourceExhaustedError(message);
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
      return absl::InvalidArgumentError(message);
    default:
      return absl::FailedPreconditionError(message);
  }
}

absl::Status GuestError(const std::string& what, const v1::OpResult& result) {
  return GuestErrnoError(result.error_errno(), absl::StrCat(what, ": ", result.error()));
}

// Refuses a user for an agent that would ignore the field and run as root.
absl::Status CheckUserSupported(const std::string& user, uint32_t protocol_version) {
  if (user.empty() || protocol_version >= kUserProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the guest agent speaks protocol ", protocol_version, " and cannot run as user \"", user,
      "\" (needs ", kUserProtocolVersion,
      "): the VM's image predates users; create the VM from an image built by this smolvmd"));
}

// Refuses an interactive exec to an agent that would run it as a plain one
// (no tty, no signals, outliving its client).
absl::Status CheckInteractiveSupported(uint32_t protocol_version) {
  if (protocol_version >= kInteractiveProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the guest agent speaks protocol ", protocol_version,
      " and has no interactive execs (needs ", kInteractiveProtocolVersion,
      "): the VM's image predates them; create the VM from an image built by this smolvmd"));
}

// Refuses a process call to an agent that would never answer it.
absl::Status CheckProcessSupported(uint32_t protocol_version) {
  if (protocol_version >= kProcessProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the guest agent speaks protocol ", protocol_version,
      " and has no background processes (needs ", kProcessProtocolVersion,
      "): the VM's image predates them; create the VM from an image built by this smolvmd"));
}

ProcessInfo FromProto(const v1::ProcInfo& p) {
  ProcessInfo out;
  out.pid = p.pid();
  out.argv.assign(p.argv().begin(), p.argv().end());
  out.user = p.user();
  out.cwd = p.cwd();
  out.running = p.running();
  out.exit_code = p.exit_code();
  out.signal = p.signal();
  out.started_unix_ns = p.started_unix_ns();
  out.ended_unix_ns = p.ended_unix_ns();
  out.output_bytes = p.output_bytes();
  return out;
}

// Refuses a filesystem call to an agent that would never answer it.
absl::Status CheckFsSupported(uint32_t protocol_version) {
  if (protocol_version >= kFsProtocolVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the guest agent speaks protocol ", protocol_version,
      " and has no filesystem calls (needs ", kFsProtocolVersion,
      "): the VM's image predates them; create the VM from an image built by this smolvmd"));
}

FsEntry FromProto(const v1::FsEntry& e) {
  FsEntry out;
  out.path = e.path();
  out.name = e.name();
  switch (e.type()) {
    case v1::FsEntry::FILE: out.type = FsEntry::Type::kFile; break;
    case v1::FsEntry::DIRECTORY: out.type = FsEntry::Type::kDirectory; break;
    case v1::FsEntry::SYMLINK: out.type = FsEntry::Type::kSymlink; break;
    case v1::FsEntry::OTHER: out.type = FsEntry::Type::kOther; break;
    default: out.type = FsEntry::Type::kUnknown; break;
  }
  out.size = e.size();
  out.mode = e.mode() & 07777;
  out.uid = e.uid();
  out.gid = e.gid();
  out.mtime_ns = e.mtime_ns();
  out.symlink_target = e.symlink_target();
  return out;
}

v1::FsRequest::Op ToProto(FsCall::Op op) {
  switch (op) {
    case FsCall::Op::kStat: return v1::FsRequest::STAT;
    case FsCall::Op::kList: return v1::FsRequest::LIST;
    case FsCall::Op::kMakeDir: return v1::FsRequest::MKDIR;
    case FsCall::Op::kRemove: return v1::FsRequest::REMOVE;
    case FsCall::Op::kRename: return v1::FsRequest::RENAME;
  }
  return v1::FsRequest::OP_UNSPECIFIED;
}

const char* FsOpName(FsCall::Op op) {
  switch (op) {
    case FsCall::Op::kStat: return "stat";
    case FsCall::Op::kList: return "list";
    case FsCall::Op::kMakeDir: return "mkdir";
    case FsCall::Op::kRemove: return "remove";
    case FsCall::Op::kRename: return "rename";
  }
  return "fs";
}

absl::Status Annotated(const absl::Status& s, const std::string& what) {
  return absl::Status(s.code(), absl::StrCat(what, ": ", s.message()));
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

// "aa:bb:cc:dd:ee:ff", exactly.
bool ParseMac(const std::string& s, unsigned char out[6]) {
  if (s.size() != 17) return false;
  for (size_t i = 0; i < 6; ++i) {
    const char hi = s[3 * i], lo = s[3 * i + 1];
    if (!std::isxdigit(static_cast<unsigned char>(hi)) ||
        !std::isxdigit(static_cast<unsigned char>(lo)) || (i < 5 && s[3 * i + 2] != ':')) {
      return false;
    }
    auto nibble = [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10;
    };
    out[i] = static_cast<unsigned char>(nibble(hi) << 4 | nibble(lo));
  }
  return true;
}

bool IsIpv4(const std::string& s) {
  in_addr addr;
  return inet_pton(AF_INET, s.c_str(), &addr) == 1;
}

}  // namespace

absl::Status ValidateNetworkIdentity(const GuestNetworkIdentity& id) {
  const std::string& name = id.interface;
  if (name.empty() || name.size() >= IFNAMSIZ || name == "." || name == ".." ||
      name.find_first_of("/: \t\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest interface name \"", name, "\" must be 1-", IFNAMSIZ - 1,
        " characters without '/', ':' or spaces"));
  }
  unsigned char mac[6];
  if (!ParseMac(id.mac, mac) || (mac[0] & 1) != 0 ||
      std::all_of(mac, mac + 6, [](unsigned char b) { return b == 0; })) {
    return absl::InvalidArgumentError(absl::StrCat(
        "guest MAC \"", id.mac, "\" must be a unicast, non-zero aa:bb:cc:dd:ee:ff address"));
  }
  if (!IsIpv4(id.ipv4_address)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest address \"", id.ipv4_address, "\" is not an IPv4 address"));
  }
  if (id.prefix_length < 1 || id.prefix_length > 32) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest prefix length ", id.prefix_length, " must be 1-32"));
  }
  if (!id.gateway.empty() && !IsIpv4(id.gateway)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest gateway \"", id.gateway, "\" is not an IPv4 address"));
  }
  if (!id.dns_server.empty() && !IsIpv4(id.dns_server)) {
    return absl::InvalidArgumentError(
        absl::StrCat("guest DNS server \"", id.dns_server, "\" is not an IPv4 address"));
  }
  return absl::OkStatus();
}

// ---- OpChannel ----

OpChannel::~OpChannel() {
  absl::MutexLock lock(&budget_->mu);
  ClearLocked();
}

void OpChannel::ClearLocked() {
  budget_->queued -= queued_bytes_;
  queued_bytes_ = 0;
  std::deque<std::pair<v1::Frame, size_t>>().swap(queue_);
}

absl::StatusOr<v1::Frame> OpChannel::PopLocked() {
  v1::Frame f = std::move(queue_.front().first);
  size_t bytes = queue_.front().second;
  queue_.pop_front();
  queued_bytes_ -= bytes;
  budget_->queued -= bytes;
  return f;
}

absl::StatusOr<v1::Frame> OpChannel::Next(absl::Time deadline) {
  absl::MutexLock lock(&budget_->mu);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(budget_->mu) {
    return !queue_.empty() || !broken_.ok();
  };
  budget_->mu.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (!queue_.empty()) return PopLocked();
  if (!broken_.ok()) return broken_;
  return absl::DeadlineExceededError("no answer from the guest agent in time");
}

absl::StatusOr<std::optional<v1::Frame>> OpChannel::TryNext() {
  absl::MutexLock lock(&budget_->mu);
  if (!queue_.empty()) return PopLocked();
  if (!broken_.ok()) return broken_;
  return std::nullopt;
}

void OpChannel::Push(v1::Frame frame) {
  const size_t bytes = QueuedSize(frame);
  absl::MutexLock lock(&budget_->mu);
  if (abandoned_ || !broken_.ok()) return;
  if (mode_ == Mode::kFollow) {
    // A follower that is behind must not stall this VM's reader (and with
    // it every other operation): it fails, and can start again from the
    // guest's buffer.
    if (queued_bytes_ + bytes > kMaxQueuedBytes ||
        budget_->queued + bytes > kMaxConnectionQueuedBytes) {
      broken_ = absl::ResourceExhaustedError(absl::StrCat(
          "the client fell more than ", kMaxQueuedBytes >> 20,
          " MiB behind the guest; start again (a process's output: with a tail)"));
      ClearLocked();
      return;
    }
  } else if (mode_ == Mode::kResult) {
    // Nobody may be draining this queue (an upload sending its data): never
    // wait for room, fail the operation instead.
    if (queued_bytes_ + bytes > kMaxResultQueuedBytes) {
      broken_ = absl::ResourceExhaustedError(
          absl::StrCat("the guest agent sent more than ", kMaxResultQueuedBytes,
                       " bytes this operation had not read"));
      ClearLocked();
      return;
    }
  } else {
    // Back-pressure: a consumer that is behind stalls this VM's reader,
    // which stalls the guest's writes; nothing is dropped and nothing grows.
    // A frame is at most kMaxFrameBytes + overhead, less than either bound,
    // so the wait ends once the consumers drain.
    auto room = [this, bytes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(budget_->mu) {
      return abandoned_ || !broken_.ok() ||
             (queued_bytes_ + bytes <= kMaxQueuedBytes &&
              budget_->queued + bytes <= kMaxConnectionQueuedBytes);
    };
    budget_->mu.Await(absl::Condition(&room));
    if (abandoned_ || !broken_.ok()) return;
  }
  queued_bytes_ += bytes;
  budget_->queued += bytes;
  budget_->peak = std::max(budget_->peak, budget_->queued);
  if (frame.has_exec_exit()) exited_ = true;
  queue_.emplace_back(std::move(frame), bytes);
}

void OpChannel::Ack(uint64_t consumed) {
  absl::MutexLock lock(&budget_->mu);
  consumed_ = std::max(consumed_, consumed);
}

absl::StatusOr<bool> OpChannel::AwaitConsumed(uint64_t consumed, absl::Time deadline) {
  absl::MutexLock lock(&budget_->mu);
  auto ready = [this, consumed]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(budget_->mu) {
    return consumed_ >= consumed || exited_ || !broken_.ok();
  };
  budget_->mu.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (consumed_ >= consumed) return true;
  if (exited_) return absl::FailedPreconditionError("the command has exited");
  if (!broken_.ok()) return broken_;
  return false;
}

bool OpChannel::exited() const {
  absl::MutexLock lock(&budget_->mu);
  return exited_;
}

void OpChannel::Fail(absl::Status status) {
  absl::MutexLock lock(&budget_->mu);
  if (broken_.ok()) broken_ = std::move(status);
}

void OpChannel::Abandon() {
  absl::MutexLock lock(&budget_->mu);
  abandoned_ = true;
  if (broken_.ok()) broken_ = absl::CancelledError("the operation ended");
  ClearLocked();
}

// ---- ChannelExecHandle ----

ChannelExecHandle::~ChannelExecHandle() {
  // Free the queue first (and let a reader waiting for room in it move on),
  // then tell the guest; the cancel is bounded by the send deadline.
  client_->Unregister(id_);
  if (!done_ && client_->healthy()) {
    v1::Frame cancel;
    cancel.mutable_exec_cancel()->set_id(id_);
    (void)client_->Send(cancel);
  }
}

absl::StatusOr<ExecEvent> ChannelExecHandle::Next(absl::Time deadline) {
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
      ev.skipped_bytes = frame->exec_output().skipped_bytes();
      return ev;
    }
    if (frame->has_proc_reply() && !frame->proc_reply().error().empty()) {
      // A refused ProcAttach (no such process).
      done_ = true;
      const v1::ProcReply& r = frame->proc_reply();
      return GuestErrnoError(r.error_errno(), absl::StrCat("attach: ", r.error()));
    }
    if (frame->has_exec_exit()) {
      const auto& e = frame->exec_exit();
      done_ = true;
      if (!e.start_error().empty()) {
        // start_errno says why (protocol 3): no such program NOT_FOUND, not
        // executable PERMISSION_DENIED; older agents: FAILED_PRECONDITION.
        return GuestErrnoError(e.start_errno(), absl::StrCat("exec in guest: ", e.start_error()));
      }
      ev.kind = ExecEvent::Kind::kExit;
      ev.exit_code = e.exit_code();
      ev.signal = e.signal();
      ev.timed_out = e.timed_out();
      return ev;
    }
    // Anything else for this id is a confused guest; drop it.
  }
}

absl::Status ChannelExecHandle::CheckInteractive() const {
  if (interactive_) return absl::OkStatus();
  return absl::FailedPreconditionError("not an interactive exec");
}

absl::StatusOr<size_t> ChannelExecHandle::WriteStdin(absl::string_view data,
                                                     absl::Time deadline) {
  SMOLVM_RETURN_IF_ERROR(CheckInteractive());
  absl::MutexLock lock(&input_mu_);
  if (stdin_closed_) return absl::FailedPreconditionError("stdin is closed");
  if (channel_->exited()) return absl::FailedPreconditionError("the command has exited");
  size_t sent = 0;
  while (sent < data.size()) {
    const size_t len = std::min(kMaxChunkBytes, data.size() - sent);
    // Room for this chunk: the guest took all but kStdinWindow bytes.
    const uint64_t after = stdin_sent_ + len;
    if (after > kStdinWindow) {
      SMOLVM_ASSIGN_OR_RETURN(bool room, channel_->AwaitConsumed(after - kStdinWindow, deadline));
      if (!room) break;
    }
    v1::Frame frame;
    auto* in = frame.mutable_exec_stdin();
    in->set_id(id_);
    in->set_data(data.data() + sent, len);
    SMOLVM_RETURN_IF_ERROR(client_->Send(frame));
    stdin_sent_ = after;
    sent += len;
  }
  return sent;
}

absl::Status ChannelExecHandle::CloseStdin() {
  SMOLVM_RETURN_IF_ERROR(CheckInteractive());
  absl::MutexLock lock(&input_mu_);
  if (stdin_closed_) return absl::OkStatus();
  stdin_closed_ = true;
  v1::Frame frame;
  frame.mutable_exec_stdin()->set_id(id_);
  frame.mutable_exec_stdin()->set_eof(true);
  return client_->Send(frame);
}

absl::Status ChannelExecHandle::Signal(int signal) {
  SMOLVM_RETURN_IF_ERROR(CheckInteractive());
  if (signal < 1 || signal > 64) {
    return absl::InvalidArgumentError(absl::StrCat("signal ", signal, " is not 1-64"));
  }
  v1::Frame frame;
  frame.mutable_exec_signal()->set_id(id_);
  frame.mutable_exec_signal()->set_signal(signal);
  return client_->Send(frame);
}

absl::Status ChannelExecHandle::Resize(TerminalSize size) {
  SMOLVM_RETURN_IF_ERROR(CheckInteractive());
  v1::Frame frame;
  auto* resize = frame.mutable_exec_resize();
  resize->set_id(id_);
  resize->mutable_size()->set_rows(size.rows);
  resize->mutable_size()->set_cols(size.cols);
  return client_->Send(frame);
}

// ---- ChannelWatchHandle ----

ChannelWatchHandle::~ChannelWatchHandle() {
  client_->Unregister(id_);
  // Also after a local end (a client too slow): the guest's watch goes on
  // until told.
  if (!guest_ended_ && client_->healthy()) {
    v1::Frame cancel;
    cancel.mutable_exec_cancel()->set_id(id_);
    (void)client_->Send(cancel);
  }
}

absl::StatusOr<FsChange> ChannelWatchHandle::Next(absl::Time deadline) {
  if (!ended_.ok()) return ended_;
  while (true) {
    auto frame = channel_->Next(deadline);
    if (!frame.ok()) {
      if (!absl::IsDeadlineExceeded(frame.status())) {
        ended_ = Annotated(frame.status(), what_);
        return ended_;
      }
      return frame.status();
    }
    if (!frame->has_fs_event()) continue;  // A confused guest; drop it.
    const v1::FsEvent& e = frame->fs_event();
    FsChange change;
    switch (e.type()) {
      case v1::FsEvent::CREATE: change.kind = FsChange::Kind::kCreate; break;
      case v1::FsEvent::MODIFY: change.kind = FsChange::Kind::kModify; break;
      case v1::FsEvent::DELETE: change.kind = FsChange::Kind::kDelete; break;
      case v1::FsEvent::RENAME: change.kind = FsChange::Kind::kRename; break;
      case v1::FsEvent::CHMOD: change.kind = FsChange::Kind::kChmod; break;
      case v1::FsEvent::OVERFLOW: change.kind = FsChange::Kind::kOverflow; break;
      case v1::FsEvent::ERROR:
        guest_ended_ = true;
        ended_ = GuestErrnoError(e.error_errno(), absl::StrCat(what_, ": ", e.error()));
        return ended_;
      default:
        continue;  // WATCHING again, or a type from a newer agent.
    }
    change.path = e.path();
    change.old_path = e.old_path();
    change.is_dir = e.is_dir();
    return change;
  }
}

// ---- AgentClient ----

AgentClient::AgentClient(UniqueFd fd, const AgentClientOptions& options)
    : options_(options), fd_(std::move(fd)) {}

AgentClient::~AgentClient() {
  Close(absl::UnavailableError("agent connection closed"));
  if (reader_.joinable()) reader_.join();
}

size_t AgentClient::queued_bytes() const {
  absl::MutexLock lock(&budget_->mu);
  return budget_->queued;
}

size_t AgentClient::peak_queued_bytes() const {
  absl::MutexLock lock(&budget_->mu);
  return budget_->peak;
}

absl::StatusOr<std::shared_ptr<AgentClient>> AgentClient::Connect(
    const std::string& socket_path, absl::Duration timeout,
    const std::function<absl::Status()>& abort_check, const AgentClientOptions& options) {
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
  auto client = ConnectFd(*std::move(fd), deadline - absl::Now(), abort_check, options);
  if (absl::IsUnavailable(client.status())) {
    return absl::UnavailableError(absl::StrCat("agent on ", socket_path, ": ",
                                               client.status().message()));
  }
  return client;
}

absl::StatusOr<std::shared_ptr<AgentClient>> AgentClient::ConnectFd(
    UniqueFd fd, absl::Duration timeout, const std::function<absl::Status()>& abort_check,
    const AgentClientOptions& options) {
  absl::Time deadline = absl::Now() + timeout;
  std::shared_ptr<AgentClient> client(new AgentClient(std::move(fd), options));
  client->reader_ = std::thread([c = client.get()] { c->ReaderLoop(); });
  v1::Frame hello;
  hello.mutable_hello_request()->set_host_protocol_version(v1::PROTOCOL_VERSION);
  while (true) {
    absl::Status sent = client->Send(hello, deadline);
    if (!sent.ok() && !absl::IsDeadlineExceeded(sent)) return sent;
    {
      absl::MutexLock lock(&client->mu_);
      // Captures `client` by reference: clang resolves the lock annotation's
      // names outside the lambda, where an init-capture does not exist.
      auto greeted = [&client]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(client->mu_) {
        return client->hello_seen_ || client->legacy_ready_ || client->broken_.load();
      };
      client->mu_.AwaitWithTimeout(absl::Condition(&greeted), absl::Milliseconds(100));
      if (client->hello_seen_) {
        client->has_agent_ = true;
        return client;
      }
      if (client->legacy_ready_) return client;
    }
    if (client->broken_) {
      return absl::UnavailableError("the agent closed the connection during the greeting");
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
  std::map<uint64_t, std::shared_ptr<OpChannel>> ops;
  {
    absl::MutexLock lock(&mu_);
    if (!broken_) close_reason_ = why;
    broken_ = true;
    ops = ops_;
  }
  // Wakes the reader (its read() returns 0, it exits) and any writer in
  // poll(); the fd itself stays open until the destructor.
  shutdown(fd_.get(), SHUT_RDWR);
  for (auto& [id, op] : ops) op->Fail(why);
  // Senders waiting for their turn re-check broken_.
  absl::MutexLock lock(&write_mu_);
}

absl::Status AgentClient::ClosedError() {
  absl::MutexLock lock(&mu_);
  return absl::UnavailableError(
      absl::StrCat("the guest agent connection is closed (", close_reason_.message(), ")"));
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
    while (!broken_) {
      v1::Frame frame;
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
          if (!hello_seen_) {
            agent_version_ = frame.hello().agent_version();
            protocol_version_ = frame.hello().protocol_version();
          }
          hello_seen_ = true;
          ++hellos_;
          continue;
        }
        case v1::Frame::kExecOutput: id = frame.exec_output().id(); break;
        case v1::Frame::kExecExit: id = frame.exec_exit().id(); break;
        case v1::Frame::kFileData: id = frame.file_data().id(); break;
        case v1::Frame::kOpResult: id = frame.op_result().id(); break;
        case v1::Frame::kFsReply: id = frame.fs_reply().id(); break;
        case v1::Frame::kFsEvent: id = frame.fs_event().id(); break;
        case v1::Frame::kProcReply: id = frame.proc_reply().id(); break;
        case v1::Frame::kExecStdinAck: {
          // Not queued: a writer waits for it while the output may be
          // stalled behind a slow consumer.
          std::shared_ptr<OpChannel> op;
          {
            absl::MutexLock lock(&mu_);
            auto it = ops_.find(frame.exec_stdin_ack().id());
            if (it != ops_.end()) op = it->second;
          }
          if (op) op->Ack(frame.exec_stdin_ack().consumed_bytes());
          continue;
        }
        default: continue;  // Not something a guest sends; drop it.
      }
      // Queues count a frame's wire size; a reply of many empty entries
      // takes ~100 times that once parsed. The agent never sends more than
      // its documented bounds, so more is a hostile guest: disconnect.
      if (frame.fs_reply().entries_size() > kMaxFsReplyEntries ||
          frame.proc_reply().processes_size() > kMaxProcReplyProcesses) {
        Close(absl::UnavailableError(
            "the guest agent sent a reply with more entries than the protocol allows"));
        return;
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

absl::Status AgentClient::Send(const v1::Frame& frame, absl::Time deadline) {
  if (broken_) return ClosedError();
  std::string bytes;
  if (!EncodeFrame(frame, &bytes)) return absl::InvalidArgumentError("agent frame too large");
  const absl::Time stall_deadline = absl::Now() + options_.send_timeout;
  const bool op_deadline_first = deadline < stall_deadline;
  const absl::Time until = std::min(deadline, stall_deadline);
  auto stalled = [&]() {
    return absl::UnavailableError(absl::StrCat(
        "the guest agent stopped reading: a frame of ", bytes.size(),
        " bytes was not taken within ", absl::FormatDuration(options_.send_timeout)));
  };
  enum class Turn { kMine, kClosed, kTimedOut } turn;
  {
    // Wait for the turn to write; the writer before is bounded the same way.
    absl::MutexLock lock(&write_mu_);
    auto my_turn = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_) {
      return !writing_ || broken_.load();
    };
    write_mu_.AwaitWithDeadline(absl::Condition(&my_turn), until);
    if (broken_) {
      turn = Turn::kClosed;
    } else if (writing_) {
      turn = Turn::kTimedOut;
    } else {
      writing_ = true;
      turn = Turn::kMine;
    }
  }
  if (turn == Turn::kClosed) return ClosedError();
  if (turn == Turn::kTimedOut) {
    // Nothing of this frame was written: the stream is intact, and the
    // writer ahead closes the connection if the guest stopped reading.
    if (op_deadline_first) {
      return absl::DeadlineExceededError("the guest agent did not take earlier frames in time");
    }
    return stalled();
  }
  absl::Cleanup give_turn = [this] {
    absl::MutexLock lock(&write_mu_);
    writing_ = false;
  };
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = send(fd_.get(), bytes.data() + off, bytes.size() - off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      absl::Duration left = until - absl::Now();
      if (left <= absl::ZeroDuration()) {
        if (op_deadline_first && off == 0) {
          return absl::DeadlineExceededError("the guest agent did not take the frame in time");
        }
        // A frame cut off midway leaves the stream unusable.
        absl::Status why = op_deadline_first
                               ? absl::UnavailableError(
                                     "a frame to the guest agent was cut off at the deadline")
                               : stalled();
        Close(why);
        return op_deadline_first ? absl::DeadlineExceededError(why.message()) : why;
      }
      pollfd p{fd_.get(), POLLOUT, 0};
      int ms = static_cast<int>(
          std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
                            60 * 1000));
      if (poll(&p, 1, std::max(ms, 1)) < 0 && errno != EINTR) {
        Close(absl::UnavailableError(absl::StrCat("poll the guest agent: ", strerror(errno))));
        return ClosedError();
      }
      continue;
    }
    Close(absl::UnavailableError(absl::StrCat(
        "write to the guest agent: ", n < 0 ? strerror(errno) : "nothing written")));
    return ClosedError();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::pair<uint64_t, std::shared_ptr<OpChannel>>> AgentClient::Register(
    OpChannel::Mode mode) {
  auto op = std::make_shared<OpChannel>(budget_, mode);
  absl::MutexLock lock(&mu_);
  if (ops_.size() >= kMaxOperations) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many concurrent operations on this VM's guest agent (at most ", kMaxOperations,
        ")"));
  }
  uint64_t id = next_id_++;
  ops_[id] = op;
  if (broken_) {
    op->Fail(absl::UnavailableError(
        absl::StrCat("the guest agent connection is closed (", close_reason_.message(), ")")));
  }
  return std::make_pair(id, std::move(op));
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
  op->Abandon();
}

absl::StatusOr<std::unique_ptr<ExecHandle>> AgentClient::StartExec(const ExecSpec& spec) {
  if (!has_agent_) {
    return absl::FailedPreconditionError(
        "the guest has no smolvm agent (custom image?); exec needs the default image's agent");
  }
  SMOLVM_RETURN_IF_ERROR(CheckUserSupported(spec.user, protocol_version_));
  if (spec.interactive || spec.tty) {
    SMOLVM_RETURN_IF_ERROR(CheckInteractiveSupported(protocol_version_));
    if (!spec.interactive || spec.stdin_data) {
      return absl::InvalidArgumentError(
          "an interactive exec takes its stdin through the handle, and only it has a tty");
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kStream));
  auto [id, op] = std::move(reg);
  std::unique_ptr<ExecHandle> handle(
      new ChannelExecHandle(shared_from_this(), id, op, spec.interactive));
  v1::Frame start;
  auto* s = start.mutable_exec_start();
  s->set_id(id);
  for (const auto& a : spec.argv) s->add_argv(a);
  for (const auto& [k, v] : spec.env) (*s->mutable_env())[k] = v;
  s->set_cwd(spec.cwd);
  s->set_user(spec.user);
  s->set_timeout_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(spec.timeout)));
  s->set_stdin_follows(spec.stdin_data.has_value() || spec.interactive);
  if (spec.interactive) {
    s->set_interactive(true);
    s->set_ack_stdin(true);
    if (spec.tty) {
      s->mutable_tty()->set_rows(spec.tty->rows);
      s->mutable_tty()->set_cols(spec.tty->cols);
    }
  }
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

absl::StatusOr<v1::OpResult> AgentClient::AwaitResult(OpChannel& channel, absl::Time deadline,
                                                      const std::string& what) {
  while (true) {
    auto frame = channel.Next(deadline);
    if (!frame.ok()) return Annotated(frame.status(), what);
    if (!frame->has_op_result()) continue;
    if (!frame->op_result().error().empty()) return GuestError(what, frame->op_result());
    return frame->op_result();
  }
}

absl::StatusOr<FileInfo> AgentClient::WriteFile(
    const FileRequest& request,
    const std::function<absl::StatusOr<std::string>()>& next_chunk, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckUserSupported(request.user, protocol_version_));
  const std::string& path = request.path;
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kResult));
  const uint64_t id = reg.first;
  std::shared_ptr<OpChannel> op = std::move(reg.second);
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const std::string what = absl::StrCat("upload ", path);
  absl::Time deadline = absl::Now() + timeout;
  v1::Frame start;
  auto* s = start.mutable_file_write_start();
  s->set_id(id);
  s->set_path(path);
  s->set_mode(request.mode);
  s->set_tar(request.tar);
  s->set_make_parents(request.make_parents);
  s->set_user(request.user);
  if (auto st = Send(start, deadline); !st.ok()) return Annotated(st, what);
  // Drains what the guest sent while the data goes out: nothing legitimate
  // but an early error (the agent could not write the file), which ends the
  // upload; the operation failed if the guest overflowed the queue.
  auto drain = [&]() -> absl::Status {
    while (true) {
      auto frame = op->TryNext();
      if (!frame.ok()) return Annotated(frame.status(), what);
      if (!frame->has_value()) return absl::OkStatus();
      if (!(*frame)->has_op_result()) continue;
      const v1::OpResult& r = (*frame)->op_result();
      if (!r.error().empty()) return GuestError(what, r);
      return absl::InternalError(
          absl::StrCat(what, ": the guest agent reported success before the data ended"));
    }
  };
  while (true) {
    SMOLVM_RETURN_IF_ERROR(drain());
    auto chunk = next_chunk();
    if (!chunk.ok()) {
      // The caller gave up (e.g. CANCELLED): free the queue now, then tell
      // the agent to abandon the upload (never an eof, which would commit
      // the partial file); the caller's error wins.
      Unregister(id);
      v1::Frame cancel;
      cancel.mutable_exec_cancel()->set_id(id);
      (void)Send(cancel, deadline);
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
      if (auto st = Send(data, deadline); !st.ok()) return Annotated(st, what);
      if (off < chunk->size()) SMOLVM_RETURN_IF_ERROR(drain());
    } while (off < chunk->size());
    if (chunk->empty()) break;
  }
  SMOLVM_ASSIGN_OR_RETURN(v1::OpResult result, AwaitResult(*op, deadline, what));
  return FileInfo{result.bytes(), result.mode()};
}

absl::StatusOr<FileInfo> AgentClient::ReadFile(
    const FileRequest& request,
    const std::function<absl::Status(const std::string&)>& sink, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckUserSupported(request.user, protocol_version_));
  const std::string& path = request.path;
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kStream));
  const uint64_t id = reg.first;
  std::shared_ptr<OpChannel> op = std::move(reg.second);
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  absl::Time deadline = absl::Now() + timeout;
  const std::string what = absl::StrCat("download ", path);
  v1::Frame start;
  auto* s = start.mutable_file_read_start();
  s->set_id(id);
  s->set_path(path);
  s->set_tar(request.tar);
  s->set_user(request.user);
  if (auto st = Send(start, deadline); !st.ok()) return Annotated(st, what);
  while (true) {
    auto frame = op->Next(deadline);
    if (!frame.ok()) return Annotated(frame.status(), what);
    if (frame->has_file_data()) {
      if (!frame->file_data().data().empty()) {
        if (auto st = sink(frame->file_data().data()); !st.ok()) return st;
      }
      continue;
    }
    if (frame->has_op_result()) {
      if (!frame->op_result().error().empty()) return GuestError(what, frame->op_result());
      return FileInfo{frame->op_result().bytes(), frame->op_result().mode()};
    }
  }
}

absl::StatusOr<absl::Time> AgentClient::SetClock(absl::Time now, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kResult));
  const uint64_t id = reg.first;
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const absl::Time deadline = absl::Now() + timeout;
  const std::string what = "set the guest clock";
  v1::Frame f;
  f.mutable_set_clock()->set_id(id);
  f.mutable_set_clock()->set_unix_time_ns(absl::ToUnixNanos(now));
  if (absl::Status sent = Send(f, deadline); !sent.ok()) return Annotated(sent, what);
  SMOLVM_ASSIGN_OR_RETURN(v1::OpResult r, AwaitResult(*reg.second, deadline, what));
  return absl::FromUnixNanos(r.guest_time_ns());
}

absl::Status AgentClient::AddEntropy(const std::string& seed, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kResult));
  const uint64_t id = reg.first;
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const absl::Time deadline = absl::Now() + timeout;
  const std::string what = "reseed the guest's entropy";
  v1::Frame f;
  f.mutable_add_entropy()->set_id(id);
  f.mutable_add_entropy()->set_seed(seed);
  if (absl::Status sent = Send(f, deadline); !sent.ok()) return Annotated(sent, what);
  return AwaitResult(*reg.second, deadline, what).status();
}

absl::StatusOr<absl::Time> AgentClient::Reidentify(const Reidentity& r,
                                                   absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  if (protocol_version_ < kReidentifyProtocolVersion) {
    return absl::UnimplementedError(absl::StrCat(
        "the guest agent speaks protocol ", protocol_version_.load(), "; Reidentify needs ",
        kReidentifyProtocolVersion));
  }
  if (r.network) SMOLVM_RETURN_IF_ERROR(ValidateNetworkIdentity(*r.network));
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kResult));
  const uint64_t id = reg.first;
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const absl::Time deadline = absl::Now() + timeout;
  const std::string what = "reidentify the guest";
  v1::Frame f;
  v1::Reidentify* req = f.mutable_reidentify();
  req->set_id(id);
  if (r.clock) req->set_unix_time_ns(absl::ToUnixNanos(*r.clock));
  req->set_entropy_seed(r.entropy_seed);
  if (r.network) {
    v1::NetworkIdentity* n = req->mutable_network();
    n->set_interface(r.network->interface);
    n->set_mac(r.network->mac);
    n->set_ipv4_address(r.network->ipv4_address);
    n->set_prefix_length(r.network->prefix_length);
    n->set_gateway(r.network->gateway);
    n->set_dns_server(r.network->dns_server);
  }
  if (absl::Status sent = Send(f, deadline); !sent.ok()) return Annotated(sent, what);
  SMOLVM_ASSIGN_OR_RETURN(v1::OpResult result, AwaitResult(*reg.second, deadline, what));
  return absl::FromUnixNanos(result.guest_time_ns());
}

absl::StatusOr<FsResult> AgentClient::FileSystem(const FsCall& call, absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckFsSupported(protocol_version_));
  // A listing's reply is up to one full frame, more than a kResult queue
  // takes: a streaming queue, drained right here.
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kStream));
  const uint64_t id = reg.first;
  std::shared_ptr<OpChannel> op = std::move(reg.second);
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const absl::Time deadline = absl::Now() + timeout;
  const std::string what = absl::StrCat(FsOpName(call.op), " ", call.path);
  v1::Frame frame;
  auto* r = frame.mutable_fs_request();
  r->set_id(id);
  r->set_op(ToProto(call.op));
  r->set_path(call.path);
  r->set_user(call.user);
  r->set_depth(call.depth);
  r->set_parents(call.parents);
  r->set_mode(call.mode);
  r->set_recursive(call.recursive);
  r->set_new_path(call.new_path);
  r->set_overwrite(call.overwrite);
  if (auto st = Send(frame, deadline); !st.ok()) return Annotated(st, what);
  while (true) {
    auto reply = op->Next(deadline);
    if (!reply.ok()) return Annotated(reply.status(), what);
    if (!reply->has_fs_reply()) continue;
    const v1::FsReply& fr = reply->fs_reply();
    if (!fr.error().empty()) {
      if (call.op == FsCall::Op::kRemove && fr.error_errno() == ENOTEMPTY) {
        // Not a name clash (rename's ENOTEMPTY): the directory has content.
        return absl::FailedPreconditionError(absl::StrCat(
            what, ": ", fr.error(), " (remove it with recursive to delete its content too)"));
      }
      return GuestErrnoError(fr.error_errno(), absl::StrCat(what, ": ", fr.error()));
    }
    FsResult result;
    result.entries.reserve(fr.entries_size());
    for (const auto& e : fr.entries()) result.entries.push_back(FromProto(e));
    result.truncated = fr.truncated();
    result.created = fr.created();
    return result;
  }
}

absl::StatusOr<std::unique_ptr<WatchHandle>> AgentClient::WatchDir(const std::string& path,
                                                                   const std::string& user,
                                                                   bool recursive,
                                                                   absl::Duration timeout) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckFsSupported(protocol_version_));
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kFollow));
  auto [id, op] = std::move(reg);
  const std::string what = absl::StrCat("watch ", path);
  // From here the handle owns the id: its destruction cancels the watch.
  std::unique_ptr<ChannelWatchHandle> handle(
      new ChannelWatchHandle(shared_from_this(), id, op, what));
  const absl::Time deadline = absl::Now() + timeout;
  v1::Frame frame;
  auto* w = frame.mutable_fs_watch();
  w->set_id(id);
  w->set_path(path);
  w->set_user(user);
  w->set_recursive(recursive);
  if (auto st = Send(frame, deadline); !st.ok()) return Annotated(st, what);
  while (true) {
    auto reply = op->Next(deadline);
    if (!reply.ok()) return Annotated(reply.status(), what);
    if (!reply->has_fs_event()) continue;
    const v1::FsEvent& e = reply->fs_event();
    if (e.type() == v1::FsEvent::WATCHING) return std::unique_ptr<WatchHandle>(std::move(handle));
    if (e.type() == v1::FsEvent::ERROR) {
      handle->guest_ended_ = true;
      handle->ended_ = GuestErrnoError(e.error_errno(), absl::StrCat(what, ": ", e.error()));
      return handle->ended_;
    }
    // A change before WATCHING would be a confused guest; drop it.
  }
}

absl::StatusOr<v1::ProcReply> AgentClient::ProcCall(v1::Frame request, absl::Duration timeout,
                                                    const std::string& what) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckProcessSupported(protocol_version_));
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kStream));
  const uint64_t id = reg.first;
  std::shared_ptr<OpChannel> op = std::move(reg.second);
  absl::Cleanup unregister = [this, id] { Unregister(id); };
  const absl::Time deadline = absl::Now() + timeout;
  switch (request.msg_case()) {
    case v1::Frame::kProcStart: request.mutable_proc_start()->set_id(id); break;
    case v1::Frame::kProcList: request.mutable_proc_list()->set_id(id); break;
    case v1::Frame::kProcSignal: request.mutable_proc_signal()->set_id(id); break;
    default: return absl::InternalError("ProcCall: not a process request");
  }
  if (auto st = Send(request, deadline); !st.ok()) return Annotated(st, what);
  while (true) {
    auto reply = op->Next(deadline);
    if (!reply.ok()) return Annotated(reply.status(), what);
    if (!reply->has_proc_reply()) continue;
    const v1::ProcReply& r = reply->proc_reply();
    if (!r.error().empty()) {
      return GuestErrnoError(r.error_errno(), absl::StrCat(what, ": ", r.error()));
    }
    return std::move(*reply->mutable_proc_reply());
  }
}

absl::StatusOr<ProcessInfo> AgentClient::StartProcess(const ExecSpec& spec,
                                                      absl::Duration timeout) {
  SMOLVM_RETURN_IF_ERROR(CheckUserSupported(spec.user, protocol_version_));
  v1::Frame frame;
  auto* s = frame.mutable_proc_start();
  for (const auto& a : spec.argv) s->add_argv(a);
  for (const auto& [k, v] : spec.env) (*s->mutable_env())[k] = v;
  s->set_cwd(spec.cwd);
  s->set_user(spec.user);
  SMOLVM_ASSIGN_OR_RETURN(
      v1::ProcReply reply,
      ProcCall(std::move(frame), timeout,
               absl::StrCat("start process ", spec.argv.empty() ? "" : spec.argv[0])));
  if (reply.processes_size() != 1) {
    return absl::InternalError("the guest agent started a process without reporting it");
  }
  return FromProto(reply.processes(0));
}

absl::StatusOr<std::vector<ProcessInfo>> AgentClient::ListProcesses(absl::Duration timeout) {
  v1::Frame frame;
  frame.mutable_proc_list();
  SMOLVM_ASSIGN_OR_RETURN(v1::ProcReply reply,
                          ProcCall(std::move(frame), timeout, "list processes"));
  std::vector<ProcessInfo> out;
  out.reserve(reply.processes_size());
  for (const auto& p : reply.processes()) out.push_back(FromProto(p));
  return out;
}

absl::StatusOr<ProcessInfo> AgentClient::SignalProcess(int32_t pid, int signal, bool group,
                                                       absl::Duration timeout) {
  v1::Frame frame;
  auto* s = frame.mutable_proc_signal();
  s->set_pid(pid);
  s->set_signal(signal);
  s->set_group(group);
  SMOLVM_ASSIGN_OR_RETURN(
      v1::ProcReply reply,
      ProcCall(std::move(frame), timeout, absl::StrCat("signal process ", pid)));
  if (reply.processes_size() != 1) {
    return absl::InternalError("the guest agent signalled a process without reporting it");
  }
  return FromProto(reply.processes(0));
}

absl::StatusOr<std::unique_ptr<ExecHandle>> AgentClient::AttachProcess(int32_t pid,
                                                                      uint32_t tail_bytes,
                                                                      bool output) {
  if (!has_agent_) return absl::FailedPreconditionError("the guest has no smolvm agent");
  SMOLVM_RETURN_IF_ERROR(CheckProcessSupported(protocol_version_));
  SMOLVM_ASSIGN_OR_RETURN(auto reg, Register(OpChannel::Mode::kFollow));
  auto [id, op] = std::move(reg);
  // The handle's end sends ExecCancel: a detach, for an attach.
  std::unique_ptr<ExecHandle> handle(new ChannelExecHandle(shared_from_this(), id, op));
  v1::Frame frame;
  auto* a = frame.mutable_proc_attach();
  a->set_id(id);
  a->set_pid(pid);
  a->set_tail_bytes(tail_bytes);
  a->set_output(output);
  if (auto st = Send(frame); !st.ok()) return st;
  return handle;
}

absl::Status AgentClient::Ping(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  uint64_t before;
  {
    absl::MutexLock lock(&mu_);
    before = hellos_;
  }
  v1::Frame f;
  f.mutable_hello_request()->set_host_protocol_version(v1::PROTOCOL_VERSION);
  if (auto s = Send(f, deadline); !s.ok()) return s;
  absl::MutexLock lock(&mu_);
  auto answered = [this, before]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return hellos_ > before || broken_.load();
  };
  if (!mu_.AwaitWithDeadline(absl::Condition(&answered), deadline)) {
    return absl::DeadlineExceededError("agent ping timed out");
  }
  if (hellos_ == before) return absl::UnavailableError("the guest agent connection is closed");
  return absl::OkStatus();
}

}  // namespace smolvm::agent

namespace smolvm::agent {
namespace {

class AgentConnector : public GuestConnector {
 public:
  absl::StatusOr<std::shared_ptr<GuestAgent>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check) override {
    auto client = AgentClient::Connect(socket_path, timeout, abort_check);
    if (!client.ok()) return client.status();
    return std::shared_ptr<GuestAgent>(*std::move(client));
  }
};

}  // namespace

std::unique_ptr<GuestConnector> NewAgentConnector() { return std::make_unique<AgentConnector>(); }

}  // namespace smolvm::agent
