#include "lib/image/image_store.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/model/vm.h"
#include "lib/store/store.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

#ifndef SMOLVM_SOURCE_GUEST_DIR
#error "SMOLVM_SOURCE_GUEST_DIR must name the source tree's guest/ directory"
#endif

namespace smolvm::image {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::MatchesRegex;
using ::testing::UnorderedElementsAre;

// An OK StatusOr whose value matches `inner`.
MATCHER_P(IsOkAndHolds, inner, "") {
  if (!arg.ok()) {
    *result_listener << "whose status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(inner, *arg, result_listener);
}

const Caller kAdmin = Caller::System();
const Caller kAlice{"uid:1001", false, "t"};
const Caller kBob{"uid:1002", false, "t2"};

std::vector<std::string> Names(const std::vector<ImageRecord>& images) {
  std::vector<std::string> out;
  for (const auto& image : images) {
    for (const auto& name : image.names) out.push_back(name);
  }
  return out;
}

std::vector<std::string> Digests(const std::vector<ImageRecord>& images) {
  std::vector<std::string> out;
  for (const auto& image : images) out.push_back(image.digest);
  return out;
}

BuildRequest MinimalRequest(const std::string& name) {
  BuildRequest request;
  request.name = name;
  request.source.kind = ImageSource::Kind::kMinimal;
  return request;
}

class ImageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A FAKE kernel dir: what FetchKernel (guest_kernel.h) leaves, with a
    // vmlinuz that is not a kernel and no modules. Nothing here boots; the
    // build only copies and hashes these files.
    ASSERT_THAT(MakeDirs(JoinPath(kernel_dir_, "modules")), IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(kernel_dir_, "vmlinuz"), "not a kernel (fake)\n"),
                IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(kernel_dir_, "kernel-version"), "6.1.0-test\n"), IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(kernel_dir_, "package-version"), "6.1.0-test-fake\n"),
                IsOk());
    ASSERT_THAT(WriteFileAtomic(JoinPath(kernel_dir_, "modules.order"), ""), IsOk());
    auto store = store::Store::Open(tmp_.Join("state.db"));
    ASSERT_THAT(store, IsOk());
    store_ = *std::move(store);
    auto images = ImageStore::Open(Options(), store_.get());
    ASSERT_THAT(images, IsOk());
    images_ = *std::move(images);
  }

  ImageStoreOptions Options(const std::string& recipe_dir = SMOLVM_SOURCE_GUEST_DIR) {
    ImageStoreOptions options;
    options.images_dir = images_dir_;
    options.kernel_dir = kernel_dir_;
    options.payload.busybox_path = "/bin/busybox";
    options.payload.agent_path = "";
    options.payload.recipe_dir = recipe_dir;
    options.package_cache_dir = tmp_.Join("cache");
    options.default_image = kMinimalImage;
    return options;
  }

  // The image directories (sha256-*) under images_dir.
  std::vector<std::string> ImageDirs() {
    std::vector<std::string> dirs;
    for (const auto& name : ListDirNames(images_dir_)) {
      if (absl::StartsWith(name, "sha256-")) dirs.push_back(name);
    }
    std::sort(dirs.begin(), dirs.end());
    return dirs;
  }

  std::string DirOf(const std::string& digest) {
    return JoinPath(images_dir_, "sha256-" + digest.substr(strlen("sha256:")));
  }

  ImageRecord BuildOk(const Caller& caller, const std::string& name) {
    auto built = images_->Build(caller, MinimalRequest(name), BuildContext{});
    EXPECT_THAT(built, IsOk());
    return built.ok() ? *built : ImageRecord{};
  }

  smolvm_testing::TempDir tmp_{"smolvm-imgstore"};
  const std::string images_dir_ = tmp_.Join("images");
  const std::string kernel_dir_ = tmp_.Join("kernel");
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<ImageStore> images_;
};

TEST_F(ImageStoreTest, ResolveBuildsBuiltinOnFirstUseOnly) {
  EXPECT_THAT(ImageDirs(), IsEmpty());
  auto first = images_->Resolve(kAdmin, "minimal");
  ASSERT_THAT(first, IsOk());
  const ImageRecord& image = first->record;
  EXPECT_THAT(image.digest, MatchesRegex("sha256:[0-9a-f]{64}"));
  EXPECT_TRUE(IsDigestRef(image.digest));
  EXPECT_THAT(image.names, ElementsAre("minimal:latest"));
  EXPECT_EQ(image.owner, "");
  EXPECT_EQ(SourceKindOf(image), "minimal");
  EXPECT_GT(image.size_bytes, 0u);
  EXPECT_EQ(first->manifest.kernel_version, "6.1.0-test");
  EXPECT_EQ(first->manifest.kernel_package, "6.1.0-test-fake");
  EXPECT_FALSE(first->manifest.payload_hash.empty());
  const std::string dir = DirOf(image.digest);
  EXPECT_EQ(first->kernel_path, JoinPath(dir, "vmlinuz"));
  EXPECT_EQ(first->initrd_path, JoinPath(dir, "initrd.img"));
  EXPECT_EQ(first->rootfs_path, JoinPath(dir, "rootfs.ext4"));
  for (const char* file : {"vmlinuz", "initrd.img", "rootfs.ext4", "manifest.json"}) {
    EXPECT_TRUE(PathExists(JoinPath(dir, file))) << file;
  }
  EXPECT_THAT(ReadFileToString(JoinPath(dir, "vmlinuz")),
              IsOkAndHolds(std::string("not a kernel (fake)\n")));
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + image.digest.substr(7)));
  EXPECT_THAT(ListDirNames(JoinPath(images_dir_, "tmp")), IsEmpty());

  // Resolved again (also as the default, and as a tenant): the same image,
  // not rebuilt.
  first->lease.reset();
  for (const auto& [caller, ref] : std::vector<std::pair<Caller, std::string>>{
           {kAdmin, "minimal"}, {kAdmin, ""}, {kAlice, "minimal:latest"}, {kAdmin, image.digest}}) {
    auto again = images_->Resolve(caller, ref);
    ASSERT_THAT(again, IsOk()) << ref;
    EXPECT_EQ(again->record, image) << ref;
  }
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + image.digest.substr(7)));
  auto all = images_->List(kAdmin);
  ASSERT_THAT(all, IsOk());
  EXPECT_THAT(Digests(*all), ElementsAre(image.digest));

  // A reopened store (a daemon restart) keeps it and does not rebuild.
  images_.reset();
  auto reopened = ImageStore::Open(Options(), store_.get());
  ASSERT_THAT(reopened, IsOk());
  auto after = (*reopened)->Resolve(kAdmin, "minimal");
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->record, image);
}

TEST_F(ImageStoreTest, ResolveUnknown) {
  EXPECT_THAT(images_->Resolve(kAdmin, "nosuch"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Resolve(kAdmin, "sha256:" + std::string(64, 'b')),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Resolve(kAdmin, "Bad"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ImageDirs(), IsEmpty());
}

TEST_F(ImageStoreTest, BuildGetTagDelete) {
  ImageRecord tools = BuildOk(kAdmin, "tools:v1");
  EXPECT_THAT(tools.digest, MatchesRegex("sha256:[0-9a-f]{64}"));
  EXPECT_THAT(tools.names, ElementsAre("tools:v1"));
  EXPECT_EQ(tools.owner, "");
  const std::string dir = DirOf(tools.digest);
  EXPECT_TRUE(PathExists(JoinPath(dir, "rootfs.ext4")));

  auto listed = images_->List(kAdmin);
  ASSERT_THAT(listed, IsOk());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().digest, tools.digest);
  EXPECT_THAT(listed->front().names, ElementsAre("tools:v1"));

  auto by_name = images_->Get(kAdmin, "tools:v1");
  ASSERT_THAT(by_name, IsOk());
  EXPECT_EQ(*by_name, tools);  // What Build returned is what was stored.
  auto by_digest = images_->Get(kAdmin, tools.digest);
  ASSERT_THAT(by_digest, IsOk());
  EXPECT_EQ(*by_digest, *by_name);
  // "tools" is tools:latest, which does not exist.
  EXPECT_THAT(images_->Get(kAdmin, "tools"),
              StatusIs(absl::StatusCode::kNotFound, "tools:latest"));
  auto manifest = images_->ManifestOf(*by_name);
  ASSERT_THAT(manifest, IsOk());
  EXPECT_EQ(manifest->kernel_version, "6.1.0-test");
  EXPECT_GT(manifest->disk_size_bytes, 0u);

  auto tagged = images_->Tag(kAdmin, "tools:v1", "tools");
  ASSERT_THAT(tagged, IsOk());
  EXPECT_THAT(tagged->names, ElementsAre("tools:latest", "tools:v1"));
  auto latest = images_->Get(kAdmin, "tools");
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->digest, tools.digest);
  // Tagging with the name it already has is a no-op; a name another image
  // has is taken.
  EXPECT_THAT(images_->Tag(kAdmin, tools.digest, "tools:v1"), IsOk());
  ImageRecord other = BuildOk(kAdmin, "other");
  EXPECT_NE(other.digest, tools.digest);
  EXPECT_THAT(images_->Tag(kAdmin, "other", "tools:v1"),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(images_->Tag(kAdmin, "other", "Not Valid"),
              StatusIs(absl::StatusCode::kInvalidArgument));

  // Deleting one of two names removes only the name.
  EXPECT_THAT(images_->Delete(kAdmin, "tools:v1"), IsOkAndHolds(false));
  EXPECT_THAT(images_->Get(kAdmin, "tools:v1"), StatusIs(absl::StatusCode::kNotFound));
  auto still = images_->Get(kAdmin, tools.digest);
  ASSERT_THAT(still, IsOk());
  EXPECT_THAT(still->names, ElementsAre("tools:latest"));
  EXPECT_TRUE(PathExists(JoinPath(dir, "rootfs.ext4")));

  // Deleting the last name removes the image and its files.
  EXPECT_THAT(images_->Delete(kAdmin, "tools"), IsOkAndHolds(true));
  EXPECT_THAT(images_->Get(kAdmin, tools.digest), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(PathExists(dir));
  EXPECT_THAT(images_->Delete(kAdmin, "tools"), StatusIs(absl::StatusCode::kNotFound));
  listed = images_->List(kAdmin);
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(Digests(*listed), ElementsAre(other.digest));
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + other.digest.substr(7)));

  // By digest, an image goes with all its names.
  ASSERT_THAT(images_->Tag(kAdmin, "other", "other:two"), IsOk());
  EXPECT_THAT(images_->Delete(kAdmin, other.digest), IsOkAndHolds(true));
  EXPECT_THAT(images_->Get(kAdmin, "other:two"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ImageDirs(), IsEmpty());
}

TEST_F(ImageStoreTest, NameRules) {
  EXPECT_THAT(NormalizeImageName("x"), IsOkAndHolds(std::string("x:latest")));
  EXPECT_THAT(NormalizeImageName("x:v1.2"), IsOkAndHolds(std::string("x:v1.2")));
  EXPECT_THAT(NormalizeImageName("my-img_2.0:Tag_1"),
              IsOkAndHolds(std::string("my-img_2.0:Tag_1")));
  EXPECT_THAT(NormalizeImageName(std::string(64, 'a')), IsOk());
  for (const std::string& bad :
       {std::string("Bad"), std::string("a b"), std::string("sha256:abc"), std::string(""),
        std::string(65, 'a'), std::string("x:") , std::string("x:" + std::string(65, 't')),
        std::string("-x"), std::string("x:a:b"), std::string("sha256")}) {
    EXPECT_THAT(NormalizeImageName(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(images_->Build(kAdmin, MinimalRequest(bad), BuildContext{}),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
  EXPECT_TRUE(IsDigestRef("sha256:" + std::string(64, 'a')));
  EXPECT_FALSE(IsDigestRef("sha256:" + std::string(64, 'A')));
  EXPECT_FALSE(IsDigestRef("sha256:abc"));
  EXPECT_THAT(ImageDirs(), IsEmpty());

  // A taken name: ALREADY_EXISTS, nothing new registered or left on disk.
  ImageRecord first = BuildOk(kAdmin, "taken");
  EXPECT_THAT(images_->Build(kAdmin, MinimalRequest("taken:latest"), BuildContext{}),
              StatusIs(absl::StatusCode::kAlreadyExists, "\"taken:latest\" is already taken"));
  auto listed = images_->List(kAdmin);
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(Digests(*listed), ElementsAre(first.digest));
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + first.digest.substr(7)));
  EXPECT_THAT(ListDirNames(JoinPath(images_dir_, "tmp")), IsEmpty());
}

TEST_F(ImageStoreTest, ImageInUseCannotBeDeleted) {
  ImageRecord image = BuildOk(kAdmin, "used");

  VmRecord vm;
  vm.vm_id = "vm-1";
  vm.config.vm_id = "vm-1";
  vm.config.image = "used";
  vm.config.image_digest = image.digest;
  ASSERT_THAT(store_->InsertVm(vm), IsOk());
  SnapshotRecord snap;
  snap.snapshot_id = "snap-1";
  snap.vm_id = "vm-gone";
  snap.vm_config.vm_id = "vm-gone";
  snap.vm_config.image_digest = image.digest;
  ASSERT_THAT(store_->InsertSnapshot(snap), IsOk());
  // Unrelated users do not count.
  VmRecord other = vm;
  other.vm_id = other.config.vm_id = "vm-2";
  other.config.image_digest = "sha256:" + std::string(64, 'c');
  ASSERT_THAT(store_->InsertVm(other), IsOk());

  EXPECT_THAT(images_->UsersOf(image.digest),
              IsOkAndHolds(UnorderedElementsAre("vm:vm-1", "snapshot:snap-1")));
  auto refused = images_->Delete(kAdmin, "used");
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(refused.status().message()),
              AllOf(HasSubstr("vm:vm-1"), HasSubstr("snapshot:snap-1")));
  EXPECT_THAT(images_->Delete(kAdmin, image.digest),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(images_->Get(kAdmin, "used"), IsOk());
  EXPECT_TRUE(PathExists(DirOf(image.digest)));

  ASSERT_THAT(store_->DeleteVm("vm-1"), IsOk());
  EXPECT_THAT(images_->Delete(kAdmin, "used"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "snapshot:snap-1"));
  ASSERT_THAT(store_->DeleteSnapshot("snap-1"), IsOk());
  EXPECT_THAT(images_->UsersOf(image.digest), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(images_->Delete(kAdmin, "used"), IsOkAndHolds(true));
  EXPECT_FALSE(PathExists(DirOf(image.digest)));
}

TEST_F(ImageStoreTest, LeasedImageCannotBeDeleted) {
  ImageRecord image = BuildOk(kAdmin, "leased");
  auto resolved = images_->Resolve(kAdmin, "leased");
  ASSERT_THAT(resolved, IsOk());
  EXPECT_GT(resolved->lease.use_count(), 0);
  auto second = images_->Resolve(kAdmin, image.digest);
  ASSERT_THAT(second, IsOk());

  EXPECT_THAT(images_->Delete(kAdmin, "leased"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "being created"));
  resolved->lease.reset();
  // One lease is still held.
  EXPECT_THAT(images_->Delete(kAdmin, "leased"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  second->lease.reset();
  EXPECT_THAT(images_->Delete(kAdmin, "leased"), IsOkAndHolds(true));
  EXPECT_FALSE(PathExists(DirOf(image.digest)));
}

TEST_F(ImageStoreTest, TenantsSeeTheirOwnAndBuiltins) {
  ImageRecord mine = BuildOk(kAlice, "alice-img");
  EXPECT_EQ(mine.owner, "uid:1001");
  auto builtin = images_->Resolve(kAlice, "minimal");  // A tenant may trigger the built-in.
  ASSERT_THAT(builtin, IsOk());
  builtin->lease.reset();
  EXPECT_EQ(builtin->record.owner, "");

  // Alice sees hers and the built-in.
  auto alice_list = images_->List(kAlice);
  ASSERT_THAT(alice_list, IsOk());
  EXPECT_THAT(Names(*alice_list), UnorderedElementsAre("alice-img:latest", "minimal:latest"));
  EXPECT_THAT(images_->Get(kAlice, "alice-img"), IsOk());
  EXPECT_THAT(images_->Get(kAlice, mine.digest), IsOk());

  // Bob sees only the built-in, and cannot touch Alice's image.
  auto bob_list = images_->List(kBob);
  ASSERT_THAT(bob_list, IsOk());
  EXPECT_THAT(Names(*bob_list), ElementsAre("minimal:latest"));
  EXPECT_THAT(images_->Get(kBob, "alice-img"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Get(kBob, mine.digest), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Resolve(kBob, "alice-img"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Delete(kBob, "alice-img"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Delete(kBob, mine.digest), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Tag(kBob, "alice-img", "bobs"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->Get(kAlice, "alice-img"), IsOk());

  // Admins see everything.
  auto admin_list = images_->List(kAdmin);
  ASSERT_THAT(admin_list, IsOk());
  EXPECT_THAT(Names(*admin_list), UnorderedElementsAre("alice-img:latest", "minimal:latest"));
  EXPECT_THAT(images_->Get(kAdmin, "alice-img"), IsOk());

  // Built-ins: visible to tenants, but only admins change them.
  EXPECT_THAT(images_->Get(kBob, "minimal"), IsOk());
  EXPECT_THAT(images_->Delete(kAlice, "minimal"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(images_->Tag(kAlice, "minimal", "mymin"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(images_->Get(kAdmin, "mymin"), StatusIs(absl::StatusCode::kNotFound));
  // Nor name anything after a built-in.
  EXPECT_THAT(images_->Tag(kAlice, "alice-img", "minimal"),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(images_->Build(kAlice, MinimalRequest("minimal"), BuildContext{}),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(images_->Build(kAlice, MinimalRequest("debian-python:latest"), BuildContext{}),
              StatusIs(absl::StatusCode::kPermissionDenied));

  // Host-path sources are for admins only.
  for (auto kind : {ImageSource::Kind::kDirectory, ImageSource::Kind::kOci,
                    ImageSource::Kind::kTarball}) {
    BuildRequest request = MinimalRequest("hostpath");
    request.source.kind = kind;
    request.source.path = tmp_.path();
    request.source.oci.path = tmp_.path();
    EXPECT_THAT(images_->Build(kAlice, request, BuildContext{}),
                StatusIs(absl::StatusCode::kPermissionDenied))
        << SourceKindName(kind);
  }

  // So is a kernel from a host path.
  BuildRequest kernel = MinimalRequest("own-kernel");
  kernel.kernel_deb = tmp_.Join("linux-image.deb");
  EXPECT_THAT(images_->Build(kAlice, kernel, BuildContext{}),
              StatusIs(absl::StatusCode::kPermissionDenied, "kernel_deb"));

  // A name clash tells a tenant the name is taken, not what holds it.
  auto clash = images_->Build(kBob, MinimalRequest("alice-img"), BuildContext{});
  EXPECT_THAT(clash, StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_FALSE(absl::StrContains(clash.status().message(), mine.digest)) << clash.status();

  // Alice tags and deletes her own.
  auto tagged = images_->Tag(kAlice, "alice-img", "alice-img:v2");
  ASSERT_THAT(tagged, IsOk());
  EXPECT_THAT(tagged->names, ElementsAre("alice-img:latest", "alice-img:v2"));
  EXPECT_THAT(images_->Delete(kAlice, "alice-img:v2"), IsOkAndHolds(false));
  EXPECT_THAT(images_->Delete(kAlice, "alice-img"), IsOkAndHolds(true));
  EXPECT_FALSE(PathExists(DirOf(mine.digest)));
  // The built-in stays.
  EXPECT_THAT(images_->Get(kAlice, "minimal"), IsOk());
}

TEST_F(ImageStoreTest, OpenRemovesCrashLeftovers) {
  ImageRecord kept = BuildOk(kAdmin, "kept");
  const std::string interrupted = JoinPath(images_dir_, "tmp/build-xyz");
  ASSERT_THAT(MakeDirs(JoinPath(interrupted, "rootfs/etc")), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(interrupted, "rootfs/etc/passwd"), "root\n"), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(interrupted, "vmlinuz"), "k"), IsOk());
  const std::string unrecorded = JoinPath(images_dir_, "sha256-" + std::string(64, 'a'));
  ASSERT_THAT(MakeDirs(unrecorded), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(unrecorded, "rootfs.ext4"), "disk"), IsOk());
  // Something that is not an image dir is left alone.
  ASSERT_THAT(MakeDirs(JoinPath(images_dir_, "cache/debs")), IsOk());

  images_.reset();
  auto reopened = ImageStore::Open(Options(), store_.get());
  ASSERT_THAT(reopened, IsOk());
  images_ = *std::move(reopened);

  EXPECT_FALSE(PathExists(interrupted));
  EXPECT_FALSE(PathExists(unrecorded));
  EXPECT_TRUE(PathExists(JoinPath(images_dir_, "tmp")));
  EXPECT_THAT(ListDirNames(JoinPath(images_dir_, "tmp")), IsEmpty());
  EXPECT_TRUE(PathExists(JoinPath(images_dir_, "cache/debs")));
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + kept.digest.substr(7)));
  auto resolved = images_->Resolve(kAdmin, "kept");
  ASSERT_THAT(resolved, IsOk());
  // All of it, created_at included: what Build returned is what is stored.
  EXPECT_EQ(resolved->record, kept);
}

TEST_F(ImageStoreTest, CancelledBuildRegistersNothing) {
  BuildContext ctx;
  int asked = 0;
  ctx.cancelled = [&] {
    ++asked;
    return true;
  };
  EXPECT_THAT(images_->Build(kAdmin, MinimalRequest("cancelled"), ctx),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_GT(asked, 0);
  EXPECT_THAT(images_->Get(kAdmin, "cancelled"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->List(kAdmin), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(ImageDirs(), IsEmpty());
  EXPECT_THAT(ListDirNames(JoinPath(images_dir_, "tmp")), IsEmpty());
  // The name is free for a build that finishes.
  BuildOk(kAdmin, "cancelled");
}

TEST_F(ImageStoreTest, FailedBuildLeavesNothing) {
  BuildRequest request;
  request.name = "fromdir";
  request.source.kind = ImageSource::Kind::kDirectory;
  request.source.path = tmp_.Join("no-such-dir");
  EXPECT_THAT(images_->Build(kAdmin, request, BuildContext{}),
              StatusIs(absl::StatusCode::kNotFound, "no-such-dir"));
  EXPECT_THAT(images_->Get(kAdmin, "fromdir"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(images_->List(kAdmin), IsOkAndHolds(IsEmpty()));
  EXPECT_THAT(ImageDirs(), IsEmpty());
  EXPECT_THAT(ListDirNames(JoinPath(images_dir_, "tmp")), IsEmpty());
}

TEST_F(ImageStoreTest, BuiltinFollowsPayloadChanges) {
  auto old_resolved = images_->Resolve(kAdmin, "minimal");
  ASSERT_THAT(old_resolved, IsOk());
  old_resolved->lease.reset();
  const ImageRecord old_image = old_resolved->record;

  // The same recipes, with rootfs-init.sh one byte longer: a new payload.
  const std::string recipes = tmp_.Join("guest");
  ASSERT_THAT(MakeDirs(recipes), IsOk());
  for (const char* script : {"rootfs-init.sh", "initramfs-init.sh"}) {
    auto text = ReadFileToString(JoinPath(SMOLVM_SOURCE_GUEST_DIR, script));
    ASSERT_THAT(text, IsOk());
    std::string changed = *text;
    if (std::string(script) == "rootfs-init.sh") changed += "\n";
    ASSERT_THAT(WriteFileAtomic(JoinPath(recipes, script), changed, 0755), IsOk());
  }
  images_.reset();
  auto reopened = ImageStore::Open(Options(recipes), store_.get());
  ASSERT_THAT(reopened, IsOk());
  images_ = *std::move(reopened);
  EXPECT_THAT(ImageDirs(), ElementsAre("sha256-" + old_image.digest.substr(7)));

  auto resolved = images_->Resolve(kAdmin, "minimal");
  ASSERT_THAT(resolved, IsOk());
  resolved->lease.reset();
  const ImageRecord& new_image = resolved->record;
  EXPECT_NE(new_image.digest, old_image.digest);
  EXPECT_NE(resolved->manifest.payload_hash, old_resolved->manifest.payload_hash);
  EXPECT_THAT(new_image.names, ElementsAre("minimal:latest"));
  EXPECT_EQ(new_image.owner, "");

  // The name moved; the old image stays, unnamed (VMs may still use it).
  auto old_now = images_->Get(kAdmin, old_image.digest);
  ASSERT_THAT(old_now, IsOk());
  EXPECT_THAT(old_now->names, IsEmpty());
  auto listed = images_->List(kAdmin);
  ASSERT_THAT(listed, IsOk());
  EXPECT_THAT(Digests(*listed), UnorderedElementsAre(old_image.digest, new_image.digest));
  EXPECT_EQ(ImageDirs().size(), 2u);
  EXPECT_TRUE(PathExists(DirOf(old_image.digest)));
  // Not rebuilt again.
  auto again = images_->Resolve(kAdmin, "minimal");
  ASSERT_THAT(again, IsOk());
  again->lease.reset();
  EXPECT_EQ(again->record.digest, new_image.digest);

  // The unnamed old image can be deleted by digest.
  EXPECT_THAT(images_->Delete(kAdmin, old_image.digest), IsOkAndHolds(true));
  EXPECT_FALSE(PathExists(DirOf(old_image.digest)));
}

}  // namespace
}  // namespace smolvm::image
