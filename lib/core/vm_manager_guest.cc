// Work inside the guest through its agent: exec, file transfer, and the
// fix-ups a restored guest needs before it is handed out.
#include <sys/random.h>

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/core/vm_mounts.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

// 64 listed processes x 8 KiB of argv stay well inside one agent frame.
constexpr size_t kMaxProcessArgvBytes = 8 << 10;

// A guest pid as a request names it: 1 is the guest's init, never one of
// the agent's processes; Linux pids stay below 2^22.
absl::Status ValidatePid(uint32_t pid) {
  if (pid < 2 || pid > (1u << 22)) {
    return absl::InvalidArgumentError(absl::StrCat("pid ", pid, " is not a process's pid"));
  }
  return absl::OkStatus();
}

// An exec (or attached process) that keeps its VM from being idle while it
// runs: the activity token ends with the handle.
class BusyExecHandle : public agent::ExecHandle {
 public:
  BusyExecHandle(std::unique_ptr<agent::ExecHandle> inner, std::shared_ptr<void> busy)
      : inner_(std::move(inner)), busy_(std::move(busy)) {}
  absl::StatusOr<agent::ExecEvent> Next(absl::Time deadline) override {
    return inner_->Next(deadline);
  }
  absl::StatusOr<size_t> WriteStdin(absl::string_view data, absl::Time deadline) override {
    return inner_->WriteStdin(data, deadline);
  }
  absl::Status CloseStdin() override { return inner_->CloseStdin(); }
  absl::Status Signal(int signal) override { return inner_->Signal(signal); }
  absl::Status Resize(agent::TerminalSize size) override { return inner_->Resize(size); }

 private:
  std::unique_ptr<agent::ExecHandle> inner_;
  std::shared_ptr<void> busy_;
};

std::unique_ptr<agent::ExecHandle> KeepBusy(std::unique_ptr<agent::ExecHandle> exec,
                                            std::shared_ptr<void> busy) {
  return std::make_unique<BusyExecHandle>(std::move(exec), std::move(busy));
}

}  // namespace

namespace {

// The guest's clock must be within this of the host's once set.
constexpr absl::Duration kMaxClockSkew = absl::Seconds(1);

absl::Status CheckSkew(const std::string& vm_id, absl::Time guest_time) {
  absl::Duration skew = absl::AbsDuration(guest_time - absl::Now());
  if (skew > kMaxClockSkew) {
    return absl::InternalError(absl::StrCat("restored vm ", vm_id,
                                            ": guest clock still off by ",
                                            absl::FormatDuration(skew), " after setting it"));
  }
  return absl::OkStatus();
}

}  // namespace

// One round trip when the agent has Reidentify (protocol 2): clock,
// entropy and, for a clone still on its snapshot's address, the network,
// all applied by the agent itself; the re-addressing is then done and
// ReaddressGuestLocked has nothing left to do. An older agent (an image
// built before) gets SetClock and AddEntropy here and its re-addressing
// script from ReaddressGuestLocked, as before.
absl::Status VmManager::FixUpRestoredLocked(VmSlot& slot, const std::string& vm_id) {
  absl::Time t0 = absl::Now();
  SMOLVM_RETURN_IF_ERROR(ConnectAgentLocked(slot, vm_id, options_.restore_ready_timeout));
  const absl::Duration connected = absl::Now() - t0;
  if (!slot.agent->has_agent()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restored vm ", vm_id, " has no guest agent, so its clock and entropy cannot be "
        "fixed; restores need an image with smolvm-agent (the default image has it)"));
  }
  // A snapshot is taken with its detach_on_snapshot mounts unmounted.
  SMOLVM_ASSIGN_OR_RETURN(VmRecord restored, store_->GetVm(vm_id));
  if (!restored.config.mounts.empty()) {
    SMOLVM_RETURN_IF_ERROR(SetGuestMountsAttached(*slot.agent, restored.config.mounts, true));
  }
  std::string seed(64, '\0');
  if (getrandom(seed.data(), seed.size(), 0) != static_cast<ssize_t>(seed.size())) {
    return absl::ErrnoToStatus(errno, "getrandom");
  }
  if (slot.agent->protocol_version() >= agent::kReidentifyProtocolVersion) {
    agent::Reidentity r;
    r.entropy_seed = std::move(seed);
    if (slot.needs_readdress) {
      SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
      r.network = network_->GuestIdentity(vm);
    }
    const absl::Time sent = r.clock.emplace(absl::Now());
    auto guest_time = slot.agent->Reidentify(r, absl::Seconds(10));
    if (!guest_time.ok()) {
      return absl::Status(guest_time.status().code(),
                          absl::StrCat("restored vm ", vm_id, ": ", guest_time.status().message()));
    }
    SMOLVM_RETURN_IF_ERROR(CheckSkew(vm_id, *guest_time));
    slot.needs_fixup = false;
    slot.needs_readdress = false;
    // "clock and entropy fixed" is what tests/e2e/crash_points_test looks for.
    const std::string address =
        r.network ? absl::StrCat(", address ", r.network->ipv4_address, " set") : "";
    spdlog::info("vm {}: clock and entropy fixed{} after restore in {} (agent connected in {}, "
                 "one Reidentify round trip of {})",
                 vm_id, address, absl::FormatDuration(absl::Now() - t0),
                 absl::FormatDuration(connected), absl::FormatDuration(absl::Now() - sent));
    return absl::OkStatus();
  }
  auto guest_time = slot.agent->SetClock(absl::Now(), absl::Seconds(10));
  if (!guest_time.ok()) return guest_time.status();
  SMOLVM_RETURN_IF_ERROR(CheckSkew(vm_id, *guest_time));
  SMOLVM_RETURN_IF_ERROR(slot.agent->AddEntropy(seed, absl::Seconds(10)));
  slot.needs_fixup = false;
  spdlog::info("vm {}: clock and entropy fixed after restore in {} (agent connected in {}; "
               "agent protocol {})",
               vm_id, absl::FormatDuration(absl::Now() - t0), absl::FormatDuration(connected),
               slot.agent->protocol_version());
  return absl::OkStatus();
}

absl::Status VmManager::ReaddressGuestLocked(VmSlot& slot, const VmRecord& vm) {
  if (!slot.needs_readdress) return absl::OkStatus();  // Done by FixUpRestoredLocked.
  absl::Time t0 = absl::Now();
  SMOLVM_RETURN_IF_ERROR(ConnectAgentLocked(slot, vm.vm_id, options_.restore_ready_timeout));
  SMOLVM_RETURN_IF_ERROR(network_->Readdress(*slot.agent, vm));
  slot.needs_readdress = false;
  spdlog::info("vm {}: re-addressed to {} in {}", vm.vm_id, vm.network.guest_ip,
               absl::FormatDuration(absl::Now() - t0));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<agent::GuestAgent>> VmManager::AgentFor(
    const Caller& caller, const std::string& vm_id, bool internal) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  if (!internal) activity_.Note(vm_id);
  const Lifetime& lifetime = vm.config.lifetime;
  if (!internal && vm.state == VmState::kPaused && lifetime.idle_paused && lifetime.auto_resume) {
    // Paused for being idle: this call is the use it waited for.
    const absl::Time t0 = absl::Now();
    SMOLVM_RETURN_IF_ERROR(ResumeLocked(*slot, vm));
    spdlog::info("vm {}: resumed for a guest call in {} (idle policy, auto_resume)", vm_id,
                 absl::FormatDuration(absl::Now() - t0));
  }
  if (vm.state != VmState::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat(
        "vm ", vm_id, " is ", VmStateName(vm.state),
        "; commands and files need a running vm (start or resume it)"));
  }
  // After a daemon restart or a dropped connection, reconnect. The agent
  // answers within milliseconds when it is there at all.
  SMOLVM_RETURN_IF_ERROR(ConnectAgentLocked(*slot, vm_id, absl::Seconds(10)));
  return slot->agent;
}

absl::StatusOr<std::shared_ptr<agent::GuestAgent>> VmManager::PrepareCommand(
    const Caller& caller, const std::string& vm_id, agent::ExecSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) {
    return absl::InvalidArgumentError("a command is needed: set argv or command");
  }
  SMOLVM_RETURN_IF_ERROR(ValidateEnv(spec.env, "env"));
  if (!spec.cwd.empty()) SMOLVM_RETURN_IF_ERROR(ValidateGuestPath(spec.cwd));
  SMOLVM_ASSIGN_OR_RETURN(spec.user, NormalizeGuestUser(spec.user));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  // The VM's env first, the request's on top.
  std::map<std::string, std::string> env = vm.config.env;
  for (auto& [k, v] : spec.env) env[k] = v;
  spec.env = std::move(env);
  // The image's WorkingDir; for another user, the agent's default (its home).
  if (spec.cwd.empty() && spec.user.empty()) spec.cwd = vm.config.working_dir;
  return client;
}

absl::StatusOr<std::unique_ptr<agent::ExecHandle>> VmManager::StartExec(
    const Caller& caller, const std::string& vm_id, agent::ExecSpec spec) {
  if (spec.interactive && spec.stdin_data) {
    return absl::InvalidArgumentError(
        "an interactive exec's stdin is streamed; it takes no whole stdin");
  }
  if (spec.tty && (!spec.interactive || spec.tty->rows > agent::kMaxTerminalCells ||
                   spec.tty->cols > agent::kMaxTerminalCells)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a tty is for interactive execs, at most ", agent::kMaxTerminalCells, " rows and columns"));
  }
  SMOLVM_ASSIGN_OR_RETURN(auto client, PrepareCommand(caller, vm_id, spec));
  // The slot lock is not held while the command runs: execs are concurrent
  // with each other and with snapshots (a paused VM's exec just waits).
  SMOLVM_ASSIGN_OR_RETURN(auto exec, client->StartExec(spec));
  return KeepBusy(std::move(exec), activity_.Busy(vm_id));
}

absl::StatusOr<agent::ProcessInfo> VmManager::StartProcess(const Caller& caller,
                                                          const std::string& vm_id,
                                                          agent::ExecSpec spec) {
  if (spec.stdin_data || spec.timeout != absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "a background process has no stdin and no time limit (use Exec for those)");
  }
  // The agent lists up to 64 processes in one frame (1 MiB): each one's
  // command line must leave room for the others.
  size_t argv_bytes = 0;
  for (const auto& a : spec.argv) argv_bytes += a.size() + 1;
  if (argv_bytes > kMaxProcessArgvBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a background process's command line is ", argv_bytes, " bytes; at most ",
        kMaxProcessArgvBytes, " (pass more through a file or the environment)"));
  }
  SMOLVM_ASSIGN_OR_RETURN(auto client, PrepareCommand(caller, vm_id, spec));
  return client->StartProcess(spec, absl::Seconds(30));
}

absl::StatusOr<std::vector<agent::ProcessInfo>> VmManager::ListProcesses(
    const Caller& caller, const std::string& vm_id) {
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  return client->ListProcesses(absl::Seconds(30));
}

absl::StatusOr<agent::ProcessInfo> VmManager::SignalProcess(const Caller& caller,
                                                           const std::string& vm_id,
                                                           uint32_t pid, int signal,
                                                           bool group) {
  if (signal == 0) signal = 15;  // SIGTERM
  if (signal < 1 || signal > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("signal ", signal, " is not a signal: use 1-64 (15 = SIGTERM)"));
  }
  SMOLVM_RETURN_IF_ERROR(ValidatePid(pid));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  return client->SignalProcess(static_cast<int32_t>(pid), signal, group, absl::Seconds(30));
}

absl::StatusOr<std::unique_ptr<agent::ExecHandle>> VmManager::AttachProcess(
    const Caller& caller, const std::string& vm_id, uint32_t pid, uint32_t tail_bytes,
    bool output) {
  SMOLVM_RETURN_IF_ERROR(ValidatePid(pid));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  SMOLVM_ASSIGN_OR_RETURN(auto exec,
                          client->AttachProcess(static_cast<int32_t>(pid), tail_bytes, output));
  return KeepBusy(std::move(exec), activity_.Busy(vm_id));
}

absl::StatusOr<agent::FileInfo> VmManager::UploadFile(
    const Caller& caller, const std::string& vm_id, agent::FileRequest file,
    const std::function<absl::StatusOr<std::string>()>& next_chunk) {
  const std::string& path = file.path;
  SMOLVM_RETURN_IF_ERROR(ValidateGuestPath(path));
  if (file.mode > 07777) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode ", file.mode, " is not a permission mode"));
  }
  SMOLVM_ASSIGN_OR_RETURN(file.user, NormalizeGuestUser(file.user));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  auto busy = activity_.Busy(vm_id);  // A long upload is use all along.
  uint64_t total = 0;
  const uint64_t limit = options_.max_upload_bytes;
  auto bounded = [&]() -> absl::StatusOr<std::string> {
    auto chunk = next_chunk();
    if (chunk.ok()) {
      total += chunk->size();
      if (limit != 0 && total > limit) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "upload ", path, ": larger than the daemon's limit of ", limit, " bytes"));
      }
    }
    return chunk;
  };
  return client->WriteFile(file, bounded, absl::Hours(24));
}

absl::StatusOr<agent::FileInfo> VmManager::DownloadFile(
    const Caller& caller, const std::string& vm_id, agent::FileRequest file,
    const std::function<absl::Status(const std::string&)>& sink) {
  SMOLVM_RETURN_IF_ERROR(ValidateGuestPath(file.path));
  SMOLVM_ASSIGN_OR_RETURN(file.user, NormalizeGuestUser(file.user));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  auto busy = activity_.Busy(vm_id);
  return client->ReadFile(file, sink, absl::Hours(24));
}

absl::StatusOr<agent::FsResult> VmManager::FileSystem(const Caller& caller,
                                                      const std::string& vm_id,
                                                      agent::FsCall call) {
  SMOLVM_RETURN_IF_ERROR(ValidateGuestFsPath(call.path));
  if (call.op == agent::FsCall::Op::kRename) {
    SMOLVM_RETURN_IF_ERROR(ValidateGuestFsPath(call.new_path));
  }
  if (call.op == agent::FsCall::Op::kList) {
    if (call.depth == 0) call.depth = 1;
    if (call.depth > 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("depth ", call.depth, " is too deep: list at most 32 levels"));
    }
  }
  if (call.mode > 07777) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode ", call.mode, " is not a permission mode"));
  }
  SMOLVM_ASSIGN_OR_RETURN(call.user, NormalizeGuestUser(call.user));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  // A recursive remove of a big tree is the slow case; the agent answers
  // when it is done.
  return client->FileSystem(call, absl::Minutes(10));
}

absl::StatusOr<std::unique_ptr<agent::WatchHandle>> VmManager::WatchDir(
    const Caller& caller, const std::string& vm_id, const std::string& path, std::string user,
    bool recursive) {
  SMOLVM_RETURN_IF_ERROR(ValidateGuestFsPath(path));
  SMOLVM_ASSIGN_OR_RETURN(user, NormalizeGuestUser(user));
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  // Setting up a recursive watch walks the tree (at most 4,096 directories).
  return client->WatchDir(path, user, recursive, absl::Minutes(1));
}

absl::StatusOr<std::vector<absl::Duration>> VmManager::PingAgent(const Caller& caller,
                                                                 const std::string& vm_id,
                                                                 uint32_t count) {
  if (count == 0) count = 1;
  if (count > 10000) {
    return absl::InvalidArgumentError("ping count must be at most 10000");
  }
  SMOLVM_ASSIGN_OR_RETURN(auto client, AgentFor(caller, vm_id));
  std::vector<absl::Duration> times;
  times.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    absl::Time t0 = absl::Now();
    SMOLVM_RETURN_IF_ERROR(client->Ping(absl::Seconds(10)));
    times.push_back(absl::Now() - t0);
  }
  return times;
}

}  // namespace smolvm::core
