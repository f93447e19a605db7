#include "lib/base/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"

namespace smolvm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

class FileUtilTest : public ::testing::Test {
 protected:

  std::string Path(const std::string& name) const { return JoinPath(dir_, name); }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    DIR* d = opendir(dir_.c_str());
    if (d == nullptr) return names;
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(d);
    return names;
  }

  // Writes `data` at `offset` of `path` (created if needed) without
  // truncating it.
  static void WriteAt(const std::string& path, off_t offset, const std::string& data) {
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(pwrite(fd.get(), data.data(), data.size(), offset),
              static_cast<ssize_t>(data.size()));
  }

  smolvm_testing::TempDir temp_{"smolvm-file-util-test"};

  std::string dir_ = temp_.path();
};

TEST_F(FileUtilTest, WriteFileAtomicRoundTripsAndLeavesNoTempFile) {
  std::string path = Path("state.json");
  std::string data = std::string("{\"a\":1}\n") + std::string(100000, 'x') + '\0' + "tail";
  ASSERT_THAT(WriteFileAtomic(path, data), IsOk());
  auto read = ReadFileToString(path);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, data);
  EXPECT_THAT(DirEntries(), ElementsAre("state.json"));

  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  mode_t mask = umask(0);
  umask(mask);
  EXPECT_EQ(st.st_mode & 07777, 0644u & ~mask);
}

TEST_F(FileUtilTest, WriteFileAtomicReplacesTheOldContent) {
  std::string path = Path("f");
  ASSERT_THAT(WriteFileAtomic(path, std::string(5000, 'o')), IsOk());
  ASSERT_THAT(WriteFileAtomic(path, "new"), IsOk());
  auto read = ReadFileToString(path);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, "new");
  EXPECT_THAT(DirEntries(), ElementsAre("f"));
}

TEST_F(FileUtilTest, WriteFileAtomicAppliesTheMode) {
  std::string path = Path("secret");
  ASSERT_THAT(WriteFileAtomic(path, "s", 0600), IsOk());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(FileUtilTest, WriteFileAtomicIntoAMissingDirectoryNamesThePath) {
  std::string path = Path("no-such-dir/f");
  EXPECT_THAT(WriteFileAtomic(path, "x"),
              StatusIs(absl::StatusCode::kNotFound, "no-such-dir/f"));
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(FileUtilTest, SparseCopyKeepsSizeHolesAndContent) {
  constexpr off_t kSize = 64 << 20;
  std::string src = Path("src.img");
  std::string dst = Path("dst.img");
  const std::string first(4096, 'A');
  const std::string second(4096, 'B');
  WriteAt(src, 1 << 20, first);
  WriteAt(src, 40 << 20, second);
  ASSERT_EQ(truncate(src.c_str(), kSize), 0);
  auto src_allocated = AllocatedBytes(src);
  ASSERT_THAT(src_allocated, IsOk());
  if (*src_allocated > (1 << 20)) {
    GTEST_SKIP() << "the filesystem of " << dir_ << " does not keep holes";
  }

  ASSERT_THAT(SparseCopyFile(src, dst), IsOk());

  struct stat st;
  ASSERT_EQ(stat(dst.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  // Two 4 KiB extents (plus at most some filesystem overhead), not 64 MiB.
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 256u << 10)
      << "the copy is not sparse";
  auto src_data = ReadFileToString(src, kSize);
  auto dst_data = ReadFileToString(dst, kSize);
  ASSERT_THAT(src_data, IsOk());
  ASSERT_THAT(dst_data, IsOk());
  ASSERT_EQ(dst_data->size(), static_cast<size_t>(kSize));
  EXPECT_TRUE(*src_data == *dst_data) << "the copy's content differs";
  EXPECT_EQ(dst_data->substr(1 << 20, 4096), first);
  EXPECT_EQ(dst_data->substr(40 << 20, 4096), second);
  EXPECT_EQ((*dst_data)[(1 << 20) - 1], '\0');
}

TEST_F(FileUtilTest, SparseCopyOfAFileThatIsAllHole) {
  std::string src = Path("empty.img");
  std::string dst = Path("copy.img");
  WriteAt(src, 0, "");
  ASSERT_EQ(truncate(src.c_str(), 8 << 20), 0);
  ASSERT_THAT(SparseCopyFile(src, dst), IsOk());
  struct stat st;
  ASSERT_EQ(stat(dst.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 8 << 20);
  EXPECT_EQ(st.st_blocks, 0);
}

TEST_F(FileUtilTest, SparseCopyOfADenseFile) {
  std::string src = Path("dense");
  std::string dst = Path("dense.copy");
  std::string data;
  for (int i = 0; i < 300000; ++i) data += static_cast<char>('a' + i % 26);
  ASSERT_THAT(WriteFileAtomic(src, data), IsOk());
  ASSERT_THAT(SparseCopyFile(src, dst), IsOk());
  auto read = ReadFileToString(dst);
  ASSERT_THAT(read, IsOk());
  EXPECT_TRUE(*read == data);
}

TEST_F(FileUtilTest, SparseCopyRefusesAnExistingDestination) {
  std::string src = Path("src");
  std::string dst = Path("dst");
  ASSERT_THAT(WriteFileAtomic(src, "new content"), IsOk());
  ASSERT_THAT(WriteFileAtomic(dst, "precious"), IsOk());
  EXPECT_THAT(SparseCopyFile(src, dst), StatusIs(absl::StatusCode::kAlreadyExists, dst));
  // The existing file is neither modified nor removed.
  auto read = ReadFileToString(dst);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, "precious");
}

TEST_F(FileUtilTest, SparseCopyOfAMissingSourceIsNotFoundAndNamesIt) {
  std::string src = Path("no-such-source");
  EXPECT_THAT(SparseCopyFile(src, Path("dst")),
              StatusIs(absl::StatusCode::kNotFound, src));
  EXPECT_FALSE(PathExists(Path("dst")));
}

TEST_F(FileUtilTest, SparseCopyFromFdKeepsHolesAndContent) {
  constexpr off_t kSize = 32 << 20;
  std::string src = Path("src.img");
  std::string dst = Path("dst.img");
  const std::string data(8192, 'D');
  WriteAt(src, 3 << 20, data);
  ASSERT_EQ(truncate(src.c_str(), kSize), 0);
  auto src_allocated = AllocatedBytes(src);
  ASSERT_THAT(src_allocated, IsOk());
  if (*src_allocated > (1 << 20)) {
    GTEST_SKIP() << "the filesystem of " << dir_ << " does not keep holes";
  }
  UniqueFd in(open(src.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(in.valid());
  // The name no longer matters once the fd is open.
  ASSERT_EQ(unlink(src.c_str()), 0);

  ASSERT_THAT(SparseCopyFromFd(in.get(), dst), IsOk());

  struct stat st;
  ASSERT_EQ(stat(dst.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 256u << 10)
      << "the copy is not sparse";
  auto read = ReadFileToString(dst, kSize);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->substr(3 << 20, 8192), data);
  EXPECT_EQ(read->find_first_not_of('\0'), static_cast<size_t>(3 << 20));
  EXPECT_EQ(read->find_last_not_of('\0'), static_cast<size_t>((3 << 20) + 8191));
}

TEST_F(FileUtilTest, SparseCopyFromFdAcrossFilesystems) {
  // /dev/shm is usually a tmpfs, another filesystem than /tmp's: the copy
  // falls back to read/write where copy_file_range refuses (EXDEV).
  UniqueFd in(open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!in.valid()) GTEST_SKIP() << "no /dev/shm with O_TMPFILE";
  std::string data(300000, 'q');
  ASSERT_EQ(pwrite(in.get(), data.data(), data.size(), 1 << 20),
            static_cast<ssize_t>(data.size()));
  ASSERT_THAT(SparseCopyFromFd(in.get(), Path("copy")), IsOk());
  auto read = ReadFileToString(Path("copy"));
  ASSERT_THAT(read, IsOk());
  ASSERT_EQ(read->size(), (1u << 20) + data.size());
  EXPECT_EQ(read->substr(1 << 20), data);
}

TEST_F(FileUtilTest, SparseCopyFromFdRefusesANonRegularFileAndAnExistingDestination) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd r(fds[0]), w(fds[1]);
  EXPECT_THAT(SparseCopyFromFd(r.get(), Path("dst")),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a regular file"));
  EXPECT_FALSE(PathExists(Path("dst")));

  ASSERT_THAT(WriteFileAtomic(Path("src"), "new"), IsOk());
  ASSERT_THAT(WriteFileAtomic(Path("dst"), "precious"), IsOk());
  UniqueFd in(open(Path("src").c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_THAT(SparseCopyFromFd(in.get(), Path("dst")),
              StatusIs(absl::StatusCode::kAlreadyExists, Path("dst")));
  auto read = ReadFileToString(Path("dst"));
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, "precious");
}

TEST_F(FileUtilTest, RemoveTreeRemovesNestedContent) {
  ASSERT_THAT(MakeDirs(Path("a/b/c")), IsOk());
  ASSERT_THAT(WriteFileAtomic(Path("a/b/c/f"), "x"), IsOk());
  ASSERT_THAT(WriteFileAtomic(Path("a/g"), "y"), IsOk());
  ASSERT_EQ(symlink("/etc", Path("a/link-out").c_str()), 0);
  ASSERT_THAT(RemoveTree(Path("a")), IsOk());
  EXPECT_FALSE(PathExists(Path("a")));
  // A symlink is removed, not followed.
  EXPECT_TRUE(PathExists("/etc/hostname") || PathExists("/etc/passwd"));
}

TEST_F(FileUtilTest, RemoveTreeOfAMissingPathIsOk) {
  EXPECT_THAT(RemoveTree(Path("never-existed")), IsOk());
  EXPECT_THAT(RemoveTree(Path("never/existed/either")), IsOk());
}

TEST_F(FileUtilTest, MakeDirsCreatesParentsAndIsIdempotent) {
  ASSERT_THAT(MakeDirs(Path("x/y/z")), IsOk());
  ASSERT_THAT(MakeDirs(Path("x/y/z")), IsOk());
  struct stat st;
  ASSERT_EQ(stat(Path("x/y/z").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(FileUtilTest, ReadFileToStringHonoursTheSizeCap) {
  std::string path = Path("big");
  ASSERT_THAT(WriteFileAtomic(path, std::string(200000, 'z')), IsOk());
  EXPECT_THAT(ReadFileToString(path, 1000),
              StatusIs(absl::StatusCode::kResourceExhausted, path));
  // Exactly at the cap is fine.
  auto exact = ReadFileToString(path, 200000);
  ASSERT_THAT(exact, IsOk());
  EXPECT_EQ(exact->size(), 200000u);
  EXPECT_THAT(ReadFileToString(path, 199999),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(FileUtilTest, ReadFileToStringOfAMissingFileNamesIt) {
  EXPECT_THAT(ReadFileToString(Path("absent")),
              StatusIs(absl::StatusCode::kNotFound, Path("absent")));
}

TEST_F(FileUtilTest, PathHelpers) {
  EXPECT_EQ(JoinPath("/a", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_TRUE(PathExists(dir_));
  EXPECT_FALSE(PathExists(Path("nope")));
  // A dangling symlink exists (lstat).
  ASSERT_EQ(symlink(Path("nope").c_str(), Path("dangling").c_str()), 0);
  EXPECT_TRUE(PathExists(Path("dangling")));
  EXPECT_THAT(FreeBytes(dir_), IsOk());
  EXPECT_THAT(SyncPath(dir_), IsOk());
  EXPECT_THAT(SyncPath(Path("nope")), StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace smolvm
