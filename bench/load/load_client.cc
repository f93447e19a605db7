// File: bench/load/load_client.cc
#include "bench/load/load_client.h"

#include <grpcpp/client_context.h>

#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm::load {
namespace {

using VmStub = v1::VmService::Stub;
using SnapStub = v1::SnapshotService::Stub;

// What the Exec calls run, and what they must print.
constexpr char kExecWord[] = "load";
constexpr absl::Duration kExecDeadline = absl::Seconds(90);
// After a failed call: do not spin on a daemon that refuses everything.
constexpr absl::Duration kErrorBackoff = absl::Milliseconds(100);

// Takes `n` of the `cap` slots counted by `used`; false if too few are free.
bool Reserve(std::atomic<int>& used, int n, int cap) {
  int cur = used.load();
  do {
    if (cur + n > cap) return false;
  } while (!used.compare_exchange_weak(cur, cur + n));
  return true;
}

// Times `call` (returning absl::Status or StatusOr) into `stats`.
template <typename F>
auto Timed(RpcStats& stats, F call) {
  absl::Time t0 = absl::Now();
  auto result = call();
  absl::Status status;
  if constexpr (std::is_same_v<decltype(result), absl::Status>) {
    status = result;
  } else {
    status = result.status();
  }
  stats.Record(absl::Now() - t0, status);
  if (!status.ok()) absl::SleepFor(kErrorBackoff);
  return result;
}

// Timed, for calls whose result is not needed (only counted).
template <typename F>
void Count(RpcStats& stats, F call) {
  (void)Timed(stats, std::move(call));
}

}  // namespace

LoadClient::LoadClient(int index, LoadShared* shared)
    : index_(index),
      shared_(shared),
      conn_(shared->options->client),
      rng_(shared->options->seed + static_cast<uint64_t>(index)),
      pick_(shared->options->mix.begin(), shared->options->mix.end()) {}

bool LoadClient::Interrupted() const {
  const auto* flag = shared_->options->interrupted;
  return flag != nullptr && flag->load();
}

void LoadClient::Run(absl::Time end, PhaseStats* stats) {
  while (absl::Now() < end && !Interrupted()) {
    bool called = fork_waiting_ && Fork(stats);
    // Redraw a call that cannot be made now; with a bounded number of tries
    // (all drawn calls may be impossible for a moment: every slot taken by
    // other clients, and nothing of its own).
    for (int attempt = 0; attempt < 16 && !called; ++attempt) {
      called = TryCall(static_cast<Rpc>(pick_(rng_)), stats);
    }
    if (!called) absl::SleepFor(absl::Milliseconds(20));
  }
}

bool LoadClient::TryCall(Rpc rpc, PhaseStats* stats) {
  RpcStats& s = (*stats)[rpc];
  switch (rpc) {
    case Rpc::kListVms: {
      v1::ListVmsRequest req;
      Count(s, [&] { return conn_.Call(&VmStub::ListVms, req); });
      return true;
    }
    case Rpc::kGetVm: {
      v1::GetVmRequest req;
      req.set_vm_id(Any(shared_->base_vm, vms_));
      Count(s, [&] { return conn_.Call(&VmStub::GetVm, req); });
      return true;
    }
    case Rpc::kListSnapshots: {
      v1::ListSnapshotsRequest req;
      Count(s, [&] { return conn_.Call(&SnapStub::ListSnapshots, req); });
      return true;
    }
    case Rpc::kGetSnapshot: {
      v1::GetSnapshotRequest req;
      req.set_snapshot_id(Any(shared_->base_snapshot, snapshots_));
      Count(s, [&] { return conn_.Call(&SnapStub::GetSnapshot, req); });
      return true;
    }
    case Rpc::kExec: {
      const std::string vm_id = Any(shared_->base_vm, vms_);
      Count(s, [&] { return Exec(vm_id); });
      return true;
    }
    case Rpc::kRestoreSnapshot:
      return Restore(stats);
    case Rpc::kForkSnapshot:
      return Fork(stats);
    case Rpc::kCreateSnapshot:
      return Snapshot(stats);
    case Rpc::kDeleteVm:
      if (vms_.empty()) return false;
      DeleteVm(std::uniform_int_distribution<size_t>(0, vms_.size() - 1)(rng_), stats);
      return true;
    case Rpc::kDeleteSnapshot:
      if (snapshots_.empty()) return false;
      DeleteSnapshot(std::uniform_int_distribution<size_t>(0, snapshots_.size() - 1)(rng_), stats);
      return true;
  }
  return false;
}

absl::Status LoadClient::Exec(const std::string& vm_id) {
  v1::ExecRequest req;
  req.set_vm_id(vm_id);
  req.add_argv("echo");
  req.add_argv(kExecWord);
  req.set_timeout_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(kExecDeadline / 2)));
  grpc::ClientContext context;
  if (absl::Status s = conn_.PrepareContext(&context, kExecDeadline); !s.ok()) return s;
  std::unique_ptr<grpc::ClientReader<v1::ExecResponse>> reader =
      conn_.vm_stub().Exec(&context, req);
  std::string out;
  std::optional<v1::ExecResult> exit;
  v1::ExecResponse resp;
  while (reader->Read(&resp)) {
    if (resp.has_stdout()) out += resp.stdout();
    if (resp.has_exit()) exit = resp.exit();
  }
  if (grpc::Status st = reader->Finish(); !st.ok()) return conn_.Convert(st);
  // A call that succeeded with a wrong result is a daemon or agent bug; it
  // is counted as UNKNOWN with what came back.
  if (!exit.has_value()) {
    return absl::UnknownError(absl::StrCat("exec in vm ", vm_id, ": no exit in the stream"));
  }
  if (exit->exit_code() != 0 || exit->signal() != 0 || exit->timed_out() ||
      out != absl::StrCat(kExecWord, "\n")) {
    return absl::UnknownError(absl::StrCat(
        "exec `echo ", kExecWord, "` in vm ", vm_id, ": exit ", exit->exit_code(), " signal ",
        exit->signal(), " timed_out ", exit->timed_out(), " stdout \"", out, "\""));
  }
  return absl::OkStatus();
}

bool LoadClient::Restore(PhaseStats* stats) {
  if (!ReserveClones(1)) return false;
  v1::RestoreSnapshotRequest req;
  // Half from its own snapshots when it has some: a clone of a clone.
  const bool own = !snapshots_.empty() && std::bernoulli_distribution(0.5)(rng_);
  req.set_snapshot_id(own ? Pick(snapshots_) : shared_->base_snapshot);
  req.set_resume_vm(true);
  req.set_vm_id(NewId('v'));
  auto vm = Timed((*stats)[Rpc::kRestoreSnapshot],
                  [&] { return conn_.Call(&SnapStub::RestoreSnapshot, req); });
  if (vm.ok()) {
    vms_.push_back(req.vm_id());
  } else {
    shared_->live_clones -= 1;
  }
  return true;
}

bool LoadClient::Fork(PhaseStats* stats) {
  const LoadOptions& o = *shared_->options;
  const int n = static_cast<int>(o.fork_count);
  int waiter = -1;
  if (!shared_->fork_waiter.compare_exchange_strong(waiter, index_) && waiter != index_) {
    return false;  // Another client's fork waits; one at a time.
  }
  fork_waiting_ = true;
  if (!ReserveClones(n)) return false;  // Still waiting; others drain the slots.
  shared_->fork_waiter = -1;
  fork_waiting_ = false;
  v1::ForkSnapshotRequest req;
  req.set_snapshot_id(shared_->base_snapshot);
  req.set_count(o.fork_count);
  req.set_resume_vm(true);
  req.set_vm_id_prefix(NewId('f'));
  RpcStats& s = (*stats)[Rpc::kForkSnapshot];
  auto forked = Timed(s, [&] { return conn_.Call(&SnapStub::ForkSnapshot, req); });
  int alive = 0;
  if (forked.ok()) {
    // Each clone's own failure is an error of this call too.
    for (const v1::ForkResult& r : forked->results()) {
      if (r.error_code() == 0) {
        vms_.push_back(r.vm_id());
        ++alive;
      } else {
        s.RecordError(absl::Status(static_cast<absl::StatusCode>(r.error_code()),
                                   absl::StrCat("clone ", r.vm_id(), ": ", r.error_message())));
      }
    }
  }
  shared_->live_clones -= n - alive;
  return true;
}

bool LoadClient::ReserveClones(int n) {
  const int waiter = shared_->fork_waiter.load();
  if (waiter != -1 && waiter != index_) return false;
  return Reserve(shared_->live_clones, n, shared_->options->max_clones);
}

bool LoadClient::Snapshot(PhaseStats* stats) {
  const LoadOptions& o = *shared_->options;
  if (vms_.empty() || !Reserve(shared_->clone_snapshots, 1, o.max_snapshots)) return false;
  v1::CreateSnapshotRequest req;
  req.set_vm_id(Pick(vms_));
  req.set_snapshot_id(NewId('s'));
  req.set_resume_source(true);  // The clone keeps running (Exec may pick it).
  auto snap = Timed((*stats)[Rpc::kCreateSnapshot],
                    [&] { return conn_.Call(&SnapStub::CreateSnapshot, req); });
  if (snap.ok()) {
    snapshots_.push_back(req.snapshot_id());
  } else {
    shared_->clone_snapshots -= 1;
  }
  return true;
}

void LoadClient::DeleteVm(size_t i, PhaseStats* stats) {
  v1::DeleteVmRequest req;
  req.set_vm_id(vms_[i]);
  // Forgotten even if the call fails: the run's final sweep finds what is
  // left and reports it.
  vms_.erase(vms_.begin() + static_cast<ptrdiff_t>(i));
  Count((*stats)[Rpc::kDeleteVm], [&] { return conn_.Call(&VmStub::DeleteVm, req); });
  shared_->live_clones -= 1;
}

void LoadClient::DeleteSnapshot(size_t i, PhaseStats* stats) {
  // VMs restored from it may still run: the daemon allows that (their
  // private mapping of mem.bin keeps its pages).
  v1::DeleteSnapshotRequest req;
  req.set_snapshot_id(snapshots_[i]);
  snapshots_.erase(snapshots_.begin() + static_cast<ptrdiff_t>(i));
  Count((*stats)[Rpc::kDeleteSnapshot], [&] { return conn_.Call(&SnapStub::DeleteSnapshot, req); });
  shared_->clone_snapshots -= 1;
}

void LoadClient::Release(PhaseStats* stats) {
  if (fork_waiting_) {  // The phase ended first.
    shared_->fork_waiter = -1;
    fork_waiting_ = false;
  }
  while (!vms_.empty()) DeleteVm(vms_.size() - 1, stats);
  while (!snapshots_.empty()) DeleteSnapshot(snapshots_.size() - 1, stats);
}

std::string LoadClient::NewId(char kind) {
  return absl::StrCat(shared_->options->id_prefix, "-c", index_, "-", std::string(1, kind),
                      next_id_++);
}

const std::string& LoadClient::Any(const std::string& first, const std::vector<std::string>& rest) {
  size_t i = std::uniform_int_distribution<size_t>(0, rest.size())(rng_);
  return i == 0 ? first : rest[i - 1];
}

const std::string& LoadClient::Pick(const std::vector<std::string>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng_)];
}

}  // namespace smolvm::load
