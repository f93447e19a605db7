// run_command: the SmolVM SDK's command and file flow.
//
//   SmolVM vm; vm.start();
//   vm.run("python3 -c 'print(6 * 7)'");       // buffered: CommandResult
//   vm.exec({...}, {}, on_output);              // streamed as produced
//   vm.upload_file(...); vm.download_file(...);
//   vm.close();
//
// Boots a VM from the daemon's default image, runs a command (a failing
// command is a result, not an error), streams another, copies a file in and
// back out, and deletes the VM.
//
// Usage: run_command [COMMAND]   (default "uname -a", run by /bin/sh -c)
// The daemon socket is $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/smolvm.h"

namespace {

int Fail(smolvm::SmolVM& vm, const char* step, const absl::Status& status) {
  std::cerr << "run_command: " << step << ": " << status << "\n";
  vm.close().IgnoreError();  // Don't leave the VM behind.
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "uname -a";

  smolvm::SmolVM vm;
  if (absl::Status s = vm.start(); !s.ok()) return Fail(vm, "vm.start()", s);
  std::cout << "vm " << vm.vm_id() << " is running\n";

  // Buffered, shell form.
  smolvm::RunOptions options;
  options.env["GREETING"] = "hello";
  options.timeout = absl::Seconds(30);
  absl::StatusOr<smolvm::CommandResult> result = vm.run(command, options);
  if (!result.ok()) return Fail(vm, "vm.run()", result.status());
  std::cout << "$ " << command << "\n"
            << result->stdout_text << result->stderr_text << "exit_code "
            << result->exit_code << (result->timed_out ? " (timed out)" : "")
            << "\n";

  // Streamed, argv form: each chunk is printed as it arrives.
  absl::StatusOr<smolvm::ExecExit> exit =
      vm.exec({"sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 1; done"},
              {}, [](smolvm::ExecStream stream, absl::string_view data) {
                std::FILE* out =
                    stream == smolvm::ExecStream::kStdout ? stdout : stderr;
                std::fwrite(data.data(), 1, data.size(), out);
                std::fflush(out);
              });
  if (!exit.ok()) return Fail(vm, "vm.exec()", exit.status());

  // Files: in, transformed in the guest, and back out.
  const std::string local_in =
      "/tmp/run_command_in." + std::to_string(getpid());
  const std::string local_out = local_in + ".out";
  std::ofstream(local_in) << "some data\n";
  if (absl::Status s = vm.upload_file(local_in, "/root/in.txt"); !s.ok()) {
    return Fail(vm, "vm.upload_file()", s);
  }
  result = vm.run("tr a-z A-Z < /root/in.txt > /root/out.txt");
  if (!result.ok()) return Fail(vm, "vm.run(tr)", result.status());
  if (absl::Status s = vm.download_file("/root/out.txt", local_out); !s.ok()) {
    return Fail(vm, "vm.download_file()", s);
  }
  std::cout << "downloaded: " << std::ifstream(local_out).rdbuf();
  std::remove(local_in.c_str());
  std::remove(local_out.c_str());

  if (absl::Status s = vm.close(); !s.ok()) {
    std::cerr << "run_command: vm.close(): " << s << "\n";
    return 1;
  }
  return 0;
}
