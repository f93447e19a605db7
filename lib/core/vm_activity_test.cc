#include "lib/core/vm_activity.h"

#include "gtest/gtest.h"

namespace smolvm::core {
namespace {

TEST(VmActivity, NeverUsedCountsFromStart) {
  const absl::Time start = absl::Now() - absl::Minutes(5);
  VmActivity activity(start);
  EXPECT_EQ(activity.IdleSince("a"), start);
}

TEST(VmActivity, NoteMovesTheIdleStartOfThatVmOnly) {
  const absl::Time start = absl::Now() - absl::Minutes(5);
  VmActivity activity(start);
  const absl::Time before = absl::Now();
  activity.Note("a");
  auto since = activity.IdleSince("a");
  ASSERT_TRUE(since.has_value());
  EXPECT_GE(*since, before);
  EXPECT_EQ(activity.IdleSince("b"), start);
}

TEST(VmActivity, ABusyVmIsNotIdleUntilEveryTokenEnds) {
  VmActivity activity(absl::Now());
  auto one = activity.Busy("a");
  auto two = activity.Busy("a");
  EXPECT_FALSE(activity.IdleSince("a").has_value());
  one.reset();
  EXPECT_FALSE(activity.IdleSince("a").has_value());
  const absl::Time before = absl::Now();
  two.reset();
  auto since = activity.IdleSince("a");
  ASSERT_TRUE(since.has_value());
  EXPECT_GE(*since, before);  // The end of the use counts as a use.
}

TEST(VmActivity, ATokenOutlivingForgetIsHarmless) {
  const absl::Time start = absl::Now();
  VmActivity activity(start);
  auto token = activity.Busy("a");
  activity.Forget("a");
  token.reset();
  EXPECT_EQ(activity.IdleSince("a"), start);
}

}  // namespace
}  // namespace smolvm::core
