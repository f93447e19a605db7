// SmolVM::stats and SmolVM::watch_stats: GetVmStats and the streaming
// WatchVmStats (proto/smolvm/v1/vm_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <utility>

#include "client/smolvm.h"
#include "client/stream_call.h"

namespace smolvm {

namespace {

class GrpcStatsWatch : public StatsWatch {
 public:
  explicit GrpcStatsWatch(std::unique_ptr<grpc::ClientContext> context)
      : call_(std::move(context)) {}
  void Start(v1::VmService::Stub& stub, const v1::WatchVmStatsRequest& request) {
    call_.Begin([&](grpc::ClientContext* c) { return stub.WatchVmStats(c, request); });
  }
  absl::StatusOr<v1::VmStats> next() override { return call_.Next(); }
  void cancel() override { call_.Cancel(); }

 private:
  StreamCall<v1::VmStats> call_;
};

}  // namespace

absl::StatusOr<v1::VmStats> SmolVM::stats() {
  if (absl::Status s = CheckStarted("get the stats of"); !s.ok()) return s;
  v1::GetVmStatsRequest request;
  request.set_vm_id(vm_id());
  return connection_.Call(&v1::VmService::Stub::GetVmStats, request);
}

absl::StatusOr<std::unique_ptr<StatsWatch>> SmolVM::watch_stats(absl::Duration interval) {
  if (absl::Status s = CheckStarted("watch the stats of"); !s.ok()) return s;
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: a watch lasts until the VM stops or it is cancelled.
  if (absl::Status s = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::WatchVmStatsRequest request;
  request.set_vm_id(vm_id());
  request.set_interval_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(interval)));
  auto watch = std::make_unique<GrpcStatsWatch>(std::move(context));
  watch->Start(connection_.vm_stub(), request);
  return std::unique_ptr<StatsWatch>(std::move(watch));
}

}  // namespace smolvm
