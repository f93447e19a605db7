// File: stream_call.h
//
// StreamCall: one server-streaming RPC read message by message, cancellable
// from another thread: the shared core of the client's long-lived streams
// (DirWatch, ProcessConnection). The call holds its channel, so it may
// outlive the SmolVM that started it.
#ifndef SMOLVM_CLIENT_STREAM_CALL_H_
#define SMOLVM_CLIENT_STREAM_CALL_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/status.h"

namespace smolvm {

template <typename Response>
class StreamCall {
 public:
  explicit StreamCall(std::unique_ptr<grpc::ClientContext> context)
      : context_(std::move(context)) {}
  StreamCall(const StreamCall&) = delete;
  StreamCall& operator=(const StreamCall&) = delete;
  ~StreamCall() {
    Cancel();
    if (reader_) (void)reader_->Finish();
  }

  // Starts the call: `start(context)` makes it on a stub, e.g.
  //   [&](grpc::ClientContext* c) { return stub.WatchDir(c, request); }
  template <typename Start>
  void Begin(Start&& start) {
    reader_ = std::forward<Start>(start)(context_.get());
  }

  // The next message, or how the stream ended: its error, or CANCELLED
  // when it ended cleanly or was cancelled, so that a finished stream never
  // reads as OK again.
  absl::StatusOr<Response> Next() {
    if (!ended_.ok()) return ended_;
    Response response;
    if (reader_->Read(&response)) return response;
    grpc::Status status = reader_->Finish();
    reader_.reset();
    ended_ = status.ok() ? absl::CancelledError("the stream ended") : FromGrpcStatus(status);
    return ended_;
  }

  // Ends the call; a Next() blocked in another thread returns. Thread-safe,
  // idempotent.
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_) context_->TryCancel();
    cancelled_ = true;
  }

 private:
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<Response>> reader_;
  absl::Status ended_;
  std::mutex mu_;
  bool cancelled_ = false;
};

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_STREAM_CALL_H_
