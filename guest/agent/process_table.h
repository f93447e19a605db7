// File: process_table.h
//
// ProcessTable (agent protocol 5): the background processes the host
// started with ProcStart, tracked by guest pid whether or not a host is
// connected. Each runs under RunChild (child_process.h) on a thread of its
// own, with stdin /dev/null, no timeout and no cancel: neither ExecCancel
// nor a host disconnect ends it, only a signal (ProcSignal) or its own
// exit.
//
// Output: the last kProcessBufferBytes of stdout and stderr together, as
// chunks tagged with their stream and their absolute offset (the bytes the
// process produced before them). An attach (ProcAttach) follows a process
// from its own cursor into that buffer, so a slow host (Channel::Send
// blocks) never stalls the process or the other attaches; an attach that
// falls out of the buffer skips ahead and reports the gap
// (ExecOutput.skipped_bytes).
//
// Bounds: kMaxProcesses tracked; a new process evicts the oldest exited
// one, and with that many running it is refused (EAGAIN).
//
// Thread-safety: every method may be called from any thread. One mutex
// guards the table and every process's state; it is never held while a
// frame is sent.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "guest/agent/channel.h"
#include "guest/agent/op_input.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

inline constexpr size_t kProcessBufferBytes = size_t{256} << 10;
inline constexpr size_t kMaxProcesses = 64;

class ProcessTable {
 public:
  // One tracked process (defined in process_table.cc).
  class Process;

  ProcessTable() = default;
  ProcessTable(const ProcessTable&) = delete;
  ProcessTable& operator=(const ProcessTable&) = delete;

  // ProcStart. Blocks until the process has exited (call it on a thread of
  // its own). Sends the one ProcReply as soon as the process runs (with its
  // info) or could not be started (error and errno; a failed process is
  // not tracked).
  void Run(Channel* channel, const agent::v1::ProcStart& request);

  // ProcList: every tracked process, by pid.
  agent::v1::ProcReply List(uint64_t id) const;

  // ProcSignal: sends the signal (to the group with `group`) to a tracked,
  // running process. EINVAL for a signal outside 1-64, ESRCH for a pid not
  // tracked or exited.
  agent::v1::ProcReply Signal(const agent::v1::ProcSignal& request);

  // The tracked process `pid`, or null.
  std::shared_ptr<Process> Find(pid_t pid) const;

  // ProcAttach of `process` (from Find): sends its output and its ExecExit
  // as ProcAttach says, until then or until `stop` is cancelled (then
  // nothing more is sent). Blocks: call it on a thread of its own. Only
  // stop->cancelled() is used; whoever cancels `stop` must then call
  // WakeAttaches().
  void Attach(Channel* channel, const agent::v1::ProcAttach& request, Process& process,
              OpInput* stop);

  // Wakes every waiting Attach to look at its stop request.
  void WakeAttaches();

 private:
  // Makes room for a process about to start: evicts the oldest exited one
  // if the table is full. False if every slot is running or starting.
  bool Reserve();

  mutable std::mutex mu_;
  std::map<pid_t, std::shared_ptr<Process>> processes_;  // guarded by mu_
  size_t starting_ = 0;  // reserved slots, guarded by mu_
  uint64_t next_seq_ = 0;  // start order, guarded by mu_
};

}  // namespace smolvm::guest
