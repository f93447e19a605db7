#include "tests/fakes/fake_guest.h"

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
  explicit FakeGuestAgent(FakeHost* host) : host_(host) {}
  bool has_agent() const override { return true; }
  bool healthy() const override { return true; }
  absl::StatusOr<std::unique_ptr<agent::ExecHandle>> StartExec(
      const agent::ExecSpec& spec) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.exec"));
    return std::unique_ptr<agent::ExecHandle>(
        std::make_unique<FakeExec>(spec.argv.empty() ? "" : spec.argv[0]));
  }
  absl::StatusOr<agent::FileInfo> WriteFile(
      const std::string& path, uint32_t mode, bool tar, bool make_parents,
      const std::function<absl::StatusOr<std::string>()>& next_chunk,
      absl::Duration timeout) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.write_file"));
    agent::FileInfo info;
    info.mode = mode;
    for (;;) {
      SMOLVM_ASSIGN_OR_RETURN(std::string chunk, next_chunk());
      if (chunk.empty()) return info;
      info.bytes += chunk.size();
    }
  }
  absl::StatusOr<agent::FileInfo> ReadFile(
      const std::string& path, bool tar,
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
  absl::Status Ping(absl::Duration timeout) override { return host_->faults.Hit("guest.ping"); }

 private:
  FakeHost* const host_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<agent::GuestAgent>> FakeGuestConnector::Connect(
    const std::string& socket_path, absl::Duration timeout,
    const std::function<absl::Status()>& abort_check) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("guest.connect"));
  if (abort_check) SMOLVM_RETURN_IF_ERROR(abort_check());
  return std::shared_ptr<agent::GuestAgent>(std::make_shared<FakeGuestAgent>(host_));
}

}  // namespace smolvm::fakes
