// File: status_matchers.h
//
// gmock matchers for absl::Status and absl::StatusOr<T>, which the Abseil we
// build against (20220623) lacks (absl_testing::IsOk / StatusIs arrived in
// 20240722):
//
//   EXPECT_THAT(DoIt(), smolvm_testing::IsOk());
//   EXPECT_THAT(Parse(x), smolvm_testing::StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(Parse(x), smolvm_testing::StatusIs(absl::StatusCode::kNotFound,
//                                                  "/no/such/file"));
//
// Unlike absl_testing::StatusIs, whose second argument is a matcher (a plain
// string there means the WHOLE message), the second argument here is a
// substring the message must contain: our tests check that a message names
// the path or the rule, not its exact wording.
#pragma once

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace smolvm_testing {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }

template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

class IsOkMatcherImpl {
 public:
  template <typename StatusType>
  bool MatchAndExplain(const StatusType& actual,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(actual);
    if (!status.ok()) *listener << "whose status is " << status;
    return status.ok();
  }
  void DescribeTo(std::ostream* os) const { *os << "is OK"; }
  void DescribeNegationTo(std::ostream* os) const { *os << "is not OK"; }
};

class StatusIsMatcherImpl {
 public:
  StatusIsMatcherImpl(absl::StatusCode code, std::string substr, bool check_message)
      : code_(code), substr_(std::move(substr)), check_message_(check_message) {}

  template <typename StatusType>
  bool MatchAndExplain(const StatusType& actual,
                       ::testing::MatchResultListener* listener) const {
    const absl::Status& status = GetStatus(actual);
    *listener << "whose status is " << status;
    if (status.code() != code_) return false;
    return !check_message_ || status.message().find(substr_) != absl::string_view::npos;
  }
  void DescribeTo(std::ostream* os) const {
    *os << "has status code " << absl::StatusCodeToString(code_);
    if (check_message_) *os << " and a message containing \"" << substr_ << "\"";
  }
  void DescribeNegationTo(std::ostream* os) const {
    *os << "does not have status code " << absl::StatusCodeToString(code_);
    if (check_message_) *os << " or has no message containing \"" << substr_ << "\"";
  }

 private:
  absl::StatusCode code_;
  std::string substr_;
  bool check_message_;
};

}  // namespace internal

// Matches an OK absl::Status or an absl::StatusOr<T> that holds a value.
inline ::testing::PolymorphicMatcher<internal::IsOkMatcherImpl> IsOk() {
  return ::testing::MakePolymorphicMatcher(internal::IsOkMatcherImpl());
}

// Matches a status (or StatusOr) whose code is `code`.
inline ::testing::PolymorphicMatcher<internal::StatusIsMatcherImpl> StatusIs(
    absl::StatusCode code) {
  return ::testing::MakePolymorphicMatcher(
      internal::StatusIsMatcherImpl(code, "", /*check_message=*/false));
}

// Matches a status (or StatusOr) whose code is `code` and whose message
// contains `substr`.
inline ::testing::PolymorphicMatcher<internal::StatusIsMatcherImpl> StatusIs(
    absl::StatusCode code, std::string substr) {
  return ::testing::MakePolymorphicMatcher(
      internal::StatusIsMatcherImpl(code, std::move(substr), /*check_message=*/true));
}

}  // namespace smolvm_testing

// Asserts that a status (or StatusOr) is OK, printing it otherwise.
#define SMOLVM_ASSERT_OK(expr) ASSERT_THAT((expr), ::smolvm_testing::IsOk())
#define SMOLVM_EXPECT_OK(expr) EXPECT_THAT((expr), ::smolvm_testing::IsOk())
