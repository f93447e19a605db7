// File: vm_service.h
//
// smolvm.v1.VmService: each RPC is one call into core::VmManager.
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/operations.h"
#include "lib/core/vm_manager.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm::daemon {

class VmServiceImpl final : public v1::VmService::Service {
 public:
  VmServiceImpl(core::VmManager* manager, const CallerResolver* callers,
                core::OperationRegistry* operations)
      : manager_(manager), callers_(callers), operations_(operations) {}

  grpc::Status CreateVm(grpc::ServerContext* ctx, const v1::CreateVmRequest* req,
                        v1::Vm* resp) override;
  grpc::Status StartVm(grpc::ServerContext* ctx, const v1::StartVmRequest* req,
                       v1::Vm* resp) override;
  grpc::Status StopVm(grpc::ServerContext* ctx, const v1::StopVmRequest* req,
                      v1::Vm* resp) override;
  grpc::Status PauseVm(grpc::ServerContext* ctx, const v1::PauseVmRequest* req,
                       v1::Vm* resp) override;
  grpc::Status ResumeVm(grpc::ServerContext* ctx, const v1::ResumeVmRequest* req,
                        v1::Vm* resp) override;
  grpc::Status DeleteVm(grpc::ServerContext* ctx, const v1::DeleteVmRequest* req,
                        v1::DeleteVmResponse* resp) override;
  grpc::Status GetVm(grpc::ServerContext* ctx, const v1::GetVmRequest* req,
                     v1::Vm* resp) override;
  grpc::Status ListVms(grpc::ServerContext* ctx, const v1::ListVmsRequest* req,
                       v1::ListVmsResponse* resp) override;
  grpc::Status Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                    grpc::ServerWriter<v1::ExecResponse>* writer) override;
  grpc::Status ExecStream(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::ExecResponse, v1::ExecStreamRequest>* stream) override;
  grpc::Status UploadFile(grpc::ServerContext* ctx,
                          grpc::ServerReader<v1::UploadFileRequest>* reader,
                          v1::UploadFileResponse* resp) override;
  grpc::Status ForkVm(grpc::ServerContext* ctx, const v1::ForkVmRequest* req,
                      v1::ForkVmResponse* resp) override;
  grpc::Status StreamConsole(grpc::ServerContext* ctx, const v1::StreamConsoleRequest* req,
                             grpc::ServerWriter<v1::ConsoleChunk>* writer) override;
  grpc::Status GetVmStats(grpc::ServerContext* ctx, const v1::GetVmStatsRequest* req,
                          v1::VmStats* resp) override;
  grpc::Status WatchVmStats(grpc::ServerContext* ctx, const v1::WatchVmStatsRequest* req,
                            grpc::ServerWriter<v1::VmStats>* writer) override;
  grpc::Status ExposePort(grpc::ServerContext* ctx, const v1::ExposePortRequest* req,
                          v1::Vm* resp) override;
  grpc::Status SetLifetime(grpc::ServerContext* ctx, const v1::SetLifetimeRequest* req,
                           v1::Vm* resp) override;
  grpc::Status UpdateNetworkPolicy(grpc::ServerContext* ctx,
                                   const v1::UpdateNetworkPolicyRequest* req,
                                   v1::Vm* resp) override;
  grpc::Status UnexposePort(grpc::ServerContext* ctx, const v1::UnexposePortRequest* req,
                            v1::Vm* resp) override;
  grpc::Status PingAgent(grpc::ServerContext* ctx, const v1::PingAgentRequest* req,
                         v1::PingAgentResponse* resp) override;
  grpc::Status DownloadFile(grpc::ServerContext* ctx, const v1::DownloadFileRequest* req,
                            grpc::ServerWriter<v1::DownloadFileResponse>* writer) override;

 private:
  core::VmManager* const manager_;
  const CallerResolver* const callers_;
  core::OperationRegistry* const operations_;  // Calls named by an operation_id.
};

}  // namespace smolvm::daemon
