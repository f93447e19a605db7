#include "lib/core/tenant_directory.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::core {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

TenantDirectory MakeDirectory() {
  TenantConfig alice;
  alice.name = "alice";
  alice.uids = {1001, 1002};
  alice.tls_subjects = {"alice", "spiffe://example.org/alice"};
  alice.quota.running_vms = 2;
  TenantConfig ops;
  ops.name = "ops";
  ops.uids = {2000};
  ops.tls_subjects = {"ops"};
  ops.admin = true;
  QuotaLimits defaults;
  defaults.running_vms = 10;
  defaults.vcpus = 32;
  return TenantDirectory({alice, ops}, defaults, gid_t{990});
}

TEST(LocalUidTenantTest, Format) {
  EXPECT_EQ(LocalUidTenant(0), kRootTenant);
  EXPECT_EQ(LocalUidTenant(4294967295u), "uid:4294967295");
}

TEST(QuotaLimitsTest, OverriddenByReplacesOnlySetFields) {
  QuotaLimits base;
  base.running_vms = 10;
  base.vcpus = 32;
  QuotaLimits over;
  over.vcpus = 4;
  over.snapshots = 0;
  QuotaLimits q = base.OverriddenBy(over);
  EXPECT_EQ(q.running_vms, 10);
  EXPECT_EQ(q.vcpus, 4);
  EXPECT_EQ(q.snapshots, 0);
  EXPECT_FALSE(q.memory_mib.has_value());
  EXPECT_EQ(base.OverriddenBy(QuotaLimits{}), base);
}

TEST(TenantDirectoryTest, LocalPeerOfConfiguredUid) {
  TenantDirectory dir = MakeDirectory();
  Caller c = dir.ForLocalPeer(1002, 1002, {1002, 27}, 42);
  EXPECT_EQ(c.tenant, "alice");
  EXPECT_FALSE(c.admin);
  EXPECT_EQ(c.identity, "uid:1002 gid:1002 pid:42");
}

TEST(TenantDirectoryTest, LocalPeerOfUnconfiguredUid) {
  TenantDirectory dir = MakeDirectory();
  Caller c = dir.ForLocalPeer(1500, 100, {}, 7);
  EXPECT_EQ(c.tenant, "uid:1500");
  EXPECT_FALSE(c.admin);
}

TEST(TenantDirectoryTest, AdminsAreRootAdminGroupAndAdminTenants) {
  TenantDirectory dir = MakeDirectory();
  Caller root = dir.ForLocalPeer(0, 0, {}, 1);
  EXPECT_EQ(root.tenant, kRootTenant);
  EXPECT_TRUE(root.admin);
  EXPECT_TRUE(dir.ForLocalPeer(1500, 990, {}, 1).admin);       // Primary group.
  EXPECT_TRUE(dir.ForLocalPeer(1500, 100, {5, 990}, 1).admin);  // Supplementary.
  Caller ops = dir.ForLocalPeer(2000, 2000, {}, 1);
  EXPECT_EQ(ops.tenant, "ops");
  EXPECT_TRUE(ops.admin);
}

TEST(TenantDirectoryTest, NoAdminGroupOnThisHost) {
  TenantDirectory dir({}, QuotaLimits{}, std::nullopt);
  EXPECT_FALSE(dir.ForLocalPeer(1500, 990, {990}, 1).admin);
  EXPECT_TRUE(dir.ForLocalPeer(0, 0, {}, 1).admin);
}

TEST(TenantDirectoryTest, TlsSubjectsMapByCnOrUri) {
  TenantDirectory dir = MakeDirectory();
  auto cn = dir.ForTlsSubjects({"alice"});
  ASSERT_THAT(cn, IsOk());
  EXPECT_EQ(cn->tenant, "alice");
  EXPECT_FALSE(cn->admin);
  EXPECT_EQ(cn->identity, "tls:alice");

  auto uri = dir.ForTlsSubjects({"unknown-cn", "spiffe://example.org/alice"});
  ASSERT_THAT(uri, IsOk());
  EXPECT_EQ(uri->tenant, "alice");
  EXPECT_EQ(uri->identity, "tls:spiffe://example.org/alice");

  auto both = dir.ForTlsSubjects({"alice", "spiffe://example.org/alice"});
  ASSERT_THAT(both, IsOk());
  EXPECT_EQ(both->identity, "tls:alice");

  auto ops = dir.ForTlsSubjects({"ops"});
  ASSERT_THAT(ops, IsOk());
  EXPECT_TRUE(ops->admin);
}

TEST(TenantDirectoryTest, UnmappedTlsSubjectsAreUnauthenticated) {
  TenantDirectory dir = MakeDirectory();
  EXPECT_THAT(dir.ForTlsSubjects({"mallory"}),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "client certificate subject mallory is not mapped to a tenant; add it "
                       "to tls_subjects of a [tenants.NAME] entry"));
  EXPECT_THAT(dir.ForTlsSubjects({}),
              StatusIs(absl::StatusCode::kUnauthenticated, "neither a common name"));
  // Subjects are compared exactly.
  EXPECT_THAT(dir.ForTlsSubjects({"Alice"}), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(dir.ForTlsSubjects({""}), StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST(TenantDirectoryTest, SubjectsOfTwoTenantsAreRefused) {
  TenantDirectory dir = MakeDirectory();
  EXPECT_THAT(dir.ForTlsSubjects({"alice", "ops"}),
              StatusIs(absl::StatusCode::kUnauthenticated, "different tenants"));
}

TEST(TenantDirectoryTest, ActAs) {
  TenantDirectory dir = MakeDirectory();
  Caller root = dir.ForLocalPeer(0, 0, {}, 1);
  auto as_alice = dir.ActAs(root, "alice");
  ASSERT_THAT(as_alice, IsOk());
  EXPECT_EQ(as_alice->tenant, "alice");
  EXPECT_FALSE(as_alice->admin);
  EXPECT_EQ(as_alice->identity, "uid:0 gid:0 pid:1 as alice");

  auto as_uid = dir.ActAs(root, "uid:1500");
  ASSERT_THAT(as_uid, IsOk());
  EXPECT_EQ(as_uid->tenant, "uid:1500");

  EXPECT_THAT(dir.ActAs(root, "nobody"), StatusIs(absl::StatusCode::kInvalidArgument, "nobody"));
  for (const char* bad : {"uid:", "uid:-1", "uid:01", "uid:4294967296", "uid:1x", "uid: 1"}) {
    EXPECT_THAT(dir.ActAs(root, bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  Caller alice = dir.ForLocalPeer(1001, 1001, {}, 5);
  EXPECT_THAT(dir.ActAs(alice, "alice"), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(dir.ActAs(alice, "ops"), StatusIs(absl::StatusCode::kPermissionDenied));
  // Acting for a tenant drops admin, so it cannot chain.
  EXPECT_THAT(dir.ActAs(*as_alice, "ops"), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(TenantDirectoryTest, QuotaFor) {
  TenantDirectory dir = MakeDirectory();
  QuotaLimits alice = dir.QuotaFor("alice");
  EXPECT_EQ(alice.running_vms, 2);
  EXPECT_EQ(alice.vcpus, 32);
  QuotaLimits other = dir.QuotaFor("uid:1500");
  EXPECT_EQ(other.running_vms, 10);
  EXPECT_EQ(other.vcpus, 32);
  EXPECT_FALSE(other.snapshots.has_value());
}

TEST(TenantDirectoryTest, Find) {
  TenantDirectory dir = MakeDirectory();
  ASSERT_NE(dir.Find("ops"), nullptr);
  EXPECT_TRUE(dir.Find("ops")->admin);
  EXPECT_EQ(dir.Find("uid:0"), nullptr);
}

}  // namespace
}  // namespace smolvm::core
