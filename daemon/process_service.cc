#include "daemon/process_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/rpc_reply.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {
namespace {

void ToProto(const agent::ProcessInfo& p, v1::ProcessInfo* out) {
  out->set_pid(static_cast<uint32_t>(p.pid));
  for (const auto& a : p.argv) out->add_argv(a);
  out->set_user(p.user);
  out->set_cwd(p.cwd);
  out->set_running(p.running);
  out->set_exit_code(p.exit_code);
  out->set_signal(p.signal);
  out->set_started_at_unix_ns(p.started_unix_ns);
  out->set_ended_at_unix_ns(p.ended_unix_ns);
  out->set_output_bytes(p.output_bytes);
}

}  // namespace

v1::ProcessInfo ProcessServiceImpl::ExitedProcess(const Caller& caller,
                                                  const std::string& vm_id, uint32_t pid,
                                                  const agent::ExecEvent& exit) {
  v1::ProcessInfo info;
  auto listed = manager_->ListProcesses(caller, vm_id);
  if (listed.ok()) {
    for (const auto& p : *listed) {
      if (static_cast<uint32_t>(p.pid) == pid) {
        ToProto(p, &info);
        return info;
      }
    }
  }
  info.set_pid(pid);
  info.set_exit_code(exit.exit_code);
  info.set_signal(exit.signal);
  return info;
}

grpc::Status ProcessServiceImpl::StartProcess(grpc::ServerContext* ctx,
                                              const v1::StartProcessRequest* req,
                                              v1::ProcessInfo* resp) {
  return Serve(*callers_, *ctx, "StartProcess", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(auto spec, CommandSpecFromProto(*req, "start process"));
                 SMOLVM_ASSIGN_OR_RETURN(auto info,
                                         manager_->StartProcess(c, req->vm_id(), std::move(spec)));
                 ToProto(info, resp);
                 return absl::OkStatus();
               });
}

grpc::Status ProcessServiceImpl::ListProcesses(grpc::ServerContext* ctx,
                                               const v1::ListProcessesRequest* req,
                                               v1::ListProcessesResponse* resp) {
  return Serve(*callers_, *ctx, "ListProcesses", Access::kRead, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(auto listed, manager_->ListProcesses(c, req->vm_id()));
                 for (const auto& p : listed) ToProto(p, resp->add_processes());
                 return absl::OkStatus();
               });
}

grpc::Status ProcessServiceImpl::SignalProcess(grpc::ServerContext* ctx,
                                               const v1::SignalProcessRequest* req,
                                               v1::ProcessInfo* resp) {
  return Serve(*callers_, *ctx, "SignalProcess", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(auto info,
                                         manager_->SignalProcess(c, req->vm_id(), req->pid(),
                                                                 req->signal(), req->group()));
                 ToProto(info, resp);
                 return absl::OkStatus();
               });
}

grpc::Status ProcessServiceImpl::ConnectProcess(
    grpc::ServerContext* ctx, const v1::ConnectProcessRequest* req,
    grpc::ServerWriter<v1::ConnectProcessResponse>* writer) {
  return Serve(*callers_, *ctx, "ConnectProcess", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(
                     auto attach, manager_->AttachProcess(c, req->vm_id(), req->pid(),
                                                          req->tail_bytes(), /*output=*/true));
                 // Until the exit or the client's cancel (checked at least
                 // once a second); a cancel detaches (the handle's end).
                 while (true) {
                   if (ctx->IsCancelled()) return absl::OkStatus();
                   auto event = attach->Next(absl::Now() + absl::Seconds(1));
                   if (absl::IsDeadlineExceeded(event.status())) continue;
                   if (!event.ok()) return event.status();
                   v1::ConnectProcessResponse msg;
                   switch (event->kind) {
                     case agent::ExecEvent::Kind::kStdout:
                       msg.set_stdout(std::move(event->data));
                       break;
                     case agent::ExecEvent::Kind::kStderr:
                       msg.set_stderr(std::move(event->data));
                       break;
                     case agent::ExecEvent::Kind::kExit:
                       *msg.mutable_exit() = ExitedProcess(c, req->vm_id(), req->pid(), *event);
                       break;
                   }
                   msg.set_skipped_bytes(event->skipped_bytes);
                   if (!writer->Write(msg)) return absl::OkStatus();
                   if (event->kind == agent::ExecEvent::Kind::kExit) return absl::OkStatus();
                 }
               });
}

grpc::Status ProcessServiceImpl::WaitProcess(grpc::ServerContext* ctx,
                                             const v1::WaitProcessRequest* req,
                                             v1::ProcessInfo* resp) {
  return Serve(*callers_, *ctx, "WaitProcess", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 const absl::Time deadline =
                     req->timeout_ms() == 0
                         ? absl::InfiniteFuture()
                         : absl::Now() + absl::Milliseconds(req->timeout_ms());
                 SMOLVM_ASSIGN_OR_RETURN(
                     auto attach, manager_->AttachProcess(c, req->vm_id(), req->pid(), 0,
                                                          /*output=*/false));
                 while (true) {
                   if (ctx->IsCancelled()) return absl::CancelledError("the client went away");
                   const absl::Time now = absl::Now();
                   if (now >= deadline) {
                     return absl::DeadlineExceededError(absl::StrCat(
                         "process ", req->pid(), " still runs after ", req->timeout_ms(),
                         " ms"));
                   }
                   auto event = attach->Next(std::min(deadline, now + absl::Seconds(1)));
                   if (absl::IsDeadlineExceeded(event.status())) continue;
                   if (!event.ok()) return event.status();
                   if (event->kind != agent::ExecEvent::Kind::kExit) continue;
                   *resp = ExitedProcess(c, req->vm_id(), req->pid(), *event);
                   return absl::OkStatus();
                 }
               });
}

}  // namespace smolvm::daemon
