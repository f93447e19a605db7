#include "daemon/vm_service.h"

#include "daemon/rpc_reply.h"

namespace smolvm::daemon {

grpc::Status VmServiceImpl::CreateVm(grpc::ServerContext*, const v1::CreateVmRequest* req,
                                     v1::Vm* resp) {
  return Reply("CreateVm", req->config().vm_id(),
               manager_->CreateVm(FromProto(req->config()), req->start()), resp);
}

grpc::Status VmServiceImpl::StartVm(grpc::ServerContext*, const v1::StartVmRequest* req,
                                    v1::Vm* resp) {
  return Reply("StartVm", req->vm_id(), manager_->StartVm(req->vm_id()), resp);
}

grpc::Status VmServiceImpl::StopVm(grpc::ServerContext*, const v1::StopVmRequest* req,
                                   v1::Vm* resp) {
  return Reply("StopVm", req->vm_id(), manager_->StopVm(req->vm_id()), resp);
}

grpc::Status VmServiceImpl::PauseVm(grpc::ServerContext*, const v1::PauseVmRequest* req,
                                    v1::Vm* resp) {
  return Reply("PauseVm", req->vm_id(), manager_->PauseVm(req->vm_id()), resp);
}

grpc::Status VmServiceImpl::ResumeVm(grpc::ServerContext*, const v1::ResumeVmRequest* req,
                                     v1::Vm* resp) {
  return Reply("ResumeVm", req->vm_id(), manager_->ResumeVm(req->vm_id()), resp);
}

grpc::Status VmServiceImpl::DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest* req,
                                     v1::DeleteVmResponse*) {
  return LogAndConvert("DeleteVm", req->vm_id(), manager_->DeleteVm(req->vm_id()));
}

grpc::Status VmServiceImpl::GetVm(grpc::ServerContext*, const v1::GetVmRequest* req,
                                  v1::Vm* resp) {
  return Reply("GetVm", req->vm_id(), manager_->GetVm(req->vm_id()), resp);
}

grpc::Status VmServiceImpl::ListVms(grpc::ServerContext*, const v1::ListVmsRequest* req,
                                    v1::ListVmsResponse* resp) {
  auto page = manager_->ListVms(req->page_size(), req->page_token());
  if (page.ok()) {
    for (const auto& vm : page->items) ToProto(vm, resp->add_vms());
    resp->set_next_page_token(page->next_page_token);
  }
  return LogAndConvert("ListVms", "", page.status());
}

}  // namespace smolvm::daemon
