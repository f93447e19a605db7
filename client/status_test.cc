#include "client/status.h"

#include <grpcpp/support/status.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/status/status.h"

namespace smolvm {
namespace {

TEST(FromGrpcStatusTest, OkIsOk) {
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status(grpc::StatusCode::OK, "")).ok());
}

TEST(FromGrpcStatusTest, KeepsEveryCodeAndMessage) {
  struct Case {
    grpc::StatusCode grpc;
    absl::StatusCode absl;
  };
  const Case cases[] = {
      {grpc::StatusCode::OK, absl::StatusCode::kOk},
      {grpc::StatusCode::CANCELLED, absl::StatusCode::kCancelled},
      {grpc::StatusCode::UNKNOWN, absl::StatusCode::kUnknown},
      {grpc::StatusCode::INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
      {grpc::StatusCode::DEADLINE_EXCEEDED,
       absl::StatusCode::kDeadlineExceeded},
      {grpc::StatusCode::NOT_FOUND, absl::StatusCode::kNotFound},
      {grpc::StatusCode::ALREADY_EXISTS, absl::StatusCode::kAlreadyExists},
      {grpc::StatusCode::PERMISSION_DENIED,
       absl::StatusCode::kPermissionDenied},
      {grpc::StatusCode::RESOURCE_EXHAUSTED,
       absl::StatusCode::kResourceExhausted},
      {grpc::StatusCode::FAILED_PRECONDITION,
       absl::StatusCode::kFailedPrecondition},
      {grpc::StatusCode::ABORTED, absl::StatusCode::kAborted},
      {grpc::StatusCode::OUT_OF_RANGE, absl::StatusCode::kOutOfRange},
      {grpc::StatusCode::UNIMPLEMENTED, absl::StatusCode::kUnimplemented},
      {grpc::StatusCode::INTERNAL, absl::StatusCode::kInternal},
      {grpc::StatusCode::UNAVAILABLE, absl::StatusCode::kUnavailable},
      {grpc::StatusCode::DATA_LOSS, absl::StatusCode::kDataLoss},
      {grpc::StatusCode::UNAUTHENTICATED, absl::StatusCode::kUnauthenticated},
  };
  ASSERT_EQ(std::size(cases), 17u);
  for (const Case& c : cases) {
    const int number = static_cast<int>(c.grpc);
    SCOPED_TRACE(number);
    EXPECT_EQ(number, static_cast<int>(c.absl));
    const std::string message = "start vm vm-" + std::to_string(number);
    absl::Status s = FromGrpcStatus(grpc::Status(c.grpc, message));
    EXPECT_EQ(s.code(), c.absl);
    EXPECT_EQ(s.raw_code(), number);
    if (c.grpc != grpc::StatusCode::OK) {
      EXPECT_EQ(s.message(), message);
    }
  }
}

TEST(FromGrpcStatusTest, OutOfRangeCodeIsUnknown) {
  // 20: unknown to both enums, yet a valid grpc::StatusCode value (UBSan
  // rejects values outside the enum's 0-31 range).
  absl::Status s = FromGrpcStatus(
      grpc::Status(static_cast<grpc::StatusCode>(20), "from the future"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(s.message(), "from the future");
  for (int code : {42, 99, -1}) {
    s = FromGrpcCode(code, "from the future");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnknown) << code;
    EXPECT_EQ(s.message(), "from the future");
  }
  EXPECT_TRUE(FromGrpcCode(0, "ignored").ok());
  EXPECT_EQ(FromGrpcCode(5, "gone").code(), absl::StatusCode::kNotFound);
}

TEST(ExitCodeForTest, DocumentedCodes) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("x")), 2);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("x")), 3);
  EXPECT_EQ(ExitCodeFor(absl::AlreadyExistsError("x")), 4);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("x")), 5);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("x")), 6);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("x")), 7);
}

TEST(ExitCodeForTest, EverythingElseIsOne) {
  for (absl::StatusCode code :
       {absl::StatusCode::kCancelled, absl::StatusCode::kUnknown,
        absl::StatusCode::kDeadlineExceeded,
        absl::StatusCode::kPermissionDenied, absl::StatusCode::kAborted,
        absl::StatusCode::kOutOfRange, absl::StatusCode::kUnimplemented,
        absl::StatusCode::kInternal, absl::StatusCode::kDataLoss,
        absl::StatusCode::kUnauthenticated}) {
    SCOPED_TRACE(static_cast<int>(code));
    EXPECT_EQ(ExitCodeFor(absl::Status(code, "x")), 1);
  }
}

TEST(ExitCodeForTest, ComposesWithFromGrpcStatus) {
  EXPECT_EQ(ExitCodeFor(FromGrpcStatus(
                grpc::Status(grpc::StatusCode::NOT_FOUND, "get vm a: no vm"))),
            3);
  EXPECT_EQ(ExitCodeFor(FromGrpcStatus(grpc::Status::OK)), 0);
}

}  // namespace
}  // namespace smolvm
