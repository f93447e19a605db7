#include "daemon/vm_service.h"

#include "daemon/guest_streams.h"
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

grpc::Status VmServiceImpl::Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                                 grpc::ServerWriter<v1::ExecResponse>* writer) {
  auto spec = ExecSpecFromProto(*req);
  if (!spec.ok()) return LogAndConvert("Exec", req->vm_id(), spec.status());
  auto handle = manager_->StartExec(req->vm_id(), *std::move(spec));
  if (!handle.ok()) return LogAndConvert("Exec", req->vm_id(), handle.status());
  return LogAndConvert("Exec", req->vm_id(), StreamExec(**handle, ctx, writer));
}

grpc::Status VmServiceImpl::UploadFile(grpc::ServerContext* ctx,
                                       grpc::ServerReader<v1::UploadFileRequest>* reader,
                                       v1::UploadFileResponse* resp) {
  v1::UploadFileRequest first;
  if (!reader->Read(&first) || !first.has_header()) {
    return LogAndConvert("UploadFile", "", absl::InvalidArgumentError(
        "upload: the first message must carry the header (vm_id, path)"));
  }
  const auto& h = first.header();
  auto written = manager_->UploadFile(h.vm_id(), h.path(), h.mode(), h.tar(),
                                      h.make_parents(), UploadChunks(ctx, reader));
  if (written.ok()) resp->set_bytes_written(written->bytes);
  return LogAndConvert("UploadFile", h.vm_id(), written.status());
}

grpc::Status VmServiceImpl::DownloadFile(grpc::ServerContext* ctx,
                                         const v1::DownloadFileRequest* req,
                                         grpc::ServerWriter<v1::DownloadFileResponse>* writer) {
  auto info = manager_->DownloadFile(req->vm_id(), req->path(), req->tar(),
                                     DownloadSink(ctx, writer));
  if (info.ok()) {
    v1::DownloadFileResponse last;
    last.set_mode(info->mode);
    last.set_total_bytes(info->bytes);
    last.set_eof(true);
    writer->Write(last);
  }
  return LogAndConvert("DownloadFile", req->vm_id(), info.status());
}

grpc::Status VmServiceImpl::ExposePort(grpc::ServerContext*, const v1::ExposePortRequest* req,
                                       v1::Vm* resp) {
  return Reply("ExposePort", req->vm_id(),
               manager_->ExposePort(req->vm_id(), FromProto(req->forward())), resp);
}

grpc::Status VmServiceImpl::UnexposePort(grpc::ServerContext*,
                                         const v1::UnexposePortRequest* req, v1::Vm* resp) {
  PortForward key;
  key.host_ip = req->host_ip();
  key.host_port = req->host_port();
  key.protocol = req->protocol();
  return Reply("UnexposePort", req->vm_id(), manager_->UnexposePort(req->vm_id(), key), resp);
}

grpc::Status VmServiceImpl::PingAgent(grpc::ServerContext*, const v1::PingAgentRequest* req,
                                      v1::PingAgentResponse* resp) {
  auto times = manager_->PingAgent(req->vm_id(), req->count());
  if (times.ok()) {
    for (absl::Duration d : *times) resp->add_round_trip_ns(absl::ToInt64Nanoseconds(d));
  }
  return LogAndConvert("PingAgent", req->vm_id(), times.status());
}

}  // namespace smolvm::daemon
