// File: process.h
//
// Running helper programs from end-to-end tests: argv vectors (never a
// shell), stdout and stderr captured separately, the exit code. Used to
// drive smolvmctl as other users and inside the test's network namespaces,
// and for host tools (openssl, useradd, ip).
#pragma once

#include <string>
#include <vector>

namespace smolvm::testing {

struct ProcResult {
  // The exit status; 128+N when killed by signal N; -1 if it could not run.
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  // "exit 3; stdout: ...; stderr: ..." for failure messages.
  std::string Describe() const;
};

// Runs `argv` (argv[0] is looked up in PATH) with the environment of this
// process plus `env` ("NAME=VALUE" entries, which win), stdin from
// /dev/null, and waits for it.
ProcResult RunProcess(const std::vector<std::string>& argv,
                      const std::vector<std::string>& env = {});

// RunProcess, for commands whose failure is a setup error: OK output or a
// message with the command and its output.
bool RunOk(const std::vector<std::string>& argv, std::string* error = nullptr);

}  // namespace smolvm::testing
