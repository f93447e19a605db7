#include "daemon/event_service.h"

#include "daemon/rpc_reply.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {

grpc::Status EventServiceImpl::WatchEvents(grpc::ServerContext* ctx,
                                           const v1::WatchEventsRequest* req,
                                           grpc::ServerWriter<v1::Event>* writer) {
  return Serve(*callers_, *ctx, "WatchEvents", Access::kLong, req->filter().vm_id(),
               [&](const Caller& c) -> absl::Status {
                 core::EventJournal::WatchOptions options;
                 options.after_event_id = req->after_event_id();
                 options.follow = req->follow();
                 SMOLVM_ASSIGN_OR_RETURN(options.filter, FromProto(req->filter()));
                 v1::Event message;
                 return journal_->Watch(
                     c, options,
                     [&](const EventRecord& event) {
                       message.Clear();
                       ToProto(event, &message);
                       return writer->Write(message);
                     },
                     [ctx] { return ctx->IsCancelled(); });
               });
}

}  // namespace smolvm::daemon
