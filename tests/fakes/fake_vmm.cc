#include "tests/fakes/fake_vmm.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"
#include "lib/base/status_macros.h"

namespace smolvm::fakes {
namespace {

class FakeVmInstance : public vmm::VmInstance {
 public:
  FakeVmInstance(FakeHost* host, int64_t pid, std::string run_dir)
      : host_(host), pid_(pid), run_dir_(std::move(run_dir)) {}
  int64_t pid() const override { return pid_; }
  bool IsAlive() const override {
    absl::MutexLock lock(&host_->mu);
    auto it = host_->processes.find(pid_);
    return it != host_->processes.end() && it->second.alive;
  }
  std::string agent_socket_path() const override { return JoinPath(run_dir_, "agent.sock"); }
  absl::Status Pause() override { return SetRunState("instance.pause", "paused"); }
  absl::Status Resume() override { return SetRunState("instance.resume", "running"); }
  absl::StatusOr<std::string> QueryRunState() override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("instance.query_run_state"));
    absl::MutexLock lock(&host_->mu);
    SMOLVM_ASSIGN_OR_RETURN(FakeProcess * p, LiveLocked());
    return p->run_state;
  }
  absl::Status SaveDeviceState(const std::string& path) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("instance.save_device_state"));
    absl::MutexLock lock(&host_->mu);
    SMOLVM_ASSIGN_OR_RETURN(FakeProcess * p, LiveLocked());
    if (p->run_state != "paused") {
      return absl::FailedPreconditionError("fake vmm: save needs a paused vm");
    }
    SMOLVM_RETURN_IF_ERROR(WriteFileAtomic(path, absl::StrCat("device state of ", p->vm_id)));
    p->run_state = "postmigrate";
    return absl::OkStatus();
  }
  absl::Status LoadDeviceState(const std::string& path) override {
    return absl::UnimplementedError("fake vmm: Launch loads the state");
  }
  absl::Status Shutdown(absl::Duration grace) override {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("instance.shutdown"));
    absl::MutexLock lock(&host_->mu);
    auto it = host_->processes.find(pid_);
    if (it != host_->processes.end()) it->second.alive = false;
    return absl::OkStatus();
  }
  std::string ConsoleTail(size_t max_bytes) const override { return "(fake console)"; }
  std::string ExitCause() const override { return ""; }

 private:
  absl::StatusOr<FakeProcess*> LiveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(host_->mu) {
    auto it = host_->processes.find(pid_);
    if (it == host_->processes.end() || !it->second.alive) {
      return absl::UnavailableError(absl::StrCat("fake vmm ", pid_, " is gone"));
    }
    return &it->second;
  }
  absl::Status SetRunState(std::string_view step, const char* state) {
    SMOLVM_RETURN_IF_ERROR(host_->faults.Hit(step));
    absl::MutexLock lock(&host_->mu);
    SMOLVM_ASSIGN_OR_RETURN(FakeProcess * p, LiveLocked());
    p->run_state = state;
    return absl::OkStatus();
  }

  FakeHost* const host_;
  const int64_t pid_;
  const std::string run_dir_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<vmm::VmInstance>> FakeHypervisor::Launch(
    const vmm::LaunchSpec& spec) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("hypervisor.launch"));
  if (!PathExists(spec.disk_path)) {
    return absl::FailedPreconditionError(absl::StrCat("fake vmm: no disk ", spec.disk_path));
  }
  SMOLVM_RETURN_IF_ERROR(MakeDirs(spec.run_dir));
  if (spec.incoming_state_path) {
    if (!PathExists(*spec.incoming_state_path) || !PathExists(spec.mem_path)) {
      return absl::FailedPreconditionError("fake vmm: snapshot files missing");
    }
  } else if (spec.mem_shared) {
    int fd = open(spec.mem_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return absl::ErrnoToStatus(errno, "fake vmm: create mem");
    // A few touched pages, like a booted guest's.
    (void)!ftruncate(fd, static_cast<off_t>(spec.memory_mib) << 20);
    (void)!pwrite(fd, "ram", 3, 0);
    close(fd);
  }
  absl::MutexLock lock(&host_->mu);
  FakeProcess p;
  p.pid = host_->next_pid++;
  p.vm_id = spec.vm_id;
  p.run_dir = spec.run_dir;
  p.restored = spec.incoming_state_path.has_value();
  p.run_state = p.restored ? "paused" : "running";
  host_->processes[p.pid] = p;
  return std::unique_ptr<vmm::VmInstance>(
      std::make_unique<FakeVmInstance>(host_, p.pid, spec.run_dir));
}

absl::StatusOr<std::unique_ptr<vmm::VmInstance>> FakeHypervisor::Attach(
    const std::string& vm_id, int64_t pid, const std::string& run_dir) {
  SMOLVM_RETURN_IF_ERROR(host_->faults.Hit("hypervisor.attach"));
  absl::MutexLock lock(&host_->mu);
  auto it = host_->processes.find(pid);
  if (it == host_->processes.end() || !it->second.alive || it->second.vm_id != vm_id) {
    return absl::NotFoundError(absl::StrCat("fake vmm: no live vmm ", pid, " for vm ", vm_id));
  }
  return std::unique_ptr<vmm::VmInstance>(std::make_unique<FakeVmInstance>(host_, pid, run_dir));
}

void FakeHypervisor::EndStrayProcess(const std::string& vm_id, const std::string& run_dir) {
  absl::MutexLock lock(&host_->mu);
  for (auto& [pid, p] : host_->processes) {
    if (p.vm_id == vm_id && p.run_dir == run_dir) p.alive = false;
  }
}

}  // namespace smolvm::fakes
