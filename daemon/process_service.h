// File: process_service.h
//
// smolvm.v1.ProcessService: background processes of a RUNNING VM, tracked
// by its guest agent (protocol 5); each RPC is one call into
// core::VmManager (StartProcess, ListProcesses, SignalProcess,
// AttachProcess).
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/vm_manager.h"
#include "smolvm/v1/process_service.grpc.pb.h"

namespace smolvm::daemon {

class ProcessServiceImpl final : public v1::ProcessService::Service {
 public:
  ProcessServiceImpl(core::VmManager* manager, const CallerResolver* callers)
      : manager_(manager), callers_(callers) {}

  grpc::Status StartProcess(grpc::ServerContext* ctx, const v1::StartProcessRequest* req,
                            v1::ProcessInfo* resp) override;
  grpc::Status ListProcesses(grpc::ServerContext* ctx, const v1::ListProcessesRequest* req,
                             v1::ListProcessesResponse* resp) override;
  grpc::Status SignalProcess(grpc::ServerContext* ctx, const v1::SignalProcessRequest* req,
                             v1::ProcessInfo* resp) override;
  grpc::Status ConnectProcess(grpc::ServerContext* ctx, const v1::ConnectProcessRequest* req,
                              grpc::ServerWriter<v1::ConnectProcessResponse>* writer) override;
  grpc::Status WaitProcess(grpc::ServerContext* ctx, const v1::WaitProcessRequest* req,
                           v1::ProcessInfo* resp) override;

 private:
  // The process as the agent lists it once `exit` was seen (or, if it was
  // evicted meanwhile, what the exit says).
  v1::ProcessInfo ExitedProcess(const Caller& caller, const std::string& vm_id, uint32_t pid,
                                const agent::ExecEvent& exit);

  core::VmManager* const manager_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
