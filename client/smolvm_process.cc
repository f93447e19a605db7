// SmolVM's background processes: the ProcessService RPCs
// (proto/smolvm/v1/process_service.proto). ConnectProcess is a stream that
// any number of clients may open and cancel (a detach) at any time.

#include <grpcpp/client_context.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "client/stream_call.h"

namespace smolvm {

namespace {

class GrpcProcessConnection : public ProcessConnection {
 public:
  explicit GrpcProcessConnection(std::unique_ptr<grpc::ClientContext> context)
      : call_(std::move(context)) {}
  StreamCall<v1::ConnectProcessResponse>& call() { return call_; }

  absl::StatusOr<v1::ConnectProcessResponse> next() override { return call_.Next(); }
  void cancel() override { call_.Cancel(); }

 private:
  StreamCall<v1::ConnectProcessResponse> call_;
};

// A background process has neither: refused before anything is sent.
absl::Status CheckBackgroundOptions(const RunOptions& options) {
  if (options.stdin_data || options.timeout != absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "start_process: a background process has no stdin and no timeout (use exec/run)");
  }
  return absl::OkStatus();
}

void FillStart(const RunOptions& options, v1::StartProcessRequest* request) {
  for (const auto& [k, v] : options.env) (*request->mutable_env())[k] = v;
  request->set_cwd(options.cwd);
  request->set_user(options.user);
}

}  // namespace

absl::StatusOr<v1::ProcessInfo> SmolVM::start_process(const std::vector<std::string>& argv,
                                                      const RunOptions& options) {
  if (absl::Status s = CheckStarted("start process"); !s.ok()) return s;
  if (absl::Status s = CheckBackgroundOptions(options); !s.ok()) return s;
  v1::StartProcessRequest request;
  request.set_vm_id(vm_id());
  for (const auto& a : argv) request.add_argv(a);
  FillStart(options, &request);
  return connection_.Call(&v1::ProcessService::Stub::StartProcess, request);
}

absl::StatusOr<v1::ProcessInfo> SmolVM::start_process(const std::string& command,
                                                      const RunOptions& options) {
  if (absl::Status s = CheckStarted("start process"); !s.ok()) return s;
  if (absl::Status s = CheckBackgroundOptions(options); !s.ok()) return s;
  v1::StartProcessRequest request;
  request.set_vm_id(vm_id());
  request.set_command(command);
  FillStart(options, &request);
  return connection_.Call(&v1::ProcessService::Stub::StartProcess, request);
}

absl::StatusOr<v1::ProcessInfo> SmolVM::start_process(std::initializer_list<std::string> argv,
                                                      const RunOptions& options) {
  return start_process(std::vector<std::string>(argv), options);
}

absl::StatusOr<std::vector<v1::ProcessInfo>> SmolVM::list_processes() {
  if (absl::Status s = CheckStarted("list processes"); !s.ok()) return s;
  v1::ListProcessesRequest request;
  request.set_vm_id(vm_id());
  auto response = connection_.Call(&v1::ProcessService::Stub::ListProcesses, request);
  if (!response.ok()) return response.status();
  return std::vector<v1::ProcessInfo>(response->processes().begin(),
                                      response->processes().end());
}

absl::StatusOr<v1::ProcessInfo> SmolVM::signal_process(uint32_t pid, int signal, bool group) {
  if (absl::Status s = CheckStarted("signal process"); !s.ok()) return s;
  v1::SignalProcessRequest request;
  request.set_vm_id(vm_id());
  request.set_pid(pid);
  request.set_signal(signal);
  request.set_group(group);
  return connection_.Call(&v1::ProcessService::Stub::SignalProcess, request);
}

absl::StatusOr<std::unique_ptr<ProcessConnection>> SmolVM::connect_process(
    uint32_t pid, uint32_t tail_bytes) {
  if (absl::Status s = CheckStarted("connect process"); !s.ok()) return s;
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: the connection lasts as long as the process, or until it
  // is cancelled.
  if (absl::Status s = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::ConnectProcessRequest request;
  request.set_vm_id(vm_id());
  request.set_pid(pid);
  request.set_tail_bytes(tail_bytes);
  auto connection = std::make_unique<GrpcProcessConnection>(std::move(context));
  v1::ProcessService::Stub& stub = connection_.process_stub();
  connection->call().Begin(
      [&](grpc::ClientContext* c) { return stub.ConnectProcess(c, request); });
  return std::unique_ptr<ProcessConnection>(std::move(connection));
}

absl::StatusOr<v1::ProcessInfo> SmolVM::wait_process(uint32_t pid, absl::Duration timeout) {
  if (absl::Status s = CheckStarted("wait process"); !s.ok()) return s;
  v1::WaitProcessRequest request;
  request.set_vm_id(vm_id());
  request.set_pid(pid);
  const bool limited = timeout != absl::InfiniteDuration() && timeout > absl::ZeroDuration();
  if (limited) {
    request.set_timeout_ms(static_cast<uint32_t>(
        std::min<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1))),
                          UINT32_MAX)));
  }
  // The daemon enforces the wait's limit; the RPC's deadline only guards
  // against a lost daemon.
  grpc::ClientContext context;
  if (absl::Status s = connection_.PrepareContext(
          &context, limited ? timeout + absl::Seconds(60) : absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::ProcessInfo info;
  grpc::Status status = connection_.process_stub().WaitProcess(&context, request, &info);
  if (!status.ok()) return connection_.Convert(status);
  return info;
}

}  // namespace smolvm
