// Warm pools: PoolService (proto/smolvm/v1/pool_service.proto).

#include "client/smolvm.h"

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
