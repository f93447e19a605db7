#include "daemon/operation_service.h"

#include <algorithm>

#include "absl/time/clock.h"
#include "daemon/rpc_reply.h"

namespace smolvm::daemon {
namespace {

// How long a watch waits for an operation that has not begun, by default
// and at most: the client starts the call and the watch together, and
// either may reach the daemon first.
constexpr absl::Duration kDefaultStartWait = absl::Seconds(10);
constexpr absl::Duration kMaxStartWait = absl::Seconds(60);
// At most ten messages a second, however fast the operation reports.
constexpr absl::Duration kMinInterval = absl::Milliseconds(100);
// How often a watch with nothing new checks that its client is still there.
constexpr absl::Duration kCancelCheck = absl::Seconds(1);

}  // namespace

grpc::Status OperationServiceImpl::GetOperation(grpc::ServerContext* ctx,
                                                const v1::GetOperationRequest* req,
                                                v1::Operation* resp) {
  return Serve(*callers_, *ctx, "GetOperation", Access::kRead, req->operation_id(),
               [&](const Caller& c) -> absl::Status {
                 auto op = operations_->Get(c, req->operation_id());
                 if (op.ok()) ToProto(*op, resp);
                 return op.status();
               });
}

grpc::Status OperationServiceImpl::WatchOperation(grpc::ServerContext* ctx,
                                                  const v1::WatchOperationRequest* req,
                                                  grpc::ServerWriter<v1::Operation>* writer) {
  return Serve(*callers_, *ctx, "WatchOperation", Access::kLong, req->operation_id(),
               [&](const Caller& c) -> absl::Status {
                 const absl::Duration start_wait =
                     req->wait_ms() == 0
                         ? kDefaultStartWait
                         : std::min(absl::Milliseconds(req->wait_ms()), kMaxStartWait);
                 const absl::Time start_deadline = absl::Now() + start_wait;
                 uint64_t seen = 0;
                 for (;;) {
                   if (ctx->IsCancelled()) return absl::CancelledError("the watcher went away");
                   absl::Time deadline = absl::Now() + kCancelCheck;
                   if (seen == 0) deadline = std::min(deadline, start_deadline);
                   auto op = operations_->WaitNewer(c, req->operation_id(), seen, deadline);
                   if (absl::IsNotFound(op.status()) && seen == 0 &&
                       absl::Now() < start_deadline) {
                     continue;
                   }
                   if (!op.ok()) return op.status();
                   if (op->version == seen) continue;  // Nothing new yet.
                   seen = op->version;
                   v1::Operation message;
                   ToProto(*op, &message);
                   if (!writer->Write(message)) {
                     return absl::CancelledError("the watcher went away");
                   }
                   if (op->finished) return absl::OkStatus();
                   absl::SleepFor(kMinInterval);
                 }
               });
}

}  // namespace smolvm::daemon
