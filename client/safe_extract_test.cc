// Tests of SafeExtractTar with hostile tar streams, made at test time with
// libarchive's writer (pax format, as GNU tar and libarchive read it; it
// writes directory names with a trailing slash) and fed
// through a pipe as download_dir does. Every test extracts into
// <temp>/target next to a sibling <temp>/outside that must stay untouched.

#include "client/safe_extract.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/testing/temp_dir.h"

namespace smolvm {
namespace {

namespace fs = std::filesystem;

constexpr time_t kMtime = 1600000000;

// TarBuilder writes a pax archive into a string.
class TarBuilder {
 public:
  TarBuilder() {
    archive_ = archive_write_new();
    archive_write_set_format_pax_restricted(archive_);
    archive_write_open(archive_, &out_, nullptr, &TarBuilder::Append, nullptr);
  }
  ~TarBuilder() {
    if (archive_ != nullptr) archive_write_free(archive_);
  }
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;

  TarBuilder& File(const std::string& path, const std::string& data,
                   mode_t perm = 0644, int64_t uid = 0) {
    archive_entry* entry = Entry(path, AE_IFREG, perm);
    archive_entry_set_size(entry, static_cast<la_int64_t>(data.size()));
    archive_entry_set_uid(entry, uid);
    archive_entry_set_gid(entry, uid);
    archive_entry_set_uname(entry, uid == 0 ? "root" : "someone");
    Write(entry, data);
    return *this;
  }
  TarBuilder& Dir(const std::string& path, mode_t perm = 0755) {
    Write(Entry(path, AE_IFDIR, perm));
    return *this;
  }
  TarBuilder& Symlink(const std::string& path, const std::string& target) {
    archive_entry* entry = Entry(path, AE_IFLNK, 0777);
    archive_entry_set_symlink(entry, target.c_str());
    Write(entry);
    return *this;
  }
  TarBuilder& HardLink(const std::string& path, const std::string& target) {
    archive_entry* entry = Entry(path, AE_IFREG, 0644);
    archive_entry_set_hardlink(entry, target.c_str());
    Write(entry);
    return *this;
  }
  // Node adds a device (AE_IFCHR, AE_IFBLK) or a FIFO (AE_IFIFO).
  TarBuilder& Node(const std::string& path, unsigned type, dev_t rdev = 0) {
    archive_entry* entry = Entry(path, type, 0666);
    archive_entry_set_rdev(entry, rdev);
    Write(entry);
    return *this;
  }
  // Finish ends the archive (end blocks, padded to a 10 KiB record).
  std::string Finish() {
    EXPECT_EQ(archive_write_close(archive_), ARCHIVE_OK)
        << archive_error_string(archive_);
    archive_write_free(archive_);
    archive_ = nullptr;
    return out_;
  }

 private:
  static la_ssize_t Append(struct archive*, void* out, const void* data,
                           size_t size) {
    static_cast<std::string*>(out)->append(static_cast<const char*>(data),
                                           size);
    return static_cast<la_ssize_t>(size);
  }
  archive_entry* Entry(const std::string& path, unsigned type, mode_t perm) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, path.c_str());
    archive_entry_set_filetype(entry, type);
    archive_entry_set_perm(entry, perm);
    archive_entry_set_mtime(entry, kMtime, 0);
    return entry;
  }
  void Write(archive_entry* entry, const std::string& data = "") {
    EXPECT_EQ(archive_write_header(archive_, entry), ARCHIVE_OK)
        << archive_entry_pathname(entry) << ": "
        << archive_error_string(archive_);
    if (!data.empty()) {
      EXPECT_EQ(archive_write_data(archive_, data.data(), data.size()),
                static_cast<la_ssize_t>(data.size()));
    }
    archive_entry_free(entry);
  }

  struct archive* archive_;
  std::string out_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

// Lists every name under `dir`, recursively, sorted.
std::vector<std::string> Tree(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    names.push_back(fs::relative(e.path(), dir).string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class SafeExtractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(target_);
    fs::create_directories(outside_);
  }

  // Extract feeds `tar` to SafeExtractTar through a pipe, as download_dir
  // does, and checks the writer never saw the pipe closed early (the
  // extractor read everything) when the extraction succeeded.
  absl::StatusOr<TarExtraction> Extract(const std::string& tar) {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    bool wrote_all = false;
    std::thread writer([&] {
      size_t done = 0;
      while (done < tar.size()) {
        ssize_t n = write(fds[1], tar.data() + done, tar.size() - done);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
      wrote_all = done == tar.size();
      close(fds[1]);
    });
    absl::StatusOr<TarExtraction> result = SafeExtractTar(fds[0], target_);
    close(fds[0]);
    writer.join();
    if (result.ok()) {
      EXPECT_TRUE(wrote_all) << "the input was not drained";
    }
    return result;
  }

  // ExpectOutsideUntouched checks that <temp>/outside is still empty and
  // that nothing appeared next to the target.
  void ExpectOutsideUntouched() {
    EXPECT_TRUE(Tree(outside_).empty()) << absl::StrJoin(Tree(outside_), " ");
    std::vector<std::string> top;
    for (const auto& e : fs::directory_iterator(temp_.path())) {
      top.push_back(e.path().filename().string());
    }
    std::sort(top.begin(), top.end());
    EXPECT_EQ(top, (std::vector<std::string>{"outside", "target"}));
  }

  smolvm_testing::TempDir temp_{"smolvm-extract"};
  const std::string target_ = temp_.Join("target");
  const std::string outside_ = temp_.Join("outside");
};

TEST_F(SafeExtractTest, NormalTreeKeepsContentModesTimesAndLinks) {
  std::string big(3 * 65536 + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  chmod(target_.c_str(), 0750);
  TarBuilder tar;
  tar.Dir("./", 0777)
      .Dir("./a", 0750)
      .File("./a/f.txt", "alpha", 0640)
      .File("./top", "#!/bin/sh\n", 0755)
      .File("./a/big.bin", big, 0600)
      .Dir("./a/ro", 0555)
      .File("./a/ro/inside", "written before the dir became read-only", 0444)
      .Symlink("./a/link", "f.txt")
      .Symlink("./a/ro/up", "../../top")
      .Symlink("./dot", ".")
      .HardLink("./a/hard", "./a/f.txt")
      .File("x/y/z", "implicit parents")
      .File("./empty", "");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->refused.empty()) << absl::StrJoin(result->refused, "\n");
  EXPECT_EQ(result->refused_count, 0u);

  EXPECT_EQ(ReadFile(target_ + "/a/f.txt"), "alpha");
  EXPECT_TRUE(ReadFile(target_ + "/a/big.bin") == big);
  EXPECT_EQ(ReadFile(target_ + "/x/y/z"), "implicit parents");
  EXPECT_EQ(ReadFile(target_ + "/empty"), "");
  EXPECT_EQ(ReadFile(target_ + "/a/ro/inside"),
            "written before the dir became read-only");
  EXPECT_EQ(ModeOf(target_ + "/a/f.txt"), S_IFREG | 0640);
  EXPECT_EQ(ModeOf(target_ + "/top"), S_IFREG | 0755);
  EXPECT_EQ(ModeOf(target_ + "/a/big.bin"), S_IFREG | 0600);
  EXPECT_EQ(ModeOf(target_ + "/a/ro/inside"), S_IFREG | 0444);
  EXPECT_EQ(ModeOf(target_ + "/a"), S_IFDIR | 0750);
  EXPECT_EQ(ModeOf(target_ + "/a/ro"), S_IFDIR | 0555);
  EXPECT_EQ(ModeOf(target_), S_IFDIR | 0750);  // The target keeps its mode.
  EXPECT_EQ(fs::read_symlink(target_ + "/a/link"), "f.txt");
  EXPECT_EQ(fs::read_symlink(target_ + "/a/ro/up"), "../../top");
  EXPECT_EQ(ReadFile(target_ + "/a/ro/up"), "#!/bin/sh\n");
  EXPECT_EQ(fs::read_symlink(target_ + "/dot"), ".");
  struct stat f, hard;
  ASSERT_EQ(stat((target_ + "/a/f.txt").c_str(), &f), 0);
  ASSERT_EQ(stat((target_ + "/a/hard").c_str(), &hard), 0);
  EXPECT_EQ(f.st_ino, hard.st_ino);
  EXPECT_EQ(f.st_mtime, kMtime);
  struct stat dir;
  ASSERT_EQ(stat((target_ + "/a").c_str(), &dir), 0);
  EXPECT_EQ(dir.st_mtime, kMtime);
  // No temporary names left behind.
  for (const std::string& name : Tree(target_)) {
    EXPECT_EQ(name.find(".smolvm-extract"), std::string::npos) << name;
  }
  ExpectOutsideUntouched();
  chmod((target_ + "/a/ro").c_str(), 0755);  // So that TempDir can clean up.
}

TEST_F(SafeExtractTest, OwnersAndSetuidSetgidStickyBitsAreDropped) {
  TarBuilder tar;
  tar.File("suid", "x", 04755, /*uid=*/0)
      .File("sgid", "x", 02755, /*uid=*/4242)
      .Dir("tmp", 01777);
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->refused.empty()) << absl::StrJoin(result->refused, "\n");
  EXPECT_EQ(ModeOf(target_ + "/suid"), S_IFREG | 0755);
  EXPECT_EQ(ModeOf(target_ + "/sgid"), S_IFREG | 0755);
  EXPECT_EQ(ModeOf(target_ + "/tmp"), S_IFDIR | 0777);
  for (const char* name : {"suid", "sgid", "tmp"}) {
    struct stat st;
    ASSERT_EQ(lstat((target_ + "/" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, geteuid()) << name;
    EXPECT_EQ(st.st_gid, getegid()) << name;
  }
}

TEST_F(SafeExtractTest, DevicesAndFifosAreRefusedAndReported) {
  TarBuilder tar;
  tar.Node("dev/null", AE_IFCHR, makedev(1, 3))
      .Node("dev/sda", AE_IFBLK, makedev(8, 0))
      .Node("pipe", AE_IFIFO)
      .File("after", "still extracted");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused,
            (std::vector<std::string>{"dev/null: character device",
                                      "dev/sda: block device", "pipe: FIFO"}));
  EXPECT_EQ(result->refused_count, 3u);
  EXPECT_FALSE(Exists(target_ + "/dev/null"));
  EXPECT_FALSE(Exists(target_ + "/dev/sda"));
  EXPECT_FALSE(Exists(target_ + "/pipe"));
  EXPECT_EQ(ReadFile(target_ + "/after"), "still extracted");
}

TEST_F(SafeExtractTest, AbsolutePathsAndDotDotAreRefused) {
  TarBuilder tar;
  tar.File("../x", "escaped")
      .File("../outside/x", "escaped")
      .File(outside_ + "/abs", "escaped")
      .File("a/../../x", "escaped")
      .File("./../y", "escaped")
      .Dir("../outside/d")
      .Symlink("../outside/l", "x")
      .File("ok", "fine");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused, (std::vector<std::string>{
                                 "../x: '..' in the path",
                                 "../outside/x: '..' in the path",
                                 outside_ + "/abs: absolute path",
                                 "a/../../x: '..' in the path",
                                 "./../y: '..' in the path",
                                 "../outside/d/: '..' in the path",
                                 "../outside/l: '..' in the path",
                             }));
  EXPECT_EQ(Tree(target_), (std::vector<std::string>{"ok"}));
  ExpectOutsideUntouched();
}

TEST_F(SafeExtractTest, SymlinksLeavingTheTargetAreRefused) {
  TarBuilder tar;
  tar.Symlink("etc", "/etc")
      .Symlink("out", "../outside")
      .Symlink("sub/deep/too-high", "../../..")
      .Symlink("sub/deep/root", "../..")
      .Symlink("dot", ".")
      .Symlink("through-dot", "dot/../outside")
      .Symlink("empty", "");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused,
            (std::vector<std::string>{
                "etc: symlink to /etc leaves the directory",
                "out: symlink to ../outside leaves the directory",
                "sub/deep/too-high: symlink to ../../.. leaves the directory",
                "through-dot: symlink to dot/../outside leaves the directory",
                "empty: symlink to  leaves the directory",
            }));
  EXPECT_EQ(fs::read_symlink(target_ + "/sub/deep/root"), "../..");
  EXPECT_EQ(fs::read_symlink(target_ + "/dot"), ".");
  EXPECT_FALSE(Exists(target_ + "/etc"));
  EXPECT_FALSE(Exists(target_ + "/out"));
  ExpectOutsideUntouched();
}

// An entry through a symlink (from the archive, or one already in the
// target) is refused: writes never follow symlinks.
TEST_F(SafeExtractTest, NeverWritesThroughASymlink) {
  // Already in the target, made by the user: links to outside.
  fs::create_symlink(outside_, target_ + "/pre");
  fs::create_symlink(outside_ + "/victim", target_ + "/victim");
  TarBuilder tar;
  tar.Symlink("etc", "/etc")  // Refused; the next entry makes a real dir.
      .File("etc/smolvm-safe-extract-test", "planted")
      .Dir("sub")
      .Symlink("in", "sub")                    // Inside, so kept ...
      .File("in/f", "through an inside link")  // ... but not written through.
      .Dir("in/d")
      .Symlink("in/s", "x")
      .HardLink("in/h", "sub/../x")
      .File("pre/planted", "through the user's link")
      .Symlink("pre/l", "x")
      .File("victim", "replaces the link, not its target");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused,
            (std::vector<std::string>{
                "etc: symlink to /etc leaves the directory",
                "in/f: goes through in, a symlink",
                "in/d/: goes through in, a symlink",
                "in/s: goes through in, a symlink",
                "in/h: hard link to sub/../x: '..' in the path",
                "pre/planted: goes through pre, a symlink",
                "pre/l: goes through pre, a symlink",
            }));
  EXPECT_FALSE(Exists("/etc/smolvm-safe-extract-test"));
  EXPECT_EQ(ModeOf(target_ + "/etc") & S_IFMT, S_IFDIR);
  EXPECT_EQ(ReadFile(target_ + "/etc/smolvm-safe-extract-test"), "planted");
  EXPECT_EQ(fs::read_symlink(target_ + "/in"), "sub");
  EXPECT_TRUE(Tree(target_ + "/sub").empty());
  EXPECT_EQ(ModeOf(target_ + "/victim") & S_IFMT, S_IFREG);
  EXPECT_EQ(ReadFile(target_ + "/victim"), "replaces the link, not its target");
  ExpectOutsideUntouched();
}

TEST_F(SafeExtractTest, HardLinksOutsideOrToNonFilesAreRefused) {
  WriteFile(outside_ + "/secret", "secret");
  TarBuilder tar;
  tar.HardLink("passwd", "/etc/passwd")
      .HardLink("secret", "../outside/secret")
      .HardLink("missing", "nothing-here")
      .Dir("a/b")
      .Symlink("a/b/s", "../../file")  // Fine at depth 2 ...
      .HardLink("moved", "a/b/s")      // ... not when linked at depth 0.
      .HardLink("dir", "a")
      .File("file", "data")
      .HardLink("good", "file");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->refused.size(), 5u) << absl::StrJoin(result->refused, "\n");
  EXPECT_EQ(result->refused[0],
            "passwd: hard link to /etc/passwd: absolute path");
  EXPECT_EQ(result->refused[1],
            "secret: hard link to ../outside/secret: '..' in the path");
  EXPECT_EQ(result->refused[2].rfind("missing: hard link to nothing-here: ", 0),
            0u)
      << result->refused[2];
  EXPECT_EQ(result->refused[3],
            "moved: hard link to a/b/s, not a regular file");
  EXPECT_EQ(result->refused[4], "dir: hard link to a, not a regular file");
  EXPECT_FALSE(Exists(target_ + "/passwd"));
  EXPECT_FALSE(Exists(target_ + "/secret"));
  EXPECT_FALSE(Exists(target_ + "/moved"));
  EXPECT_EQ(ReadFile(target_ + "/good"), "data");
  struct stat secret;
  ASSERT_EQ(stat((outside_ + "/secret").c_str(), &secret), 0);
  EXPECT_EQ(secret.st_nlink, 1u);
  fs::remove(outside_ + "/secret");
  ExpectOutsideUntouched();
}

TEST_F(SafeExtractTest, ADirectoryIsNotReplaced) {
  TarBuilder tar;
  tar.File("d/keep", "kept").File("d", "a file").Symlink("d", "x");
  TarBuilder tar2;
  tar2.File("f", "file").Dir("f");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused,
            (std::vector<std::string>{"d: exists as a directory",
                                      "d: exists as a directory"}));
  EXPECT_EQ(ReadFile(target_ + "/d/keep"), "kept");
  result = Extract(tar2.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused,
            (std::vector<std::string>{"f/: exists and is not a directory"}));
  EXPECT_EQ(ReadFile(target_ + "/f"), "file");
}

TEST_F(SafeExtractTest, ExistingFilesAreReplacedWholeNotRewritten) {
  WriteFile(target_ + "/old", "old content that is longer");
  // A hard link to a file outside, made by the user: replacing the name
  // must not write into the shared file.
  WriteFile(outside_ + "/shared", "shared");
  ASSERT_EQ(link((outside_ + "/shared").c_str(), (target_ + "/shared").c_str()),
            0);
  TarBuilder tar;
  tar.File("old", "new").File("shared", "replaced");
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(ReadFile(target_ + "/old"), "new");
  EXPECT_EQ(ReadFile(target_ + "/shared"), "replaced");
  EXPECT_EQ(ReadFile(outside_ + "/shared"), "shared");
}

TEST_F(SafeExtractTest, CorruptOrTruncatedStreamsFailWithoutPartialFiles) {
  absl::StatusOr<TarExtraction> junk =
      Extract("this is not a tar archive, not even close to one");
  EXPECT_EQ(junk.status().code(), absl::StatusCode::kDataLoss) << junk.status();
  EXPECT_NE(junk.status().message().find("extract into " + target_),
            std::string::npos)
      << junk.status();

  TarBuilder tar;
  tar.File("first", "complete").File("second", std::string(100000, 'x'));
  std::string stream = tar.Finish();
  // Cut inside the data of "second".
  absl::StatusOr<TarExtraction> cut = Extract(stream.substr(0, 512 * 6 + 4096));
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss) << cut.status();
  EXPECT_EQ(ReadFile(target_ + "/first"), "complete");
  EXPECT_EQ(Tree(target_), (std::vector<std::string>{"first"}));
}

TEST_F(SafeExtractTest, TrailingBytesAreReadAndIgnored) {
  TarBuilder tar;
  tar.File("f", "data");
  absl::StatusOr<TarExtraction> result =
      Extract(tar.Finish() + std::string(1 << 20, '\0') + "junk after the end");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(ReadFile(target_ + "/f"), "data");
}

TEST_F(SafeExtractTest, RefusalListIsBounded) {
  TarBuilder tar;
  for (int i = 0; i < 1200; ++i) tar.Node(absl::StrCat("p", i), AE_IFIFO);
  absl::StatusOr<TarExtraction> result = Extract(tar.Finish());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->refused.size(), kMaxListedRefusals);
  EXPECT_EQ(result->refused_count, 1200u);
  EXPECT_TRUE(Tree(target_).empty());
}

TEST_F(SafeExtractTest, MissingTargetIsNotFound) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  close(fds[1]);
  absl::StatusOr<TarExtraction> result =
      SafeExtractTar(fds[0], temp_.Join("nope"));
  close(fds[0]);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kNotFound)
      << result.status();
}

}  // namespace
}  // namespace smolvm
