#include "daemon/vm_service.h"

#include "daemon/exec_session.h"
#include "daemon/guest_streams.h"
#include "daemon/operation_service.h"
#include "daemon/rpc_reply.h"
#include "lib/base/status_macros.h"
#include "lib/vmm/console_log_reader.h"

namespace smolvm::daemon {

grpc::Status VmServiceImpl::CreateVm(grpc::ServerContext* ctx, const v1::CreateVmRequest* req,
                                     v1::Vm* resp) {
  return Serve(*callers_, *ctx, "CreateVm", Access::kMutate, req->config().vm_id(),
               [&](const Caller& c) {
                 return WithOperation(*operations_, c, req->operation_id(), "CreateVm",
                                      req->config().vm_id(), [&](Progress* p) -> absl::Status {
                                        SMOLVM_ASSIGN_OR_RETURN(VmConfig config,
                                                                FromProto(req->config()));
                                        return Fill(manager_->CreateVm(c, std::move(config),
                                                                       req->start(), p),
                                                    resp);
                                      });
               });
}

grpc::Status VmServiceImpl::StartVm(grpc::ServerContext* ctx, const v1::StartVmRequest* req,
                                    v1::Vm* resp) {
  return Serve(*callers_, *ctx, "StartVm", Access::kMutate, req->vm_id(), [&](const Caller& c) {
    return WithOperation(*operations_, c, req->operation_id(), "StartVm", req->vm_id(),
                         [&](Progress* p) { return Fill(manager_->StartVm(c, req->vm_id(), p), resp); });
  });
}

grpc::Status VmServiceImpl::StopVm(grpc::ServerContext* ctx, const v1::StopVmRequest* req,
                                   v1::Vm* resp) {
  return Serve(*callers_, *ctx, "StopVm", Access::kMutate, req->vm_id(), [&](const Caller& c) {
    return Fill(manager_->StopVm(c, req->vm_id()), resp);
  });
}

grpc::Status VmServiceImpl::PauseVm(grpc::ServerContext* ctx, const v1::PauseVmRequest* req,
                                    v1::Vm* resp) {
  return Serve(*callers_, *ctx, "PauseVm", Access::kMutate, req->vm_id(), [&](const Caller& c) {
    return Fill(manager_->PauseVm(c, req->vm_id()), resp);
  });
}

grpc::Status VmServiceImpl::ResumeVm(grpc::ServerContext* ctx, const v1::ResumeVmRequest* req,
                                     v1::Vm* resp) {
  return Serve(*callers_, *ctx, "ResumeVm", Access::kMutate, req->vm_id(), [&](const Caller& c) {
    return Fill(manager_->ResumeVm(c, req->vm_id()), resp);
  });
}

grpc::Status VmServiceImpl::DeleteVm(grpc::ServerContext* ctx, const v1::DeleteVmRequest* req,
                                     v1::DeleteVmResponse*) {
  return Serve(*callers_, *ctx, "DeleteVm", Access::kMutate, req->vm_id(),
               [&](const Caller& c) { return manager_->DeleteVm(c, req->vm_id()); });
}

grpc::Status VmServiceImpl::GetVm(grpc::ServerContext* ctx, const v1::GetVmRequest* req,
                                  v1::Vm* resp) {
  return Serve(*callers_, *ctx, "GetVm", Access::kRead, req->vm_id(), [&](const Caller& c) {
    return Fill(manager_->GetVm(c, req->vm_id()), resp);
  });
}

grpc::Status VmServiceImpl::ListVms(grpc::ServerContext* ctx, const v1::ListVmsRequest* req,
                                    v1::ListVmsResponse* resp) {
  return Serve(*callers_, *ctx, "ListVms", Access::kRead, "", [&](const Caller& c) {
    absl::StatusOr<ListFilter> filter = FilterFromProto(*req);
    if (!filter.ok()) return filter.status();
    auto page = manager_->ListVms(c, req->page_size(), req->page_token(), *filter);
    if (page.ok()) {
      for (const auto& vm : page->items) ToProto(vm, resp->add_vms());
      resp->set_next_page_token(page->next_page_token);
    }
    return page.status();
  });
}

grpc::Status VmServiceImpl::Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                                 grpc::ServerWriter<v1::ExecResponse>* writer) {
  return Serve(*callers_, *ctx, "Exec", Access::kMutateLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 auto spec = ExecSpecFromProto(*req);
                 if (!spec.ok()) return spec.status();
                 auto handle = manager_->StartExec(c, req->vm_id(), *std::move(spec));
                 if (!handle.ok()) return handle.status();
                 return StreamExec(**handle, ctx, writer);
               });
}

grpc::Status VmServiceImpl::ExecStream(grpc::ServerContext* ctx, ExecSessionStream* stream) {
  // The first message is read inside Serve, once the caller holds a place
  // of its tenant's: a client that never sends it cannot tie up threads
  // beyond its bound. `vm_id` names the call in the log and audit.
  v1::ExecStreamRequest first;
  std::string vm_id;
  return Serve(*callers_, *ctx, "ExecStream", Access::kMutateLong, vm_id,
               [&](const Caller& c) -> absl::Status {
                 const bool has_start = stream->Read(&first) && first.has_start();
                 const v1::ExecStreamStart& start = first.start();
                 vm_id = start.exec().vm_id();
                 if (!has_start) {
                   return absl::InvalidArgumentError(
                       "exec stream: the first request must be start (exec.vm_id, argv or "
                       "command)");
                 }
                 auto spec = ExecSessionSpecFromProto(start);
                 if (!spec.ok()) return spec.status();
                 auto handle = manager_->StartExec(c, start.exec().vm_id(), *std::move(spec));
                 if (!handle.ok()) return handle.status();
                 return RunExecSession(**handle, start.tty(), ctx, stream);
               });
}

grpc::Status VmServiceImpl::UploadFile(grpc::ServerContext* ctx,
                                       grpc::ServerReader<v1::UploadFileRequest>* reader,
                                       v1::UploadFileResponse* resp) {
  v1::UploadFileRequest first;
  std::string vm_id;  // As in ExecStream: the header is read inside Serve.
  return Serve(*callers_, *ctx, "UploadFile", Access::kMutateLong, vm_id,
               [&](const Caller& c) -> absl::Status {
                 const bool has_header = reader->Read(&first) && first.has_header();
                 const auto& h = first.header();
                 vm_id = h.vm_id();
                 if (!has_header) {
                   return absl::InvalidArgumentError(
                       "upload: the first message must carry the header (vm_id, path)");
                 }
                 agent::FileRequest file{.path = h.path(),
                                         .tar = h.tar(),
                                         .user = h.user(),
                                         .mode = h.mode(),
                                         .make_parents = h.make_parents()};
                 auto written = manager_->UploadFile(c, h.vm_id(), std::move(file),
                                                     UploadChunks(ctx, reader));
                 if (written.ok()) resp->set_bytes_written(written->bytes);
                 return written.status();
               });
}

grpc::Status VmServiceImpl::DownloadFile(grpc::ServerContext* ctx,
                                         const v1::DownloadFileRequest* req,
                                         grpc::ServerWriter<v1::DownloadFileResponse>* writer) {
  return Serve(*callers_, *ctx, "DownloadFile", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 agent::FileRequest file{
                     .path = req->path(), .tar = req->tar(), .user = req->user()};
                 auto info = manager_->DownloadFile(c, req->vm_id(), std::move(file),
                                                    DownloadSink(ctx, writer));
                 if (info.ok()) {
                   v1::DownloadFileResponse last;
                   last.set_mode(info->mode);
                   last.set_total_bytes(info->bytes);
                   last.set_eof(true);
                   writer->Write(last);
                 }
                 return info.status();
               });
}

grpc::Status VmServiceImpl::ForkVm(grpc::ServerContext* ctx, const v1::ForkVmRequest* req,
                                   v1::ForkVmResponse* resp) {
  return Serve(*callers_, *ctx, "ForkVm", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 absl::StatusOr<core::VmManager::ForkVmResult> fork =
                     absl::UnknownError("not forked");
                 SMOLVM_RETURN_IF_ERROR(WithOperation(
                     *operations_, c, req->operation_id(), "ForkVm", req->vm_id(),
                     [&](Progress* p) {
                       Labels labels(req->labels().begin(), req->labels().end());
                       fork = manager_->ForkVm(c, req->vm_id(), req->count(), req->snapshot_id(),
                                               req->vm_id_prefix(), req->paused(), labels, p);
                       return fork.status();
                     }));
                 resp->set_snapshot_id(fork->snapshot_id);
                 ToProto(fork->children, resp->mutable_results());
                 LogCloneFailures("ForkVm", fork->children);
                 return absl::OkStatus();
               });
}

grpc::Status VmServiceImpl::StreamConsole(grpc::ServerContext* ctx,
                                          const v1::StreamConsoleRequest* req,
                                          grpc::ServerWriter<v1::ConsoleChunk>* writer) {
  return Serve(*callers_, *ctx, "StreamConsole", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 std::optional<uint64_t> tail;
                 if (req->has_tail_bytes()) tail = req->tail_bytes();
                 SMOLVM_ASSIGN_OR_RETURN(vmm::ConsoleLogReader reader,
                                         manager_->OpenConsole(c, req->vm_id(), tail));
                 // The VMM the stream belongs to: a follow ends with it (not
                 // with the next boot's, should the VM be restarted).
                 SMOLVM_ASSIGN_OR_RETURN(VmRecord vm, manager_->GetVm(c, req->vm_id()));
                 const int64_t vmm_pid = vm.vmm_pid;
                 v1::ConsoleChunk chunk;
                 for (int idle = 0; !ctx->IsCancelled();) {
                   absl::StatusOr<std::string> data = reader.Read(64 << 10);
                   // Gone (its run dir removed): the VM stopped, which ends
                   // the stream.
                   if (!data.ok()) return absl::OkStatus();
                   if (!data->empty()) {
                     chunk.set_data(*std::move(data));
                     if (!writer->Write(chunk)) return absl::CancelledError("client went away");
                     continue;
                   }
                   if (!req->follow()) return absl::OkStatus();
                   // Every second: still the same VMM? (GetVm also notices
                   // one that died.)
                   if (++idle % 5 == 0) {
                     auto now = manager_->GetVm(c, req->vm_id());
                     if (!now.ok() || now->vmm_pid != vmm_pid ||
                         (now->state != VmState::kRunning && now->state != VmState::kPaused)) {
                       return absl::OkStatus();
                     }
                   }
                   // The recorder writes a file; polling it is what tail -f does.
                   absl::SleepFor(absl::Milliseconds(200));
                 }
                 return absl::CancelledError("cancelled by the client");
               });
}

grpc::Status VmServiceImpl::GetVmStats(grpc::ServerContext* ctx,
                                       const v1::GetVmStatsRequest* req, v1::VmStats* resp) {
  return Serve(*callers_, *ctx, "GetVmStats", Access::kRead, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(core::VmStats stats,
                                         manager_->GetVmStats(c, req->vm_id()));
                 ToProto(req->vm_id(), stats, resp);
                 return absl::OkStatus();
               });
}

grpc::Status VmServiceImpl::WatchVmStats(grpc::ServerContext* ctx,
                                         const v1::WatchVmStatsRequest* req,
                                         grpc::ServerWriter<v1::VmStats>* writer) {
  return Serve(*callers_, *ctx, "WatchVmStats", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 const uint32_t ms = req->interval_ms() == 0 ? 5000 : req->interval_ms();
                 if (ms < 1000 || ms > 3600000) {
                   return absl::InvalidArgumentError(absl::StrCat(
                       "interval_ms ", ms, " is outside 1000-3600000 (0 = 5000)"));
                 }
                 bool first = true;
                 while (!ctx->IsCancelled()) {
                   absl::StatusOr<core::VmStats> stats = manager_->GetVmStats(c, req->vm_id());
                   // A VM that stops ends the watch; the first call's error
                   // is the caller's to see.
                   if (!stats.ok()) return first ? stats.status() : absl::OkStatus();
                   first = false;
                   v1::VmStats out;
                   ToProto(req->vm_id(), *stats, &out);
                   if (!writer->Write(out)) return absl::CancelledError("client went away");
                   // Sleeps in short steps: a cancelled watch ends soon.
                   const absl::Time next = absl::Now() + absl::Milliseconds(ms);
                   while (!ctx->IsCancelled() && absl::Now() < next) {
                     absl::SleepFor(std::min(absl::Milliseconds(200), next - absl::Now()));
                   }
                 }
                 return absl::CancelledError("cancelled by the client");
               });
}

grpc::Status VmServiceImpl::ExposePort(grpc::ServerContext* ctx,
                                       const v1::ExposePortRequest* req, v1::Vm* resp) {
  return Serve(*callers_, *ctx, "ExposePort", Access::kMutate, req->vm_id(),
               [&](const Caller& c) {
                 return Fill(manager_->ExposePort(c, req->vm_id(), FromProto(req->forward())),
                             resp);
               });
}

grpc::Status VmServiceImpl::UpdateNetworkPolicy(grpc::ServerContext* ctx,
                                                const v1::UpdateNetworkPolicyRequest* req,
                                                v1::Vm* resp) {
  return Serve(*callers_, *ctx, "UpdateNetworkPolicy", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 if (!req->has_egress()) {
                   // A client that forgot it must not open the VM.
                   return absl::InvalidArgumentError(
                       "update network policy: egress is required (mode EGRESS_OPEN to open)");
                 }
                 SMOLVM_ASSIGN_OR_RETURN(EgressPolicy egress, FromProto(req->egress()));
                 return Fill(manager_->UpdateNetworkPolicy(c, req->vm_id(), egress), resp);
               });
}

grpc::Status VmServiceImpl::SetLifetime(grpc::ServerContext* ctx,
                                        const v1::SetLifetimeRequest* req, v1::Vm* resp) {
  return Serve(*callers_, *ctx, "SetLifetime", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(Lifetime lifetime, FromProto(req->lifetime()));
                 return Fill(manager_->SetLifetime(c, req->vm_id(), lifetime), resp);
               });
}

grpc::Status VmServiceImpl::UnexposePort(grpc::ServerContext* ctx,
                                         const v1::UnexposePortRequest* req, v1::Vm* resp) {
  PortForward key;
  key.host_ip = req->host_ip();
  key.host_port = req->host_port();
  key.protocol = req->protocol();
  return Serve(*callers_, *ctx, "UnexposePort", Access::kMutate, req->vm_id(),
               [&](const Caller& c) {
                 return Fill(manager_->UnexposePort(c, req->vm_id(), key), resp);
               });
}

grpc::Status VmServiceImpl::PingAgent(grpc::ServerContext* ctx, const v1::PingAgentRequest* req,
                                      v1::PingAgentResponse* resp) {
  return Serve(*callers_, *ctx, "PingAgent", Access::kRead, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 auto times = manager_->PingAgent(c, req->vm_id(), req->count());
                 if (times.ok()) {
                   for (absl::Duration d : *times) {
                     resp->add_round_trip_ns(absl::ToInt64Nanoseconds(d));
                   }
                 }
                 return times.status();
               });
}

}  // namespace smolvm::daemon
