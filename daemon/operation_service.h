// File: operation_service.h
//
// smolvm.v1.OperationService: the progress of long calls a client named
// with an operation_id (core::OperationRegistry holds them), and
// WithOperation, which the other services' handlers wrap such a call in.
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "daemon/caller_resolver.h"
#include "lib/core/operations.h"
#include "smolvm/v1/operation_service.grpc.pb.h"

namespace smolvm::daemon {

// Runs `body(Progress*) -> absl::Status`: as operation `id` of the caller
// when the request names one (its progress goes there, and the outcome is
// recorded when the body returns), else with no progress. A malformed or
// running id fails the call before the body runs.
template <typename Body>
absl::Status WithOperation(core::OperationRegistry& operations, const Caller& caller,
                           const std::string& id, const char* kind, const std::string& target,
                           Body&& body) {
  if (id.empty()) return std::forward<Body>(body)(nullptr);
  auto op = operations.Begin(caller, id, kind, target);
  if (!op.ok()) return op.status();
  absl::Status status = std::forward<Body>(body)(op->get());
  (*op)->Finish(status);
  return status;
}

class OperationServiceImpl final : public v1::OperationService::Service {
 public:
  OperationServiceImpl(core::OperationRegistry* operations, const CallerResolver* callers)
      : operations_(operations), callers_(callers) {}

  grpc::Status GetOperation(grpc::ServerContext* ctx, const v1::GetOperationRequest* req,
                            v1::Operation* resp) override;
  grpc::Status WatchOperation(grpc::ServerContext* ctx, const v1::WatchOperationRequest* req,
                              grpc::ServerWriter<v1::Operation>* writer) override;

 private:
  core::OperationRegistry* const operations_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
