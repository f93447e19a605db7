#include "lib/image/guest_payload.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/subprocess.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::image {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::smolvm_testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// guest/ of the source tree (this file is lib/image/guest_payload_test.cc).
std::string RecipeDir() {
  std::string here = __FILE__;
  return here.substr(0, here.rfind("/lib/image/")) + "/guest";
}

// Output of a shell command (the e2fsprogs/cpio tools under test), failing
// the test if it does not exit 0.
std::string Sh(const std::string& command) {
  auto r = RunSubprocess({"/bin/sh", "-c", "PATH=$PATH:/usr/sbin:/sbin; " + command});
  EXPECT_THAT(r, IsOk()) << command;
  if (!r.ok()) return "";
  EXPECT_EQ(r->exit_code, 0) << command << ": " << r->stderr_text;
  return r->stdout_text;
}

std::string FileText(const std::string& path) {
  auto text = ReadFileToString(path, 64 << 20);
  EXPECT_THAT(text, IsOk()) << path;
  return text.ok() ? *text : "";
}

// IsStaticX86_64Elf's answer (false on error, which fails the test).
bool StaticElf(const std::string& path) {
  auto r = internal::IsStaticX86_64Elf(path);
  EXPECT_THAT(r, IsOk()) << path;
  return r.ok() && *r;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode;
}

class GuestPayloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/bin/busybox", X_OK) != 0) GTEST_SKIP() << "needs busybox-static";
    payload_.busybox_path = "/bin/busybox";
    payload_.recipe_dir = RecipeDir();
    payload_.agent_path = StaticAgent();
  }

  // A static x86-64 executable with debug info (so stripping shows), or
  // busybox when no static toolchain is at hand.
  std::string StaticAgent() {
    std::string src = tmp_.Join("agent.c");
    std::string bin = tmp_.Join("agent");
    EXPECT_THAT(WriteFileAtomic(src, "int main(void) { return 0; }\n"), IsOk());
    auto r = RunSubprocess({"gcc", "-static", "-g", "-o", bin, src});
    if (r.ok() && r->exit_code == 0) return bin;
    return "/bin/busybox";
  }

  TempDir tmp_{"smolvm-payload"};
  GuestPayload payload_;
  BuildContext ctx_;
};

TEST_F(GuestPayloadTest, StaticElfCheck) {
  EXPECT_TRUE(StaticElf("/bin/busybox"));
  EXPECT_TRUE(StaticElf(payload_.agent_path));
  EXPECT_FALSE(StaticElf("/bin/ls"));
  ASSERT_THAT(WriteFileAtomic(tmp_.Join("text"), "#!/bin/sh\necho hi\n"), IsOk());
  EXPECT_FALSE(StaticElf(tmp_.Join("text")));
  ASSERT_THAT(WriteFileAtomic(tmp_.Join("short"), "\177ELF\2\1"), IsOk());
  EXPECT_FALSE(StaticElf(tmp_.Join("short")));
  EXPECT_THAT(internal::IsStaticX86_64Elf(tmp_.Join("missing")),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(GuestPayloadTest, CheckPayload) {
  EXPECT_THAT(CheckPayload(payload_), IsOk());
  GuestPayload no_agent = payload_;
  no_agent.agent_path = "";
  EXPECT_THAT(CheckPayload(no_agent), IsOk());

  GuestPayload p = payload_;
  p.busybox_path = tmp_.Join("no-busybox");
  EXPECT_THAT(CheckPayload(p), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        "apt-get install -y busybox-static"));
  p.busybox_path = "/bin/ls";  // dynamically linked
  EXPECT_THAT(CheckPayload(p), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        "not a statically linked"));
  p = payload_;
  p.agent_path = "/bin/ls";
  EXPECT_THAT(CheckPayload(p), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        "build the CMake target smolvm-agent"));
  p.agent_path = tmp_.Join("no-agent");
  EXPECT_THAT(CheckPayload(p), StatusIs(absl::StatusCode::kFailedPrecondition,
                                        "build the CMake target smolvm-agent"));
  p = payload_;
  p.recipe_dir = tmp_.path();
  EXPECT_THAT(CheckPayload(p), StatusIs(absl::StatusCode::kFailedPrecondition, "init.sh missing"));
}

// The minimal image end to end: userland + payload + ext4, read back with
// debugfs (no mounts).
TEST_F(GuestPayloadTest, MinimalImageOnExt4) {
  std::string root = tmp_.Join("rootfs");
  ASSERT_THAT(BuildMinimalRootfs(payload_, root, "6.1.0-test"), IsOk());
  ASSERT_THAT(InjectPayload(payload_, root), IsOk());

  // The tree itself.
  EXPECT_EQ(ModeOf(root + "/tmp") & 07777, 01777);
  EXPECT_EQ(ModeOf(root + "/var/tmp") & 07777, 01777);
  EXPECT_EQ(ModeOf(root + "/root") & 07777, 0700);
  EXPECT_EQ(ModeOf(root + "/etc/shadow") & 07777, 0600);
  EXPECT_FALSE(PathExists(root + "/sbin/init"));
  EXPECT_THAT(FileText(root + "/etc/os-release"), HasSubstr("kernel 6.1.0-test"));
  EXPECT_EQ(FileText(root + "/etc/hostname"), "smolvm\n");
  EXPECT_EQ(FileText(root + "/etc/resolv.conf"), "");
  char target[64] = {};
  ASSERT_GT(readlink((root + "/bin/sh").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "/bin/busybox");
  EXPECT_TRUE(S_ISREG(ModeOf(root + "/bin/busybox")));  // not replaced by a link
  std::fill(std::begin(target), std::end(target), 0);
  ASSERT_GT(readlink((root + "/.smolvm/bin/sh").c_str(), target, sizeof target - 1), 0);
  EXPECT_STREQ(target, "busybox");
  EXPECT_EQ(FileText(root + "/.smolvm/init"), FileText(RecipeDir() + "/rootfs-init.sh"));
  EXPECT_EQ(FileText(root + "/.smolvm/bin/busybox"), FileText("/bin/busybox"));
  EXPECT_TRUE(StaticElf(root + "/.smolvm/agent"));
  if (payload_.agent_path != "/bin/busybox") {  // built with -g: strip shows
    EXPECT_LT(FileText(root + "/.smolvm/agent").size(), FileText(payload_.agent_path).size());
    EXPECT_THAT(Sh("readelf -S " + root + "/.smolvm/agent"), Not(HasSubstr(".debug_info")));
  }
  std::vector<std::string> no_tmp_left;
  for (const std::string& name : ListDirNames(root + "/.smolvm")) {
    if (absl::StrContains(name, "smolvm-tmp")) no_tmp_left.push_back(name);
  }
  EXPECT_THAT(no_tmp_left, ::testing::IsEmpty());

  // The disk.
  std::string disk = tmp_.Join("rootfs.ext4");
  auto size = MakeExt4(root, disk, 100, ctx_);
  ASSERT_THAT(size, IsOk());
  EXPECT_EQ(*size, 100 * kMiB);
  struct stat st;
  ASSERT_EQ(stat(disk.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 100 * kMiB);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 50 * kMiB);  // sparse

  std::string init = Sh("debugfs -R 'stat /.smolvm/init' " + disk + " 2>/dev/null");
  EXPECT_THAT(init, HasSubstr("Type: regular"));
  EXPECT_THAT(init, HasSubstr("Mode:  0755"));
  EXPECT_THAT(init, HasSubstr("User:     0   Group:     0"));
  std::string listing = Sh("debugfs -R 'ls -l /.smolvm' " + disk + " 2>/dev/null");
  EXPECT_THAT(listing, HasSubstr(" init"));
  EXPECT_THAT(listing, HasSubstr(" agent"));
  EXPECT_THAT(listing, HasSubstr(" bin"));
  EXPECT_THAT(Sh("debugfs -R 'stat /.smolvm/bin/sh' " + disk + " 2>/dev/null"),
              HasSubstr("Fast link dest: \"busybox\""));
  EXPECT_THAT(Sh("debugfs -R 'stat /tmp' " + disk + " 2>/dev/null"), HasSubstr("Mode:  01777"));
  EXPECT_EQ(Sh("debugfs -R 'cat /.smolvm/init' " + disk + " 2>/dev/null"),
            FileText(RecipeDir() + "/rootfs-init.sh"));
  EXPECT_THAT(Sh("debugfs -R 'stat /sbin/init' " + disk + " 2>&1"),
              HasSubstr("File not found"));
  EXPECT_THAT(Sh("dumpe2fs -h " + disk + " 2>/dev/null"),
              HasSubstr("Filesystem volume name:   smolvm-root"));
  EXPECT_EQ(Sh("e2fsck -fn " + disk + " >/dev/null 2>&1; echo $?"), "0\n");
}

TEST_F(GuestPayloadTest, MinimalRootfsWantsAnEmptyDir) {
  std::string root = tmp_.Join("full");
  ASSERT_THAT(MakeDirs(root + "/something"), IsOk());
  EXPECT_THAT(BuildMinimalRootfs(payload_, root, "6.1"),
              StatusIs(absl::StatusCode::kInvalidArgument, "not empty"));
}

// A foreign userland (say, Debian): what it has is kept, what init needs is
// added, a dangling /etc/resolv.conf link becomes a file.
TEST_F(GuestPayloadTest, InjectKeepsTheImagesFiles) {
  std::string root = tmp_.Join("debian");
  ASSERT_THAT(MakeDirs(root + "/etc"), IsOk());
  ASSERT_THAT(MakeDirs(root + "/.smolvm/bin"), IsOk());
  ASSERT_THAT(WriteFileAtomic(root + "/etc/hostname", "deb\n"), IsOk());
  ASSERT_EQ(symlink("../run/systemd/resolve/stub-resolv.conf", (root + "/etc/resolv.conf").c_str()),
            0);
  ASSERT_THAT(WriteFileAtomic(root + "/.smolvm/bin/ls", "mine"), IsOk());
  ASSERT_THAT(WriteFileAtomic(root + "/.smolvm/agent", "stale agent"), IsOk());
  GuestPayload p = payload_;
  p.agent_path = "";
  ASSERT_THAT(InjectPayload(p, root), IsOk());

  EXPECT_EQ(FileText(root + "/etc/hostname"), "deb\n");
  EXPECT_THAT(FileText(root + "/etc/hosts"), HasSubstr("localhost"));
  EXPECT_TRUE(S_ISREG(ModeOf(root + "/etc/resolv.conf")));
  EXPECT_EQ(FileText(root + "/etc/resolv.conf"), "");
  EXPECT_EQ(FileText(root + "/.smolvm/bin/ls"), "mine");
  EXPECT_FALSE(PathExists(root + "/.smolvm/agent"));
  EXPECT_EQ(ModeOf(root + "/.smolvm/init") & 07777, 0755);
  EXPECT_EQ(ModeOf(root + "/tmp") & 07777, 01777);
  EXPECT_EQ(ModeOf(root + "/root") & 07777, 0700);
  for (const char* dir : {"/proc", "/sys", "/dev", "/run"}) {
    EXPECT_TRUE(S_ISDIR(ModeOf(root + dir))) << dir;
  }

  // A link that resolves inside the image (absolute, as the guest sees it)
  // is kept; a second injection replaces the payload and changes nothing else.
  ASSERT_THAT(WriteFileAtomic(root + "/run/resolv.conf", "nameserver 10.0.0.1\n"), IsOk());
  ASSERT_EQ(unlink((root + "/etc/resolv.conf").c_str()), 0);
  ASSERT_EQ(symlink("/run/resolv.conf", (root + "/etc/resolv.conf").c_str()), 0);
  ASSERT_THAT(InjectPayload(payload_, root), IsOk());
  EXPECT_TRUE(S_ISLNK(ModeOf(root + "/etc/resolv.conf")));
  EXPECT_TRUE(S_ISREG(ModeOf(root + "/.smolvm/agent")));
}

// The image's /etc points at a host dir: nothing may be written there.
TEST_F(GuestPayloadTest, InjectNeverFollowsSymlinksOutOfTheTree) {
  TempDir host("smolvm-host-etc");
  std::string root = tmp_.Join("evil");
  ASSERT_THAT(MakeDirs(root), IsOk());
  ASSERT_EQ(symlink(host.path().c_str(), (root + "/etc").c_str()), 0);
  EXPECT_THAT(InjectPayload(payload_, root),
              StatusIs(absl::StatusCode::kInvalidArgument, "/etc is not a directory"));
  EXPECT_THAT(ListDirNames(host.path()), ::testing::IsEmpty());
  EXPECT_THAT(ListDirNames(root), ::testing::ElementsAre("etc"));  // refused before writing

  // The same through /.smolvm, and through a mount-point dir such as /tmp,
  // which is left as the image has it.
  ASSERT_EQ(unlink((root + "/etc").c_str()), 0);
  ASSERT_EQ(symlink(host.path().c_str(), (root + "/.smolvm").c_str()), 0);
  EXPECT_THAT(InjectPayload(payload_, root),
              StatusIs(absl::StatusCode::kInvalidArgument, "/.smolvm is not a directory"));
  EXPECT_THAT(ListDirNames(host.path()), ::testing::IsEmpty());

  ASSERT_EQ(unlink((root + "/.smolvm").c_str()), 0);
  ASSERT_EQ(symlink(host.path().c_str(), (root + "/tmp").c_str()), 0);
  ASSERT_EQ(symlink((host.path() + "/hostname").c_str(), (root + "/hostname-link").c_str()), 0);
  ASSERT_THAT(MakeDirs(root + "/etc"), IsOk());
  ASSERT_EQ(symlink((host.path() + "/hosts").c_str(), (root + "/etc/hosts").c_str()), 0);
  ASSERT_EQ(symlink((host.path() + "/resolv.conf").c_str(), (root + "/etc/resolv.conf").c_str()),
            0);
  EXPECT_THAT(InjectPayload(payload_, root), IsOk());
  EXPECT_THAT(ListDirNames(host.path()), ::testing::IsEmpty());
  EXPECT_TRUE(S_ISLNK(ModeOf(root + "/tmp")));
  // The resolv.conf link dangles inside the tree: replaced by a file, the
  // host file it named was not created.
  EXPECT_TRUE(S_ISREG(ModeOf(root + "/etc/resolv.conf")));
}

class InitrdTest : public GuestPayloadTest {
 protected:
  void SetUp() override {
    GuestPayloadTest::SetUp();
    if (IsSkipped()) return;
    kdir_ = tmp_.Join("kernel");
    ASSERT_THAT(MakeDirs(kdir_ + "/modules"), IsOk());
    ASSERT_THAT(WriteFileAtomic(kdir_ + "/vmlinuz", "not a kernel"), IsOk());
    ASSERT_THAT(WriteFileAtomic(kdir_ + "/kernel-version", "6.1.0-test\n"), IsOk());
    ASSERT_THAT(WriteFileAtomic(kdir_ + "/modules/virtio.ko", "virtio module"), IsOk());
    ASSERT_THAT(WriteFileAtomic(kdir_ + "/modules/virtio-rng.ko", "rng module"), IsOk());
    ASSERT_THAT(WriteFileAtomic(kdir_ + "/modules.order", "virtio.ko\nvirtio-rng.ko\n"), IsOk());
  }
  std::string kdir_;
};

TEST_F(InitrdTest, NewcCpioThatCpioReads) {
  std::string out = tmp_.Join("initrd.img");
  ASSERT_THAT(BuildInitrd(payload_, kdir_, out, ctx_), IsOk());
  std::string listing = Sh("zcat " + out + " | cpio -it --quiet");
  std::vector<std::string> names = absl::StrSplit(listing, '\n', absl::SkipEmpty());
  EXPECT_THAT(names, ::testing::IsSupersetOf(
                         {"init", "bin/busybox", "bin/sh", "bin/switch_root", "dev", "proc",
                          "sys", "newroot", "lib/modules/virtio.ko", "lib/modules/virtio-rng.ko",
                          "lib/modules/modules.order"}));
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));

  std::string verbose = Sh("zcat " + out + " | cpio -itv --quiet");
  EXPECT_THAT(verbose, HasSubstr("bin/sh -> busybox"));
  EXPECT_THAT(verbose, ::testing::ContainsRegex("-rwxr-xr-x +1 root +root .* init"));

  // Unpacked, the files are the inputs.
  std::string x = tmp_.Join("x");
  ASSERT_THAT(MakeDirs(x), IsOk());
  Sh("cd " + x + " && zcat " + out + " | cpio -idm --quiet");
  EXPECT_EQ(FileText(x + "/init"), FileText(RecipeDir() + "/initramfs-init.sh"));
  EXPECT_EQ(FileText(x + "/bin/busybox"), FileText("/bin/busybox"));
  EXPECT_EQ(FileText(x + "/lib/modules/virtio-rng.ko"), "rng module");
  EXPECT_EQ(FileText(x + "/lib/modules/modules.order"), "virtio.ko\nvirtio-rng.ko\n");
  EXPECT_EQ(ModeOf(x + "/init") & 0777, 0755);
}

TEST_F(InitrdTest, Deterministic) {
  std::string a = tmp_.Join("a.img"), b = tmp_.Join("b.img");
  ASSERT_THAT(BuildInitrd(payload_, kdir_, a, ctx_), IsOk());
  sleep(1);  // a timestamp would differ now
  ASSERT_THAT(BuildInitrd(payload_, kdir_, b, ctx_), IsOk());
  EXPECT_EQ(FileText(a), FileText(b));
  EXPECT_EQ(Sh("gzip -t " + a + " && echo ok"), "ok\n");
}

TEST_F(InitrdTest, MissingModule) {
  ASSERT_THAT(WriteFileAtomic(kdir_ + "/modules.order", "virtio.ko\nvirtio_blk.ko\n"), IsOk());
  EXPECT_THAT(BuildInitrd(payload_, kdir_, tmp_.Join("i.img"), ctx_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "virtio_blk.ko"));
  ASSERT_EQ(unlink((kdir_ + "/modules.order").c_str()), 0);
  EXPECT_THAT(BuildInitrd(payload_, kdir_, tmp_.Join("i.img"), ctx_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "smolvm-fetch-kernel"));
  EXPECT_FALSE(PathExists(tmp_.Join("i.img")));
}

TEST_F(GuestPayloadTest, Ext4SizeFollowsTheTree) {
  std::string root = tmp_.Join("tree");
  ASSERT_THAT(MakeDirs(root), IsOk());
  ASSERT_THAT(WriteFileAtomic(root + "/blob", std::string(8 * kMiB, 'x')), IsOk());
  ASSERT_EQ(symlink("/usr", (root + "/not-followed").c_str()), 0);
  std::string disk = tmp_.Join("d.ext4");
  auto size = MakeExt4(root, disk, 16, ctx_);
  ASSERT_THAT(size, IsOk());
  // 8 MiB * 1.25 + 64 MiB, rounded up (plus the dirs' blocks).
  EXPECT_GE(*size, 74 * kMiB);
  EXPECT_LE(*size, 76 * kMiB);
  EXPECT_EQ(*size % kMiB, 0u);

  BuildContext cancelled;
  cancelled.cancelled = [] { return true; };
  EXPECT_THAT(MakeExt4(root, tmp_.Join("c.ext4"), 16, cancelled),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST_F(GuestPayloadTest, GrowExt4) {
  std::string root = tmp_.Join("small");
  ASSERT_THAT(MakeDirs(root), IsOk());
  ASSERT_THAT(WriteFileAtomic(root + "/hello", "hello\n"), IsOk());
  std::string disk = tmp_.Join("g.ext4");
  auto size = MakeExt4(root, disk, 80, ctx_);
  ASSERT_THAT(size, IsOk());
  ASSERT_EQ(*size, 80 * kMiB);
  EXPECT_THAT(Sh("dumpe2fs -h " + disk + " 2>/dev/null"),
              HasSubstr("Block count:              20480\n"));

  ASSERT_THAT(GrowExt4(disk, 200, ctx_), IsOk());
  EXPECT_THAT(Sh("dumpe2fs -h " + disk + " 2>/dev/null"),
              HasSubstr("Block count:              51200\n"));
  struct stat st;
  ASSERT_EQ(stat(disk.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 200 * kMiB);
  EXPECT_EQ(Sh("debugfs -R 'cat /hello' " + disk + " 2>/dev/null"), "hello\n");

  EXPECT_THAT(GrowExt4(disk, 100, ctx_), StatusIs(absl::StatusCode::kInvalidArgument, "shrunk"));
  EXPECT_THAT(GrowExt4(disk, 200, ctx_), IsOk());  // already that size
  EXPECT_THAT(GrowExt4(tmp_.Join("missing.ext4"), 300, ctx_),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace smolvm::image
