#include "lib/core/quota.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace smolvm::core {
namespace {

// A store with `committed` usage for every tenant, whatever is skipped
// (the ledger's own bookkeeping is what is under test).
struct FakeStore {
  std::map<std::string, std::map<std::string, QuotaUsage>> objects;  // tenant -> key -> usage
  absl::StatusOr<QuotaUsage> Read(const std::string& tenant, const std::set<std::string>& skip) {
    QuotaUsage total;
    for (const auto& [key, u] : objects[tenant]) {
      if (!skip.count(key)) total += u;
    }
    return total;
  }
};

QuotaUsage Running(int vcpus, int mem) {
  QuotaUsage u;
  u.running_vms = 1;
  u.vcpus = vcpus;
  u.memory_mib = mem;
  return u;
}

TEST(QuotaLedgerTest, RefusesAtTheLimitNamingTheQuota) {
  FakeStore store;
  store.objects["alice"]["vm:a"] = Running(1, 256);
  QuotaLedger ledger([&](auto& t, auto& s) { return store.Read(t, s); });
  QuotaLimits limits;
  limits.running_vms = 1;
  auto claim = ledger.Reserve("alice", "vm:b", Running(1, 256), limits);
  ASSERT_FALSE(claim.ok());
  EXPECT_EQ(claim.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(claim.status().message().find("running_vms"), std::string::npos);
  EXPECT_NE(claim.status().message().find("limit is 1"), std::string::npos);
  // Another tenant is not affected; an object's own usage is replaced, not added.
  EXPECT_TRUE(ledger.Reserve("bob", "vm:b", Running(1, 256), limits).ok());
  EXPECT_TRUE(ledger.Reserve("alice", "vm:a", Running(1, 256), limits).ok());
}

TEST(QuotaLedgerTest, InFlightClaimsCountUntilReleased) {
  FakeStore store;
  QuotaLedger ledger([&](auto& t, auto& s) { return store.Read(t, s); });
  QuotaLimits limits;
  limits.memory_mib = 512;
  auto first = ledger.Reserve("alice", "vm:a", Running(1, 512), limits);
  ASSERT_TRUE(first.ok());
  auto second = ledger.Reserve("alice", "vm:b", Running(1, 1), limits);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  // The same object cannot be claimed twice at once.
  EXPECT_EQ(ledger.Reserve("alice", "vm:a", Running(1, 1), {}).status().code(),
            absl::StatusCode::kAborted);
  { QuotaLedger::Claim done = *std::move(first); }
  EXPECT_TRUE(ledger.Reserve("alice", "vm:b", Running(1, 512), limits).ok());
}

TEST(QuotaLedgerTest, CommittedAndClaimedObjectIsCountedOnce) {
  FakeStore store;
  QuotaLedger ledger([&](auto& t, auto& s) { return store.Read(t, s); });
  QuotaLimits limits;
  limits.vcpus = 2;
  auto claim = ledger.Reserve("alice", "vm:a", Running(2, 128), limits);
  ASSERT_TRUE(claim.ok());
  // The operation commits while still holding its claim.
  store.objects["alice"]["vm:a"] = Running(2, 128);
  EXPECT_EQ(ledger.Reserve("alice", "vm:b", Running(1, 128), limits).status().code(),
            absl::StatusCode::kResourceExhausted);
  { QuotaLedger::Claim done = *std::move(claim); }
  store.objects["alice"].erase("vm:a");
  EXPECT_TRUE(ledger.Reserve("alice", "vm:b", Running(2, 128), limits).ok());
}

TEST(QuotaLedgerTest, ConcurrentReservationsNeverExceedTheLimit) {
  FakeStore store;
  absl::Mutex store_mu;
  QuotaLedger ledger([&](auto& t, auto& s) {
    absl::MutexLock lock(&store_mu);
    return store.Read(t, s);
  });
  QuotaLimits limits;
  limits.running_vms = 3;
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  std::vector<QuotaLedger::Claim> kept(16);
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      auto claim = ledger.Reserve("alice", "vm:" + std::to_string(i), Running(1, 1), limits);
      if (claim.ok()) {
        granted++;
        kept[i] = *std::move(claim);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(granted.load(), 3);
}

TEST(QuotaLedgerTest, UnlimitedWhenNotSet) {
  FakeStore store;
  QuotaLedger ledger([&](auto& t, auto& s) { return store.Read(t, s); });
  std::vector<QuotaLedger::Claim> claims;
  for (int i = 0; i < 50; ++i) {
    auto c = ledger.Reserve("alice", "vm:" + std::to_string(i), Running(32, 16384), {});
    ASSERT_TRUE(c.ok());
    claims.push_back(*std::move(c));
  }
}

}  // namespace
}  // namespace smolvm::core
