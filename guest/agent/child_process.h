// File: child_process.h
//
// RunChild: fork/exec one program in its own session and pump its pipes until
// it is done. Used for ExecStart (output streamed as ExecOutput), ProcStart
// and for the busybox `tar` behind FileWriteStart/FileReadStart with tar=true.
//
// The child gets exactly `env` as its environment, `cwd` as its working
// directory, stdin fed from an OpInput (or /dev/null), and stdout/stderr on
// pipes — or, with ChildSpec::tty, a new pseudo-terminal as its controlling
// terminal and stdin/stdout/stderr (its output is then all "stdout"; the
// input's eof types the terminal's VEOF character once). The OpInput's
// controls signal the child's process group (with a tty: the terminal's
// foreground group) or resize the terminal. A failed chdir/execve is reported through a close-on-exec error pipe
// as ChildOutcome::start_error ("exec foo: No such file or directory").
// Only the started child is reaped (waitpid by pid); its process group is
// SIGKILLed on timeout, cancel or input overflow. After the child exits the
// pipes are drained until EOF or kDrainIdle without data (a background
// grandchild may keep them open).
#pragma once

#include <chrono>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "guest/agent/guest_user.h"
#include "guest/agent/op_input.h"

namespace smolvm::guest {

inline constexpr std::chrono::milliseconds kDrainIdle{200};

struct ChildSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in env's PATH
  std::vector<std::string> env;   // "KEY=VALUE": the child's whole environment
  std::string cwd = "/";
  bool stdin_from_input = false;  // else stdin is /dev/null
  // Who the child runs as (root: the agent's own credentials). Switched
  // before chdir, so the user's permissions apply to cwd too.
  GuestUser user;
  // Run on a new pseudo-terminal of this size (rows x cols, 0 = 24 x 80).
  bool tty = false;
  unsigned tty_rows = 0;
  unsigned tty_cols = 0;
};

struct ChildOutcome {
  std::string start_error;  // set: the program never ran
  int start_errno = 0;      // with start_error: the failed call's errno, if any
  std::string abort_error;  // set: killed because the input overflowed
  bool timed_out = false;
  int exit_code = 0;
  int signal = 0;           // terminating signal, 0 if it exited
  uint64_t stdin_bytes = 0; // bytes written to the child's stdin
};

// stream: 1 = stdout, 2 = stderr. Called on the RunChild thread.
using OutputFn = std::function<void(int stream, const char* data, size_t size)>;
// Called on the RunChild thread once the program runs (its execve
// succeeded), with its pid (= its process group), before any output.
using StartedFn = std::function<void(pid_t pid)>;
// Called on the RunChild thread right after the child was reaped (its pid
// may be reused from then on), with its wait status, before its pipes are
// drained.
using ReapedFn = std::function<void(int wait_status)>;
// Called on the RunChild thread when more of the input was consumed: the
// total bytes written to the child's stdin or dropped because it was
// closed (so a host waiting for room is never left waiting).
using StdinFn = std::function<void(uint64_t consumed_bytes)>;

// What RunChild reports, each optional but on_output.
struct ChildHooks {
  OutputFn on_output;
  StartedFn on_started;  // Not called if the start failed.
  ReapedFn on_reaped;
  StdinFn on_stdin;
};

// Runs `spec` to completion on the calling thread. `input` (may be null if
// !stdin_from_input) supplies stdin, the controls and the cancel request;
// `timeout_ms` 0 = no limit. `abort_label` names the input in abort_error
// ("stdin of exec 7").
ChildOutcome RunChild(const ChildSpec& spec, OpInput* input, uint32_t timeout_ms,
                      const std::string& abort_label, const ChildHooks& hooks);

// The agent's base environment for children (PATH, HOME=/root, TERM=dumb),
// overridden by `overrides` (later ones win).
std::vector<std::string> BuildEnv(
    const std::vector<std::pair<std::string, std::string>>& overrides);

}  // namespace smolvm::guest
