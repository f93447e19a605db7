#include "lib/vmm/qemu_backend.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"
#include "lib/base/subprocess.h"
#include "lib/base/unique_fd.h"
#include "lib/vmm/console_recorder.h"
#include "lib/vmm/qmp_client.h"

namespace smolvm::vmm {
namespace {

bool ProcessExists(int64_t pid) {
  if (pid <= 0) return false;
  auto stat = ReadFileToString(absl::StrCat("/proc/", pid, "/stat"), 4096);
  if (!stat.ok()) return false;
  // Field 3, after the parenthesised command name, is the state.
  auto close_paren = stat->rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat->size()) return false;
  char state = (*stat)[close_paren + 2];
  return state != 'Z' && state != 'X';
}

class QemuInstance : public VmInstance {
 public:
  QemuInstance(std::string vm_id, int64_t pid, std::string run_dir,
               std::unique_ptr<QmpClient> qmp, uint64_t console_log_max_bytes)
      : vm_id_(std::move(vm_id)), pid_(pid), run_dir_(std::move(run_dir)),
        qmp_(std::move(qmp)),
        console_(ConsoleSocketPath(run_dir_), ConsoleLogPath(run_dir_),
                 console_log_max_bytes) {}

  int64_t pid() const override { return pid_; }
  bool IsAlive() const override { return IsQemuOf(pid_, vm_id_); }

  std::string agent_socket_path() const override { return AgentSocketPath(run_dir_); }

  absl::Status Pause() override { return qmp_->Execute("stop").status(); }
  absl::Status Resume() override { return qmp_->Execute("cont").status(); }
  absl::StatusOr<std::string> QueryRunState() override { return qmp_->QueryStatus(); }

  absl::Status SaveDeviceState(const std::string& path) override {
    return WithVmmLog(qmp_->MigrateToFile(path, absl::Minutes(5)));
  }
  absl::Status LoadDeviceState(const std::string& path) override {
    return WithVmmLog(qmp_->MigrateFromFile(path, absl::Minutes(5)));
  }

  absl::Status Shutdown(absl::Duration grace) override {
    if (!IsAlive()) return absl::OkStatus();
    // "quit" may race with QEMU closing the socket; the pid check decides.
    (void)qmp_->Execute("quit", nlohmann::json::object(), absl::Seconds(2));
    absl::Time deadline = absl::Now() + grace;
    while (IsAlive() && absl::Now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (IsAlive()) {
      kill(static_cast<pid_t>(pid_), SIGKILL);
      absl::Time kill_deadline = absl::Now() + absl::Seconds(10);
      while (IsAlive() && absl::Now() < kill_deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      if (IsAlive()) {
        return absl::InternalError(absl::StrCat(
            "vm ", vm_id_, ": qemu pid ", pid_, " did not exit after SIGKILL"));
      }
    }
    return absl::OkStatus();
  }

  // Adds what QEMU reported on stderr to an error: QMP alone often says
  // just "failed".
  absl::Status WithVmmLog(absl::Status s) const {
    if (s.ok()) return s;
    std::string log = TailOf(ReadFileTail(VmmLogPath(run_dir_), 1000), 1000);
    if (log.empty()) return s;
    return absl::Status(s.code(), absl::StrCat(s.message(), "; qemu: ", log));
  }

  std::string ConsoleTail(size_t max_bytes) const override {
    return TailOf(console_.Tail(max_bytes, !IsAlive()), max_bytes);
  }

 private:
  std::string vm_id_;
  int64_t pid_;
  std::string run_dir_;
  std::unique_ptr<QmpClient> qmp_;
  ConsoleRecorder console_;
};

}  // namespace

bool IsQemuOf(int64_t pid, const std::string& vm_id) {
  if (!ProcessExists(pid)) return false;
  auto cmdline = ReadFileToString(absl::StrCat("/proc/", pid, "/cmdline"), 1 << 20);
  if (!cmdline.ok()) return false;
  std::vector<std::string> args = absl::StrSplit(*cmdline, '\0');
  std::string name = QemuProcessName(vm_id);
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "-name" && args[i + 1] == name) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<QemuHypervisor>> QemuHypervisor::Create(
    QemuSettings settings) {
  SubprocessOptions opts;
  opts.timeout = absl::Seconds(30);
  auto r = RunSubprocess({settings.binary, "--version"}, opts);
  if (!r.ok() || r->exit_code != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot run ", settings.binary,
        ": install the qemu-system-x86 package or pass --qemu-binary"));
  }
  std::string first_line = std::string(absl::StripAsciiWhitespace(
      r->stdout_text.substr(0, r->stdout_text.find('\n'))));
  return std::unique_ptr<QemuHypervisor>(
      new QemuHypervisor(std::move(settings), first_line));
}

absl::StatusOr<std::unique_ptr<VmInstance>> QemuHypervisor::Launch(
    const LaunchSpec& spec) {
  SMOLVM_RETURN_IF_ERROR(MakeDirs(spec.run_dir));
  for (const auto& stale : {QmpSocketPath(spec.run_dir), AgentSocketPath(spec.run_dir),
                            PidFilePath(spec.run_dir), ConsoleLogPath(spec.run_dir),
                            ConsoleLogPath(spec.run_dir) + ".1",
                            ConsoleSocketPath(spec.run_dir), VmmLogPath(spec.run_dir)}) {
    unlink(stale.c_str());
  }
  SubprocessOptions opts;
  opts.timeout = absl::Seconds(60);
  opts.stderr_path = VmmLogPath(spec.run_dir);
  auto started = RunSubprocess(BuildQemuArgv(settings_, spec), opts);
  if (!started.ok()) return started.status();
  if (started->exit_code != 0) {
    return absl::InternalError(absl::StrCat(
        "start qemu for vm ", spec.vm_id, " failed (exit ", started->exit_code,
        "): ", TailOf(started->stderr_text, 2000)));
  }
  auto pid_text = ReadFileToString(PidFilePath(spec.run_dir), 64);
  int64_t pid = 0;
  if (!pid_text.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*pid_text), &pid)) {
    return absl::InternalError(absl::StrCat(
        "start qemu for vm ", spec.vm_id, ": no pid file at ", PidFilePath(spec.run_dir)));
  }
  // From here on a failure must not leave the VMM behind.
  auto kill_on_error = absl::MakeCleanup([&] {
    if (IsQemuOf(pid, spec.vm_id)) kill(static_cast<pid_t>(pid), SIGKILL);
  });
  SMOLVM_ASSIGN_OR_RETURN(auto qmp, QmpClient::Connect(QmpSocketPath(spec.run_dir),
                                                       absl::Seconds(30)));
  auto instance = std::make_unique<QemuInstance>(spec.vm_id, pid, spec.run_dir,
                                                 std::move(qmp),
                                                 settings_.console_log_max_bytes);
  if (spec.incoming_state_path) {
    SMOLVM_RETURN_IF_ERROR(instance->LoadDeviceState(*spec.incoming_state_path));
  }
  std::move(kill_on_error).Cancel();
  return instance;
}

absl::StatusOr<std::unique_ptr<VmInstance>> QemuHypervisor::Attach(
    const std::string& vm_id, int64_t pid, const std::string& run_dir) {
  if (!IsQemuOf(pid, vm_id)) {
    return absl::NotFoundError(absl::StrCat(
        "vm ", vm_id, ": qemu process ", pid, " is gone"));
  }
  SMOLVM_ASSIGN_OR_RETURN(auto qmp,
                          QmpClient::Connect(QmpSocketPath(run_dir), absl::Seconds(10)));
  return std::make_unique<QemuInstance>(vm_id, pid, run_dir, std::move(qmp),
                                        settings_.console_log_max_bytes);
}

void QemuHypervisor::EndStrayProcess(const std::string& vm_id,
                                     const std::string& run_dir) {
  auto text = ReadFileToString(PidFilePath(run_dir), 64);
  int64_t pid = 0;
  if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid)) return;
  if (IsQemuOf(pid, vm_id)) kill(static_cast<pid_t>(pid), SIGKILL);
}

}  // namespace smolvm::vmm
