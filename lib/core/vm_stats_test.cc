#include "lib/core/vm_stats.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::core {
namespace {

TEST(CollectHostStatsTest, ReadsThisProcessAndAFile) {
  smolvm_testing::TempDir dir;
  const std::string disk = dir.path() + "/disk.ext4";
  std::ofstream(disk) << std::string(64 << 10, 'x');
  // Burn a little CPU so the counter has something to show.
  volatile uint64_t sink = 0;
  const absl::Time until = absl::Now() + absl::Milliseconds(50);
  while (absl::Now() < until) sink = sink + 1;
  auto stats = CollectHostStats(getpid(), disk);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_GT(stats->cpu_time_ns, 0u);
  EXPECT_GT(stats->vmm_rss_bytes, 1u << 20);
  EXPECT_GT(stats->vmm_pss_bytes, 0u);
  EXPECT_LE(stats->vmm_pss_bytes, stats->vmm_rss_bytes);
  EXPECT_GE(stats->disk_allocated_bytes, 64u << 10);
  EXPECT_GE(stats->uptime, absl::ZeroDuration());
  EXPECT_LT(stats->uptime, absl::Hours(24 * 365));
  // A missing disk reads as 0; a missing process is NOT_FOUND.
  auto no_disk = CollectHostStats(getpid(), dir.path() + "/none");
  ASSERT_TRUE(no_disk.ok());
  EXPECT_EQ(no_disk->disk_allocated_bytes, 0u);
  EXPECT_EQ(CollectHostStats(0x3ffffff, disk).status().code(), absl::StatusCode::kNotFound);
}

TEST(ParseMeminfoTest, TotalAndAvailable) {
  uint64_t total = 0, available = 0;
  EXPECT_TRUE(ParseMeminfo("MemTotal:        1000 kB\nMemFree:  10 kB\nMemAvailable:     250 kB\n",
                           &total, &available));
  EXPECT_EQ(total, 1000u * 1024);
  EXPECT_EQ(available, 250u * 1024);
  EXPECT_FALSE(ParseMeminfo("MemTotal: 1000 kB\n", &total, &available));
  EXPECT_FALSE(ParseMeminfo("garbage", &total, &available));
}

}  // namespace
}  // namespace smolvm::core
