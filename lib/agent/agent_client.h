// File: agent_client.h
//
// AgentClient is the host side of the guest-agent protocol
// (proto/smolvm/agent/v1/agent.proto) on one VM's virtio-serial socket.
// One connection carries many concurrent operations (execs, file transfers,
// clock and entropy fixes), told apart by id.
//
// Safety against a hostile guest: frames are bounded (1 MiB), every
// operation's inbound queue is bounded (kMaxQueuedBytes) and a full queue
// only slows this VM's connection (back-pressure through virtio-serial),
// frames for unknown operations are dropped, and a corrupt stream closes
// the connection (every pending operation fails with UNAVAILABLE). Nothing
// the guest sends can throw, crash the daemon or block another VM.
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
#include "lib/base/unique_fd.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::agent {

// Bytes an operation may have queued from the guest before the reader
// waits for the consumer.
inline constexpr size_t kMaxQueuedBytes = 8 << 20;

struct ExecSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;
  absl::Duration timeout = absl::ZeroDuration();  // Zero = no limit.
  std::optional<std::string> stdin_data;
};

// One event of a running exec, in order: output chunks, then the exit.
struct ExecEvent {
  enum class Kind { kStdout, kStderr, kExit } kind = Kind::kStdout;
  std::string data;
  int exit_code = 0;
  int signal = 0;
  bool timed_out = false;
};

struct FileInfo {
  uint64_t bytes = 0;
  uint32_t mode = 0;
};

class AgentClient;

// The inbound side of one operation. Internal to AgentClient but exposed so
// exec handles can hold it.
class OpChannel {
 public:
  // Waits for the next frame of this operation. UNAVAILABLE when the
  // connection broke, DEADLINE_EXCEEDED at `deadline`.
  absl::StatusOr<v1::Frame> Next(absl::Time deadline);

 private:
  friend class AgentClient;
  // Called by the reader; waits while the queue is full.
  void Push(v1::Frame frame);
  void Fail(absl::Status status);
  absl::Mutex mu_;
  std::deque<v1::Frame> queue_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
  bool abandoned_ ABSL_GUARDED_BY(mu_) = false;
};

// A running exec. Destroying it before the exit cancels the exec (kills its
// process group in the guest).
class ExecHandle {
 public:
  ~ExecHandle();
  // The next output chunk or the exit; after the exit, FAILED_PRECONDITION.
  absl::StatusOr<ExecEvent> Next(absl::Time deadline = absl::InfiniteFuture());

 private:
  friend class AgentClient;
  ExecHandle(std::shared_ptr<AgentClient> client, uint64_t id,
             std::shared_ptr<OpChannel> channel)
      : client_(std::move(client)), id_(id), channel_(std::move(channel)) {}
  std::shared_ptr<AgentClient> client_;
  uint64_t id_;
  std::shared_ptr<OpChannel> channel_;
  bool done_ = false;
};

class AgentClient : public std::enable_shared_from_this<AgentClient> {
 public:
  // Connects to `socket_path` and greets the agent: HelloRequest every
  // 100 ms until it answers. A guest image without an agent that writes the
  // legacy line "SMOLVM_READY\n" also counts as ready (has_agent() false).
  // Stops early with the status `abort_check` returns when not OK (e.g. the
  // VMM died). DEADLINE_EXCEEDED after `timeout`.
  static absl::StatusOr<std::shared_ptr<AgentClient>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check = nullptr);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  bool has_agent() const { return has_agent_; }
  bool healthy() const { return !broken_.load(); }
  const std::string& agent_version() const { return agent_version_; }

  absl::StatusOr<std::unique_ptr<ExecHandle>> StartExec(const ExecSpec& spec);

  // Uploads: `next_chunk` returns the next piece of data, "" at the end.
  absl::StatusOr<FileInfo> WriteFile(
      const std::string& path, uint32_t mode, bool tar, bool make_parents,
      const std::function<absl::StatusOr<std::string>()>& next_chunk,
      absl::Duration timeout);
  // Downloads: `sink` receives the data in order; an error from it aborts.
  absl::StatusOr<FileInfo> ReadFile(
      const std::string& path, bool tar,
      const std::function<absl::Status(const std::string&)>& sink,
      absl::Duration timeout);

  // Steps the guest's wall clock; returns the guest's time right after.
  absl::StatusOr<absl::Time> SetClock(absl::Time now, absl::Duration timeout);
  // Mixes `seed` into the guest's entropy pool and reseeds its CRNG.
  absl::Status AddEntropy(const std::string& seed, absl::Duration timeout);
  // A HelloRequest round trip (the latency floor of the channel).
  absl::Status Ping(absl::Duration timeout);

 private:
  explicit AgentClient(UniqueFd fd);
  void ReaderLoop();
  absl::Status Send(const v1::Frame& frame);
  // An operation's registration for the length of a call: unregistered
  // (and its late frames dropped) when the lease goes out of scope.
  struct OpLease {
    OpLease(AgentClient* c, uint64_t i, std::shared_ptr<OpChannel> ch)
        : client(c), id(i), channel(std::move(ch)) {}
    ~OpLease() { client->Unregister(id); }
    OpLease(const OpLease&) = delete;
    OpLease& operator=(const OpLease&) = delete;
    AgentClient* client;
    uint64_t id;
    std::shared_ptr<OpChannel> channel;
  };
  std::pair<uint64_t, std::shared_ptr<OpChannel>> Register();
  OpLease Lease();
  void Unregister(uint64_t id);
  // Waits for an OpResult (skipping nothing else).
  absl::StatusOr<v1::OpResult> AwaitResult(OpChannel& channel, uint64_t id,
                                           absl::Time deadline, const std::string& what);
  void Close(absl::Status why);
  friend class ExecHandle;

  UniqueFd fd_;
  absl::Mutex write_mu_;
  std::atomic<bool> broken_{false};
  bool has_agent_ = false;
  std::string agent_version_;

  absl::Mutex mu_;
  std::map<uint64_t, std::shared_ptr<OpChannel>> ops_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  // Greeting state, guarded by mu_.
  bool hello_seen_ ABSL_GUARDED_BY(mu_) = false;
  bool legacy_ready_ ABSL_GUARDED_BY(mu_) = false;
  int hello_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t hellos_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread reader_;
};

}  // namespace smolvm::agent
