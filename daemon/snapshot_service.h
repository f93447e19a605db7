// File: snapshot_service.h
//
// smolvm.v1.SnapshotService: each RPC is one call into core::VmManager.
#pragma once

#include "lib/core/vm_manager.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"

namespace smolvm::daemon {

class SnapshotServiceImpl final : public v1::SnapshotService::Service {
 public:
  explicit SnapshotServiceImpl(core::VmManager* manager) : manager_(manager) {}

  grpc::Status CreateSnapshot(grpc::ServerContext*, const v1::CreateSnapshotRequest* req,
                              v1::SnapshotInfo* resp) override;
  grpc::Status GetSnapshot(grpc::ServerContext*, const v1::GetSnapshotRequest* req,
                           v1::SnapshotInfo* resp) override;
  grpc::Status ListSnapshots(grpc::ServerContext*, const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override;
  grpc::Status DeleteSnapshot(grpc::ServerContext*, const v1::DeleteSnapshotRequest* req,
                              v1::DeleteSnapshotResponse* resp) override;
  grpc::Status ForkSnapshot(grpc::ServerContext*, const v1::ForkSnapshotRequest* req,
                            v1::ForkSnapshotResponse* resp) override;
  grpc::Status RestoreSnapshot(grpc::ServerContext*, const v1::RestoreSnapshotRequest* req,
                               v1::Vm* resp) override;

 private:
  core::VmManager* const manager_;
};

}  // namespace smolvm::daemon
