#include "lib/model/lifetime.h"

#include "gtest/gtest.h"

namespace smolvm {
namespace {

TEST(Lifetime, ActionNamesRoundTrip) {
  for (LifetimeAction a : {LifetimeAction::kDelete, LifetimeAction::kStop, LifetimeAction::kPause,
                           LifetimeAction::kSnapshot}) {
    EXPECT_EQ(ParseLifetimeAction(LifetimeActionName(a)), a);
  }
  EXPECT_FALSE(ParseLifetimeAction("kill").has_value());
  EXPECT_FALSE(ParseLifetimeAction("").has_value());
}

TEST(Lifetime, LimitsAreZeroOrWholeSecondsUpToAYear) {
  Lifetime l;
  EXPECT_TRUE(ValidateLifetime(l).ok());
  l.max_lifetime = absl::Seconds(5);
  l.idle_timeout = absl::Hours(24 * 365);
  EXPECT_TRUE(ValidateLifetime(l).ok());
  l.idle_timeout = absl::Hours(24 * 365) + absl::Seconds(1);
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateLifetime(l)));
  l.idle_timeout = absl::ZeroDuration();
  l.max_lifetime = absl::Milliseconds(1500);
  absl::Status s = ValidateLifetime(l);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_NE(s.message().find("lifetime.max_lifetime"), std::string::npos) << s;
  l.max_lifetime = -absl::Seconds(1);
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateLifetime(l)));
}

TEST(Lifetime, StartCountsFromNowAndDropsWhatTheDaemonKept) {
  Lifetime asked;
  asked.max_lifetime = absl::Seconds(30);
  asked.idle_timeout = absl::Seconds(10);
  asked.idle_action = LifetimeAction::kSnapshot;
  asked.auto_resume = false;
  asked.idle_paused = true;
  asked.snapshot_id = "old";
  asked.expires_at = absl::UnixEpoch();
  const absl::Time now = absl::FromUnixSeconds(1000);
  Lifetime started = StartLifetime(asked, now);
  EXPECT_EQ(started.expires_at, now + absl::Seconds(30));
  EXPECT_FALSE(started.idle_paused);
  EXPECT_EQ(started.snapshot_id, "");
  EXPECT_EQ(started.idle_action, LifetimeAction::kSnapshot);
  EXPECT_FALSE(started.auto_resume);
  EXPECT_TRUE(started.has_policy());

  asked.max_lifetime = absl::ZeroDuration();
  EXPECT_EQ(StartLifetime(asked, now).expires_at, absl::InfinitePast());
  EXPECT_TRUE(Lifetime{}.empty());
}

}  // namespace
}  // namespace smolvm
