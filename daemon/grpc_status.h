// File: grpc_status.h
//
// The one crossing point between absl::Status (everything in lib/) and
// grpc::Status (the wire). The code enums share numbers 0-16.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace smolvm::daemon {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace smolvm::daemon
