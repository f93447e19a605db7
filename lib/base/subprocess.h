// File: subprocess.h
//
// Runs an external program from an argv vector (never a shell), with every
// daemon descriptor closed in the child, stdout/stderr captured (bounded) and
// a timeout after which the child's process group is killed.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace smolvm {

struct SubprocessResult {
  int exit_code = -1;    // -1 when killed by a signal.
  int term_signal = 0;   // Signal that ended the child, 0 if it exited.
  std::string stdout_text;
  std::string stderr_text;
};

struct SubprocessOptions {
  absl::Duration timeout = absl::Minutes(5);
  // Output beyond this many bytes per stream is dropped (the tail is kept).
  size_t max_output_bytes = 1 << 20;
  // Extra environment entries ("K=V"), added to the daemon's environment.
  std::vector<std::string> extra_env;
  // When set, the child's stderr goes to this file (appended) instead of a
  // pipe, for children that outlive the call (a daemonizing VMM keeps its
  // stderr). stderr_text is then read back from the file.
  std::string stderr_path;
  // When set, polled (about every 50 ms) while the child runs; once it
  // returns true the child's process group is killed and the call returns
  // CANCELLED. Checked before the child is started, too. Called on the
  // calling thread only.
  std::function<bool()> cancelled;
};

// Runs argv[0] (looked up in PATH) and waits for it. Returns an error only if
// the program could not be started, timed out (DEADLINE_EXCEEDED) or was
// cancelled (CANCELLED); a non-zero exit is reported in the result.
absl::StatusOr<SubprocessResult> RunSubprocess(
    const std::vector<std::string>& argv, const SubprocessOptions& options = {});

// Like RunSubprocess, but a non-zero exit becomes an INTERNAL error whose
// message is "<argv[0]> exited with N: <stderr tail>".
absl::StatusOr<SubprocessResult> RunChecked(
    const std::vector<std::string>& argv, const SubprocessOptions& options = {});

// The last `max_bytes` of `text`, starting at a line boundary when possible.
std::string TailOf(const std::string& text, size_t max_bytes);

}  // namespace smolvm
