#include "daemon/snapshot_service.h"

#include "daemon/operation_service.h"
#include "daemon/rpc_reply.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {

grpc::Status SnapshotServiceImpl::CreateSnapshot(grpc::ServerContext* ctx,
                                                 const v1::CreateSnapshotRequest* req,
                                                 v1::SnapshotInfo* resp) {
  return Serve(*callers_, *ctx, "CreateSnapshot", Access::kMutate, req->vm_id(),
               [&](const Caller& c) {
                 return WithOperation(
                     *operations_, c, req->operation_id(), "CreateSnapshot", req->vm_id(),
                     [&](Progress* p) {
                       Labels labels(req->labels().begin(), req->labels().end());
                       return Fill(manager_->CreateSnapshot(c, req->vm_id(), req->snapshot_id(),
                                                            req->resume_source(), p, labels),
                                   resp);
                     });
               });
}

grpc::Status SnapshotServiceImpl::GetSnapshot(grpc::ServerContext* ctx,
                                              const v1::GetSnapshotRequest* req,
                                              v1::SnapshotInfo* resp) {
  return Serve(*callers_, *ctx, "GetSnapshot", Access::kRead, req->snapshot_id(),
               [&](const Caller& c) {
                 return Fill(manager_->GetSnapshot(c, req->snapshot_id()), resp);
               });
}

grpc::Status SnapshotServiceImpl::ListSnapshots(grpc::ServerContext* ctx,
                                                const v1::ListSnapshotsRequest* req,
                                                v1::ListSnapshotsResponse* resp) {
  return Serve(*callers_, *ctx, "ListSnapshots", Access::kRead, req->vm_id(),
               [&](const Caller& c) {
                 auto page = manager_->ListSnapshots(c, req->page_size(), req->page_token(),
                                                     req->vm_id(), FilterFromProto(*req));
                 if (page.ok()) {
                   for (const auto& s : page->items) ToProto(s, resp->add_snapshots());
                   resp->set_next_page_token(page->next_page_token);
                 }
                 return page.status();
               });
}

grpc::Status SnapshotServiceImpl::DeleteSnapshot(grpc::ServerContext* ctx,
                                                 const v1::DeleteSnapshotRequest* req,
                                                 v1::DeleteSnapshotResponse*) {
  return Serve(*callers_, *ctx, "DeleteSnapshot", Access::kMutate, req->snapshot_id(),
               [&](const Caller& c) { return manager_->DeleteSnapshot(c, req->snapshot_id()); });
}

grpc::Status SnapshotServiceImpl::RestoreSnapshot(grpc::ServerContext* ctx,
                                                  const v1::RestoreSnapshotRequest* req,
                                                  v1::Vm* resp) {
  return Serve(*callers_, *ctx, "RestoreSnapshot", Access::kMutate, req->snapshot_id(),
               [&](const Caller& c) {
                 return WithOperation(
                     *operations_, c, req->operation_id(), "RestoreSnapshot", req->snapshot_id(),
                     [&](Progress* p) {
                       return Fill(manager_->RestoreSnapshot(c, req->snapshot_id(),
                                                             req->resume_vm(), req->vm_id(), p),
                                   resp);
                     });
               });
}

grpc::Status SnapshotServiceImpl::VerifySnapshot(grpc::ServerContext* ctx,
                                                 const v1::VerifySnapshotRequest* req,
                                                 v1::VerifySnapshotResponse* resp) {
  // Read access: it records the stamps of a verification, nothing a caller
  // could observe but the cost of a later restore.
  return Serve(*callers_, *ctx, "VerifySnapshot", Access::kRead, req->snapshot_id(),
               [&](const Caller& c) {
                 return Fill(manager_->VerifySnapshot(c, req->snapshot_id()), resp);
               });
}

grpc::Status SnapshotServiceImpl::ForkSnapshot(grpc::ServerContext* ctx,
                                               const v1::ForkSnapshotRequest* req,
                                               v1::ForkSnapshotResponse* resp) {
  return Serve(*callers_, *ctx, "ForkSnapshot", Access::kMutate, req->snapshot_id(),
               [&](const Caller& c) -> absl::Status {
                 absl::StatusOr<std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>>
                     results = absl::UnknownError("not forked");
                 SMOLVM_RETURN_IF_ERROR(WithOperation(
                     *operations_, c, req->operation_id(), "ForkSnapshot", req->snapshot_id(),
                     [&](Progress* p) {
                       results = manager_->ForkSnapshot(c, req->snapshot_id(), req->count(),
                                                        req->resume_vm(), req->vm_id_prefix(), p);
                       return results.status();
                     }));
                 ToProto(*results, resp->mutable_results());
                 LogCloneFailures("ForkSnapshot", *results);
                 return absl::OkStatus();
               });
}

}  // namespace smolvm::daemon
