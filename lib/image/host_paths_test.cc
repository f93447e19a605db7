#include "lib/image/host_paths.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::image {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::HasSubstr;

std::string ReadFd(int fd) {
  std::string out;
  char buf[4096];
  off_t off = 0;
  ssize_t n;
  while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
    out.append(buf, n);
    off += n;
  }
  return out;
}

class HostPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_THAT(MakeDirs(allowed_), IsOk());
    ASSERT_THAT(MakeDirs(outside_), IsOk());
    ASSERT_THAT(MakeDirs(state_), IsOk());
    ASSERT_THAT(MakeDirs(run_), IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(allowed_, "vmlinuz"), "kernel bytes"), IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(outside_, "secret"), "secret bytes"), IsOk());
  }

  absl::StatusOr<HostPathResolver> Resolver(std::vector<std::string> allowed) {
    return HostPathResolver::Create(HostPathPolicy{std::move(allowed)}, {state_, run_});
  }

  HostPathResolver Default() {
    auto r = Resolver({allowed_});
    EXPECT_THAT(r, IsOk());
    return *std::move(r);
  }

  smolvm_testing::TempDir temp_{"smolvm-host-paths-test"};
  std::string allowed_ = temp_.Join("images");
  std::string outside_ = temp_.Join("outside");
  std::string state_ = temp_.Join("state");
  std::string run_ = temp_.Join("run");
};

TEST_F(HostPathsTest, OpensARegularFileBeneathAnAllowedDir) {
  auto resolver = Default();
  std::string path = JoinPath(allowed_, "vmlinuz");
  auto file = resolver.Open(path, "kernel_path");
  ASSERT_THAT(file, IsOk());
  EXPECT_EQ(file->path, path);
  EXPECT_EQ(file->size, 12u);
  EXPECT_EQ(ReadFd(file->fd.get()), "kernel bytes");
  EXPECT_EQ(fcntl(file->fd.get(), F_GETFL) & (O_NONBLOCK | O_ACCMODE), O_RDONLY);
  EXPECT_NE(fcntl(file->fd.get(), F_GETFD) & FD_CLOEXEC, 0);

  // Nested, with repeated slashes.
  ASSERT_THAT(MakeDirs(JoinPath(allowed_, "a/b")), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(allowed_, "a/b/rootfs.ext4"), "disk"), IsOk());
  auto nested = resolver.Open(allowed_ + "//a///b/rootfs.ext4", "rootfs_path");
  ASSERT_THAT(nested, IsOk());
  EXPECT_EQ(ReadFd(nested->fd.get()), "disk");
}

TEST_F(HostPathsTest, AFileOutsideTheAllowedDirsIsRefusedNamingTheSetting) {
  auto resolver = Default();
  auto file = resolver.Open("/etc/shadow", "kernel_path");
  EXPECT_THAT(file, StatusIs(absl::StatusCode::kPermissionDenied,
                             "kernel_path \"/etc/shadow\" is outside the directories the "
                             "operator allows ([images] allowed_dirs in smolvmd.toml: \"" +
                                 allowed_ + "\"); leave it empty for the default image"));
  EXPECT_THAT(resolver.Open(JoinPath(outside_, "secret"), "initrd_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "initrd_path"));
  // A sibling whose name merely starts with the allowed dir's.
  ASSERT_THAT(MakeDirs(allowed_ + "-evil"), IsOk());
  ASSERT_THAT(WriteFileAtomic(allowed_ + "-evil/vmlinuz", "x"), IsOk());
  EXPECT_THAT(resolver.Open(allowed_ + "-evil/vmlinuz", "kernel_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "outside"));
}

TEST_F(HostPathsTest, WithNoAllowedDirsEveryPathIsRefused) {
  auto resolver = Resolver({});
  ASSERT_THAT(resolver, IsOk());
  EXPECT_TRUE(resolver->allowed_dirs().empty());
  EXPECT_THAT(resolver->Open(JoinPath(allowed_, "vmlinuz"), "kernel_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "allowed_dirs in smolvmd.toml: none"));
}

TEST_F(HostPathsTest, MalformedPathsAreInvalidArguments) {
  auto resolver = Default();
  for (const std::string& bad :
       {std::string("images/vmlinuz"), std::string(""), allowed_ + "/../outside/secret",
        allowed_ + "/./vmlinuz", allowed_ + "/..", std::string("/..") + allowed_,
        allowed_ + std::string("/vmlinuz\0x", 10)}) {
    EXPECT_THAT(resolver.Open(bad, "rootfs_path"),
                StatusIs(absl::StatusCode::kInvalidArgument, "rootfs_path"))
        << bad;
  }
}

TEST_F(HostPathsTest, ASymlinkPointingOutIsRefused) {
  auto resolver = Default();
  std::string link = JoinPath(allowed_, "shadow");
  ASSERT_EQ(symlink("/etc/shadow", link.c_str()), 0);
  EXPECT_THAT(resolver.Open(link, "kernel_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlinks are not followed"));
  std::string rel_link = JoinPath(allowed_, "secret");
  ASSERT_EQ(symlink("../outside/secret", rel_link.c_str()), 0);
  EXPECT_THAT(resolver.Open(rel_link, "kernel_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "[images] allowed_dirs"));
  // Even one that stays inside: the name must be the file itself.
  std::string inside = JoinPath(allowed_, "kernel-link");
  ASSERT_EQ(symlink("vmlinuz", inside.c_str()), 0);
  EXPECT_THAT(resolver.Open(inside, "kernel_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
}

TEST_F(HostPathsTest, ASymlinkedIntermediateDirIsRefused) {
  auto resolver = Default();
  std::string dir_link = JoinPath(allowed_, "sub");
  ASSERT_EQ(symlink(outside_.c_str(), dir_link.c_str()), 0);
  EXPECT_THAT(resolver.Open(JoinPath(dir_link, "secret"), "rootfs_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlinks are not followed"));
  std::string up_link = JoinPath(allowed_, "up");
  ASSERT_EQ(symlink("..", up_link.c_str()), 0);
  EXPECT_THAT(resolver.Open(JoinPath(up_link, "outside/secret"), "rootfs_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
}

TEST_F(HostPathsTest, NonRegularFilesAreInvalidArguments) {
  auto resolver = Default();
  std::string fifo = JoinPath(allowed_, "fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  // Refused without blocking in open (nobody writes the FIFO).
  EXPECT_THAT(resolver.Open(fifo, "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a FIFO, not a regular file"));
  ASSERT_THAT(MakeDirs(JoinPath(allowed_, "dir")), IsOk());
  EXPECT_THAT(resolver.Open(JoinPath(allowed_, "dir"), "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a directory"));
  EXPECT_THAT(resolver.Open(allowed_, "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a directory"));
  EXPECT_THAT(resolver.Open(allowed_ + "/", "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a directory"));

  std::string sock_path = JoinPath(allowed_, "sock");
  int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock_path.c_str());
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(sock);
  EXPECT_THAT(resolver.Open(sock_path, "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a socket"));

  std::string dev = JoinPath(allowed_, "null");
  if (mknod(dev.c_str(), S_IFCHR | 0600, makedev(1, 3)) != 0) {
    GTEST_SKIP() << "cannot create a device node here (needs CAP_MKNOD)";
  }
  EXPECT_THAT(resolver.Open(dev, "kernel_path"),
              StatusIs(absl::StatusCode::kInvalidArgument, "is a device"));
}

TEST_F(HostPathsTest, MissingFilesAreNotFound) {
  auto resolver = Default();
  EXPECT_THAT(resolver.Open(JoinPath(allowed_, "nope"), "kernel_path"),
              StatusIs(absl::StatusCode::kNotFound, "does not exist"));
  EXPECT_THAT(resolver.Open(JoinPath(allowed_, "vmlinuz/below"), "kernel_path"),
              StatusIs(absl::StatusCode::kNotFound, "kernel_path"));
}

TEST_F(HostPathsTest, AllowedDirsOverlappingTheDaemonsDirsAreRefused) {
  for (const std::string& bad :
       {state_, JoinPath(state_, "vms"), temp_.path(), run_ + "/", std::string("/")}) {
    ASSERT_THAT(MakeDirs(JoinPath(state_, "vms")), IsOk());
    EXPECT_THAT(Resolver({allowed_, bad}),
                StatusIs(absl::StatusCode::kInvalidArgument, "overlaps the daemon's own"))
        << bad;
  }
  // Through a symlinked alias of the state dir.
  std::string alias = temp_.Join("alias");
  ASSERT_EQ(symlink(state_.c_str(), alias.c_str()), 0);
  EXPECT_THAT(Resolver({alias}),
              StatusIs(absl::StatusCode::kInvalidArgument, "[images] allowed_dirs"));
  // A state dir that does not exist yet still counts.
  EXPECT_THAT(
      HostPathResolver::Create(HostPathPolicy{{allowed_}}, {JoinPath(allowed_, "not-yet/state")}),
      StatusIs(absl::StatusCode::kInvalidArgument, "overlaps"));
}

// A bind mount gives the state dir (or a dir holding it) another name that
// neither the path nor realpath() reveals; the inode walk does.
TEST_F(HostPathsTest, ABindMountOfTheStateDirIsRefused) {
  for (const std::string& source : {state_, temp_.path()}) {
    SCOPED_TRACE(source);
    std::string bound = temp_.path() + "-bound";
    ASSERT_EQ(mkdir(bound.c_str(), 0700), 0);
    if (mount(source.c_str(), bound.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      rmdir(bound.c_str());
      GTEST_SKIP() << "cannot bind-mount here";
    }
    EXPECT_THAT(Resolver({bound}),
                StatusIs(absl::StatusCode::kInvalidArgument, "overlaps the daemon's own"));
    umount2(bound.c_str(), MNT_DETACH);
    rmdir(bound.c_str());
  }
}

TEST_F(HostPathsTest, AllowedDirsMustBeAbsoluteExistingDirectories) {
  EXPECT_THAT(Resolver({"images"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "not an absolute path"));
  EXPECT_THAT(Resolver({temp_.Join("missing")}),
              StatusIs(absl::StatusCode::kInvalidArgument, "does not exist"));
  EXPECT_THAT(Resolver({JoinPath(allowed_, "vmlinuz")}),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not a directory"));
  EXPECT_THAT(Resolver({allowed_ + "/../outside"}),
              StatusIs(absl::StatusCode::kInvalidArgument, "[images] allowed_dirs"));
  auto ok = Resolver({allowed_ + "/", outside_});
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(ok->allowed_dirs(), (std::vector<std::string>{allowed_, outside_}));
}

TEST_F(HostPathsTest, AnAllowedDirReachedThroughASymlinkWorksByEitherName) {
  std::string alias = temp_.Join("images-alias");
  ASSERT_EQ(symlink(allowed_.c_str(), alias.c_str()), 0);
  auto resolver = Resolver({alias});
  ASSERT_THAT(resolver, IsOk());
  EXPECT_THAT(resolver->Open(JoinPath(alias, "vmlinuz"), "kernel_path"), IsOk());
  EXPECT_THAT(resolver->Open(JoinPath(allowed_, "vmlinuz"), "kernel_path"), IsOk());
}

TEST_F(HostPathsTest, TheOpenedFileIsUsedNotTheName) {
  auto resolver = Default();
  std::string path = JoinPath(allowed_, "rootfs.ext4");
  ASSERT_THAT(WriteFileAtomic(path, "original"), IsOk());
  auto file = resolver.Open(path, "rootfs_path");
  ASSERT_THAT(file, IsOk());
  // The name is swapped for a symlink to a secret after the check.
  ASSERT_EQ(unlink(path.c_str()), 0);
  ASSERT_EQ(symlink(JoinPath(outside_, "secret").c_str(), path.c_str()), 0);
  std::string copy = JoinPath(state_, "disk.ext4");
  ASSERT_THAT(SparseCopyFromFd(file->fd.get(), copy), IsOk());
  auto read = ReadFileToString(copy);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, "original");
}

TEST_F(HostPathsTest, ImportFileStoresTheContentByDigestOnce) {
  auto resolver = Default();
  ASSERT_THAT(WriteFileAtomic(JoinPath(allowed_, "hello"), "hello\n", 0600), IsOk());
  auto file = resolver.Open(JoinPath(allowed_, "hello"), "kernel_path");
  ASSERT_THAT(file, IsOk());
  std::string store = JoinPath(state_, "imports");
  auto entry = ImportFile(*file, store);
  ASSERT_THAT(entry, IsOk());
  // sha256("hello\n")
  EXPECT_EQ(*entry, JoinPath(store,
                             "sha256-5891b5b522d5df086d0ff0b110fbd9d2"
                             "1bb4fc7163af34d08286a2e846f6be03"));
  auto content = ReadFileToString(*entry);
  ASSERT_THAT(content, IsOk());
  EXPECT_EQ(*content, "hello\n");
  struct stat st;
  ASSERT_EQ(stat(entry->c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);

  // Again (same fd, then a fresh open): the same entry, nothing else written.
  ASSERT_EQ(stat(entry->c_str(), &st), 0);
  ino_t ino = st.st_ino;
  auto again = ImportFile(*file, store);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, *entry);
  auto reopened = resolver.Open(JoinPath(allowed_, "hello"), "kernel_path");
  ASSERT_THAT(reopened, IsOk());
  auto third = ImportFile(*reopened, store);
  ASSERT_THAT(third, IsOk());
  EXPECT_EQ(*third, *entry);
  ASSERT_EQ(stat(entry->c_str(), &st), 0);
  EXPECT_EQ(st.st_ino, ino);

  // Other content, another entry; no temp files are left behind.
  auto other = resolver.Open(JoinPath(allowed_, "vmlinuz"), "kernel_path");
  ASSERT_THAT(other, IsOk());
  auto other_entry = ImportFile(*other, store);
  ASSERT_THAT(other_entry, IsOk());
  EXPECT_NE(*other_entry, *entry);
  std::vector<std::string> names;
  DIR* d = opendir(store.c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  EXPECT_EQ(names.size(), 2u);
  for (const auto& n : names) EXPECT_THAT(n, HasSubstr("sha256-"));
}

TEST_F(HostPathsTest, ImportFileCopiesFromTheFdNotTheName) {
  auto resolver = Default();
  std::string path = JoinPath(allowed_, "initrd.img");
  ASSERT_THAT(WriteFileAtomic(path, "first initrd"), IsOk());
  auto file = resolver.Open(path, "initrd_path");
  ASSERT_THAT(file, IsOk());
  ASSERT_THAT(WriteFileAtomic(path, "replaced by rename"), IsOk());
  auto entry = ImportFile(*file, JoinPath(state_, "imports"));
  ASSERT_THAT(entry, IsOk());
  auto content = ReadFileToString(*entry);
  ASSERT_THAT(content, IsOk());
  EXPECT_EQ(*content, "first initrd");
}

// The component walk used on kernels without openat2 refuses the same.
TEST_F(HostPathsTest, TheFallbackWalkRefusesTheSame) {
  UniqueFd dir(open(allowed_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(dir.valid());
  ASSERT_THAT(MakeDirs(JoinPath(allowed_, "a")), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(allowed_, "a/f"), "walked"), IsOk());
  ASSERT_EQ(symlink(outside_.c_str(), JoinPath(allowed_, "out").c_str()), 0);
  ASSERT_EQ(symlink("f", JoinPath(allowed_, "a/link").c_str()), 0);
  ASSERT_EQ(mkfifo(JoinPath(allowed_, "a/fifo").c_str(), 0600), 0);
  for (bool use_openat2 : {true, false}) {
    SCOPED_TRACE(use_openat2 ? "openat2" : "walk");
    auto fd = internal::OpenBeneath(dir.get(), "a/f", use_openat2);
    ASSERT_THAT(fd, IsOk());
    EXPECT_EQ(ReadFd(fd->get()), "walked");
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "out/secret", use_openat2),
                StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "a/link", use_openat2),
                StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "a/fifo", use_openat2),
                StatusIs(absl::StatusCode::kInvalidArgument, "FIFO"));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "a", use_openat2),
                StatusIs(absl::StatusCode::kInvalidArgument, "directory"));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "a/missing", use_openat2),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "a/f/below", use_openat2),
                StatusIs(absl::StatusCode::kNotFound));
  }
}

// A mount inside an allowed dir is not crossed (needs CAP_SYS_ADMIN).
TEST_F(HostPathsTest, AMountPointBelowAnAllowedDirIsNotCrossed) {
  std::string mnt = JoinPath(allowed_, "mnt");
  ASSERT_THAT(MakeDirs(mnt), IsOk());
  if (mount("smolvm-test", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here";
  }
  auto unmount = [&] { umount2(mnt.c_str(), MNT_DETACH); };
  if (WriteFileAtomic(JoinPath(mnt, "f"), "on another fs").ok()) {
    auto resolver = Default();
    EXPECT_THAT(resolver.Open(JoinPath(mnt, "f"), "rootfs_path"),
                StatusIs(absl::StatusCode::kPermissionDenied, "mount point"));
    UniqueFd dir(open(allowed_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    EXPECT_THAT(internal::OpenBeneath(dir.get(), "mnt/f", false),
                StatusIs(absl::StatusCode::kPermissionDenied, "mount point"));
  }
  unmount();
}

// Host mounts name directories: the same rules, a directory at the end,
// opened O_PATH; the allowed dir itself may be named.
TEST_F(HostPathsTest, OpenDirectoryResolvesDirectoriesBeneath) {
  auto resolver = HostPathResolver::Create(HostPathPolicy{{allowed_}}, {state_, run_},
                                           "[mounts] allowed_dirs in smolvmd.toml");
  ASSERT_THAT(resolver, IsOk());
  ASSERT_THAT(MakeDirs(JoinPath(allowed_, "share/sub")), IsOk());
  ASSERT_EQ(symlink(outside_.c_str(), JoinPath(allowed_, "out").c_str()), 0);
  ASSERT_EQ(symlink("share", JoinPath(allowed_, "in").c_str()), 0);

  auto dir = resolver->OpenDirectory(JoinPath(allowed_, "share/sub"), "mounts[0].host_path");
  ASSERT_THAT(dir, IsOk());
  struct stat st;
  ASSERT_EQ(fstat(dir->get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(fcntl(dir->get(), F_GETFL) & O_PATH, O_PATH);
  EXPECT_THAT(resolver->OpenDirectory(allowed_ + "/", "f"), IsOk());

  EXPECT_THAT(resolver->OpenDirectory(outside_, "mounts[0].host_path"),
              StatusIs(absl::StatusCode::kPermissionDenied, "[mounts] allowed_dirs"));
  EXPECT_THAT(resolver->OpenDirectory(JoinPath(allowed_, "out"), "f"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
  EXPECT_THAT(resolver->OpenDirectory(JoinPath(allowed_, "in/sub"), "f"),
              StatusIs(absl::StatusCode::kPermissionDenied, "symlink"));
  EXPECT_THAT(resolver->OpenDirectory(JoinPath(allowed_, "vmlinuz"), "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a directory"));
  EXPECT_THAT(resolver->OpenDirectory(JoinPath(allowed_, "nope"), "f"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(resolver->OpenDirectory(allowed_ + "/share/../../outside", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace smolvm::image
