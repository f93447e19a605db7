#include "lib/vmm/console_log_reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::vmm {
namespace {

// Plays ConsoleRecorder's side with plain file operations: append, and
// rotate (console.log renamed to .1, a fresh console.log).
class FakeLog {
 public:
  explicit FakeLog(const std::string& dir) : path_(dir + "/console.log") { Append(""); }
  void Append(const std::string& text) { std::ofstream(path_, std::ios::app) << text; }
  void Rotate() {
    ASSERT_EQ(std::rename(path_.c_str(), (path_ + ".1").c_str()), 0);
    std::ofstream(path_, std::ios::trunc);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Everything the reader has now, in reads of `max` bytes.
std::string Drain(ConsoleLogReader& reader, size_t max = 1 << 20) {
  std::string out;
  for (int i = 0; i < 1000; ++i) {
    auto chunk = reader.Read(max);
    EXPECT_TRUE(chunk.ok()) << chunk.status();
    if (!chunk.ok() || chunk->empty()) break;
    out += *chunk;
  }
  return out;
}

TEST(ConsoleLogReaderTest, TailThenFollowAcrossRotations) {
  smolvm_testing::TempDir dir;
  FakeLog log(dir.path());
  log.Append("old line 1\nold line 2\n");
  log.Rotate();
  log.Append("new line 3\n");
  // The tail spans the rotated half and the current file.
  auto reader = ConsoleLogReader::Open(log.path(), 20);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(Drain(*reader), "d line 2\nnew line 3\n");
  EXPECT_EQ(Drain(*reader), "") << "nothing new";
  log.Append("line 4\n");
  EXPECT_EQ(Drain(*reader, 3), "line 4\n") << "in small reads";
  // Written, then rotated before the reader came back: the rest of the old
  // file comes first, from .1.
  log.Append("line 5\n");
  log.Rotate();
  log.Append("line 6\n");
  EXPECT_EQ(Drain(*reader), "line 5\nline 6\n");
}

TEST(ConsoleLogReaderTest, WholeLogWhenTheTailIsLargerAndNothingBefore) {
  smolvm_testing::TempDir dir;
  FakeLog log(dir.path());
  log.Append("boot\n");
  auto reader = ConsoleLogReader::Open(log.path(), 1 << 20);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ(Drain(*reader), "boot\n");
  auto none = ConsoleLogReader::Open(log.path(), 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(Drain(*none), "") << "tail 0: only what comes next";
  log.Append("next\n");
  EXPECT_EQ(Drain(*none), "next\n");
}

TEST(ConsoleLogReaderTest, TwoRotationsBetweenReadsLoseNothing) {
  smolvm_testing::TempDir dir;
  FakeLog log(dir.path());
  auto reader = ConsoleLogReader::Open(log.path(), 0);
  ASSERT_TRUE(reader.ok());
  // The file being read is unlinked by the second rotation: still read to
  // its end through the open descriptor, then the one after it.
  log.Append("first\n");
  log.Rotate();
  log.Append("second\n");
  log.Rotate();
  log.Append("third\n");
  EXPECT_EQ(Drain(*reader, 4), "first\nsecond\nthird\n");
  log.Append("fourth\n");
  EXPECT_EQ(Drain(*reader), "fourth\n");
}

TEST(ConsoleLogReaderTest, MidRotationIsNotTheEnd) {
  smolvm_testing::TempDir dir;
  FakeLog log(dir.path());
  auto reader = ConsoleLogReader::Open(log.path(), 0);
  ASSERT_TRUE(reader.ok());
  log.Append("before\n");
  // Renamed, the new file not created yet: the run dir is still there.
  ASSERT_EQ(std::rename(log.path().c_str(), (log.path() + ".1").c_str()), 0);
  EXPECT_EQ(Drain(*reader), "before\n");
  auto again = reader->Read(100);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "");
  log.Append("after\n");
  EXPECT_EQ(Drain(*reader), "after\n");
}

// The run dir is the (jailed) VMM's to write: what it puts there instead of
// the log is not followed nor waited on.
TEST(ConsoleLogReaderTest, OnlyRegularFilesAreRead) {
  smolvm_testing::TempDir dir;
  const std::string log = dir.path() + "/console.log";
  ASSERT_EQ(mkfifo(log.c_str(), 0600), 0);
  EXPECT_EQ(ConsoleLogReader::Open(log, 10).status().code(), absl::StatusCode::kNotFound)
      << "a FIFO must not block the reader";
  ASSERT_EQ(std::remove(log.c_str()), 0);
  std::ofstream(dir.path() + "/secret") << "host secret\n";
  ASSERT_EQ(symlink((dir.path() + "/secret").c_str(), log.c_str()), 0);
  EXPECT_EQ(ConsoleLogReader::Open(log, 100).status().code(), absl::StatusCode::kNotFound)
      << "a symlink must not be followed";
}

TEST(ConsoleLogReaderTest, NotFoundWithoutALog) {
  smolvm_testing::TempDir dir;
  EXPECT_EQ(ConsoleLogReader::Open(dir.path() + "/console.log", 10).status().code(),
            absl::StatusCode::kNotFound);
  const std::string run = dir.path() + "/run";
  ASSERT_EQ(mkdir(run.c_str(), 0700), 0);
  FakeLog log(run);
  auto reader = ConsoleLogReader::Open(log.path(), 10);
  ASSERT_TRUE(reader.ok());
  // The VM stopped: its run dir goes.
  std::remove(log.path().c_str());
  ASSERT_EQ(rmdir(run.c_str()), 0);
  EXPECT_EQ(reader->Read(100).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace smolvm::vmm
