#include "daemon/pool_service.h"

#include "daemon/rpc_reply.h"

namespace smolvm::daemon {

grpc::Status PoolServiceImpl::CreatePool(grpc::ServerContext* ctx,
                                         const v1::CreatePoolRequest* req, v1::Pool* resp) {
  return Serve(*callers_, *ctx, "CreatePool", Access::kMutate, req->pool_id(),
               [&](const Caller& c) {
                 PoolRecord pool;
                 pool.pool_id = req->pool_id();
                 pool.snapshot_id = req->snapshot_id();
                 pool.size = req->size();
                 return Fill(manager_->CreatePool(c, std::move(pool)), resp);
               });
}

grpc::Status PoolServiceImpl::GetPool(grpc::ServerContext* ctx, const v1::GetPoolRequest* req,
                                      v1::Pool* resp) {
  return Serve(*callers_, *ctx, "GetPool", Access::kRead, req->pool_id(),
               [&](const Caller& c) { return Fill(manager_->GetPool(c, req->pool_id()), resp); });
}

grpc::Status PoolServiceImpl::ListPools(grpc::ServerContext* ctx, const v1::ListPoolsRequest*,
                                        v1::ListPoolsResponse* resp) {
  return Serve(*callers_, *ctx, "ListPools", Access::kRead, "", [&](const Caller& c) {
    auto pools = manager_->ListPools(c);
    if (pools.ok()) {
      for (const auto& p : *pools) ToProto(p, resp->add_pools());
    }
    return pools.status();
  });
}

grpc::Status PoolServiceImpl::DeletePool(grpc::ServerContext* ctx,
                                         const v1::DeletePoolRequest* req,
                                         v1::DeletePoolResponse*) {
  return Serve(*callers_, *ctx, "DeletePool", Access::kMutate, req->pool_id(),
               [&](const Caller& c) { return manager_->DeletePool(c, req->pool_id()); });
}

grpc::Status PoolServiceImpl::ClaimVm(grpc::ServerContext* ctx, const v1::ClaimVmRequest* req,
                                      v1::ClaimVmResponse* resp) {
  return Serve(*callers_, *ctx, "ClaimVm", Access::kMutate, req->pool_id(),
               [&](const Caller& c) -> absl::Status {
                 const absl::Time t0 = absl::Now();
                 auto claimed = manager_->ClaimVm(c, req->pool_id(), req->vm_id());
                 if (!claimed.ok()) return claimed.status();
                 ToProto(claimed->vm, resp->mutable_vm());
                 resp->set_from_pool(claimed->from_pool);
                 resp->set_claim_ms(absl::ToInt64Milliseconds(absl::Now() - t0));
                 return absl::OkStatus();
               });
}

}  // namespace smolvm::daemon
