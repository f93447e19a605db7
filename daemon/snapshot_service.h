// File: snapshot_service.h
//
// smolvm.v1.SnapshotService: each RPC is one call into core::VmManager.
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/operations.h"
#include "lib/core/vm_manager.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"

namespace smolvm::daemon {

class SnapshotServiceImpl final : public v1::SnapshotService::Service {
 public:
  SnapshotServiceImpl(core::VmManager* manager, const CallerResolver* callers,
                      core::OperationRegistry* operations)
      : manager_(manager), callers_(callers), operations_(operations) {}

  grpc::Status CreateSnapshot(grpc::ServerContext* ctx, const v1::CreateSnapshotRequest* req,
                              v1::SnapshotInfo* resp) override;
  grpc::Status GetSnapshot(grpc::ServerContext* ctx, const v1::GetSnapshotRequest* req,
                           v1::SnapshotInfo* resp) override;
  grpc::Status ListSnapshots(grpc::ServerContext* ctx, const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext* ctx, const v1::DeleteSnapshotRequest* req,
                              v1::DeleteSnapshotResponse* resp) override;
  grpc::Status ForkSnapshot(grpc::ServerContext* ctx, const v1::ForkSnapshotRequest* req,
                            v1::ForkSnapshotResponse* resp) override;
  grpc::Status RestoreSnapshot(grpc::ServerContext* ctx, const v1::RestoreSnapshotRequest* req,
                               v1::Vm* resp) override;
  grpc::Status VerifySnapshot(grpc::ServerContext* ctx, const v1::VerifySnapshotRequest* req,
                              v1::VerifySnapshotResponse* resp) override;

 private:
  core::VmManager* const manager_;
  const CallerResolver* const callers_;
  core::OperationRegistry* const operations_;  // Calls named by an operation_id.
};

}  // namespace smolvm::daemon
