#include "lib/model/mounts.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smolvm {
namespace {

using ::testing::HasSubstr;

Mount M(std::string host, std::string guest, bool ro = false) {
  return Mount{std::move(host), std::move(guest), ro, false};
}

TEST(MountsTest, NormalizesAndAccepts) {
  std::vector<Mount> mounts = {M("/srv/share//a/", "/mnt/data/", true), M("/srv/b", "/work")};
  ASSERT_TRUE(NormalizeMounts(mounts).ok());
  EXPECT_EQ(mounts[0].host_path, "/srv/share/a");
  EXPECT_EQ(mounts[0].guest_path, "/mnt/data");
  EXPECT_EQ(MountCmdline(mounts),
            " smolvm.mount=smolvm-m0:/mnt/data:ro smolvm.mount=smolvm-m1:/work:rw");
}

TEST(MountsTest, RefusesBadShapes) {
  struct Case {
    Mount mount;
    const char* message;
  };
  for (const Case& c : {
           Case{M("", "/mnt"), "host_path is empty"},
           Case{M("/srv", ""), "guest_path is empty"},
           Case{M("srv", "/mnt"), "must be an absolute path"},
           Case{M("/srv/../etc", "/mnt"), "\"..\" component"},
           Case{M("/srv", "/mnt/a b"), "may hold only"},
           Case{M("/srv", "/mnt/$(x)"), "may hold only"},
           Case{M("/srv", "/"), "must not be /"},
           Case{M("/srv", "/proc/x"), "under /proc"},
           Case{M("/srv", "/.smolvm"), "under /.smolvm"},
           Case{M("/srv", "/" + std::string(200, 'a')), "longer than 128"},
       }) {
    std::vector<Mount> mounts = {c.mount};
    absl::Status s = NormalizeMounts(mounts);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_THAT(s.message(), HasSubstr(c.message));
  }
}

TEST(MountsTest, RefusesOverlapsAndTooMany) {
  std::vector<Mount> nested = {M("/srv/a", "/mnt"), M("/srv/b", "/mnt/b")};
  EXPECT_THAT(NormalizeMounts(nested).message(), HasSubstr("overlaps mounts[0]"));
  std::vector<Mount> many(kMaxMounts + 1, M("/srv", "/mnt"));
  EXPECT_THAT(NormalizeMounts(many).message(), HasSubstr("at most 8"));
}

TEST(MountsTest, UndetachableNamesTheMounts) {
  std::vector<Mount> mounts = {M("/srv/a", "/mnt/a"), M("/srv/b", "/mnt/b")};
  mounts[1].detach_on_snapshot = true;
  EXPECT_THAT(UndetachableMounts(mounts), ::testing::ElementsAre("/mnt/a (/srv/a)"));
  mounts[0].detach_on_snapshot = true;
  EXPECT_TRUE(UndetachableMounts(mounts).empty());
}

}  // namespace
}  // namespace smolvm
