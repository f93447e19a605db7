// File: guest_agent.h
//
// What the core needs from a guest: a connection to the agent inside one
// VM (GuestAgent) and the way to open one (GuestConnector). AgentClient
// (agent_client.h) is the real implementation over the VM's virtio-serial
// socket; tests/fakes has a fake for unit tests of the core's failure
// paths. Types shared by both live here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace smolvm::agent {

// The first agent protocol version that runs operations as a guest user
// (ExecSpec::user, FileRequest::user) and reports exec start errnos.
inline constexpr uint32_t kUserProtocolVersion = 3;

// The first agent protocol version with interactive execs (ExecSpec's
// interactive and tty, ExecHandle's WriteStdin/CloseStdin/Signal/Resize).
inline constexpr uint32_t kInteractiveProtocolVersion = 6;

// A terminal size in character cells (0 = the guest's default, 24 x 80),
// each at most kMaxTerminalCells.
inline constexpr uint32_t kMaxTerminalCells = 1000;
struct TerminalSize {
  uint32_t rows = 0;
  uint32_t cols = 0;
};

struct ExecSpec {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string cwd;
  absl::Duration timeout = absl::ZeroDuration();  // Zero = no limit.
  std::optional<std::string> stdin_data;
  std::string user;  // Guest user name or uid; "" = root.
  // An interactive exec (protocol >= kInteractiveProtocolVersion;
  // FAILED_PRECONDITION naming the protocol otherwise, nothing sent): its
  // stdin is written through the handle (stdin_data must be unset), it
  // takes signals (and, with a tty, resizes), and it dies with the agent
  // connection instead of outliving it.
  bool interactive = false;
  // With interactive: run on a pseudo-terminal of this size.
  std::optional<TerminalSize> tty;
};

// One event of a running exec, in order: output chunks, then the exit.
struct ExecEvent {
  enum class Kind { kStdout, kStderr, kExit } kind = Kind::kStdout;
  std::string data;
  int exit_code = 0;
  int signal = 0;
  bool timed_out = false;
  // Output chunks of an attach (AttachProcess): output lost before this
  // chunk because the attach fell behind the guest's buffer.
  uint64_t skipped_bytes = 0;
};

// One upload or download.
struct FileRequest {
  std::string path;
  bool tar = false;           // A directory as a tar stream.
  std::string user;           // Guest user name or uid; "" = root.
  uint32_t mode = 0;          // Uploads: permission bits; 0 = 0644.
  bool make_parents = false;  // Uploads: create missing parent directories.
};

struct FileInfo {
  uint64_t bytes = 0;
  uint32_t mode = 0;
};

// The first agent protocol version with the filesystem calls (FsCall) and
// directory watches.
inline constexpr uint32_t kFsProtocolVersion = 4;

// One file system object as the guest's lstat sees it (agent.proto FsEntry).
struct FsEntry {
  enum class Type { kUnknown, kFile, kDirectory, kSymlink, kOther };
  std::string path;  // Absolute.
  std::string name;
  Type type = Type::kUnknown;
  uint64_t size = 0;
  uint32_t mode = 0;  // Permission bits.
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_ns = 0;
  std::string symlink_target;
};

// One filesystem call (agent.proto FsRequest). Paths are absolute or
// relative to `user`'s home.
struct FsCall {
  enum class Op { kStat, kList, kMakeDir, kRemove, kRename };
  Op op = Op::kStat;
  std::string path;
  std::string user;         // "" = root.
  uint32_t depth = 1;       // kList: 1-32.
  bool parents = false;     // kMakeDir.
  uint32_t mode = 0;        // kMakeDir: 0 = 0755.
  bool recursive = false;   // kRemove.
  std::string new_path;     // kRename.
  bool overwrite = false;   // kRename.
};

struct FsResult {
  std::vector<FsEntry> entries;  // kStat, kMakeDir, kRename: one; kList: the listing.
  bool truncated = false;        // kList: a prefix of the listing.
  bool created = false;          // kMakeDir.
};

// One change under a watched directory (agent.proto FsEvent).
struct FsChange {
  enum class Kind { kCreate, kModify, kDelete, kRename, kChmod, kOverflow };
  Kind kind = Kind::kCreate;
  std::string path;
  std::string old_path;  // kRename.
  bool is_dir = false;
};

// A running directory watch. Destroying it stops the watch in the guest.
class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
  // The next change, DEADLINE_EXCEEDED at `deadline` (the watch goes on),
  // or why the watch ended (the guest's error, UNAVAILABLE when the
  // connection broke).
  virtual absl::StatusOr<FsChange> Next(absl::Time deadline) = 0;
};

// The first agent protocol version with background processes
// (StartProcess, ListProcesses, SignalProcess, AttachProcess).
inline constexpr uint32_t kProcessProtocolVersion = 5;

// A background process the guest agent tracks (agent.proto ProcInfo).
struct ProcessInfo {
  int32_t pid = 0;
  std::vector<std::string> argv;
  std::string user;
  std::string cwd;
  bool running = false;
  int exit_code = 0;
  int signal = 0;
  int64_t started_unix_ns = 0;
  int64_t ended_unix_ns = 0;
  uint64_t output_bytes = 0;
};

// The first agent protocol version with Reidentify (agent.proto). Older
// agents (images built before it keep theirs) get SetClock, AddEntropy and
// a re-addressing script instead.
inline constexpr uint32_t kReidentifyProtocolVersion = 2;

// The address of a guest's network interface (agent.proto NetworkIdentity).
// Addresses are dotted quads.
struct GuestNetworkIdentity {
  std::string interface = "eth0";
  std::string mac;           // "02:53:0a:c8:00:05"
  std::string ipv4_address;
  uint32_t prefix_length = 0;
  std::string gateway;       // "" = no default route through it.
  std::string dns_server;    // "" = an empty resolv.conf.

  bool operator==(const GuestNetworkIdentity&) const = default;
};

// INVALID_ARGUMENT naming the field unless `id` is something the agent can
// apply: an interface name of 1-15 characters without '/', ':' or spaces, a
// unicast non-zero MAC, IPv4 addresses, a prefix of 1-32.
absl::Status ValidateNetworkIdentity(const GuestNetworkIdentity& id);

// What a restored guest gets so that it is not a copy of its snapshot:
// each part is optional.
struct Reidentity {
  std::optional<absl::Time> clock;  // The wall clock to set.
  std::string entropy_seed;         // "" = none.
  std::optional<GuestNetworkIdentity> network;
};

// A running exec. Destroying it before the exit cancels the exec (kills its
// process group in the guest).
//
// The input calls (interactive execs only; FAILED_PRECONDITION otherwise)
// may be made from one thread while another calls Next().
class ExecHandle {
 public:
  // Stdin bytes an interactive exec may have sent that the command has not
  // yet taken; WriteStdin waits beyond.
  static constexpr uint64_t kStdinWindow = 1 << 20;

  virtual ~ExecHandle() = default;
  // The next output chunk or the exit; after the exit, FAILED_PRECONDITION.
  virtual absl::StatusOr<ExecEvent> Next(absl::Time deadline = absl::InfiniteFuture()) = 0;
  // Sends the front of `data` to the command's stdin, as much as the window
  // allows by `deadline` (waiting for the command to take earlier bytes),
  // and returns how many bytes were sent (0 at the deadline). Errors:
  // FAILED_PRECONDITION after CloseStdin or the exit, UNAVAILABLE if the
  // connection broke.
  virtual absl::StatusOr<size_t> WriteStdin(absl::string_view data, absl::Time deadline) {
    return NotInteractive();
  }
  // Ends stdin (with a tty: the terminal's ^D). Idempotent.
  virtual absl::Status CloseStdin() { return NotInteractive(); }
  // A signal (1-64) to the command's process group (with a tty: the
  // terminal's foreground group). Ignored by the guest once it exited.
  virtual absl::Status Signal(int signal) { return NotInteractive(); }
  // The terminal's new size (ignored without a tty).
  virtual absl::Status Resize(TerminalSize size) { return NotInteractive(); }

 private:
  static absl::Status NotInteractive() {
    return absl::FailedPreconditionError("not an interactive exec");
  }
};

// One connection to a VM's guest agent. Thread-safe.
class GuestAgent {
 public:
  virtual ~GuestAgent() = default;
  // False for a legacy image that only signals readiness.
  virtual bool has_agent() const = 0;
  // False once the connection broke (the next operation reconnects).
  virtual bool healthy() const = 0;
  // A user other than root needs protocol >= kUserProtocolVersion
  // (FAILED_PRECONDITION otherwise, nothing sent), as do WriteFile/ReadFile.
  virtual absl::StatusOr<std::unique_ptr<ExecHandle>> StartExec(const ExecSpec& spec) = 0;
  // Uploads: `next_chunk` returns the next piece of data, "" at the end.
  virtual absl::StatusOr<FileInfo> WriteFile(
      const FileRequest& request,
      const std::function<absl::StatusOr<std::string>()>& next_chunk,
      absl::Duration timeout) = 0;
  // Downloads: `sink` receives the data in order; an error from it aborts.
  virtual absl::StatusOr<FileInfo> ReadFile(
      const FileRequest& request,
      const std::function<absl::Status(const std::string&)>& sink,
      absl::Duration timeout) = 0;
  // Steps the guest's wall clock; returns the guest's time right after.
  virtual absl::StatusOr<absl::Time> SetClock(absl::Time now, absl::Duration timeout) = 0;
  // Mixes `seed` into the guest's entropy pool and reseeds its CRNG.
  virtual absl::Status AddEntropy(const std::string& seed, absl::Duration timeout) = 0;
  // Applies `r` in one round trip (protocol >= kReidentifyProtocolVersion;
  // UNIMPLEMENTED for older agents, without sending anything): the clock
  // first, then the entropy, then the network. Returns the guest's time
  // right after its clock step. INVALID_ARGUMENT for an invalid network
  // identity (nothing sent); FAILED_PRECONDITION with the agent's text
  // naming each failed step.
  virtual absl::StatusOr<absl::Time> Reidentify(const Reidentity& r, absl::Duration timeout) = 0;
  // One filesystem call (protocol >= kFsProtocolVersion; FAILED_PRECONDITION
  // naming the protocol otherwise, nothing sent). Guest errors carry their
  // errno's meaning (NOT_FOUND, ALREADY_EXISTS, ...).
  virtual absl::StatusOr<FsResult> FileSystem(const FsCall& call, absl::Duration timeout) = 0;
  // Starts watching the directory `path` and returns once the guest says
  // the watch is in place (or its error), within `timeout`.
  virtual absl::StatusOr<std::unique_ptr<WatchHandle>> WatchDir(const std::string& path,
                                                                const std::string& user,
                                                                bool recursive,
                                                                absl::Duration timeout) = 0;
  // Background processes (protocol >= kProcessProtocolVersion;
  // FAILED_PRECONDITION naming the protocol otherwise, nothing sent).
  // StartProcess runs `spec` (argv, env, cwd, user; no stdin, no time
  // limit) and returns once it runs, with its start error's meaning.
  virtual absl::StatusOr<ProcessInfo> StartProcess(const ExecSpec& spec,
                                                   absl::Duration timeout) = 0;
  virtual absl::StatusOr<std::vector<ProcessInfo>> ListProcesses(absl::Duration timeout) = 0;
  // NOT_FOUND for a pid that is not tracked or not running.
  virtual absl::StatusOr<ProcessInfo> SignalProcess(int32_t pid, int signal, bool group,
                                                    absl::Duration timeout) = 0;
  // Follows a tracked process: its output (from `tail_bytes` back; none
  // without `output`), then its exit, as an exec's events. Dropping the
  // handle detaches; the process goes on. An unknown pid is the first
  // Next()'s NOT_FOUND.
  virtual absl::StatusOr<std::unique_ptr<ExecHandle>> AttachProcess(int32_t pid,
                                                                    uint32_t tail_bytes,
                                                                    bool output) = 0;
  // A round trip with no work (the latency floor of the channel).
  virtual absl::Status Ping(absl::Duration timeout) = 0;
  // The protocol version the agent announced in its Hello (0 without an
  // agent).
  virtual uint32_t protocol_version() const = 0;
};

// Opens agent connections.
class GuestConnector {
 public:
  virtual ~GuestConnector() = default;
  // Connects to the agent behind `socket_path` and greets it. Stops early
  // with the status `abort_check` returns when not OK (e.g. the VMM died).
  // DEADLINE_EXCEEDED after `timeout`.
  virtual absl::StatusOr<std::shared_ptr<GuestAgent>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check) = 0;
};

// The real connector: AgentClient over the VM's Unix socket.
std::unique_ptr<GuestConnector> NewAgentConnector();

}  // namespace smolvm::agent
