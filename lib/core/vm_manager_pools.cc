// Warm pools: clones restored ahead of time, claimed in milliseconds.
//
// A member is restored like any clone (fresh identity, clock, entropy and
// address applied through the agent), then paused and recorded with
// pending_fixup = clock. A claim only resumes it, steps its clock (one
// Reidentify round trip, which also reseeds its entropy once more) and
// clears its pool_id: the expensive parts all happened before the request.
// The members are ordinary VM rows, so a daemon restart re-attaches them
// like any VM; the refill worker then carries on from the store.
#include <sys/random.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "lib/base/crash_point.h"
#include "lib/base/status_macros.h"
#include "lib/core/vm_manager.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

// Members are named <pool_id>-<8 hex>, within the 64 characters of an id.
constexpr size_t kMaxPoolIdLength = 55;

absl::StatusOr<std::string> MemberId(const std::string& pool_id) {
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, 0) != sizeof r) return absl::ErrnoToStatus(errno, "getrandom");
  char hex[9];
  snprintf(hex, sizeof hex, "%08x", r);
  return absl::StrCat(pool_id, "-", hex);
}

absl::Status ValidatePoolId(const std::string& pool_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(pool_id, "pool_id"));
  if (pool_id.size() > kMaxPoolIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool_id \"", pool_id, "\" is ", pool_id.size(), " characters; at most ",
        kMaxPoolIdLength, " (members are named <pool_id>-<8 hex digits>)"));
  }
  return absl::OkStatus();
}

// The first process a restored guest starts pays for what the guest has
// not run since the snapshot (under TCG: an empty translation cache, a few
// hundred ms); a member runs one before it is paused, so that the
// claimer's first command does not. Best effort: a member that cannot is
// still a good member.
void WarmUpGuest(agent::GuestAgent& agent, const std::string& vm_id) {
  agent::ExecSpec spec;
  spec.argv = {"/bin/true"};
  spec.timeout = absl::Seconds(10);
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  auto exec = agent.StartExec(spec);
  absl::Status status = exec.status();
  while (status.ok()) {
    auto event = (*exec)->Next(deadline);
    if (!event.ok()) status = event.status();
    if (event.ok() && event->kind == agent::ExecEvent::Kind::kExit) break;
  }
  if (!status.ok()) spdlog::warn("pool member {}: warm-up command failed: {}", vm_id,
                                 status.ToString());
}

}  // namespace

absl::StatusOr<VmManager::PoolStatus> VmManager::StatusOf(const PoolRecord& pool) {
  PoolStatus status;
  status.pool = pool;
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> members, store_->PoolVms(pool.pool_id));
  for (const auto& vm : members) {
    if (vm.state == VmState::kPaused && vm.pending_fixup == kFixupClock) {
      status.ready.push_back(vm.vm_id);
    }
  }
  absl::MutexLock lock(&pools_mu_);
  for (const auto& vm : members) {
    if (pool_members_starting_.count(vm.vm_id)) ++status.starting;
  }
  if (auto it = pool_health_.find(pool.pool_id); it != pool_health_.end()) {
    status.last_error = it->second.last_error;
  }
  return status;
}

absl::StatusOr<VmManager::PoolStatus> VmManager::CreatePool(const Caller& caller,
                                                            PoolRecord request) {
  SMOLVM_RETURN_IF_ERROR(ValidatePoolId(request.pool_id));
  SMOLVM_RETURN_IF_ERROR(ValidateId(request.snapshot_id, "snapshot_id"));
  if (request.size < 1 || request.size > kMaxPoolSize) {
    return absl::InvalidArgumentError(absl::StrCat("pool size ", request.size, " must be 1-",
                                                   kMaxPoolSize));
  }
  // Shared with restores, exclusive to DeleteSnapshot: the snapshot cannot
  // go between this check and the pool's row (DeleteSnapshot refuses a
  // snapshot a pool uses).
  absl::ReaderMutexLock files_lock(&snapshot_files_mu_);
  SMOLVM_ASSIGN_OR_RETURN(SnapshotRecord snap, GetSnapshot(caller, request.snapshot_id));
  // Members are the owner's VMs under the owner's quota, restored as the
  // owner: a pool is made of the caller's own snapshot (an admin pools a
  // tenant's snapshot by acting as that tenant).
  if (snap.owner != caller.tenant) {
    return absl::PermissionDeniedError(absl::StrCat(
        "pool ", request.pool_id, ": snapshot ", snap.snapshot_id, " belongs to ", snap.owner,
        "; a pool is made of the caller's own snapshots (act as that tenant)"));
  }
  if (snap.accelerator != accelerator_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool ", request.pool_id, ": snapshot ", snap.snapshot_id, " was taken with ",
        snap.accelerator, " and this daemon runs ", accelerator_));
  }
  request.owner = caller.tenant;
  request.created_at = absl::Now();
  SMOLVM_RETURN_IF_ERROR(store_->InsertPool(request));
  spdlog::info("pool {}: created ({} members of snapshot {})", request.pool_id, request.size,
               request.snapshot_id);
  KickPoolWorker();
  return StatusOf(request);
}

absl::StatusOr<VmManager::PoolStatus> VmManager::GetPool(const Caller& caller,
                                                         const std::string& pool_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(pool_id, "pool_id"));
  SMOLVM_ASSIGN_OR_RETURN(PoolRecord pool, store_->GetPool(pool_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "pool", pool_id, pool.owner));
  return StatusOf(pool);
}

absl::StatusOr<std::vector<VmManager::PoolStatus>> VmManager::ListPools(const Caller& caller) {
  SMOLVM_ASSIGN_OR_RETURN(std::vector<PoolRecord> pools,
                          store_->ListPools(caller.admin ? "" : caller.tenant));
  std::vector<PoolStatus> out;
  for (const auto& pool : pools) {
    SMOLVM_ASSIGN_OR_RETURN(PoolStatus status, StatusOf(pool));
    out.push_back(std::move(status));
  }
  return out;
}

absl::Status VmManager::DeletePool(const Caller& caller, const std::string& pool_id) {
  SMOLVM_RETURN_IF_ERROR(ValidateId(pool_id, "pool_id"));
  SMOLVM_ASSIGN_OR_RETURN(PoolRecord pool, store_->GetPool(pool_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "pool", pool_id, pool.owner));
  // The row first: the worker adds no member to a pool that is gone, and
  // reaps any member it was restoring meanwhile (and any this call misses
  // because the daemon stops half way).
  SMOLVM_RETURN_IF_ERROR(store_->DeletePool(pool_id));
  {
    // A member the worker is restoring right now would otherwise turn up
    // after this call returned (and keep the snapshot in use): wait for it,
    // then reap it with the others.
    absl::MutexLock lock(&pools_mu_);
    pool_health_.erase(pool_id);
    auto none_starting = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pools_mu_) {
      for (const auto& [vm_id, pool] : pool_members_starting_) {
        if (pool == pool_id) return false;
      }
      return true;
    };
    if (!pools_mu_.AwaitWithTimeout(absl::Condition(&none_starting), absl::Minutes(2))) {
      spdlog::warn("pool {}: a member is still being restored; the pool worker reaps it", pool_id);
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> members, store_->PoolVms(pool_id));
  for (const auto& vm : members) {
    if (auto s = DeleteVm(Caller::System(), vm.vm_id); !s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("pool {}: member {} not deleted yet ({}); the pool worker retries",
                   pool_id, vm.vm_id, std::string(s.message()));
    }
  }
  spdlog::info("pool {}: deleted with {} unclaimed members", pool_id, members.size());
  KickPoolWorker();
  return absl::OkStatus();
}

absl::StatusOr<VmRecord> VmManager::TakeMember(const std::string& pool_id,
                                               const std::string& vm_id, bool wait_for_lock) {
  auto slot = SlotFor(vm_id);
  // Without waiting, a member another claim or the worker holds is skipped
  // for the next one rather than queued behind.
  if (wait_for_lock) {
    slot->mu.Lock();
  } else if (!slot->mu.TryLock()) {
    return absl::FailedPreconditionError(absl::StrCat("pool member ", vm_id, " is busy"));
  }
  absl::Cleanup unlock = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { slot->mu.Unlock(); };
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(vm_id));
  if (vm.pool_id != pool_id) {
    return absl::NotFoundError(
        absl::StrCat("vm ", vm_id, " is not an unclaimed member of pool ", pool_id));
  }
  if (vm.state != VmState::kPaused || vm.pending_fixup != kFixupClock || !slot->instance) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pool member ", vm_id, " is not ready yet (", VmStateName(vm.state), ")"));
  }
  SMOLVM_RETURN_IF_ERROR(slot->instance->Resume());
  CrashPoint("claim.resumed");
  slot->needs_fixup = true;
  if (absl::Status s = FixUpRestoredLocked(*slot, vm_id); !s.ok()) {
    (void)FailVmLocked(*slot, vm, s);  // The worker removes it and refills.
    return s;
  }
  vm.state = VmState::kRunning;
  vm.pending_fixup.clear();
  vm.pool_id.clear();
  vm.config.lifetime = StartLifetime(vm.config.lifetime, absl::Now());
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  activity_.Note(vm_id);
  return vm;
}

absl::StatusOr<VmManager::ClaimedVm> VmManager::ClaimVm(const Caller& caller,
                                                        const std::string& pool_id,
                                                        const std::string& vm_id) {
  absl::Time t0 = absl::Now();
  SMOLVM_RETURN_IF_ERROR(ValidateId(pool_id, "pool_id"));
  if (!vm_id.empty()) SMOLVM_RETURN_IF_ERROR(ValidateId(vm_id, "vm_id"));
  SMOLVM_ASSIGN_OR_RETURN(PoolRecord pool, store_->GetPool(pool_id));
  SMOLVM_RETURN_IF_ERROR(CheckAccess(caller, "pool", pool_id, pool.owner));
  // A member taken: the pool refills behind it.
  auto claimed = [&](VmRecord vm) {
    KickPoolWorker();
    spdlog::info("pool {}: vm {} claimed in {}", pool_id, vm.vm_id,
                 absl::FormatDuration(absl::Now() - t0));
    return ClaimedVm{std::move(vm), true};
  };
  if (!vm_id.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, TakeMember(pool_id, vm_id, /*wait_for_lock=*/true));
    return claimed(std::move(vm));
  }
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> members, store_->PoolVms(pool_id));
  for (const auto& member : members) {
    if (member.state != VmState::kPaused || member.pending_fixup != kFixupClock) continue;
    auto vm = TakeMember(pool_id, member.vm_id, /*wait_for_lock=*/false);
    if (!vm.ok()) {
      // Busy, taken meanwhile, or its guest failed the fix-up (then it is in
      // ERROR and the worker replaces it): the next member will do.
      if (!absl::IsFailedPrecondition(vm.status()) && !absl::IsNotFound(vm.status())) {
        spdlog::warn("pool {}: member {} could not be claimed: {}", pool_id, member.vm_id,
                     std::string(vm.status().message()));
      }
      continue;
    }
    return claimed(*std::move(vm));
  }
  // Nothing ready (a burst emptied it, or it is still filling): the caller
  // gets a clone all the same, at the price of a restore.
  KickPoolWorker();
  SMOLVM_ASSIGN_OR_RETURN(std::string id, MemberId(pool_id));
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm,
                          RestoreAs(caller, pool.snapshot_id, /*resume_vm=*/true, id, ""));
  spdlog::info("pool {}: empty; vm {} restored on demand in {}", pool_id, id,
               absl::FormatDuration(absl::Now() - t0));
  return ClaimedVm{std::move(vm), false};
}

absl::Status VmManager::AddPoolMember(const PoolRecord& pool) {
  SMOLVM_ASSIGN_OR_RETURN(std::string id, MemberId(pool.pool_id));
  {
    absl::MutexLock lock(&pools_mu_);
    pool_members_starting_.emplace(id, pool.pool_id);
  }
  absl::Cleanup done = [&] {
    absl::MutexLock lock(&pools_mu_);
    pool_members_starting_.erase(id);
  };
  // A DeletePool that ran between the worker's read of the pools and the
  // registration above did not wait for this member: look again.
  SMOLVM_RETURN_IF_ERROR(store_->GetPool(pool.pool_id).status());
  const Caller owner{pool.owner, false, absl::StrCat("pool:", pool.pool_id)};
  // Restored running, so that the clone's identity, clock and entropy are
  // applied now (RestoreLocked's fix-ups), then paused until claimed.
  SMOLVM_RETURN_IF_ERROR(
      RestoreAs(owner, pool.snapshot_id, /*resume_vm=*/true, id, pool.pool_id).status());
  auto slot = SlotFor(id);
  absl::MutexLock lock(&slot->mu);
  SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, store_->GetVm(id));
  if (vm.state != VmState::kRunning || !slot->instance) {
    return absl::FailedPreconditionError(
        absl::StrCat("pool member ", id, " is ", VmStateName(vm.state), " after its restore"));
  }
  WarmUpGuest(*slot->agent, id);
  SMOLVM_RETURN_IF_ERROR(slot->instance->Pause());
  vm.state = VmState::kPaused;
  vm.pending_fixup = kFixupClock;
  SMOLVM_RETURN_IF_ERROR(store_->UpdateVm(vm));
  slot->needs_fixup = true;
  spdlog::info("pool {}: member {} ready", pool.pool_id, id);
  return absl::OkStatus();
}

bool VmManager::RefillPass() {
  auto pools = store_->ListPools();
  // Only the members (an index lookup): this runs every 2 s, and a host
  // may hold thousands of ordinary VMs.
  auto vms = store_->PoolVms("");
  if (!pools.ok() || !vms.ok()) {
    spdlog::warn("pool worker: cannot read the store: {}",
                 (!pools.ok() ? pools.status() : vms.status()).ToString());
    return false;
  }
  std::map<std::string, const PoolRecord*> by_id;
  for (const auto& p : *pools) by_id[p.pool_id] = &p;
  std::map<std::string, uint32_t> live;
  bool more = false;
  for (const auto& vm : *vms) {
    {
      absl::MutexLock lock(&pools_mu_);
      if (pool_members_starting_.count(vm.vm_id)) {
        ++live[vm.pool_id];
        continue;
      }
    }
    const bool orphan = !by_id.count(vm.pool_id);
    const bool failed = vm.state != VmState::kRunning && vm.state != VmState::kPaused;
    if (orphan || failed) {
      // A member of a deleted pool, or one whose VMM died or whose claim
      // failed: it can never be claimed, so it goes.
      spdlog::info("pool {}: removing {} member {}", vm.pool_id, orphan ? "orphaned" : "failed",
                   vm.vm_id);
      if (auto s = DeleteVm(Caller::System(), vm.vm_id); !s.ok() && !absl::IsNotFound(s)) {
        spdlog::warn("pool {}: member {} not removed: {}", vm.pool_id, vm.vm_id, s.ToString());
      }
      continue;
    }
    if (vm.state == VmState::kRunning) {
      // A crash between a member's restore and its pause: pause it now.
      auto slot = SlotFor(vm.vm_id);
      absl::MutexLock lock(&slot->mu);
      auto fresh = store_->GetVm(vm.vm_id);
      if (fresh.ok() && fresh->state == VmState::kRunning && !fresh->pool_id.empty() &&
          slot->instance && slot->instance->Pause().ok()) {
        fresh->state = VmState::kPaused;
        fresh->pending_fixup = kFixupClock;
        if (store_->UpdateVm(*fresh).ok()) slot->needs_fixup = true;
      }
    }
    ++live[vm.pool_id];
  }
  for (const auto& pool : *pools) {
    if (live[pool.pool_id] >= pool.size) continue;
    {
      absl::MutexLock lock(&pools_mu_);
      if (absl::Now() < pool_health_[pool.pool_id].retry_after) continue;
    }
    absl::Status s = AddPoolMember(pool);
    const bool deleted = !s.ok() && absl::IsNotFound(store_->GetPool(pool.pool_id).status());
    absl::MutexLock lock(&pools_mu_);
    if (deleted) {
      pool_health_.erase(pool.pool_id);  // Deleted meanwhile: nothing to report.
      continue;
    }
    PoolHealth& health = pool_health_[pool.pool_id];
    if (s.ok()) {
      health = PoolHealth{};
      more = true;
    } else {
      // Quota, a deleted snapshot, a host out of memory: retried with a
      // growing pause (1 s .. 1 min), and shown in GetPool meanwhile.
      health.last_error = s.ToString();
      health.backoff = std::clamp(health.backoff * 2, absl::Seconds(1), absl::Minutes(1));
      health.retry_after = absl::Now() + health.backoff;
      spdlog::warn("pool {}: refill failed, retrying in {}: {}", pool.pool_id,
                   absl::FormatDuration(health.backoff), health.last_error);
    }
  }
  return more;
}

void VmManager::KickPoolWorker() {
  absl::MutexLock lock(&pools_mu_);
  pool_work_due_ = true;
}

void VmManager::PoolWorkerLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&pools_mu_);
      // Woken by a kick (or the destructor), else every 2 s to notice
      // members whose VMM died and backoffs that ran out.
      pools_mu_.AwaitWithTimeout(absl::Condition(&pool_work_due_), absl::Seconds(2));
      if (stopping_) return;
      pool_work_due_ = false;
    }
    if (RefillPass()) KickPoolWorker();
  }
}

}  // namespace smolvm::core
