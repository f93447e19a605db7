// File: event_service.h
//
// smolvm.v1.EventService: the event journal (core::EventJournal over the
// store), streamed to its callers.
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/event_journal.h"
#include "smolvm/v1/event_service.grpc.pb.h"

namespace smolvm::daemon {

class EventServiceImpl final : public v1::EventService::Service {
 public:
  EventServiceImpl(const core::EventJournal* journal, const CallerResolver* callers)
      : journal_(journal), callers_(callers) {}

  grpc::Status WatchEvents(grpc::ServerContext* ctx, const v1::WatchEventsRequest* req,
                           grpc::ServerWriter<v1::Event>* writer) override;

 private:
  const core::EventJournal* const journal_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
