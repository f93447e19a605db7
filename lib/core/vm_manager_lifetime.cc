// Lifetime policies (VMConfig.lifetime): SetLifetime, and the worker that
// deletes, stops, pauses or snapshots VMs whose max_lifetime ran out or that
// were idle too long, and wakes VMs its idle policy paused when a forwarded
// connection waits for them. Guest calls wake them in AgentFor.
#include <optional>

#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/model/event.h"
#include "lib/model/validation.h"
#include "lib/net/conntrack.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

// How often deadlines are checked: a limit acts within this of running out.
constexpr absl::Duration kLifetimeTick = absl::Seconds(1);
// After an action failed, the next try waits this long.
constexpr absl::Duration kActionRetry = absl::Seconds(30);

}  // namespace

absl::StatusOr<VmRecord> VmManager::SetLifetime(const Caller& caller, const std::string& vm_id,
                                                const Lifetime& lifetime) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_RETURN_IF_ERROR(ValidateLifetime(lifetime));
  auto slot = SlotFor(vm_id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, LoadLocked(*slot, caller, vm_id));
  const std::string kept_snapshot = vm.config.lifetime.snapshot_id;
  vm.config.lifetime = StartLifetime(lifetime, absl::Now());
  vm.config.lifetime.snapshot_id = kept_snapshot;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  spdlog::info("vm {}: lifetime set (max {} then {}, idle {} then {})", vm_id,
               absl::FormatDuration(lifetime.max_lifetime),
               LifetimeActionName(lifetime.max_lifetime_action),
               absl::FormatDuration(lifetime.idle_timeout),
               LifetimeActionName(lifetime.idle_action));
  return store_->GetVm(vm_id);
}

void VmManager::LifetimeWorkerLoop() {
  for (;;) {
    LifetimePass();
    absl::MutexLock lock(&pools_mu_);
    if (pools_mu_.AwaitWithTimeout(absl::Condition(&stopping_), kLifetimeTick)) return;
  }
}

void VmManager::LifetimePass() {
  auto vms = store_->LifetimeVms();
  if (!vms.ok()) {
    spdlog::warn("lifetime worker: cannot read the store: {}", vms.status().ToString());
    return;
  }
  const absl::Time now = absl::Now();
  // The connection tracking table, read at most once a pass and only when
  // a VM's idleness or wake-up depends on it.
  std::optional<absl::StatusOr<std::string>> conntrack;
  auto forwarded = [&](const VmRecord& vm) {
    if (vm.network.guest_ip.empty()) return net::ForwardedConnections{};
    if (!conntrack) {
      conntrack = net::ReadConntrackTable();
      if (!conntrack->ok()) {
        spdlog::debug("lifetime worker: {}", conntrack->status().ToString());
      }
    }
    return conntrack->ok() ? net::CountForwarded(**conntrack, vm.network.guest_ip)
                           : net::ForwardedConnections{};
  };
  for (const VmRecord& vm : *vms) {
    if (!vm.pool_id.empty()) continue;  // The pool's until claimed.
    {
      absl::MutexLock lock(&pools_mu_);
      if (stopping_) return;
      auto retry = lifetime_retry_after_.find(vm.vm_id);
      if (retry != lifetime_retry_after_.end()) {
        if (now < retry->second) continue;
        lifetime_retry_after_.erase(retry);
      }
    }
    const Lifetime& lifetime = vm.config.lifetime;
    if (lifetime.expires_at != absl::InfinitePast() && now >= lifetime.expires_at) {
      TakeLifetimeAction(vm, lifetime.max_lifetime_action, "max_lifetime");
      continue;
    }
    if (vm.state == VmState::kPaused && lifetime.idle_paused && lifetime.auto_resume) {
      // A client's connection to a forwarded port waits in the paused
      // guest's queue (or retries): wake the guest for it.
      if (forwarded(vm).waiting > 0) {
        auto slot = SlotFor(vm.vm_id);
        absl::MutexLock lock(&slot->mu);
        auto fresh = store_->GetVm(vm.vm_id);
        if (fresh.ok() && fresh->state == VmState::kPaused && fresh->config.lifetime.idle_paused &&
            slot->instance) {
          if (absl::Status s = ResumeLocked(*slot, *fresh); s.ok()) {
            spdlog::info("vm {}: resumed for a forwarded connection (idle policy, auto_resume)",
                         vm.vm_id);
          } else {
            spdlog::warn("vm {}: auto-resume for a forwarded connection failed: {}", vm.vm_id,
                         s.ToString());
          }
        }
      }
      continue;
    }
    if (lifetime.idle_timeout == absl::ZeroDuration() || vm.state != VmState::kRunning) continue;
    std::optional<absl::Time> since = activity_.IdleSince(vm.vm_id);
    if (!since) continue;  // An exec or attached process is running.
    // Booting, restoring, resuming and every other change of the VM's
    // record count as use too.
    const absl::Time idle_from = std::max(*since, vm.updated_at);
    if (now - idle_from < lifetime.idle_timeout) continue;
    // What the daemon does not see by itself: connections to its forwarded
    // ports, processes started in the background.
    if (forwarded(vm).open > 0 || GuestHasProcesses(vm.vm_id)) {
      activity_.Note(vm.vm_id);
      continue;
    }
    TakeLifetimeAction(vm, lifetime.idle_action, "idle");
  }
}

bool VmManager::GuestHasProcesses(const std::string& vm_id) {
  auto agent = AgentFor(Caller::System(), vm_id, /*internal=*/true);
  if (!agent.ok()) return false;
  auto processes = (*agent)->ListProcesses(absl::Seconds(10));
  if (!processes.ok()) return false;
  for (const auto& p : *processes) {
    if (p.running) return true;
  }
  return false;
}

void VmManager::TakeLifetimeAction(const VmRecord& vm, LifetimeAction action, const char* why) {
  const std::string& id = vm.vm_id;
  const Caller system = Caller::System();
  const bool live = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  spdlog::info("vm {}: {} reached: {}", id, why, LifetimeActionName(action));
  // Announced before it is taken: the changes it makes (stopped, deleted,
  // snapshot_created, ...) follow it in the journal.
  if (auto e = store_->AppendEvent({.owner = vm.owner,
                                    .kind = kEventLifetimeAction,
                                    .vm_id = id,
                                    .state = VmStateName(vm.state),
                                    .detail = absl::StrCat(why, " reached: ",
                                                           LifetimeActionName(action))});
      !e.ok()) {
    spdlog::warn("vm {}: the event of its {} action was not recorded: {}", id, why,
                 e.status().ToString());
  }
  absl::Status status;
  std::string snapshot_id;
  switch (action) {
    case LifetimeAction::kDelete:
      status = DeleteVm(system, id);
      if (absl::IsNotFound(status)) status = absl::OkStatus();
      break;
    case LifetimeAction::kStop:
      if (live) status = StopVm(system, id).status();
      break;
    case LifetimeAction::kPause: {
      // Paused and marked in one write, under the VM's lock: a guest call
      // never finds it paused without knowing it may resume it.
      auto slot = SlotFor(id);
      absl::MutexLock lock(&slot->mu);
      auto fresh = store_->GetVm(id);
      if (!fresh.ok()) return;
      if (fresh->state == VmState::kRunning && slot->instance) {
        status = slot->instance->Pause();
        if (status.ok()) {
          fresh->state = VmState::kPaused;
          fresh->config.lifetime.idle_paused = std::string_view(why) == "idle";
        }
      }
      if (status.ok()) {
        if (std::string_view(why) == "max_lifetime") {
          fresh->config.lifetime.expires_at = absl::InfinitePast();
        }
        status = store_->UpdateVm(*fresh);
      }
      if (status.ok()) {
        spdlog::info("vm {}: paused ({})", id, why);
        return;
      }
      break;
    }
    case LifetimeAction::kSnapshot:
      if (!live) break;
      // The owner's snapshot, under the owner's quota, like one it took.
      snapshot_id = absl::StrCat(id, "-lifetime-", absl::ToUnixSeconds(absl::Now()));
      if (snapshot_id.size() > 64) snapshot_id = absl::StrCat("lifetime-", GenerateId("snap"));
      {
        const Caller owner{vm.owner, false, absl::StrCat("lifetime:", id)};
        auto snap = CreateSnapshot(owner, id, snapshot_id, /*resume_source=*/false);
        if (!snap.ok()) {
          // Stopped all the same (the disk stays): a limit must bound what
          // the VM holds even when its owner's quota is full.
          spdlog::warn("vm {}: the {} snapshot failed, stopping it without one: {}", id, why,
                       snap.status().ToString());
          snapshot_id.clear();
        } else {
          // Named on the VM before it stops, so whoever sees it stopped
          // finds its snapshot.
          auto slot = SlotFor(id);
          absl::MutexLock lock(&slot->mu);
          auto fresh = store_->GetVm(id);
          if (fresh.ok()) {
            fresh->config.lifetime.snapshot_id = snapshot_id;
            (void)store_->UpdateVm(*fresh);
          }
        }
      }
      status = StopVm(system, id).status();
      if (absl::IsFailedPrecondition(status)) status = absl::OkStatus();  // Already stopped.
      break;
  }
  if (!status.ok()) {
    spdlog::warn("vm {}: {} action {} failed, retrying in {}: {}", id, why,
                 LifetimeActionName(action), absl::FormatDuration(kActionRetry),
                 status.ToString());
    absl::MutexLock lock(&pools_mu_);
    lifetime_retry_after_[id] = absl::Now() + kActionRetry;
    return;
  }
  if (action == LifetimeAction::kDelete) return;
  if (std::string_view(why) != "max_lifetime") return;
  // Spent once the action is done (a failed one is retried above).
  auto slot = SlotFor(id);
  absl::MutexLock lock(&slot->mu);
  auto fresh = store_->GetVm(id);
  if (!fresh.ok()) return;
  fresh->config.lifetime.expires_at = absl::InfinitePast();
  if (absl::Status s = store_->UpdateVm(*fresh); !s.ok()) {
    spdlog::warn("vm {}: recording its {} action failed: {}", id, why, s.ToString());
  }
}

}  // namespace smolvm::core
