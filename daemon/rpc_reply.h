// File: rpc_reply.h
//
// Finishes an RPC from a lib result: converts the value to its proto, logs a
// failure once (method, object id, code, message) and maps the status.
// Lower layers only return errors; this is the one place that logs them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "daemon/grpc_status.h"
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
                absl::StatusCodeToString(status.code()), std::string(status.message()));
  }
  return ToGrpcStatus(status);
}

template <typename Record, typename Proto>
grpc::Status Reply(const char* method, const std::string& id,
                   const absl::StatusOr<Record>& result, Proto* out) {
  if (result.ok()) ToProto(*result, out);
  return LogAndConvert(method, id, result.status());
}

}  // namespace smolvm::daemon
