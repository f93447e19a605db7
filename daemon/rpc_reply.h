// File: rpc_reply.h
//
// The frame of every RPC: resolve the caller from the transport, run the
// handler body as that caller, log a failure once (method, object, code,
// message), write the audit line of a mutating call, count and time it
// (metrics.h), and map the status.
// Lower layers only return errors; this is the one place that logs them.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "daemon/audit.h"
#include "daemon/caller_resolver.h"
#include "daemon/grpc_status.h"
#include "daemon/metrics.h"
#include "daemon/proto_convert.h"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {

inline grpc::Status LogAndConvert(const char* method, const std::string& id,
                                  const absl::Status& status) {
  if (!status.ok()) {
    auto level = absl::IsInternal(status) || absl::IsDataLoss(status) ||
                         absl::IsUnknown(status)
                     ? spdlog::level::err
                     : spdlog::level::info;
    spdlog::log(level, "{} {}: {}: {}", method, id.empty() ? "-" : id,
                absl::StatusCodeToString(status.code()), absl::CHexEscape(status.message()));
  }
  return ToGrpcStatus(status);
}

// Logs each failed clone of a fork once (the call itself succeeded).
inline void LogCloneFailures(
    const char* method,
    const std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>& clones) {
  for (const auto& [vm_id, vm] : clones) {
    if (!vm.ok()) (void)LogAndConvert(method, vm_id, vm.status());
  }
}

// Whether an RPC changes anything (and is therefore audited), and whether
// it is a long call (a stream, watch or wait) that holds a place of its
// tenant's (StreamLimiter) while it lasts.
enum class Access { kRead, kMutate, kLong, kMutateLong };

// Runs `body(const Caller&) -> absl::Status` for the caller of `ctx`.
template <typename Body>
grpc::Status Serve(const CallerResolver& callers, const grpc::ServerContext& ctx,
                   const char* method, Access access, const std::string& object,
                   Body&& body) {
  const absl::Time start = absl::Now();
  absl::StatusOr<Caller> caller = callers.Resolve(ctx);
  absl::Status status = caller.status();
  std::shared_ptr<void> place;  // Held while the body runs.
  if (caller.ok() && (access == Access::kLong || access == Access::kMutateLong) &&
      callers.stream_limiter() != nullptr) {
    absl::StatusOr<std::shared_ptr<void>> taken = callers.stream_limiter()->Take(*caller);
    if (taken.ok()) {
      place = *std::move(taken);
    } else {
      status = taken.status();
    }
  }
  if (status.ok()) status = std::forward<Body>(body)(*caller);
  place.reset();
  if (access == Access::kMutate || access == Access::kMutateLong || !caller.ok()) {
    Audit(caller.ok() ? *caller : Caller{"-", false, ctx.peer()}, method, object, status);
  }
  ObserveRpc(method, status.code(), absl::Now() - start);
  return LogAndConvert(method, object, status);
}

// Converts a lib result into `out` and passes its status on.
template <typename Record, typename Proto>
absl::Status Fill(const absl::StatusOr<Record>& result, Proto* out) {
  if (result.ok()) ToProto(*result, out);
  return result.status();
}

}  // namespace smolvm::daemon
