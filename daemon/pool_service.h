// File: pool_service.h
//
// smolvm.v1.PoolService: each RPC is one call into core::VmManager
// (lib/core/vm_manager_pools.cc).
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/vm_manager.h"
#include "smolvm/v1/pool_service.grpc.pb.h"

namespace smolvm::daemon {

class PoolServiceImpl final : public v1::PoolService::Service {
 public:
  PoolServiceImpl(core::VmManager* manager, const CallerResolver* callers)
      : manager_(manager), callers_(callers) {}

  grpc::Status CreatePool(grpc::ServerContext* ctx, const v1::CreatePoolRequest* req,
                          v1::Pool* resp) override;
  grpc::Status GetPool(grpc::ServerContext* ctx, const v1::GetPoolRequest* req,
                       v1::Pool* resp) override;
  grpc::Status ListPools(grpc::ServerContext* ctx, const v1::ListPoolsRequest* req,
                         v1::ListPoolsResponse* resp) override;
  grpc::Status DeletePool(grpc::ServerContext* ctx, const v1::DeletePoolRequest* req,
                          v1::DeletePoolResponse* resp) override;
  grpc::Status ClaimVm(grpc::ServerContext* ctx, const v1::ClaimVmRequest* req,
                       v1::ClaimVmResponse* resp) override;

 private:
  core::VmManager* const manager_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
