#include "lib/image/guest_kernel.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAreArray;

// Runs a program, failing the test unless it exits 0.
void RunOk(const std::vector<std::string>& argv) {
  auto r = RunSubprocess(argv);
  ASSERT_THAT(r, IsOk()) << argv[0];
  ASSERT_EQ(r->exit_code, 0) << absl::StrJoin(argv, " ") << ": " << r->stderr_text;
}

std::string FileText(const std::string& path) {
  auto text = ReadFileToString(path, 64 << 20);
  EXPECT_THAT(text, IsOk()) << path;
  return text.ok() ? *text : "";
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

struct stat StatOf(const std::string& path) {
  struct stat st = {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st;
}

// What a fake linux-image .deb holds; the defaults make a good one.
struct FakeKernel {
  std::string package = "linux-image-6.1.0-99-cloud-amd64";
  std::string version = "6.1.999-1";
  std::string release = "6.1.0-99-cloud-amd64";
  int vmlinuz_count = 1;
  bool bzimage_magic = true;
  bool usr_lib = false;              // usr/lib/modules instead of lib/modules.
  bool module_dir_symlink = false;   // lib/modules/REL -> /lib/modules (outside).
  std::set<std::string> missing;     // Modules left out.
  std::set<std::string> duplicated;  // Modules present twice (.ko and .ko.xz).
  std::set<std::string> not_elf;     // Modules that are no ELF object.
  bool config = true;
};

// How each module is stored in the fake package: mostly xz (as Debian
// 12), some zstd (as trixie), one gzip, some plain.
std::string SuffixOf(const std::string& module) {
  static const std::map<std::string, std::string> suffixes = {
      {"virtio_ring", ".ko"},      {"virtio", ".ko.xz"},     {"virtio_mmio", ".ko.zst"},
      {"virtio_pci", ".ko.gz"},    {"virtio_blk", ".ko.xz"}, {"failover", ".ko"},
      {"net_failover", ".ko.zst"}, {"virtio_net", ".ko.xz"}, {"virtio-rng", ".ko.zst"}};
  auto it = suffixes.find(module);
  return it == suffixes.end() ? ".ko.xz" : it->second;
}

// The plain content of a fake module: an ELF magic and a marker.
std::string ModuleContent(const std::string& module, const FakeKernel& k) {
  return absl::StrCat("\177ELF\002\001\001 fake module ", module, " of ", k.release, "\n");
}

std::string VmlinuzContent(const FakeKernel& k) {
  std::string image(0x400, '\0');
  if (k.bzimage_magic) image.replace(0x202, 4, "HdrS");
  return image + "fake kernel " + k.version + "\n";
}

class GuestKernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* tool : {"/usr/bin/dpkg-deb", "/usr/bin/xz", "/usr/bin/zstd", "/bin/gzip"}) {
      if (access(tool, X_OK) != 0) GTEST_SKIP() << "needs " << tool;
    }
    ctx_.progress = [this](const std::string& step, uint64_t) { steps_.push_back(step); };
  }

  // Builds `name`.deb from `k` with dpkg-deb -b; returns its path.
  std::string MakeDeb(const std::string& name, const FakeKernel& k) {
    const std::string root = tmp_.Join(name + "-root");
    EXPECT_THAT(MakeDirs(root + "/DEBIAN", 0755), IsOk());
    EXPECT_THAT(WriteFileAtomic(root + "/DEBIAN/control",
                                absl::StrCat("Package: ", k.package, "\nVersion: ", k.version,
                                             "\nArchitecture: amd64\nMaintainer: Test "
                                             "<test@example.org>\nDescription: fake kernel\n")),
                IsOk());
    EXPECT_THAT(MakeDirs(root + "/boot", 0755), IsOk());
    for (int i = 0; i < k.vmlinuz_count; ++i) {
      std::string rel = i == 0 ? k.release : absl::StrCat(k.release, "-extra", i);
      EXPECT_THAT(WriteFileAtomic(absl::StrCat(root, "/boot/vmlinuz-", rel), VmlinuzContent(k)),
                  IsOk());
    }
    if (k.config) {
      EXPECT_THAT(WriteFileAtomic(absl::StrCat(root, "/boot/config-", k.release),
                                  "CONFIG_VIRTIO=m\nCONFIG_VIRTIO_NET=m\n"),
                  IsOk());
    }
    const std::string moddir =
        absl::StrCat(root, k.usr_lib ? "/usr/lib/modules/" : "/lib/modules/", k.release);
    if (k.module_dir_symlink) {
      EXPECT_THAT(MakeDirs(root + "/lib/modules", 0755), IsOk());
      EXPECT_EQ(symlink("/lib/modules", moddir.c_str()), 0);
    } else {
      for (const std::string& m : GuestKernelModules()) {
        if (k.missing.count(m)) continue;
        // Spread over subdirectories, as in a real package.
        const std::string dir = absl::StrCat(moddir, "/kernel/drivers/",
                                             absl::StrContains(m, "net") ? "net" : "virtio");
        EXPECT_THAT(MakeDirs(dir, 0755), IsOk());
        const std::string plain = absl::StrCat(dir, "/", m, ".ko");
        std::string content = ModuleContent(m, k);
        if (k.not_elf.count(m)) content = "not an ELF object\n";
        EXPECT_THAT(WriteFileAtomic(plain, content), IsOk());
        if (k.duplicated.count(m)) {
          EXPECT_THAT(WriteFileAtomic(moddir + "/" + m + ".ko.xz", "dup"), IsOk());
        }
        const std::string suffix = SuffixOf(m);
        if (suffix == ".ko.xz") RunOk({"xz", "-q", "--", plain});
        if (suffix == ".ko.zst") RunOk({"zstd", "-q", "--rm", "--", plain});
        if (suffix == ".ko.gz") RunOk({"gzip", "-n", "--", plain});
      }
      // Another module, not wanted.
      EXPECT_THAT(WriteFileAtomic(moddir + "/kernel/drivers/virtio/virtio_mem.ko", "\177ELF x"),
                  IsOk());
    }
    const std::string deb = tmp_.Join(name + ".deb");
    RunOk({"dpkg-deb", "--root-owner-group", "-Zgzip", "-b", root, deb});
    return deb;
  }

  absl::StatusOr<KernelInfo> Fetch(const std::string& deb) {
    KernelFetchOptions options;
    options.dest_dir = dest_;
    options.deb_path = deb;
    return FetchKernel(options, ctx_);
  }

  // Expects `dest_` to hold exactly what FetchKernel makes from `k`.
  void ExpectKernelDir(const FakeKernel& k) {
    EXPECT_EQ(FileText(dest_ + "/vmlinuz"), VmlinuzContent(k));
    EXPECT_EQ(FileText(dest_ + "/kernel-version"), k.release + "\n");
    EXPECT_EQ(FileText(dest_ + "/package-version"), absl::StrCat(k.package, "=", k.version, "\n"));
    EXPECT_EQ(FileText(dest_ + "/config"), "CONFIG_VIRTIO=m\nCONFIG_VIRTIO_NET=m\n");
    std::string order;
    std::vector<std::string> kos;
    for (const std::string& m : GuestKernelModules()) {
      absl::StrAppend(&order, m, ".ko\n");
      kos.push_back(m + ".ko");
      EXPECT_EQ(FileText(dest_ + "/modules/" + m + ".ko"), ModuleContent(m, k)) << m;
      EXPECT_EQ(StatOf(dest_ + "/modules/" + m + ".ko").st_mode, S_IFREG | 0644) << m;
    }
    EXPECT_EQ(FileText(dest_ + "/modules.order"), order);
    EXPECT_THAT(ListDirNames(dest_ + "/modules"), UnorderedElementsAreArray(kos));
    EXPECT_THAT(Sorted(ListDirNames(dest_)),
                ElementsAre("config", "kernel-version", "modules", "modules.order",
                            "package-version", "vmlinuz"));
    for (const char* f :
         {"vmlinuz", "config", "modules.order", "kernel-version", "package-version"}) {
      EXPECT_EQ(StatOf(dest_ + "/" + f).st_mode, S_IFREG | 0644) << f;
    }
    EXPECT_EQ(StatOf(dest_).st_mode, S_IFDIR | 0755);
    EXPECT_EQ(StatOf(dest_ + "/modules").st_mode, S_IFDIR | 0755);
  }

  // Nothing but the kernel dir (if any) beside it: no scratch dirs.
  void ExpectNoLeftovers(bool dest_exists = true) {
    std::vector<std::string> want;
    if (dest_exists) want.push_back("kernel");
    EXPECT_THAT(ListDirNames(state_), UnorderedElementsAreArray(want));
  }

  bool Reported(const std::string& text) const {
    for (const auto& s : steps_) {
      if (absl::StrContains(s, text)) return true;
    }
    return false;
  }

  TempDir tmp_{"smolvm-kernel"};
  const std::string state_ = tmp_.Join("state");  // Made by FetchKernel.
  const std::string dest_ = state_ + "/kernel";
  BuildContext ctx_;
  std::vector<std::string> steps_;
};

TEST_F(GuestKernelTest, InstallsTheKernelDirFromADeb) {
  FakeKernel k;
  const std::string deb = MakeDeb("good", k);
  auto info = Fetch(deb);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->kernel_version, k.release);
  EXPECT_EQ(info->package_version, "linux-image-6.1.0-99-cloud-amd64=6.1.999-1");
  ExpectKernelDir(k);
  ExpectNoLeftovers();
  EXPECT_TRUE(Reported("kernel: extracting good.deb"));
  EXPECT_TRUE(
      Reported("kernel: installed linux-image-6.1.0-99-cloud-amd64=6.1.999-1 (kernel "
               "6.1.0-99-cloud-amd64) into "));

  auto read = ReadKernelDir(dest_);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->kernel_version, k.release);
  EXPECT_EQ(read->package_version, info->package_version);
}

TEST_F(GuestKernelTest, TrailingSlashAndUsrLibModules) {
  FakeKernel k;
  k.usr_lib = true;
  KernelFetchOptions options;
  options.dest_dir = dest_ + "/";
  options.deb_path = MakeDeb("usr", k);
  ASSERT_THAT(FetchKernel(options, ctx_), IsOk());
  ExpectKernelDir(k);
  ExpectNoLeftovers();
}

TEST_F(GuestKernelTest, SamePackageVersionIsANoOp) {
  FakeKernel k;
  const std::string deb = MakeDeb("good", k);
  ASSERT_THAT(Fetch(deb), IsOk());
  const struct stat dir_before = StatOf(dest_);
  const struct stat vmlinuz_before = StatOf(dest_ + "/vmlinuz");
  sleep(1);  // A rewrite would show in the mtime.
  steps_.clear();

  auto info = Fetch(deb);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->kernel_version, k.release);
  EXPECT_EQ(info->package_version, absl::StrCat(k.package, "=", k.version));
  EXPECT_EQ(StatOf(dest_).st_ino, dir_before.st_ino);
  const struct stat vmlinuz_after = StatOf(dest_ + "/vmlinuz");
  EXPECT_EQ(vmlinuz_after.st_ino, vmlinuz_before.st_ino);
  EXPECT_EQ(vmlinuz_after.st_mtim.tv_sec, vmlinuz_before.st_mtim.tv_sec);
  EXPECT_EQ(vmlinuz_after.st_mtim.tv_nsec, vmlinuz_before.st_mtim.tv_nsec);
  EXPECT_TRUE(
      Reported("already holds linux-image-6.1.0-99-cloud-amd64=6.1.999-1 "
               "(6.1.0-99-cloud-amd64); nothing to do"));
  EXPECT_FALSE(Reported("extracting"));
  ExpectNoLeftovers();
}

TEST_F(GuestKernelTest, IncompleteDirIsFetchedAgain) {
  FakeKernel k;
  const std::string deb = MakeDeb("good", k);
  ASSERT_THAT(Fetch(deb), IsOk());
  ASSERT_EQ(unlink((dest_ + "/modules.order").c_str()), 0);
  EXPECT_THAT(ReadKernelDir(dest_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no modules.order"));
  ASSERT_THAT(Fetch(deb), IsOk());
  ExpectKernelDir(k);
  ExpectNoLeftovers();
}

TEST_F(GuestKernelTest, ReplacesAnOlderVersion) {
  FakeKernel old_kernel;
  old_kernel.package = "linux-image-6.1.0-98-cloud-amd64";
  old_kernel.version = "6.1.998-1";
  old_kernel.release = "6.1.0-98-cloud-amd64";
  ASSERT_THAT(Fetch(MakeDeb("old", old_kernel)), IsOk());
  ExpectKernelDir(old_kernel);
  // A file only the old directory has must not survive the replacement.
  ASSERT_THAT(WriteFileAtomic(dest_ + "/stray", "x"), IsOk());

  FakeKernel k;
  auto info = Fetch(MakeDeb("new", k));
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->kernel_version, "6.1.0-99-cloud-amd64");
  EXPECT_EQ(info->package_version, "linux-image-6.1.0-99-cloud-amd64=6.1.999-1");
  ExpectKernelDir(k);
  ExpectNoLeftovers();

  // Same package, new version (a rebuilt .deb): replaced too.
  FakeKernel rebuilt = k;
  rebuilt.version = "6.1.999-2";
  ASSERT_THAT(Fetch(MakeDeb("rebuilt", rebuilt)), IsOk());
  ExpectKernelDir(rebuilt);
  ExpectNoLeftovers();
}

TEST_F(GuestKernelTest, BadPackagesAreRefusedAndLeaveNothingBehind) {
  FakeKernel good;
  ASSERT_THAT(Fetch(MakeDeb("good", good)), IsOk());

  struct Case {
    std::string name;
    FakeKernel kernel;
    std::string message;
  };
  std::vector<Case> cases;
  {
    FakeKernel k;
    k.vmlinuz_count = 0;
    cases.push_back({"no-vmlinuz", k,
                     "expected exactly one /boot/vmlinuz-* in "
                     "linux-image-6.1.0-99-cloud-amd64, found 0"});
  }
  {
    FakeKernel k;
    k.vmlinuz_count = 2;
    cases.push_back({"two-vmlinuz", k, "found 2"});
  }
  {
    FakeKernel k;
    k.bzimage_magic = false;
    cases.push_back({"no-magic", k, "is not a bzImage (no HdrS magic"});
  }
  {
    FakeKernel k;
    k.missing = {"virtio_net"};
    cases.push_back({"no-virtio-net", k,
                     "expected one virtio_net.ko* in "
                     "linux-image-6.1.0-99-cloud-amd64, found 0"});
  }
  {
    FakeKernel k;
    k.duplicated = {"virtio_blk"};
    cases.push_back({"dup-blk", k, "expected one virtio_blk.ko*"});
  }
  {
    FakeKernel k;
    k.not_elf = {"virtio_console"};  // xz-compressed
    cases.push_back({"not-elf", k,
                     "virtio_console.ko.xz in linux-image-6.1.0-99-cloud-amd64 is "
                     "not an ELF object after decompression"});
  }
  {
    FakeKernel k;
    k.module_dir_symlink = true;
    cases.push_back({"symlink-moddir", k, "no lib/modules/6.1.0-99-cloud-amd64 in "});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeKernel k = c.kernel;
    k.version = "6.1.999-9";  // Not what the dir holds, so it is tried.
    EXPECT_THAT(Fetch(MakeDeb(c.name, k)), StatusIs(absl::StatusCode::kInvalidArgument, c.message));
    ExpectKernelDir(good);  // Untouched.
    ExpectNoLeftovers();
  }
}

TEST_F(GuestKernelTest, BadDebPaths) {
  const std::string missing = tmp_.Join("no-such.deb");
  EXPECT_THAT(Fetch(missing), StatusIs(absl::StatusCode::kNotFound, missing));
  EXPECT_THAT(Fetch(tmp_.path()), StatusIs(absl::StatusCode::kInvalidArgument, "is not a file"));
  const std::string junk = tmp_.Join("junk.deb");
  ASSERT_THAT(WriteFileAtomic(junk, "not an ar archive\n"), IsOk());
  EXPECT_THAT(Fetch(junk), StatusIs(absl::StatusCode::kInvalidArgument, "is not a valid .deb"));
  EXPECT_FALSE(PathExists(state_));
}

TEST_F(GuestKernelTest, BadOptions) {
  KernelFetchOptions options;
  options.dest_dir = "/";
  options.deb_path = tmp_.Join("x.deb");
  EXPECT_THAT(FetchKernel(options, ctx_), StatusIs(absl::StatusCode::kInvalidArgument, "/"));
  options.dest_dir = "";
  EXPECT_THAT(FetchKernel(options, ctx_), StatusIs(absl::StatusCode::kInvalidArgument));
  // Checked before apt runs (no network needed).
  options.dest_dir = dest_;
  options.deb_path = "";
  options.meta_package = "-o=Foo";
  EXPECT_THAT(FetchKernel(options, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "meta package"));
  EXPECT_FALSE(PathExists(state_));
}

TEST_F(GuestKernelTest, CancelledLeavesNothingBehind) {
  const std::string deb = MakeDeb("good", FakeKernel{});
  // Cancelled once the scratch dir exists, before dpkg-deb -x.
  bool cancel = false;
  ctx_.progress = [&cancel](const std::string& step, uint64_t) {
    if (absl::StrContains(step, "extracting")) cancel = true;
  };
  ctx_.cancelled = [&cancel] { return cancel; };
  EXPECT_THAT(Fetch(deb), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(cancel);
  EXPECT_FALSE(PathExists(dest_));
  ExpectNoLeftovers(/*dest_exists=*/false);
}

TEST_F(GuestKernelTest, ReadKernelDir) {
  EXPECT_THAT(ReadKernelDir(dest_), StatusIs(absl::StatusCode::kNotFound, dest_));
  ASSERT_THAT(MakeDirs(dest_ + "/modules"), IsOk());
  for (const char* f : {"vmlinuz", "modules.order", "kernel-version"}) {
    ASSERT_THAT(WriteFileAtomic(dest_ + "/" + f, "6.1.0-1-cloud-amd64\n"), IsOk());
  }
  EXPECT_THAT(ReadKernelDir(dest_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no package-version"));
  ASSERT_THAT(WriteFileAtomic(dest_ + "/package-version", "\n"), IsOk());
  EXPECT_THAT(ReadKernelDir(dest_), StatusIs(absl::StatusCode::kFailedPrecondition, "is empty"));
  ASSERT_THAT(WriteFileAtomic(dest_ + "/package-version", "linux-image-x=1\n\n"), IsOk());
  auto info = ReadKernelDir(dest_);
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->kernel_version, "6.1.0-1-cloud-amd64");
  EXPECT_EQ(info->package_version, "linux-image-x=1");
  const std::string file = tmp_.Join("file");
  ASSERT_THAT(WriteFileAtomic(file, ""), IsOk());
  EXPECT_THAT(ReadKernelDir(file),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not a directory"));
}

}  // namespace
}  // namespace smolvm::image
