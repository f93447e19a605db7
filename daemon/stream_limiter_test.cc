#include "daemon/stream_limiter.h"

#include "gtest/gtest.h"

namespace smolvm::daemon {
namespace {

const Caller kAlice{"uid:1001", false, "uid:1001"};
const Caller kBob{"uid:1002", false, "uid:1002"};
const Caller kAdmin{"uid:0", true, "uid:0"};

TEST(StreamLimiter, BoundsEachTenantOnItsOwn) {
  StreamLimiter limiter(2);
  auto a1 = limiter.Take(kAlice);
  auto a2 = limiter.Take(kAlice);
  ASSERT_TRUE(a1.ok() && a2.ok());
  auto a3 = limiter.Take(kAlice);
  ASSERT_TRUE(absl::IsResourceExhausted(a3.status())) << a3.status();
  EXPECT_NE(a3.status().message().find("max_streams_per_tenant"), std::string::npos);
  EXPECT_TRUE(limiter.Take(kBob).ok()) << "another tenant is not limited by alice's calls";
  EXPECT_EQ(limiter.HeldBy(kAlice.tenant), 2);
  a1->reset();  // A call ends: its place is free again.
  EXPECT_EQ(limiter.HeldBy(kAlice.tenant), 1);
  EXPECT_TRUE(limiter.Take(kAlice).ok());
}

TEST(StreamLimiter, AdminsAndZeroAreUnlimited) {
  StreamLimiter limiter(1);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(limiter.Take(kAdmin).ok());
  EXPECT_EQ(limiter.HeldBy(kAdmin.tenant), 0);
  StreamLimiter unlimited(0);
  std::vector<std::shared_ptr<void>> held;
  for (int i = 0; i < 100; ++i) {
    auto place = unlimited.Take(kAlice);
    ASSERT_TRUE(place.ok());
    held.push_back(*place);
  }
}

}  // namespace
}  // namespace smolvm::daemon
