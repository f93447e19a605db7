// File: client/status.h
// -----------------------------------------------------------------------------
//
// The client's one edge between gRPC and Abseil errors, and the exit codes of
// smolvmctl. The daemon's counterpart is ToGrpcStatus in daemon/. gRPC 1.51 has
// no conversion of its own; the two code enums share their numbers (0-16, the
// google.rpc.Code values), so the mapping keeps code and message unchanged.

#ifndef SMOLVM_CLIENT_STATUS_H_
#define SMOLVM_CLIENT_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace smolvm {

// FromGrpcStatus returns an absl::Status with the same numeric code and the
// same message as `status`. A code outside 0-16 becomes UNKNOWN. An OK status
// converts to absl::OkStatus() (its message, if any, is dropped). gRPC's
// binary error_details are not carried over.
absl::Status FromGrpcStatus(const grpc::Status& status);

// FromGrpcCode is FromGrpcStatus for a code received as a number (e.g. in a
// response message). Use it rather than casting the number to
// grpc::StatusCode: an out-of-range value of that enum is undefined behaviour.
absl::Status FromGrpcCode(int code, absl::string_view message);

// ExitCodeFor is the process exit code smolvmctl uses for `status`:
//   0 OK, 2 INVALID_ARGUMENT, 3 NOT_FOUND, 4 ALREADY_EXISTS,
//   5 FAILED_PRECONDITION, 6 RESOURCE_EXHAUSTED,
//   7 UNAVAILABLE (typically: the daemon is not running), 1 anything else.
int ExitCodeFor(const absl::Status& status);

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_STATUS_H_
