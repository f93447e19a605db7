// File: agent_client.h
//
// AgentClient is the host side of the guest-agent protocol
// (proto/smolvm/agent/v1/agent.proto) on one VM's virtio-serial socket.
// One connection carries many concurrent operations (execs, file transfers,
// clock and entropy fixes), told apart by id.
//
// Safety against a hostile guest. Nothing the guest sends can throw, crash
// the daemon, block another VM or make the daemon hold unbounded memory:
//   - Frames are bounded (kMaxFrameBytes, 1 MiB); an oversized or
//     unparsable frame closes the connection (every pending operation fails
//     with UNAVAILABLE; the daemon reconnects for the next one).
//   - Every queued inbound frame counts its full encoded size
//     (ByteSizeLong(), unknown fields included) plus kQueuedFrameOverhead.
//   - Streaming operations (exec output, downloads), whose consumer drains
//     the queue as it goes: an operation holds at most kMaxQueuedBytes and
//     the connection's streaming operations together at most
//     kMaxConnectionQueuedBytes; a full queue makes this VM's reader wait
//     for the consumer (back-pressure through virtio-serial: the guest's
//     writes block), nothing is dropped.
//   - Following operations (directory watches, attaches to a background
//     process) have the same bounds but never make the reader wait: a
//     consumer that lags past them fails with RESOURCE_EXHAUSTED (the guest
//     keeps the process's output; a watch can be started again).
//   - A reply with more entries than the protocol allows (a listing over
//     10,000, over 64 processes) closes the connection: parsed, empty
//     entries take far more memory than their wire size.
//   - Request/result operations (uploads, clock, entropy, reidentify) expect one small
//     OpResult. An upload drains its queue between the chunks it sends; a
//     guest that queues more than kMaxResultQueuedBytes for one of them
//     fails that operation with RESOURCE_EXHAUSTED at once (its queue is
//     freed); the reader never waits for them.
//   - Frames for unknown or finished operations are dropped.
//   - At most kMaxOperations operations run at once per connection
//     (RESOURCE_EXHAUSTED beyond).
//   - Every send has a deadline: a frame the guest does not take within
//     AgentClientOptions::send_timeout (it stopped reading) closes the
//     connection: that VM's operations fail with UNAVAILABLE, the socket is
//     shut down so the reader thread exits, and no thread stays in a write
//     (the socket is written with MSG_DONTWAIT and poll()).
//   - Dropping an ExecHandle (client cancel), or an upload whose data source
//     fails (e.g. CANCELLED), frees that operation's queue at once.
//
// Memory held for one VM's inbound traffic is therefore at most
//   kMaxConnectionQueuedBytes (16 MiB, streaming queues)
//   + kMaxOperations x kMaxResultQueuedBytes (64 x 64 KiB = 4 MiB)
//   + the reader's buffers: decoder <= 2 x (kMaxFrameBytes + 64 KiB) with
//     string growth, one decoded frame <= kMaxFrameBytes, a 64 KiB read
//     buffer
//   ~= 23.2 MiB, whatever the guest sends. (Outbound, each sending thread
// holds one encoded frame of at most kMaxFrameBytes.)
//
// Thread-safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/agent/guest_agent.h"
#include "lib/base/unique_fd.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::agent {

// Bytes one streaming operation (exec, download) may have queued from the
// guest before the reader waits for its consumer.
inline constexpr size_t kMaxQueuedBytes = 4 << 20;
// Bytes all streaming operations of one connection may have queued together.
inline constexpr size_t kMaxConnectionQueuedBytes = 16 << 20;
// Bytes a request/result operation (upload, clock, entropy) may have queued
// before it fails with RESOURCE_EXHAUSTED. Its one legitimate answer, an
// OpResult, is a few hundred bytes.
inline constexpr size_t kMaxResultQueuedBytes = 64 << 10;
// Counted per queued frame on top of its encoded size: the Frame and
// submessage objects, the deque slot, allocator headers.
inline constexpr size_t kQueuedFrameOverhead = 256;
// Concurrent operations per connection.
inline constexpr size_t kMaxOperations = 64;
// The most entries an agent's reply may carry (agent.proto: a listing is at
// most 10,000 entries; at most 64 processes are tracked). A frame with more
// closes the connection: parsed, empty entries take ~100 times their wire
// size, which the queue bounds would not see.
inline constexpr int kMaxFsReplyEntries = 10000;
inline constexpr int kMaxProcReplyProcesses = 64;

struct AgentClientOptions {
  // A frame the guest has not taken within this long (after it was this
  // frame's turn to be written, or since the send began when waiting for an
  // earlier frame) closes the connection with UNAVAILABLE.
  absl::Duration send_timeout = absl::Seconds(30);
};

class AgentClient;

// The queued bytes of one connection's operations, shared by its channels
// under one mutex (so a reader waiting for room sees any consumer's pop).
struct QueueBudget {
  absl::Mutex mu;
  size_t queued ABSL_GUARDED_BY(mu) = 0;
  size_t peak ABSL_GUARDED_BY(mu) = 0;
};

// The inbound side of one operation. Internal to AgentClient but exposed so
// exec handles can hold it.
class OpChannel {
 public:
  enum class Mode {
    kStream,  // Drained by its consumer; a full queue makes the reader wait.
    kResult,  // One small answer expected; over kMaxResultQueuedBytes fails.
    // Drained by its consumer, who may lag without harm to others (a
    // directory watch, an attach to a process: the guest can start either
    // again): a frame over kMaxQueuedBytes (or the connection's bound)
    // fails the operation with RESOURCE_EXHAUSTED instead of stalling the
    // reader.
    kFollow,
  };
  OpChannel(std::shared_ptr<QueueBudget> budget, Mode mode)
      : budget_(std::move(budget)), mode_(mode) {}
  ~OpChannel();
  OpChannel(const OpChannel&) = delete;
  OpChannel& operator=(const OpChannel&) = delete;

  // Waits for the next frame of this operation. UNAVAILABLE when the
  // connection broke, RESOURCE_EXHAUSTED when the guest overflowed a
  // kResult queue, DEADLINE_EXCEEDED at `deadline`.
  absl::StatusOr<v1::Frame> Next(absl::Time deadline);
  // The next queued frame without waiting: nullopt when none is queued.
  absl::StatusOr<std::optional<v1::Frame>> TryNext();
  // An interactive exec's stdin window: waits until the guest acknowledged
  // at least `consumed` bytes (ExecStdinAck, recorded by the reader without
  // queueing), by `deadline` (false then). FAILED_PRECONDITION once the
  // exec exited, the operation's failure if it failed.
  absl::StatusOr<bool> AwaitConsumed(uint64_t consumed, absl::Time deadline);
  // Whether an ExecExit of this operation has arrived.
  bool exited() const;

 private:
  friend class AgentClient;
  // Called by the reader. kStream: waits while the queue is full.
  void Push(v1::Frame frame);
  void Fail(absl::Status status);
  // Called by the reader for ExecStdinAck.
  void Ack(uint64_t consumed);
  // The operation is over: drops the queue (and any later frame) at once.
  void Abandon();
  void ClearLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(budget_->mu);
  absl::StatusOr<v1::Frame> PopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(budget_->mu);

  const std::shared_ptr<QueueBudget> budget_;
  const Mode mode_;
  std::deque<std::pair<v1::Frame, size_t>> queue_ ABSL_GUARDED_BY(budget_->mu);
  size_t queued_bytes_ ABSL_GUARDED_BY(budget_->mu) = 0;
  absl::Status broken_ ABSL_GUARDED_BY(budget_->mu);
  bool abandoned_ ABSL_GUARDED_BY(budget_->mu) = false;
  uint64_t consumed_ ABSL_GUARDED_BY(budget_->mu) = 0;  // ExecStdinAck's total
  bool exited_ ABSL_GUARDED_BY(budget_->mu) = false;    // an ExecExit was pushed
};

// The exec handle of an AgentClient: destroying it before the exit also
// frees its queue at once.
class ChannelExecHandle : public ExecHandle {
 public:
  ~ChannelExecHandle() override;
  absl::StatusOr<ExecEvent> Next(absl::Time deadline = absl::InfiniteFuture()) override;
  absl::StatusOr<size_t> WriteStdin(absl::string_view data, absl::Time deadline) override;
  absl::Status CloseStdin() override;
  absl::Status Signal(int signal) override;
  absl::Status Resize(TerminalSize size) override;

 private:
  friend class AgentClient;
  ChannelExecHandle(std::shared_ptr<AgentClient> client, uint64_t id,
                    std::shared_ptr<OpChannel> channel, bool interactive = false)
      : client_(std::move(client)),
        id_(id),
        channel_(std::move(channel)),
        interactive_(interactive) {}
  absl::Status CheckInteractive() const;
  std::shared_ptr<AgentClient> client_;
  uint64_t id_;
  std::shared_ptr<OpChannel> channel_;
  const bool interactive_;
  bool done_ = false;  // Next()'s thread only.
  // The input side (WriteStdin, CloseStdin), serialized by input_mu_.
  absl::Mutex input_mu_;
  uint64_t stdin_sent_ ABSL_GUARDED_BY(input_mu_) = 0;
  bool stdin_closed_ ABSL_GUARDED_BY(input_mu_) = false;
};

// The watch handle of an AgentClient: destroying it stops the watch in the
// guest (ExecCancel with its id) and frees its queue.
class ChannelWatchHandle : public WatchHandle {
 public:
  ~ChannelWatchHandle() override;
  absl::StatusOr<FsChange> Next(absl::Time deadline) override;

 private:
  friend class AgentClient;
  ChannelWatchHandle(std::shared_ptr<AgentClient> client, uint64_t id,
                     std::shared_ptr<OpChannel> channel, std::string what)
      : client_(std::move(client)),
        id_(id),
        channel_(std::move(channel)),
        what_(std::move(what)) {}
  std::shared_ptr<AgentClient> client_;
  uint64_t id_;
  std::shared_ptr<OpChannel> channel_;
  std::string what_;
  absl::Status ended_;       // Set once the watch ended.
  bool guest_ended_ = false;  // The guest ended it (an ERROR event).
};

class AgentClient : public GuestAgent, public std::enable_shared_from_this<AgentClient> {
 public:
  // Connects to `socket_path` and greets the agent: HelloRequest every
  // 100 ms until it answers. A guest image without an agent that writes the
  // legacy line "SMOLVM_READY\n" also counts as ready (has_agent() false).
  // Stops early with the status `abort_check` returns when not OK (e.g. the
  // VMM died). DEADLINE_EXCEEDED after `timeout`.
  static absl::StatusOr<std::shared_ptr<AgentClient>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check = nullptr,
      const AgentClientOptions& options = AgentClientOptions());
  // The same greeting over an already-connected stream socket (tests use a
  // socketpair). Takes ownership of `fd`.
  static absl::StatusOr<std::shared_ptr<AgentClient>> ConnectFd(
      UniqueFd fd, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check = nullptr,
      const AgentClientOptions& options = AgentClientOptions());
  ~AgentClient() override;
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  bool has_agent() const override { return has_agent_; }
  bool healthy() const override { return !broken_.load(); }
  const std::string& agent_version() const { return agent_version_; }
  uint32_t protocol_version() const override { return protocol_version_.load(); }

  // Bytes of guest frames queued now for this connection's operations, and
  // the most ever queued at once (as counted against the bounds above).
  size_t queued_bytes() const;
  size_t peak_queued_bytes() const;

  absl::StatusOr<std::unique_ptr<ExecHandle>> StartExec(const ExecSpec& spec) override;

  // Uploads: `next_chunk` returns the next piece of data, "" at the end.
  // An error the agent reports while the data is still being sent ends the
  // upload early (FAILED_PRECONDITION).
  absl::StatusOr<FileInfo> WriteFile(
      const FileRequest& request,
      const std::function<absl::StatusOr<std::string>()>& next_chunk,
      absl::Duration timeout) override;
  // Downloads: `sink` receives the data in order; an error from it aborts.
  absl::StatusOr<FileInfo> ReadFile(
      const FileRequest& request,
      const std::function<absl::Status(const std::string&)>& sink,
      absl::Duration timeout) override;

  // Steps the guest's wall clock; returns the guest's time right after.
  absl::StatusOr<absl::Time> SetClock(absl::Time now, absl::Duration timeout) override;
  // Mixes `seed` into the guest's entropy pool and reseeds its CRNG.
  absl::Status AddEntropy(const std::string& seed, absl::Duration timeout) override;
  // One Reidentify request and its OpResult (see GuestAgent).
  absl::StatusOr<absl::Time> Reidentify(const Reidentity& r, absl::Duration timeout) override;
  // A HelloRequest round trip (the latency floor of the channel).
  absl::Status Ping(absl::Duration timeout) override;
  // One FsRequest and its FsReply (a kStream operation: a listing's reply
  // may fill a whole frame).
  absl::StatusOr<FsResult> FileSystem(const FsCall& call, absl::Duration timeout) override;
  // An FsWatch whose FsEvents stream into a kStream queue: a consumer that
  // falls behind makes the guest's writes wait, and the guest's inotify
  // queue overflows (an OVERFLOW event) rather than anything growing here.
  absl::StatusOr<std::unique_ptr<WatchHandle>> WatchDir(const std::string& path,
                                                        const std::string& user, bool recursive,
                                                        absl::Duration timeout) override;
  // Background processes: ProcStart / ProcList / ProcSignal and their one
  // ProcReply, ProcAttach's output and exit like an exec's. All kStream:
  // a listing of 64 processes with long argvs may exceed a kResult queue.
  absl::StatusOr<ProcessInfo> StartProcess(const ExecSpec& spec,
                                           absl::Duration timeout) override;
  absl::StatusOr<std::vector<ProcessInfo>> ListProcesses(absl::Duration timeout) override;
  absl::StatusOr<ProcessInfo> SignalProcess(int32_t pid, int signal, bool group,
                                            absl::Duration timeout) override;
  absl::StatusOr<std::unique_ptr<ExecHandle>> AttachProcess(int32_t pid, uint32_t tail_bytes,
                                                            bool output) override;

 private:
  AgentClient(UniqueFd fd, const AgentClientOptions& options);
  void ReaderLoop();
  // Writes one whole frame, by `deadline` and within options_.send_timeout.
  // A frame the guest does not take in time closes the connection
  // (UNAVAILABLE); DEADLINE_EXCEEDED when `deadline` passed before any of
  // the frame was written (the connection stays up).
  absl::Status Send(const v1::Frame& frame, absl::Time deadline = absl::InfiniteFuture());
  absl::Status ClosedError();
  absl::StatusOr<std::pair<uint64_t, std::shared_ptr<OpChannel>>> Register(OpChannel::Mode mode);
  // Ends an operation: its late frames are dropped and its queue is freed.
  // Idempotent.
  void Unregister(uint64_t id);
  // Sends `request` (its id set to the new operation's) and waits for its
  // ProcReply; the reply's error as a status naming `what`.
  absl::StatusOr<v1::ProcReply> ProcCall(v1::Frame request, absl::Duration timeout,
                                         const std::string& what);
  // Waits for an OpResult (skipping anything else).
  absl::StatusOr<v1::OpResult> AwaitResult(OpChannel& channel, absl::Time deadline,
                                           const std::string& what);
  void Close(absl::Status why);
  friend class ChannelExecHandle;
  friend class ChannelWatchHandle;

  const AgentClientOptions options_;
  UniqueFd fd_;
  // One frame is written at a time: `writing_` is the turn, taken and
  // given back under write_mu_ (never held while writing).
  absl::Mutex write_mu_;
  bool writing_ ABSL_GUARDED_BY(write_mu_) = false;
  std::atomic<bool> broken_{false};
  bool has_agent_ = false;
  std::string agent_version_;
  std::atomic<uint32_t> protocol_version_{0};  // From the first Hello.
  const std::shared_ptr<QueueBudget> budget_ = std::make_shared<QueueBudget>();

  mutable absl::Mutex mu_;
  absl::Status close_reason_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::shared_ptr<OpChannel>> ops_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Greeting state, guarded by mu_.
  bool hello_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool legacy_ready_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t hellos_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread reader_;
};

}  // namespace smolvm::agent
