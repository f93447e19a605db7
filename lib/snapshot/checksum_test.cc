#include "lib/snapshot/checksum.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <random>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::snapshot {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::MatchesRegex;

constexpr uint64_t kMiB = uint64_t{1} << 20;

class ChecksumTest : public ::testing::Test {
 protected:
  std::string Path(const std::string& name) { return temp_.Join(name); }

  // Writes `data` at `offset` of `path` (created if missing), leaving the
  // rest of the file as it is: holes stay holes.
  static void WriteAt(const std::string& path, uint64_t offset, const std::string& data) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)),
              static_cast<ssize_t>(data.size()));
    close(fd);
  }
  static void Truncate(const std::string& path, uint64_t size) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << path;
    ASSERT_EQ(ftruncate(fd, static_cast<off_t>(size)), 0);
    close(fd);
  }
  static std::string Random(size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(gen());
    return s;
  }
  static std::string Sum(const std::string& path) {
    auto c = ChecksumFile(path);
    EXPECT_THAT(c, IsOk());
    return c.ok() ? c->checksum : "";
  }

  smolvm_testing::TempDir temp_{"smolvm-checksum-test"};
};

TEST_F(ChecksumTest, FormatIsXxh3_128OverSizeAndBlockHashes) {
  // The definition, spelled out for a one-block file: XXH3-128 of
  // le64(size) . le64(XXH3-64(block)).
  WriteAt(Path("abc"), 0, "abc");
  std::string summary;
  auto le64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) summary.push_back(static_cast<char>(v >> (8 * i)));
  };
  le64(3);
  le64(XXH3_64bits("abc", 3));
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(summary.data(), summary.size()));
  const std::string want =
      "xxh3-128:" + absl::BytesToHexString(absl::string_view(
                        reinterpret_cast<const char*>(canonical.digest), 16));
  EXPECT_EQ(Sum(Path("abc")), want);
  EXPECT_THAT(want, MatchesRegex("xxh3-128:[0-9a-f]{32}"));
}

TEST_F(ChecksumTest, EmptyFileHasAChecksum) {
  Truncate(Path("empty"), 0);
  auto c = ChecksumFile(Path("empty"));
  ASSERT_THAT(c, IsOk());
  EXPECT_THAT(c->checksum, MatchesRegex("xxh3-128:[0-9a-f]{32}"));
  EXPECT_EQ(c->bytes_read, 0u);
}

TEST_F(ChecksumTest, HoleAndWrittenZerosChecksumTheSame) {
  // Whole blocks of hole, a partial last block, and data in between.
  const uint64_t size = 5 * kMiB + 300;
  Truncate(Path("sparse"), size);
  WriteAt(Path("zeros"), 0, std::string(size, '\0'));
  auto sparse = ChecksumFile(Path("sparse"));
  auto zeros = ChecksumFile(Path("zeros"));
  ASSERT_THAT(sparse, IsOk());
  ASSERT_THAT(zeros, IsOk());
  EXPECT_EQ(sparse->checksum, zeros->checksum);
  EXPECT_EQ(sparse->bytes_read, 0u) << "a hole is not read";

  // The same bytes, once with holes around the data and once written out.
  const std::string data = Random(kMiB + 17, 1);
  Truncate(Path("holey"), size);
  WriteAt(Path("holey"), 2 * kMiB + kMiB / 2, data);
  WriteAt(Path("zeros"), 2 * kMiB + kMiB / 2, data);
  auto holey = ChecksumFile(Path("holey"));
  ASSERT_THAT(holey, IsOk());
  EXPECT_EQ(holey->checksum, Sum(Path("zeros")));
  EXPECT_NE(holey->checksum, sparse->checksum);
  // Only the blocks the data touches are read (2 of 6), if the
  // filesystem reports holes at all.
  EXPECT_LE(holey->bytes_read, 3 * kMiB);
}

TEST_F(ChecksumTest, OneFlippedByteChangesTheChecksum) {
  const std::string data = Random(3 * kMiB + 5, 2);
  WriteAt(Path("f"), 0, data);
  const std::string original = Sum(Path("f"));
  for (uint64_t offset : {uint64_t{0}, kMiB + 12345, 3 * kMiB + 4}) {
    std::string flipped(1, static_cast<char>(data[offset] ^ 0x01));
    WriteAt(Path("f"), offset, flipped);
    EXPECT_NE(Sum(Path("f")), original) << "byte " << offset;
    WriteAt(Path("f"), offset, std::string(1, data[offset]));
    EXPECT_EQ(Sum(Path("f")), original) << "byte " << offset << " restored";
  }
  // A byte written into a hole.
  Truncate(Path("h"), 4 * kMiB);
  const std::string hole_only = Sum(Path("h"));
  WriteAt(Path("h"), 3 * kMiB + 1, "\x01");
  EXPECT_NE(Sum(Path("h")), hole_only);
}

TEST_F(ChecksumTest, TruncatedFileChangesTheChecksum) {
  WriteAt(Path("f"), 0, Random(2 * kMiB, 3));
  const std::string original = Sum(Path("f"));
  Truncate(Path("f"), 2 * kMiB - 1);
  EXPECT_NE(Sum(Path("f")), original);
  Truncate(Path("f"), kMiB);
  EXPECT_NE(Sum(Path("f")), original);
  // Trailing zeros count too: the size is part of the checksum.
  Truncate(Path("z"), 2 * kMiB);
  const std::string zeros = Sum(Path("z"));
  Truncate(Path("z"), kMiB);
  EXPECT_NE(Sum(Path("z")), zeros);
}

TEST_F(ChecksumTest, HoleOnlyGigabyteCostsAlmostNothing) {
  Truncate(Path("mem.bin"), 1024 * kMiB);
  const absl::Time start = absl::Now();
  auto c = ChecksumFile(Path("mem.bin"));
  const absl::Duration took = absl::Now() - start;
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->bytes_read, 0u);
  // 1024 block hashes of a constant and one XXH3-128 of 8 KiB: well under a
  // millisecond; the bound leaves room for a loaded CI machine.
  EXPECT_LT(took, absl::Milliseconds(100)) << absl::FormatDuration(took);
  // And it equals a small file's? No: the size is part of it.
  Truncate(Path("small"), kMiB);
  EXPECT_NE(c->checksum, Sum(Path("small")));
}

TEST_F(ChecksumTest, StampIsTheFileAsHashedAndChangesWithIt) {
  WriteAt(Path("f"), 0, Random(1000, 4));
  auto c = ChecksumFile(Path("f"));
  ASSERT_THAT(c, IsOk());
  auto stamp = StampFile(Path("f"));
  ASSERT_THAT(stamp, IsOk());
  EXPECT_EQ(c->stamp, *stamp);
  struct stat st;
  ASSERT_EQ(stat(Path("f").c_str(), &st), 0);
  EXPECT_EQ(stamp->ino, st.st_ino);
  EXPECT_EQ(stamp->size, 1000u);
  EXPECT_GT(stamp->ctime_ns, 0);

  // A chmod changes nothing of the content but the ctime: the stamp moves.
  usleep(20 * 1000);  // Past the filesystem's timestamp granularity.
  ASSERT_EQ(chmod(Path("f").c_str(), 0640), 0);
  auto after = StampFile(Path("f"));
  ASSERT_THAT(after, IsOk());
  EXPECT_NE(*after, *stamp);
  EXPECT_EQ(after->size, stamp->size);
}

TEST_F(ChecksumTest, MissingFileIsDataLossNamingIt) {
  EXPECT_THAT(ChecksumFile(Path("gone")), StatusIs(absl::StatusCode::kDataLoss, Path("gone")));
  EXPECT_THAT(StampFile(Path("gone")), StatusIs(absl::StatusCode::kDataLoss, Path("gone")));
}

TEST_F(ChecksumTest, DirectoryIsNotAFileToChecksum) {
  ASSERT_THAT(MakeDirs(Path("d")), IsOk());
  EXPECT_THAT(ChecksumFile(Path("d")), StatusIs(absl::StatusCode::kDataLoss, "regular file"));
}

}  // namespace
}  // namespace smolvm::snapshot
