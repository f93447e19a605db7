#include "client/status.h"

namespace smolvm {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return FromGrpcCode(static_cast<int>(status.error_code()), status.error_message());
}

absl::Status FromGrpcCode(int code, absl::string_view message) {
  if (code == 0) return absl::OkStatus();
  // Codes 1-16 are the same numbers in both enums (google.rpc.Code).
  if (code < 0 || code > 16) return absl::Status(absl::StatusCode::kUnknown, message);
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 0;
    case absl::StatusCode::kInvalidArgument:
      return 2;
    case absl::StatusCode::kNotFound:
      return 3;
    case absl::StatusCode::kAlreadyExists:
      return 4;
    case absl::StatusCode::kFailedPrecondition:
      return 5;
    case absl::StatusCode::kResourceExhausted:
      return 6;
    case absl::StatusCode::kUnavailable:
      return 7;
    default:
      return 1;
  }
}

}  // namespace smolvm
