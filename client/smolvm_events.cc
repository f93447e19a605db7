// SmolVMManager::watch_events: the streaming WatchEvents
// (proto/smolvm/v1/event_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <utility>

#include "client/smolvm.h"
#include "client/stream_call.h"

namespace smolvm {

namespace {

class GrpcEventStream : public EventStream {
 public:
  explicit GrpcEventStream(std::unique_ptr<grpc::ClientContext> context)
      : call_(std::move(context)) {}
  void Start(v1::EventService::Stub& stub, const v1::WatchEventsRequest& request) {
    call_.Begin([&](grpc::ClientContext* c) { return stub.WatchEvents(c, request); });
  }
  absl::StatusOr<v1::Event> next() override { return call_.Next(); }
  void cancel() override { call_.Cancel(); }

 private:
  StreamCall<v1::Event> call_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EventStream>> SmolVMManager::watch_events(
    const EventWatchOptions& options) const {
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: a follow lasts until it is cancelled.
  if (absl::Status s = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::WatchEventsRequest request;
  request.set_after_event_id(options.after_event_id);
  request.set_follow(options.follow);
  request.mutable_filter()->set_vm_id(options.vm_id);
  request.mutable_filter()->set_snapshot_id(options.snapshot_id);
  for (v1::EventKind kind : options.kinds) request.mutable_filter()->add_kinds(kind);
  auto stream = std::make_unique<GrpcEventStream>(std::move(context));
  stream->Start(connection_.event_stub(), request);
  return std::unique_ptr<EventStream>(std::move(stream));
}

}  // namespace smolvm
