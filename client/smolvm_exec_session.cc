// SmolVM::exec_session: an interactive command over the bidirectional
// ExecStream RPC (proto/smolvm/v1/vm_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "client/status.h"

namespace smolvm {

namespace {

// The daemon takes at most 1 MiB of stdin per message.
constexpr size_t kMaxStdinMessageBytes = size_t{1} << 20;

using ExecStreamCall = grpc::ClientReaderWriter<v1::ExecStreamRequest, v1::ExecResponse>;

class GrpcExecSession : public ExecSession {
 public:
  explicit GrpcExecSession(std::unique_ptr<grpc::ClientContext> context)
      : context_(std::move(context)) {}
  ~GrpcExecSession() override {
    cancel();
    std::lock_guard<std::mutex> lock(write_mu_);
    if (!finished_) (void)stream_->Finish();
  }

  // Sends the start; false if the call is already over (next() says why).
  bool Begin(v1::VmService::Stub& stub, const v1::ExecStreamRequest& start) {
    stream_ = stub.ExecStream(context_.get());
    return Write(start).ok();
  }

  absl::StatusOr<v1::ExecResponse> next() override {
    if (!ended_.ok()) return ended_;
    v1::ExecResponse response;
    while (stream_->Read(&response)) {
      // The contract: end our requests after the exit, or when the call is
      // failing (its status follows at once then).
      if (response.has_exit()) EndWrites();
      if (response.failing()) {
        EndWrites();
        continue;
      }
      return response;
    }
    // The stream is over: no write may be pending when Finish runs (a
    // blocked Write fails once the call ended).
    std::lock_guard<std::mutex> lock(write_mu_);
    writes_done_ = true;
    finished_ = true;
    grpc::Status status = stream_->Finish();
    ended_ = status.ok() ? absl::CancelledError("the exec session ended")
                         : FromGrpcStatus(status);
    return ended_;
  }

  absl::Status write_stdin(absl::string_view data) override {
    if (stdin_closed_) return absl::FailedPreconditionError("exec session: stdin is closed");
    while (!data.empty()) {
      v1::ExecStreamRequest request;
      const size_t len = std::min(kMaxStdinMessageBytes, data.size());
      request.set_stdin(std::string(data.substr(0, len)));
      if (absl::Status s = Write(request); !s.ok()) return s;
      data.remove_prefix(len);
    }
    return absl::OkStatus();
  }

  absl::Status close_stdin() override {
    if (stdin_closed_.exchange(true)) return absl::OkStatus();
    v1::ExecStreamRequest request;
    request.set_close_stdin(true);
    return Write(request);
  }

  absl::Status signal(int signal) override {
    if (signal < 1 || signal > 64) {
      return absl::InvalidArgumentError(
          absl::StrCat("exec session: signal ", signal, " is not 1-64"));
    }
    v1::ExecStreamRequest request;
    request.set_signal(signal);
    return Write(request);
  }

  absl::Status resize(uint32_t rows, uint32_t cols) override {
    v1::ExecStreamRequest request;
    request.mutable_resize()->set_rows(rows);
    request.mutable_resize()->set_cols(cols);
    return Write(request);
  }

  void cancel() override { context_->TryCancel(); }

 private:
  absl::Status Write(const v1::ExecStreamRequest& request) {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (writes_done_ || !stream_->Write(request)) {
      writes_done_ = true;
      return absl::UnavailableError(
          "exec session: the call has ended (next() returns how)");
    }
    return absl::OkStatus();
  }

  void EndWrites() {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (!writes_done_) (void)stream_->WritesDone();
    writes_done_ = true;
  }

  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<ExecStreamCall> stream_;
  std::atomic<bool> stdin_closed_{false};
  // Writes (and WritesDone/Finish) one at a time; a Read may run beside.
  std::mutex write_mu_;
  bool writes_done_ = false;  // guarded by write_mu_
  bool finished_ = false;     // guarded by write_mu_
  absl::Status ended_;        // next()'s thread only
};

}  // namespace

absl::StatusOr<std::unique_ptr<ExecSession>> SmolVM::exec_session(
    const std::vector<std::string>& argv, const RunOptions& options,
    const ExecSessionOptions& session) {
  if (argv.empty()) return absl::InvalidArgumentError("exec session: empty argv");
  if (options.stdin_data) {
    return absl::InvalidArgumentError(
        "exec session: stdin is streamed with write_stdin; leave RunOptions::stdin_data unset");
  }
  v1::ExecStreamRequest start;
  v1::ExecStreamStart* s = start.mutable_start();
  s->mutable_exec()->mutable_argv()->Add(argv.begin(), argv.end());
  if (absl::Status st = FillExecRequest(options, s->mutable_exec()); !st.ok()) return st;
  s->set_tty(session.tty);
  if (session.tty) {
    s->mutable_size()->set_rows(session.rows);
    s->mutable_size()->set_cols(session.cols);
    s->set_term(session.term);
  }
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: a session lasts as long as its command (whose own limit is
  // RunOptions::timeout, enforced in the guest).
  if (absl::Status st = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !st.ok()) {
    return st;
  }
  auto call = std::make_unique<GrpcExecSession>(std::move(context));
  // A start the daemon refuses is reported by the first next().
  (void)call->Begin(connection_.vm_stub(), start);
  return std::unique_ptr<ExecSession>(std::move(call));
}

}  // namespace smolvm
