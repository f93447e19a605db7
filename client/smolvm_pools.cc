// Warm pools: PoolService (proto/smolvm/v1/pool_service.proto).

#include "client/smolvm.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace smolvm {

using PoolStub = v1::PoolService::Stub;

absl::StatusOr<SmolVM> SmolVM::from_pool(const std::string& pool_id, const std::string& vm_id,
                                         ClientOptions options, bool* from_pool) {
  Connection connection(std::move(options));
  v1::ClaimVmRequest request;
  request.set_pool_id(pool_id);
  request.set_vm_id(vm_id);
  absl::StatusOr<v1::ClaimVmResponse> claimed = connection.Call(&PoolStub::ClaimVm, request);
  if (!claimed.ok()) return claimed.status();
  if (from_pool != nullptr) *from_pool = claimed->from_pool();
  return SmolVM(ExistingVmTag{}, std::move(*claimed->mutable_vm()), std::move(connection));
}

absl::StatusOr<v1::Pool> SmolVMManager::create_pool(const std::string& pool_id,
                                                    const std::string& snapshot_id,
                                                    uint32_t size) const {
  v1::CreatePoolRequest request;
  request.set_pool_id(pool_id);
  request.set_snapshot_id(snapshot_id);
  request.set_size(size);
  return connection_.Call(&PoolStub::CreatePool, request);
}

absl::StatusOr<v1::Pool> SmolVMManager::get_pool(const std::string& pool_id) const {
  v1::GetPoolRequest request;
  request.set_pool_id(pool_id);
  return connection_.Call(&PoolStub::GetPool, request);
}

absl::StatusOr<v1::Pool> SmolVMManager::wait_for_pool(const std::string& pool_id,
                                                      absl::Duration timeout,
                                                      const ProgressCallback& on_progress) const {
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  v1::Operation fill;
  fill.set_operation_id(pool_id);
  fill.set_kind("CreatePool");
  fill.set_target(pool_id);
  fill.set_stage("filling the pool");
  fill.set_unit("members");
  fill.set_stage_number(1);
  auto stamp = [](absl::Time t, google::protobuf::Timestamp* out) {
    out->set_seconds(absl::ToUnixSeconds(t));
    out->set_nanos(static_cast<int32_t>(absl::ToUnixNanos(t) % 1000000000));
  };
  stamp(start, fill.mutable_started_at());
  for (;;) {
    absl::StatusOr<v1::Pool> pool = get_pool(pool_id);
    if (!pool.ok()) return pool.status();
    const auto ready = static_cast<uint64_t>(pool->ready_vm_ids_size());
    const bool full = ready >= pool->size();
    if (on_progress) {
      fill.set_done(std::min<uint64_t>(ready, pool->size()));
      fill.set_total(pool->size());
      fill.set_finished(full);
      stamp(absl::Now(), fill.mutable_updated_at());
      on_progress(fill);
    }
    if (full) return pool;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "pool ", pool_id, ": ", ready, " of ", pool->size(), " members ready after ",
          absl::FormatDuration(absl::Now() - start),
          pool->last_error().empty() ? "" : absl::StrCat("; last refill error: ",
                                                         pool->last_error())));
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
}

absl::StatusOr<std::vector<v1::Pool>> SmolVMManager::list_pools() const {
  absl::StatusOr<v1::ListPoolsResponse> response =
      connection_.Call(&PoolStub::ListPools, v1::ListPoolsRequest());
  if (!response.ok()) return response.status();
  return std::vector<v1::Pool>(response->pools().begin(), response->pools().end());
}

absl::Status SmolVMManager::delete_pool(const std::string& pool_id) const {
  v1::DeletePoolRequest request;
  request.set_pool_id(pool_id);
  return connection_.Call(&PoolStub::DeletePool, request).status();
}

}  // namespace smolvm
