#include "tests/fakes/fake_guest.h"

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"

namespace smolvm::fakes {
namespace {

class FakeExec : public agent::ExecHandle {
 public:
  explicit FakeExec(std::string out) : out_(std::move(out)) {}
  absl::StatusOr<agent::ExecEvent> Next(absl::Time) override {
    agent::ExecEvent ev;
    if (!out_sent_) {
      out_sent_ = true;
      ev.kind = agent::ExecEvent::Kind::kStdout;
      ev.data = out_;
      return ev;
    }
    if (exited_) return absl::FailedPreconditionError("exec already exited");
    exited_ = true;
    ev.kind = agent::ExecEvent::Kind::kExit;
    return ev;
  }

 private:
  std::string out_;
  bool out_sent_ = false;
  bool exited_ = false;
};

class FakeGuestAgent : public agent::GuestAgent {
 public:
  FakeGuestAgent(FakeHost* host, uint32_t protocol_version, std::shared_ptr<FakeGuestLog> log)
      : host_(host), protocol_version_(protocol_version), log_(std::move(log)) {}
  bool has_agent() const override { return true; }
  bool healthy() const override { return true; }
  uint32_t protocol_version() const override { return protocol_version_; }
  absl::StatusOr<std::unique_ptr<agent::ExecHandle>> StartExec(
      const agent::ExecSpec& spec) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.exec"));
    if (log_) log_->AddExec(spec.argv);
    return std::unique_ptr<agent::ExecHandle>(
        std::make_unique<FakeExec>(spec.argv.empty() ? "" : spec.argv[0]));
  }
  absl::StatusOr<agent::FileInfo> WriteFile(
      const agent::FileRequest& request,
      const std::function<absl::StatusOr<std::string>()>& next_chunk,
      absl::Duration timeout) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.write_file"));
    agent::FileInfo info;
    info.mode = request.mode;
    for (;;) {
      SMOLVM_ASSIGN_OR_RETURN(std::string chunk, next_chunk());
      if (chunk.empty()) return info;
      info.bytes += chunk.size();
    }
  }
  absl::StatusOr<agent::FileInfo> ReadFile(
      const agent::FileRequest& request,
      const std::function<absl::Status(const std::string&)>& sink,
      absl::Duration timeout) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.read_file"));
    SMOLVM_RETURN_IF_ERROR(sink("data"));
    return agent::FileInfo{4, 0644};
  }
  absl::StatusOr<absl::Time> SetClock(absl::Time now, absl::Duration timeout) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.set_clock"));
    return now;
  }
  absl::Status AddEntropy(const std::string& seed, absl::Duration timeout) override {
    return host_->faults.Hit("guest.add_entropy");
  }
  // As AgentClient: refused by an old agent, the identity validated before
  // anything is "sent".
  absl::StatusOr<absl::Time> Reidentify(const agent::Reidentity& r,
                                        absl::Duration timeout) override {
    if (protocol_version_ < agent::kReidentifyProtocolVersion) {
      return absl::UnimplementedError("the fake guest agent has no Reidentify");
    }
    if (r.network) SMOLVM_RETURN_IF_ERROR(agent::ValidateNetworkIdentity(*r.network));
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.reidentify"));
    if (log_) log_->AddReidentity(r);
    return r.clock.value_or(absl::Now());
  }
  // The fake's file system: every path is an empty file.
  absl::StatusOr<agent::FsResult> FileSystem(const agent::FsCall& call,
                                             absl::Duration timeout) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.fs"));
    agent::FsResult result;
    if (call.op != agent::FsCall::Op::kRemove && call.op != agent::FsCall::Op::kList) {
      agent::FsEntry entry;
      entry.path = call.op == agent::FsCall::Op::kRename ? call.new_path : call.path;
      entry.type = call.op == agent::FsCall::Op::kMakeDir ? agent::FsEntry::Type::kDirectory
                                                          : agent::FsEntry::Type::kFile;
      result.entries.push_back(entry);
      result.created = call.op == agent::FsCall::Op::kMakeDir;
    }
    return result;
  }
  absl::StatusOr<std::unique_ptr<agent::WatchHandle>> WatchDir(const std::string&,
                                                               const std::string&, bool,
                                                               absl::Duration) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.watch"));
    return absl::UnimplementedError("the fake guest agent does not watch directories");
  }
  // The fake's processes: none is ever tracked.
  absl::StatusOr<agent::ProcessInfo> StartProcess(const agent::ExecSpec& spec,
                                                  absl::Duration) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.start_process"));
    if (log_) log_->AddExec(spec.argv);
    agent::ProcessInfo info;
    info.pid = 100;
    info.argv = spec.argv;
    info.running = true;
    return info;
  }
  absl::StatusOr<std::vector<agent::ProcessInfo>> ListProcesses(absl::Duration) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.list_processes"));
    return std::vector<agent::ProcessInfo>{};
  }
  absl::StatusOr<agent::ProcessInfo> SignalProcess(int32_t pid, int, bool,
                                                   absl::Duration) override {
    return absl::NotFoundError(absl::StrCat("no process ", pid));
  }
  absl::StatusOr<std::unique_ptr<agent::ExecHandle>> AttachProcess(int32_t pid, uint32_t,
                                                                   bool) override {
    return absl::NotFoundError(absl::StrCat("no process ", pid));
  }
  absl::Status Ping(absl::Duration timeout) override { return host_->faults.Hit("guest.ping"); }

 private:
  FakeHost* const host_;
  const uint32_t protocol_version_;
  const std::shared_ptr<FakeGuestLog> log_;
};

}  // namespace

void FakeGuestLog::AddExec(std::vector<std::string> argv) {
  absl::MutexLock lock(&mu_);
  execs_.push_back(std::move(argv));
}

void FakeGuestLog::AddReidentity(agent::Reidentity r) {
  absl::MutexLock lock(&mu_);
  reidentities_.push_back(std::move(r));
}

std::vector<std::vector<std::string>> FakeGuestLog::execs() const {
  absl::MutexLock lock(&mu_);
  return execs_;
}

std::vector<agent::Reidentity> FakeGuestLog::reidentities() const {
  absl::MutexLock lock(&mu_);
  return reidentities_;
}

void FakeGuestLog::Clear() {
  absl::MutexLock lock(&mu_);
  execs_.clear();
  reidentities_.clear();
}

absl::StatusOr<std::shared_ptr<agent::GuestAgent>> FakeGuestConnector::Connect(
    const std::string& socket_path, absl::Duration timeout,
    const std::function<absl::Status()>& abort_check) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.connect"));
  if (abort_check) SMOLVM_RETURN_IF_ERROR(abort_check());
  return std::shared_ptr<agent::GuestAgent>(
      std::make_shared<FakeGuestAgent>(host_, protocol_version_, log_));
}

}  // namespace smolvm::fakes
