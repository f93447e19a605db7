#include "daemon/grpc_status.h"

#include <string>

namespace smolvm::daemon {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  int code = static_cast<int>(status.code());
  // absl has no codes outside 0-16 today; anything else is a broken
  // invariant, reported as INTERNAL rather than an undefined grpc code.
  if (code < 0 || code > 16) code = static_cast<int>(grpc::StatusCode::INTERNAL);
  return grpc::Status(static_cast<grpc::StatusCode>(code), std::string(status.message()));
}

}  // namespace smolvm::daemon
