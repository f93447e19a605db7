// Tests of the rootfs sources with the real tools (umoci, skopeo, zstd, cp,
// and, when SMOLVM_TEST_DEBIAN_CACHE names a cache dir, mmdebstrap). Test
// images are built from scratch with umoci from busybox-static's binary.
// Runs as root (umoci and mmdebstrap need it to keep owners and devices).
#include "lib/image/rootfs_sources.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
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
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// Runs a setup command; the test fails if it does.
void Sh(const std::vector<std::string>& argv) {
  auto r = RunChecked(argv, {.timeout = absl::Minutes(2)});
  ASSERT_TRUE(r.ok()) << r.status();
}

std::string Slurp(const std::string& path) {
  auto text = ReadFileToString(path);
  return text.ok() ? *text : "<unreadable: " + std::string(text.status().message()) + ">";
}

void Write(const std::string& path, const std::string& data) { std::ofstream(path) << data; }

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// A build dir `<tmp>/images/rootfs`, empty, as the daemon passes it; the
// scratch dirs of the functions are made beside it in `images`.
struct Target {
  explicit Target(const TempDir& tmp, const std::string& name = "rootfs")
      : parent(tmp.Join("images-" + name)), rootfs(parent + "/" + name) {
    EXPECT_THAT(MakeDirs(rootfs, 0755), IsOk());
  }
  // Only the rootfs is left in the parent: every scratch dir is gone.
  std::vector<std::string> Leftovers() const {
    std::vector<std::string> names = ListDirNames(parent);
    std::erase(names, rootfs.substr(parent.size() + 1));
    return names;
  }
  std::string parent;
  std::string rootfs;
};

// Python's tarfile writes the hostile archives: GNU tar would refuse.
constexpr char kMakeTar[] = R"PY(
import io, sys, tarfile
out, outside = sys.argv[1], sys.argv[2]
def add(t, name, data=b"x", kind=tarfile.REGTYPE, link=""):
    i = tarfile.TarInfo(name); i.type = kind; i.linkname = link; i.mode = 0o644
    if kind == tarfile.REGTYPE:
        i.size = len(data); t.addfile(i, io.BytesIO(data))
    else:
        t.addfile(i)
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "ok", b"fine")
    add(t, "../escape", b"dotdot")
    add(t, "../../escape2", b"dotdot2")
    add(t, "/abs-file", b"abs")
    add(t, "evil", kind=tarfile.SYMTYPE, link=outside)
    add(t, "evil/pwned", b"through absolute symlink")
    add(t, "rel", kind=tarfile.SYMTYPE, link="../../../../../../.." + outside)
    add(t, "rel/pwned2", b"through relative symlink")
    if len(sys.argv) > 3:
        add(t, "hl", kind=tarfile.LNKTYPE, link="../../../../../../.." + outside + "/victim")
)PY";

// Builds, once for all tests, a two-layer image with umoci:
//   layer 1: /bin/busybox, /etc/gone, /data/keep, /home/u/owned (1000:1000)
//   layer 2: deletes /etc/gone (a whiteout), adds /data/new
//   config:  GREETING=hello, workingdir /data, user 1000:1000
// and the same image as an oci-archive and a docker-archive tarball.
class RootfsSourcesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    images_ = new TempDir("smolvm-rootfs-img");
    layout_ = images_->Join("layout");
    std::string bundle = images_->Join("bundle");
    std::string image = layout_ + ":t";
    Sh({"umoci", "init", "--layout", layout_});
    Sh({"umoci", "new", "--image", image});
    Sh({"umoci", "unpack", "--image", image, bundle});
    std::string root = bundle + "/rootfs";
    for (const char* d : {"/bin", "/etc", "/data", "/home/u"}) {
      ASSERT_THAT(MakeDirs(root + d, 0755), IsOk());
    }
    Sh({"cp", "/bin/busybox", root + "/bin/busybox"});
    Sh({"ln", "-s", "busybox", root + "/bin/sh"});
    Write(root + "/etc/gone", "gone\n");
    Write(root + "/data/keep", "keep\n");
    Write(root + "/home/u/owned", "mine\n");
    ASSERT_EQ(chown((root + "/home/u/owned").c_str(), 1000, 1000), 0);
    Sh({"umoci", "repack", "--refresh-bundle", "--image", image, bundle});
    ASSERT_EQ(unlink((root + "/etc/gone").c_str()), 0);
    Write(root + "/data/new", "new\n");
    Sh({"umoci", "repack", "--image", image, bundle});
    Sh({"umoci", "config", "--image", image, "--config.env=GREETING=hello",
        "--config.workingdir=/data", "--config.user=1000:1000"});
    ASSERT_THAT(RemoveTree(bundle), IsOk());
    oci_archive_ = images_->Join("image-oci.tar");
    docker_archive_ = images_->Join("image-docker.tar");
    Sh({"skopeo", "--insecure-policy", "copy", "--quiet", "oci:" + image,
        "oci-archive:" + oci_archive_ + ":t"});
    Sh({"skopeo", "--insecure-policy", "copy", "--quiet", "oci:" + image,
        "docker-archive:" + docker_archive_ + ":example/app:v1"});
    make_tar_ = images_->Join("make_tar.py");
    Write(make_tar_, kMakeTar);
  }
  static void TearDownTestSuite() {
    delete images_;
    images_ = nullptr;
  }

  // The image's tree, as every OCI test expects to find it.
  static void ExpectTestImage(const std::string& rootfs) {
    struct stat st;
    ASSERT_EQ(stat((rootfs + "/bin/busybox").c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode) && (st.st_mode & 0111)) << std::oct << st.st_mode;
    char link[64] = {};
    EXPECT_GT(readlink((rootfs + "/bin/sh").c_str(), link, sizeof(link) - 1), 0);
    EXPECT_STREQ(link, "busybox");
    EXPECT_EQ(Slurp(rootfs + "/data/keep"), "keep\n");
    EXPECT_EQ(Slurp(rootfs + "/data/new"), "new\n");
    EXPECT_FALSE(Exists(rootfs + "/etc/gone")) << "layer 2's whiteout was not applied";
    EXPECT_FALSE(Exists(rootfs + "/etc/.wh.gone"));
    ASSERT_EQ(stat((rootfs + "/home/u/owned").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1000u);
    EXPECT_EQ(st.st_gid, 1000u);
    // The binary runs from the unpacked tree.
    auto r = RunSubprocess({rootfs + "/bin/busybox", "cat", rootfs + "/data/keep"});
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->stdout_text, "keep\n");
  }

  static void ExpectTestDefaults(const ExecDefaults& d) {
    EXPECT_THAT(d.env, ElementsAre("GREETING=hello"));
    EXPECT_EQ(d.working_dir, "/data");
    EXPECT_EQ(d.user, "1000:1000");
  }

  // A one-layer image (tag t) whose layer is the given hand-made tar.
  static std::string LayoutWithLayer(const TempDir& tmp, const std::string& layer_tar) {
    std::string layout = tmp.Join("hostile-layout");
    Sh({"umoci", "init", "--layout", layout});
    Sh({"umoci", "new", "--image", layout + ":t"});
    Sh({"umoci", "raw", "add-layer", "--image", layout + ":t", layer_tar});
    return layout;
  }

  BuildContext ctx_;
  static inline TempDir* images_ = nullptr;
  static inline std::string layout_, oci_archive_, docker_archive_, make_tar_;
};

// ----------------------------------------------------------------- OCI

TEST_F(RootfsSourcesTest, UnpacksAnOciLayoutWithWhiteoutsAndConfig) {
  TempDir tmp;
  Target target(tmp);
  std::vector<std::string> steps;
  ctx_.progress = [&](const std::string& step, uint64_t) { steps.push_back(step); };
  auto defaults = UnpackOciRootfs({.path = layout_, .reference = ""}, target.rootfs, ctx_);
  ASSERT_THAT(defaults, IsOk());
  ExpectTestImage(target.rootfs);
  ExpectTestDefaults(*defaults);
  EXPECT_THAT(target.Leftovers(), IsEmpty());
  EXPECT_FALSE(steps.empty());
  // The input is only read.
  EXPECT_THAT(ListDirNames(layout_), UnorderedElementsAre("oci-layout", "index.json", "blobs"));
}

TEST_F(RootfsSourcesTest, UnpacksTheTagNamedByTheReference) {
  TempDir tmp;
  Target target(tmp);
  auto defaults = UnpackOciRootfs({.path = layout_, .reference = "t"}, target.rootfs, ctx_);
  ASSERT_THAT(defaults, IsOk());
  ExpectTestImage(target.rootfs);
}

TEST_F(RootfsSourcesTest, UnpacksAnOciArchive) {
  TempDir tmp;
  Target target(tmp);
  auto defaults = UnpackOciRootfs({.path = oci_archive_}, target.rootfs, ctx_);
  ASSERT_THAT(defaults, IsOk());
  ExpectTestImage(target.rootfs);
  ExpectTestDefaults(*defaults);
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(RootfsSourcesTest, UnpacksADockerSaveArchive) {
  TempDir tmp;
  Target target(tmp);
  auto defaults = UnpackOciRootfs({.path = docker_archive_}, target.rootfs, ctx_);
  ASSERT_THAT(defaults, IsOk());
  ExpectTestImage(target.rootfs);
  ExpectTestDefaults(*defaults);
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(RootfsSourcesTest, DockerReferenceMatchesTheRepoTag) {
  for (const char* ref : {"example/app:v1", "docker.io/example/app:v1"}) {
    TempDir tmp;
    Target target(tmp);
    auto defaults =
        UnpackOciRootfs({.path = docker_archive_, .reference = ref}, target.rootfs, ctx_);
    ASSERT_THAT(defaults, IsOk()) << ref;
    ExpectTestImage(target.rootfs);
  }
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(
      UnpackOciRootfs({.path = docker_archive_, .reference = "other:v2"}, target.rootfs, ctx_),
      StatusIs(absl::StatusCode::kInvalidArgument, "example/app:v1"));
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(RootfsSourcesTest, SeveralImagesNeedAReference) {
  TempDir tmp;
  std::string layout = tmp.Join("two");
  Sh({"cp", "-a", layout_, layout});
  Sh({"umoci", "tag", "--image", layout + ":t", "second"});
  {
    Target target(tmp, "a");
    auto r = UnpackOciRootfs({.path = layout}, target.rootfs, ctx_);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, "2 images"));
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, "second"));
    EXPECT_THAT(target.Leftovers(), IsEmpty());
  }
  {
    Target target(tmp, "b");
    EXPECT_THAT(UnpackOciRootfs({.path = layout, .reference = "second"}, target.rootfs, ctx_),
                IsOk());
    ExpectTestImage(target.rootfs);
  }
  {
    Target target(tmp, "c");
    EXPECT_THAT(UnpackOciRootfs({.path = layout, .reference = "third"}, target.rootfs, ctx_),
                StatusIs(absl::StatusCode::kInvalidArgument, "no image \"third\""));
  }
}

TEST_F(RootfsSourcesTest, HostileLayerCannotWriteOutsideTheRoot) {
  TempDir tmp;
  std::string outside = tmp.Join("outside");
  ASSERT_THAT(MakeDirs(outside, 0755), IsOk());
  Write(outside + "/victim", "victim\n");
  std::string layer = tmp.Join("hostile.tar");
  Sh({"python3", make_tar_, layer, outside});
  std::string layout = LayoutWithLayer(tmp, layer);
  Target target(tmp);

  auto r = UnpackOciRootfs({.path = layout}, target.rootfs, ctx_);
  // umoci resolves every name inside the root (securejoin): the entries
  // are neutralized rather than refused. Either is acceptable; an escape
  // is not.
  if (r.ok()) {
    EXPECT_EQ(Slurp(target.rootfs + "/ok"), "fine");
    EXPECT_EQ(Slurp(target.rootfs + "/escape"), "dotdot");
    EXPECT_EQ(Slurp(target.rootfs + "/abs-file"), "abs");
    EXPECT_EQ(Slurp(target.rootfs + outside + "/pwned"), "through absolute symlink");
  } else {
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(ListDirNames(outside), ElementsAre("victim"));
  EXPECT_EQ(Slurp(outside + "/victim"), "victim\n");
  EXPECT_FALSE(Exists(target.parent + "/escape"));
  EXPECT_FALSE(Exists(tmp.Join("escape")));
  EXPECT_FALSE(Exists(tmp.Join("escape2")));
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(RootfsSourcesTest, HardLinkToAFileOutsideTheRootIsRefused) {
  TempDir tmp;
  std::string outside = tmp.Join("outside");
  ASSERT_THAT(MakeDirs(outside, 0755), IsOk());
  Write(outside + "/victim", "victim\n");
  std::string layer = tmp.Join("hostile.tar");
  Sh({"python3", make_tar_, layer, outside, "with-hardlink"});
  std::string layout = LayoutWithLayer(tmp, layer);
  Target target(tmp);

  auto r = UnpackOciRootfs({.path = layout}, target.rootfs, ctx_);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument, "hl"));
  struct stat st;
  ASSERT_EQ(stat((outside + "/victim").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 1u) << "a hard link to a file outside the root was made";
  EXPECT_THAT(ListDirNames(outside), ElementsAre("victim"));
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(RootfsSourcesTest, BrokenOciInputsAreInvalidArgument) {
  TempDir tmp;
  // Not a tar at all.
  std::string junk = tmp.Join("junk.tar");
  Write(junk, std::string(4096, 'j'));
  // A tar that is neither kind of image.
  std::string plain = tmp.Join("plain.tar");
  Sh({"tar", "-C", "/etc", "-cf", plain, "hostname"});
  // A directory without oci-layout.
  std::string empty_dir = tmp.Join("empty-dir");
  ASSERT_THAT(MakeDirs(empty_dir), IsOk());
  // A layout whose index.json is not JSON.
  std::string bad_index = tmp.Join("bad-index");
  Sh({"cp", "-a", layout_, bad_index});
  Write(bad_index + "/index.json", "{not json");
  // A layout whose layer blobs are cut short.
  std::string bad_blob = tmp.Join("bad-blob");
  Sh({"cp", "-a", layout_, bad_blob});
  for (const auto& name : ListDirNames(bad_blob + "/blobs/sha256")) {
    std::string blob = bad_blob + "/blobs/sha256/" + name;
    struct stat st;
    ASSERT_EQ(stat(blob.c_str(), &st), 0);
    if (st.st_size > 100000) {
      ASSERT_EQ(truncate(blob.c_str(), st.st_size / 2), 0);
    }
  }
  // A docker archive cut in the middle.
  std::string cut = tmp.Join("cut.tar");
  Sh({"cp", docker_archive_, cut});
  struct stat st;
  ASSERT_EQ(stat(cut.c_str(), &st), 0);
  ASSERT_EQ(truncate(cut.c_str(), st.st_size / 2), 0);

  int i = 0;
  for (const auto& path : {junk, plain, empty_dir, bad_index, bad_blob, cut}) {
    Target target(tmp, "t" + std::to_string(i++));
    EXPECT_THAT(UnpackOciRootfs({.path = path}, target.rootfs, ctx_),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << path;
    EXPECT_THAT(target.Leftovers(), IsEmpty()) << path;
  }
}

TEST_F(RootfsSourcesTest, MissingOciPathIsNotFound) {
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(UnpackOciRootfs({.path = tmp.Join("nope")}, target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
}

TEST_F(RootfsSourcesTest, CancelledBuildStopsWithCancelled) {
  TempDir tmp;
  Target target(tmp);
  ctx_.cancelled = [] { return true; };
  EXPECT_THAT(UnpackOciRootfs({.path = docker_archive_}, target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

// ------------------------------------------------------------- Tarball

class RootfsTarballTest : public RootfsSourcesTest {
 protected:
  // A small rootfs tree, tarred with owners kept.
  static std::string MakeTree(const TempDir& tmp) {
    std::string tree = tmp.Join("tree");
    EXPECT_THAT(MakeDirs(tree + "/bin", 0755), IsOk());
    EXPECT_THAT(MakeDirs(tree + "/etc", 0755), IsOk());
    Sh({"cp", "/bin/busybox", tree + "/bin/busybox"});
    Write(tree + "/etc/owned", "x\n");
    EXPECT_EQ(chown((tree + "/etc/owned").c_str(), 1234, 5678), 0);
    EXPECT_EQ(symlink("/bin/busybox", (tree + "/bin/sh").c_str()), 0);
    return tree;
  }
  static void ExpectTree(const std::string& rootfs) {
    EXPECT_TRUE(Exists(rootfs + "/bin/busybox"));
    struct stat st;
    ASSERT_EQ(stat((rootfs + "/etc/owned").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 5678u);
    char link[64] = {};
    EXPECT_GT(readlink((rootfs + "/bin/sh").c_str(), link, sizeof(link) - 1), 0);
    EXPECT_STREQ(link, "/bin/busybox");
  }
};

TEST_F(RootfsTarballTest, UnpacksPlainAndCompressedTarballs) {
  TempDir tmp;
  std::string tree = MakeTree(tmp);
  std::string tar = tmp.Join("root.tar");
  Sh({"tar", "--numeric-owner", "-C", tree, "-cf", tar, "."});
  Sh({"gzip", "-k", tar});
  Sh({"xz", "-k", "-T1", tar});
  Sh({"zstd", "-q", "-k", tar});
  for (const std::string suffix : {"", ".gz", ".xz", ".zst"}) {
    Target target(tmp, "r" + suffix.substr(suffix.empty() ? 0 : 1));
    ASSERT_THAT(UnpackRootfsTarball(tar + suffix, target.rootfs, ctx_), IsOk()) << suffix;
    ExpectTree(target.rootfs);
    EXPECT_THAT(target.Leftovers(), IsEmpty()) << suffix;
  }
}

TEST_F(RootfsTarballTest, HostileTarballCannotWriteOutsideTheRoot) {
  TempDir tmp;
  std::string outside = tmp.Join("outside");
  ASSERT_THAT(MakeDirs(outside, 0755), IsOk());
  Write(outside + "/victim", "victim\n");
  std::string tar = tmp.Join("hostile.tar");
  Sh({"python3", make_tar_, tar, outside});
  Sh({"gzip", "-k", tar});
  for (const std::string suffix : {"", ".gz"}) {
    Target target(tmp, "r" + suffix.substr(suffix.empty() ? 0 : 1));
    auto r = UnpackRootfsTarball(tar + suffix, target.rootfs, ctx_);
    if (r.ok()) {
      EXPECT_EQ(Slurp(target.rootfs + "/escape"), "dotdot");
      EXPECT_EQ(Slurp(target.rootfs + outside + "/pwned"), "through absolute symlink");
    } else {
      EXPECT_THAT(r, StatusIs(absl::StatusCode::kInvalidArgument));
    }
    EXPECT_THAT(ListDirNames(outside), ElementsAre("victim"));
    EXPECT_FALSE(Exists(target.parent + "/escape"));
    EXPECT_FALSE(Exists(tmp.Join("escape")));
    EXPECT_THAT(target.Leftovers(), IsEmpty());
  }
}

TEST_F(RootfsTarballTest, CorruptTarballsAreInvalidArgument) {
  TempDir tmp;
  std::string tree = MakeTree(tmp);
  std::string tar = tmp.Join("root.tar");
  Sh({"tar", "-C", tree, "-cf", tar, "."});
  Sh({"gzip", "-k", tar});
  std::string junk = tmp.Join("junk");
  Write(junk, std::string(10000, 'z'));
  std::string cut_gz = tmp.Join("cut.tar.gz");
  Sh({"cp", tar + ".gz", cut_gz});
  struct stat st;
  ASSERT_EQ(stat(cut_gz.c_str(), &st), 0);
  ASSERT_EQ(truncate(cut_gz.c_str(), st.st_size / 2), 0);
  std::string cut_tar = tmp.Join("cut.tar");
  Sh({"cp", tar, cut_tar});
  ASSERT_EQ(stat(cut_tar.c_str(), &st), 0);
  ASSERT_EQ(truncate(cut_tar.c_str(), st.st_size / 2 + 100), 0);
  std::string gz_not_tar = tmp.Join("text.gz");
  Write(tmp.Join("text"), std::string(2000, 't'));
  Sh({"gzip", "-k", tmp.Join("text")});
  std::string empty = tmp.Join("empty");
  Write(empty, "");

  int i = 0;
  for (const auto& path : {junk, cut_gz, cut_tar, gz_not_tar, empty}) {
    Target target(tmp, "c" + std::to_string(i++));
    EXPECT_THAT(UnpackRootfsTarball(path, target.rootfs, ctx_),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << path;
    EXPECT_THAT(target.Leftovers(), IsEmpty()) << path;
  }
}

TEST_F(RootfsTarballTest, MissingOrNotAFile) {
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(UnpackRootfsTarball(tmp.Join("nope.tar"), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kNotFound, "nope.tar"));
  EXPECT_THAT(UnpackRootfsTarball(tmp.path(), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a regular file"));
}

TEST_F(RootfsTarballTest, TargetMustBeEmpty) {
  TempDir tmp;
  std::string tar = tmp.Join("root.tar");
  Sh({"tar", "-C", "/etc", "-cf", tar, "hostname"});
  Target target(tmp);
  Write(target.rootfs + "/already", "");
  EXPECT_THAT(UnpackRootfsTarball(tar, target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not empty"));
}

// ----------------------------------------------------------- Directory

TEST_F(RootfsSourcesTest, CopiesADirectoryKeepingEverything) {
  TempDir tmp;
  std::string src = tmp.Join("src");
  ASSERT_THAT(MakeDirs(src + "/usr/bin", 0755), IsOk());
  ASSERT_THAT(MakeDirs(src + "/dev", 0755), IsOk());
  Write(src + "/usr/bin/tool", "#!/bin/sh\n");
  ASSERT_EQ(chown((src + "/usr/bin/tool").c_str(), 1001, 1002), 0);
  ASSERT_EQ(chmod((src + "/usr/bin/tool").c_str(), 04755), 0);
  ASSERT_EQ(link((src + "/usr/bin/tool").c_str(), (src + "/usr/bin/tool2").c_str()), 0);
  // A symlink pointing out of the tree stays a symlink: never followed.
  ASSERT_EQ(symlink("/etc/passwd", (src + "/passwd").c_str()), 0);
  ASSERT_EQ(setxattr((src + "/usr/bin/tool").c_str(), "user.smolvm", "v", 1, 0), 0);
  ASSERT_EQ(mknod((src + "/dev/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  ASSERT_EQ(mkfifo((src + "/fifo").c_str(), 0600), 0);
  Target target(tmp);

  ASSERT_THAT(CopyDirectoryRootfs(src, target.rootfs, ctx_), IsOk());
  struct stat st, st2;
  ASSERT_EQ(lstat((target.rootfs + "/usr/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_uid, 1001u);
  EXPECT_EQ(st.st_gid, 1002u);
  ASSERT_EQ(lstat((target.rootfs + "/usr/bin/tool2").c_str(), &st2), 0);
  EXPECT_EQ(st.st_ino, st2.st_ino) << "hard link not kept";
  char value[8] = {};
  EXPECT_EQ(
      getxattr((target.rootfs + "/usr/bin/tool").c_str(), "user.smolvm", value, sizeof(value)), 1);
  EXPECT_STREQ(value, "v");
  ASSERT_EQ(lstat((target.rootfs + "/passwd").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(lstat((target.rootfs + "/dev/null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  ASSERT_EQ(lstat((target.rootfs + "/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_F(RootfsSourcesTest, DirectoryErrors) {
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(CopyDirectoryRootfs(tmp.Join("nope"), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kNotFound, "nope"));
  Write(tmp.Join("file"), "x");
  EXPECT_THAT(CopyDirectoryRootfs(tmp.Join("file"), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a directory"));
  ASSERT_EQ(symlink("/etc", tmp.Join("link").c_str()), 0);
  EXPECT_THAT(CopyDirectoryRootfs(tmp.Join("link"), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "symlink"));
  // The target inside the source would copy forever.
  EXPECT_THAT(CopyDirectoryRootfs(tmp.path(), target.rootfs, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "into itself"));
}

// -------------------------------------------------------------- Debian

TEST_F(RootfsSourcesTest, BadDebianInputsAreRefusedBeforeAnythingRuns) {
  TempDir tmp;
  Target target(tmp);
  bool ran = false;
  ctx_.progress = [&](const std::string&, uint64_t) { ran = true; };
  auto build = [&](DebianSource source) {
    return BuildDebianRootfs(source, target.rootfs, tmp.Join("cache"), ctx_);
  };
  for (const char* suite :
       {"", "Bookworm", "../x", "-rf", "bookworm stable", "a1234567890123456789012345678901234"}) {
    EXPECT_THAT(build({.suite = suite}), StatusIs(absl::StatusCode::kInvalidArgument, "suite"))
        << suite;
  }
  for (const char* pkg : {"Python3", "a", "pkg=1.0", "-x", "x y", "pkg,other", "", "../p"}) {
    EXPECT_THAT(build({.packages = {"python3", pkg}}),
                StatusIs(absl::StatusCode::kInvalidArgument, "package"))
        << pkg;
  }
  for (const char* variant : {"", "custom", "extract", "mini"}) {
    EXPECT_THAT(build({.variant = variant}),
                StatusIs(absl::StatusCode::kInvalidArgument, "variant"))
        << variant;
  }
  for (const char* mirror :
       {"ftp://deb.debian.org/debian", "http://a b", "deb http://x bookworm main",
        "/etc/apt/sources.list", "http://", "https://x/\"$(reboot)\""}) {
    EXPECT_THAT(build({.mirror = mirror}), StatusIs(absl::StatusCode::kInvalidArgument, "mirror"))
        << mirror;
  }
  EXPECT_FALSE(ran);
  EXPECT_FALSE(Exists(tmp.Join("cache")));
  EXPECT_THAT(ListDirNames(target.rootfs), IsEmpty());
}

// Whether anything is mounted at or below `dir` (mmdebstrap mounts /dev,
// /proc and /sys in the chroot).
bool MountedBelow(const std::string& dir) {
  auto info = ReadFileToString("/proc/self/mountinfo");
  return info.ok() && absl::StrContains(*info, " " + dir);
}

// The real thing: downloads from the Debian archive, so it only runs when
// SMOLVM_TEST_DEBIAN_CACHE names the .deb cache to use (kept across runs,
// which makes the second run fast).
class DebianBuildTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* cache = getenv("SMOLVM_TEST_DEBIAN_CACHE");
    if (cache == nullptr || *cache == '\0') {
      GTEST_SKIP() << "set SMOLVM_TEST_DEBIAN_CACHE to a cache dir to run Debian builds";
    }
    cache_ = cache;
  }
  std::string cache_;
  BuildContext ctx_;
};

TEST_F(DebianBuildTest, BuildsMinbaseWithAPackageAndCachesTheDebs) {
  TempDir tmp;
  Target target(tmp);
  std::vector<std::string> steps;
  ctx_.progress = [&](const std::string& step, uint64_t) { steps.push_back(step); };
  absl::Time start = absl::Now();
  // One small package (tests/e2e/image_test builds the Python image).
  ASSERT_THAT(BuildDebianRootfs({.suite = "bookworm", .packages = {"busybox"}},
                                target.rootfs, cache_, ctx_),
              IsOk());
  std::cerr << "bookworm minbase+busybox took " << absl::Now() - start << "\n";
  EXPECT_THAT(steps,
              testing::Contains(HasSubstr("debian: mmdebstrap bookworm minbase (+busybox)")));
  EXPECT_TRUE(Exists(target.rootfs + "/bin/busybox"));
  EXPECT_TRUE(Exists(target.rootfs + "/usr/bin/apt-get"));
  EXPECT_THAT(Slurp(target.rootfs + "/etc/os-release"), HasSubstr("bookworm"));
  EXPECT_FALSE(Exists(target.rootfs + "/etc/resolv.conf"));
  EXPECT_FALSE(Exists(target.rootfs + "/etc/dpkg/dpkg.cfg.d/00smolvm-build"));
  // The image keeps no .debs; the cache has them.
  std::vector<std::string> archives = ListDirNames(target.rootfs + "/var/cache/apt/archives");
  EXPECT_TRUE(std::none_of(archives.begin(), archives.end(), [](const std::string& n) {
    return absl::EndsWith(n, ".deb");
  })) << absl::StrJoin(archives, " ");
  for (const auto& name : ListDirNames(target.rootfs + "/var/lib/apt/lists")) {
    EXPECT_FALSE(absl::StrContains(name, "Packages")) << "apt lists kept: " << name;
  }
  std::vector<std::string> cached = ListDirNames(cache_);
  EXPECT_TRUE(std::any_of(cached.begin(), cached.end(), [](const std::string& n) {
    return absl::StartsWith(n, "busybox_") && absl::EndsWith(n, ".deb");
  }));
  EXPECT_FALSE(MountedBelow(target.rootfs));
  EXPECT_THAT(target.Leftovers(), IsEmpty());
}

TEST_F(DebianBuildTest, UnknownPackageIsInvalidArgument) {
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(BuildDebianRootfs({.suite = "bookworm", .packages = {"nosuchpkg-smolvm"}},
                                target.rootfs, cache_, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "unknown Debian package 'nosuchpkg-smolvm' (apt could not find it in "
                       "bookworm)"));
  EXPECT_FALSE(MountedBelow(target.rootfs));
}

TEST_F(DebianBuildTest, UnknownSuiteIsInvalidArgument) {
  TempDir tmp;
  Target target(tmp);
  EXPECT_THAT(BuildDebianRootfs({.suite = "nosuchsuite"}, target.rootfs, cache_, ctx_),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown Debian suite 'nosuchsuite'"));
}

TEST_F(DebianBuildTest, CancelKillsMmdebstrapAndLeavesNoMounts) {
  TempDir tmp;
  Target target(tmp);
  absl::Time cancel_at = absl::Now() + absl::Seconds(4);
  ctx_.cancelled = [&] { return absl::Now() >= cancel_at; };
  EXPECT_THAT(BuildDebianRootfs({.suite = "bookworm"}, target.rootfs, cache_, ctx_),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_LT(absl::Now() - cancel_at, absl::Seconds(3));
  // mmdebstrap ran in its own mount namespace: its mounts died with it.
  EXPECT_FALSE(MountedBelow(target.rootfs));
}

}  // namespace
}  // namespace smolvm::image
