// File: agent.h
//
// Agent: the guest side of proto/smolvm/agent/v1/agent.proto. One reader
// thread (Run) decodes frames and dispatches them; it never blocks on a
// child or a file: every exec, upload, download, filesystem call (FsRequest)
// and directory watch (FsWatch) runs on its own detached thread, and the
// data the host streams into an operation (ExecStdin, FileData) is queued in
// that operation's bounded OpInput. Background processes (ProcStart, protocol
// 5) live in the ProcessTable; an attach to one (ProcAttach) is an operation
// like a watch.
//
// Survives everything the host can do: at end of stream (host disconnected,
// not yet connected, VM restored from a snapshot) the decoder is reset and
// reading resumes after kReconnectPoll; on a corrupt stream the buffered
// bytes are dropped. Running execs outlive a disconnect, except interactive
// ones (ExecStart.interactive: a shell whose client is gone); unfinished
// uploads are cancelled (their data cannot arrive any more), watches are
// stopped and attaches detached (the host that asked for them is gone);
// background processes go on.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "guest/agent/channel.h"
#include "guest/agent/op_input.h"
#include "guest/agent/process_table.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

inline constexpr std::chrono::milliseconds kReconnectPoll{20};

struct AgentOptions {
  // The file Reidentify writes the DNS server into (tests use their own).
  std::string resolv_conf = "/etc/resolv.conf";
};

class Agent {
 public:
  // `channel` must outlive the agent (in practice: the process).
  explicit Agent(Channel* channel, AgentOptions options = AgentOptions())
      : channel_(channel), options_(std::move(options)) {}
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // The reader loop. Never returns.
  [[noreturn]] void Run();

 private:
  // Operations the host can address after starting them (ExecStdin,
  // FileData, ExecCancel). A watch and an attach only use their input's
  // cancel.
  enum class Kind { kExec, kUpload, kWatch, kAttach };
  struct Op {
    Op(Kind k, bool ends_with_host) : kind(k), ends_with_host(ends_with_host) {}
    const Kind kind;
    // Cancelled when the host disconnects: every operation but a plain
    // exec (which runs on, as a command started by a script would; its
    // output is lost). An interactive exec (ExecStart.interactive) ends
    // with its client.
    const bool ends_with_host;
    OpInput input;
  };

  void Dispatch(agent::v1::Frame* frame);
  void StartExec(const agent::v1::ExecStart& request);
  void StartUpload(const agent::v1::FileWriteStart& request);
  void StartDownload(const agent::v1::FileReadStart& request);
  void StartFsRequest(const agent::v1::FsRequest& request);
  void StartWatch(const agent::v1::FsWatch& request);
  void StartProcess(const agent::v1::ProcStart& request);
  void StartAttach(const agent::v1::ProcAttach& request);
  // Stops op `op` (ExecCancel, host disconnected). REQUIRES: ops_mu_ held.
  void CancelOp(Op& op);
  // Feeds host data to op `id` if it is running and of `kind`; else drops it.
  void PushInput(uint64_t id, Kind kind, std::string data, bool eof);
  // Queues a signal or terminal size for exec `id` if it is running.
  void PushControl(uint64_t id, const OpInput::Control& control);
  // Cancels unfinished uploads, stops watches and detaches attaches: the
  // host is gone.
  void CancelOnDisconnect();

  // Returns null (and reports nothing) if `id` is already in use.
  std::shared_ptr<Op> Register(uint64_t id, Kind kind, bool ends_with_host = true);
  void Unregister(uint64_t id, const Op* op);

  Channel* const channel_;
  const AgentOptions options_;
  std::mutex ops_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<Op>> ops_;  // guarded by ops_mu_
  ProcessTable processes_;
};

}  // namespace smolvm::guest
