// Lifetime policies (VMConfig.lifetime): SetLifetime, and the worker that
// deletes, stops, pauses or snapshots VMs whose max_lifetime ran out or that
// were idle too long, and wakes VMs its idle policy paused when a forwarded
// connection waits for them. Guest calls wake them in AgentFor.
#include <map>
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
  // The connection tracking table, read and counted at most once a pass
  // and only when a VM's idleness or wake-up depends on it.
  std::optional<std::map<std::string, net::ForwardedConnections>> forwards;
  auto forwarded = [&](const VmRecord& vm) {
    if (vm.network.guest_ip.empty()) return net::ForwardedConnections{};
    if (!forwards) {
      forwards.emplace();
      if (auto table = net::ReadConntrackTable(); table.ok()) {
        *forwards = net::CountForwardedByGuest(*table, net::EstablishedTimeout());
      } else if (!conntrack_warned_.exchange(true)) {
        spdlog::warn("lifetime worker: {}", table.status().ToString());
      }
    }
    auto it = forwards->find(vm.network.guest_ip);
    return it == forwards->end() ? net::ForwardedConnections{} : it->second;
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
            fresh->config.lifetime.auto_resume && slot->instance) {
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
    if (!IdleFor(vm, now)) continue;
    // What the daemon does not see by itself: connections to its forwarded
    // ports, processes started in the background.
    // (A connection counts while it carried traffic within the idle
    // timeout: one whose client vanished does not keep the VM for days.)
    const net::ForwardedConnections f = forwarded(vm);
    if ((f.open > 0 && f.quiet_for < lifetime.idle_timeout) || GuestMayBeBusy(vm.vm_id)) {
      activity_.Note(vm.vm_id);
      continue;
    }
    TakeLifetimeAction(vm, lifetime.idle_action, "idle");
  }
}

bool VmManager::IdleFor(const VmRecord& vm, absl::Time now) {
  const Lifetime& lifetime = vm.config.lifetime;
  if (lifetime.idle_timeout == absl::ZeroDuration() || vm.state != VmState::kRunning) return false;
  std::optional<absl::Time> since = activity_.IdleSince(vm.vm_id);
  if (!since) return false;  // An exec, transfer or attached process is running.
  // Booting, restoring, resuming and every other change of the VM's record
  // count as use too.
  return now - std::max(*since, vm.updated_at) >= lifetime.idle_timeout;
}

bool VmManager::StillDue(const VmRecord& seen, const VmRecord& fresh, const char* why) {
  const Lifetime& was = seen.config.lifetime;
  const Lifetime& is = fresh.config.lifetime;
  if (std::string_view(why) == "max_lifetime") {
    // The same deadline as the pass saw: a SetLifetime meanwhile wins.
    return is.expires_at == was.expires_at && is.expires_at != absl::InfinitePast() &&
           absl::Now() >= is.expires_at;
  }
  return is.idle_timeout == was.idle_timeout && is.idle_action == was.idle_action &&
         IdleFor(fresh, absl::Now());
}

bool VmManager::GuestMayBeBusy(const std::string& vm_id) {
  // Short timeouts: one slow guest must not hold up every VM's lifetime.
  auto agent = AgentFor(Caller::System(), vm_id, /*internal=*/true);
  if (!agent.ok()) return true;  // Unknown is not idle: asked again next pass.
  auto processes = (*agent)->ListProcesses(absl::Seconds(2));
  if (!processes.ok()) return true;
  for (const auto& p : *processes) {
    if (p.running) return true;
  }
  return false;
}

void VmManager::TakeLifetimeAction(const VmRecord& vm, LifetimeAction action, const char* why) {
  const std::string& id = vm.vm_id;
  const Caller system = Caller::System();
  const bool max_lifetime = std::string_view(why) == "max_lifetime";
  {
    // Checked again under the VM's lock against its current record: the
    // owner may have changed the policy or used the VM since the pass read
    // it. (The actions below take the lock themselves.)
    auto slot = SlotFor(id);
    absl::MutexLock lock(&slot->mu);
    auto fresh = store_->GetVm(id);
    if (!fresh.ok() || !StillDue(vm, *fresh, why)) return;
    if (action == LifetimeAction::kPause) {
      TakePauseLocked(*slot, *fresh, why);
      return;
    }
  }
  const bool live = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
  spdlog::info("vm {}: {} reached: {}", id, why, LifetimeActionName(action));
  AnnounceLifetimeAction(vm, action, why);
  absl::Status status;
  switch (action) {
    case LifetimeAction::kPause:
      break;  // Above.
    case LifetimeAction::kDelete:
      status = DeleteVm(system, id);
      if (absl::IsNotFound(status)) status = absl::OkStatus();
      break;
    case LifetimeAction::kStop:
      if (live) status = StopVm(system, id).status();
      if (absl::IsFailedPrecondition(status)) status = absl::OkStatus();  // Stopped meanwhile.
      break;
    case LifetimeAction::kSnapshot: {
      if (!live) break;
      // The owner's snapshot, under the owner's quota, like one it took;
      // an unguessable id, so no one can take it first.
      const std::string snapshot_id = GenerateId(absl::StrCat(id.substr(0, 40), "-lifetime"));
      const Caller owner{vm.owner, false, absl::StrCat("lifetime:", id)};
      auto snap = CreateSnapshot(owner, id, snapshot_id, /*resume_source=*/false);
      if (!snap.ok()) {
        // Stopped all the same (the disk stays): a limit must bound what
        // the VM holds even when its owner's quota is full.
        spdlog::warn("vm {}: the {} snapshot failed, stopping it without one: {}", id, why,
                     snap.status().ToString());
      } else {
        // Named on the VM before it stops, so whoever sees it stopped finds
        // its snapshot.
        auto slot = SlotFor(id);
        absl::MutexLock lock(&slot->mu);
        auto fresh = store_->GetVm(id);
        if (fresh.ok()) {
          fresh->config.lifetime.snapshot_id = snapshot_id;
          (void)store_->UpdateVm(*fresh);
        }
      }
      status = StopVm(system, id).status();
      if (absl::IsFailedPrecondition(status)) status = absl::OkStatus();  // Already stopped.
      break;
    }
  }
  if (!status.ok()) {
    spdlog::warn("vm {}: {} action {} failed, retrying in {}: {}", id, why,
                 LifetimeActionName(action), absl::FormatDuration(kActionRetry),
                 status.ToString());
    absl::MutexLock lock(&pools_mu_);
    lifetime_retry_after_[id] = absl::Now() + kActionRetry;
    return;
  }
  if (action == LifetimeAction::kDelete || !max_lifetime) return;
  // Spent once the action is done (a failed one is retried above), unless
  // the owner set a new deadline meanwhile.
  auto slot = SlotFor(id);
  absl::MutexLock lock(&slot->mu);
  auto fresh = store_->GetVm(id);
  if (!fresh.ok() || fresh->config.lifetime.expires_at != vm.config.lifetime.expires_at) return;
  fresh->config.lifetime.expires_at = absl::InfinitePast();
  if (absl::Status s = store_->UpdateVm(*fresh); !s.ok()) {
    spdlog::warn("vm {}: recording its {} action failed: {}", id, why, s.ToString());
  }
}

void VmManager::TakePauseLocked(VmSlot& slot, VmRecord& vm, const char* why) {
  // Paused and marked in one write, under the VM's lock: a guest call never
  // finds it paused without knowing whether it may resume it.
  const bool idle = std::string_view(why) == "idle";
  spdlog::info("vm {}: {} reached: pause", vm.vm_id, why);
  AnnounceLifetimeAction(vm, LifetimeAction::kPause, why);
  if (vm.state == VmState::kRunning && slot.instance) {
    if (absl::Status s = slot.instance->Pause(); !s.ok()) {
      spdlog::warn("vm {}: {} pause failed, retrying in {}: {}", vm.vm_id, why,
                   absl::FormatDuration(kActionRetry), s.ToString());
      absl::MutexLock lock(&pools_mu_);
      lifetime_retry_after_[vm.vm_id] = absl::Now() + kActionRetry;
      return;
    }
    vm.state = VmState::kPaused;
  }
  // A max_lifetime pause holds: no auto-resume, also of a VM the idle
  // policy had paused before.
  vm.config.lifetime.idle_paused = idle && vm.state == VmState::kPaused;
  if (!idle) vm.config.lifetime.expires_at = absl::InfinitePast();
  if (absl::Status s = store_->UpdateVm(vm); !s.ok()) {
    spdlog::warn("vm {}: recording its {} pause failed: {}", vm.vm_id, why, s.ToString());
  }
}

void VmManager::AnnounceLifetimeAction(const VmRecord& vm, LifetimeAction action,
                                       const char* why) {
  // Before it is taken: the changes it makes (stopped, deleted,
  // snapshot_created, ...) follow it in the journal.
  if (auto e = store_->AppendEvent({.owner = vm.owner,
                                    .kind = kEventLifetimeAction,
                                    .vm_id = vm.vm_id,
                                    .state = VmStateName(vm.state),
                                    .detail = absl::StrCat(why, " reached: ",
                                                           LifetimeActionName(action))});
      !e.ok()) {
    spdlog::warn("vm {}: the event of its {} action was not recorded: {}", vm.vm_id, why,
                 e.status().ToString());
  }
}

}  // namespace smolvm::core
