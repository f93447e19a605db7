#include "daemon/snapshot_service.h"

#include "daemon/rpc_reply.h"

namespace smolvm::daemon {

grpc::Status SnapshotServiceImpl::CreateSnapshot(grpc::ServerContext*,
                                                 const v1::CreateSnapshotRequest* req,
                                                 v1::SnapshotInfo* resp) {
  return Reply("CreateSnapshot", req->vm_id(),
               manager_->CreateSnapshot(req->vm_id(), req->snapshot_id(),
                                        req->resume_source()),
               resp);
}

grpc::Status SnapshotServiceImpl::GetSnapshot(grpc::ServerContext*,
                                              const v1::GetSnapshotRequest* req,
                                              v1::SnapshotInfo* resp) {
  return Reply("GetSnapshot", req->snapshot_id(),
               manager_->GetSnapshot(req->snapshot_id()), resp);
}

grpc::Status SnapshotServiceImpl::ListSnapshots(grpc::ServerContext*,
                                                const v1::ListSnapshotsRequest* req,
                                                v1::ListSnapshotsResponse* resp) {
  auto page = manager_->ListSnapshots(req->page_size(), req->page_token(), req->vm_id());
  if (page.ok()) {
    for (const auto& s : page->items) ToProto(s, resp->add_snapshots());
    resp->set_next_page_token(page->next_page_token);
  }
  return LogAndConvert("ListSnapshots", req->vm_id(), page.status());
}

grpc::Status SnapshotServiceImpl::DeleteSnapshot(grpc::ServerContext*,
                                                 const v1::DeleteSnapshotRequest* req,
                                                 v1::DeleteSnapshotResponse*) {
  return LogAndConvert("DeleteSnapshot", req->snapshot_id(),
                       manager_->DeleteSnapshot(req->snapshot_id()));
}

grpc::Status SnapshotServiceImpl::RestoreSnapshot(grpc::ServerContext*,
                                                  const v1::RestoreSnapshotRequest* req,
                                                  v1::Vm* resp) {
  return Reply("RestoreSnapshot", req->snapshot_id(),
               manager_->RestoreSnapshot(req->snapshot_id(), req->resume_vm(),
                                         req->vm_id()),
               resp);
}

grpc::Status SnapshotServiceImpl::ForkSnapshot(grpc::ServerContext*,
                                               const v1::ForkSnapshotRequest* req,
                                               v1::ForkSnapshotResponse* resp) {
  auto results = manager_->ForkSnapshot(req->snapshot_id(), req->count(), req->resume_vm(),
                                        req->vm_id_prefix());
  if (results.ok()) {
    for (const auto& [vm_id, vm] : *results) {
      auto* r = resp->add_results();
      r->set_vm_id(vm_id);
      if (vm.ok()) {
        ToProto(*vm, r->mutable_vm());
      } else {
        r->set_error_code(static_cast<int>(vm.status().code()));
        r->set_error_message(std::string(vm.status().message()));
        (void)LogAndConvert("ForkSnapshot", vm_id, vm.status());
      }
    }
  }
  return LogAndConvert("ForkSnapshot", req->snapshot_id(), results.status());
}

}  // namespace smolvm::daemon
