// SmolVM::console: the streaming StreamConsole RPC
// (proto/smolvm/v1/vm_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <string>
#include <utility>

#include "client/smolvm.h"
#include "client/stream_call.h"

namespace smolvm {

namespace {

class GrpcConsoleStream : public ConsoleStream {
 public:
  explicit GrpcConsoleStream(std::unique_ptr<grpc::ClientContext> context)
      : call_(std::move(context)) {}
  void Start(v1::VmService::Stub& stub, const v1::StreamConsoleRequest& request) {
    call_.Begin([&](grpc::ClientContext* c) { return stub.StreamConsole(c, request); });
  }
  absl::StatusOr<std::string> next() override {
    auto chunk = call_.Next();
    if (!chunk.ok()) return chunk.status();
    return std::move(*chunk->mutable_data());
  }
  void cancel() override { call_.Cancel(); }

 private:
  StreamCall<v1::ConsoleChunk> call_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ConsoleStream>> SmolVM::console(bool follow,
                                                              std::optional<uint64_t> tail_bytes) {
  if (absl::Status s = CheckStarted("stream the console of"); !s.ok()) return s;
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: a follow lasts until the VM stops or it is cancelled.
  if (absl::Status s = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::StreamConsoleRequest request;
  request.set_vm_id(vm_id());
  request.set_follow(follow);
  if (tail_bytes) request.set_tail_bytes(*tail_bytes);
  auto stream = std::make_unique<GrpcConsoleStream>(std::move(context));
  stream->Start(connection_.vm_stub(), request);
  return std::unique_ptr<ConsoleStream>(std::move(stream));
}

}  // namespace smolvm
