// Images end to end on the real daemon: the Debian default image with
// Python built on first use from Debian's archive (packages cached in the
// build tree), a Python process kept across snapshot and restore, an OCI
// archive made here with umoci and skopeo (two layers, a whiteout, Env and
// WorkingDir), a directory image, an image in use that cannot be deleted,
// names and tags, and bad input that leaves nothing registered.
//
// Prints "IMAGE-TIMING <image> build_ms=... boot_ms=... restore_ms=..." for
// the README.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/process.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

v1::VMConfig SmallVm(const std::string& id, const std::string& image) {
  v1::VMConfig config;
  config.set_vm_id(id);
  config.set_memory_mib(256);
  config.set_vcpu_count(1);
  config.set_image(image);
  return config;
}

std::string InVm(SmolVM& vm, const std::string& command) {
  auto r = vm.run(command);
  if (!r.ok()) return "RUN FAILED: " + std::string(r.status().message());
  if (!r->ok()) return absl::StrCat("EXIT ", r->exit_code, ": ", r->stderr_text);
  return r->output();
}

int64_t Ms(absl::Time since) { return absl::ToInt64Milliseconds(absl::Now() - since); }

void Timing(const std::string& image, int64_t build_ms, int64_t boot_ms, int64_t restore_ms) {
  std::cout << "IMAGE-TIMING " << image << " build_ms=" << build_ms << " boot_ms=" << boot_ms
            << " restore_ms=" << restore_ms << std::endl;
}

class ImageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    ASSERT_TRUE(daemon_->Start({"--default-image", "debian-python"}).ok())
        << daemon_->DaemonLog();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << daemon_->DaemonLog() << "\n";
  }

  static SmolVMManager Manager() { return SmolVMManager(daemon_->client_options()); }

  // Builds `request`, returning the status; progress steps go to `steps`.
  static absl::StatusOr<v1::Image> Build(const v1::BuildImageRequest& request,
                                         std::vector<std::string>* steps = nullptr) {
    auto built = BuildWithWarm(request, steps);
    if (!built.ok()) return built.status();
    return built->image;
  }
  static absl::StatusOr<SmolVMManager::BuiltImage> BuildWithWarm(
      const v1::BuildImageRequest& request, std::vector<std::string>* steps = nullptr) {
    return Manager().build_image(request, [&](const v1::BuildProgress& p) {
      if (steps) steps->push_back(p.step());
    });
  }
  // No VM of a warm build is left behind.
  static void ExpectNoWarmBuildVm() {
    auto vms = Manager().list_vms();
    ASSERT_TRUE(vms.ok()) << vms.status();
    for (const auto& vm : *vms) EXPECT_FALSE(absl::StartsWith(vm.vm_id(), "warm-")) << vm.vm_id();
  }

  // Nothing of a failed build is left: no new image, no build dir.
  static void ExpectNothingHalfBuilt(size_t images_before) {
    auto images = Manager().list_images();
    ASSERT_TRUE(images.ok()) << images.status();
    EXPECT_EQ(images->size(), images_before);
    const std::string tmp = daemon_->state_dir() + "/images/tmp";
    size_t left = 0;
    for (const auto& e : fs::directory_iterator(tmp)) {
      if (absl::StartsWith(e.path().filename().string(), "build-")) ++left;
    }
    EXPECT_EQ(left, 0u) << "a failed build left files in " << tmp;
  }

  // A root filesystem of Debian's static busybox in `dir`.
  static void MakeBusyboxTree(const std::string& dir) {
    for (const char* d : {"bin", "etc", "root", "tmp"}) fs::create_directories(dir + "/" + d);
    fs::copy_file("/bin/busybox", dir + "/bin/busybox");
    for (const char* applet : {"sh", "cat", "ls", "pwd", "echo", "test", "env", "id"}) {
      fs::create_symlink("busybox", dir + "/bin/" + applet);
    }
    std::ofstream(dir + "/etc/passwd") << "root:x:0:0:root:/root:/bin/sh\n";
  }

  static TestDaemon* daemon_;
};
TestDaemon* ImageTest::daemon_ = nullptr;

// The default image: Debian with Python, built on the first VM that needs
// it; a Python line runs; a running Python process survives snapshot and
// restore with its memory.
TEST_F(ImageTest, DefaultDebianPythonRunsPythonAndKeepsProcessAcrossRestore) {
  absl::Time t0 = absl::Now();
  SmolVM vm(SmallVm("py", ""), daemon_->client_options());
  ASSERT_TRUE(vm.start().ok()) << "first boot (builds debian-python)";
  const int64_t first_boot_ms = Ms(t0);
  EXPECT_EQ(InVm(vm, "python3 -c 'print(6*7)'"), "42");
  EXPECT_TRUE(absl::StartsWith(vm.info().config().image_digest(), "sha256:"));

  auto image = Manager().get_image("debian-python");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->digest(), vm.info().config().image_digest());
  EXPECT_EQ(image->source_kind(), "debian");
  EXPECT_TRUE(absl::StrContains(image->source(), "python3")) << image->source();
  EXPECT_FALSE(image->kernel_version().empty());
  EXPECT_GT(image->build_ms(), 0u);
  std::cout << "debian-python first boot incl. build: " << first_boot_ms << " ms" << std::endl;

  // A second VM of the same image boots without building.
  t0 = absl::Now();
  SmolVM second(SmallVm("py2", "debian-python"), daemon_->client_options());
  ASSERT_TRUE(second.start().ok());
  const int64_t boot_ms = Ms(t0);
  EXPECT_EQ(InVm(second, "python3 -c 'import sys; print(sys.version_info[0])'"), "3");
  EXPECT_TRUE(second.close().ok());

  // A Python process counting in memory, then snapshot, delete, restore.
  ASSERT_EQ(InVm(vm, "python3 -c \"import os,sys,time\n"
                    "if os.fork(): sys.exit(0)\n"
                    "os.setsid(); n=0\n"
                    "open('/tmp/counter.pid','w').write(str(os.getpid()))\n"
                    "while True:\n"
                    "  n+=1; open('/tmp/n.tmp','w').write(str(n)); os.rename('/tmp/n.tmp','/tmp/n')\n"
                    "  time.sleep(0.05)\" </dev/null >/dev/null 2>&1; sleep 1; echo started"),
            "started");
  const std::string pid = InVm(vm, "cat /tmp/counter.pid");
  const int before = std::stoi(InVm(vm, "cat /tmp/n"));
  EXPECT_GT(before, 0);
  auto snap = vm.snapshot("py-snap");
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->vm_config().image_digest(), image->digest());
  ASSERT_TRUE(vm.close().ok());
  t0 = absl::Now();
  auto restored = SmolVM::from_snapshot("py-snap", true, "py-restored", daemon_->client_options());
  ASSERT_TRUE(restored.ok()) << restored.status();
  const int64_t restore_ms = Ms(t0);
  // The same process (same pid, still python3), counting on from its
  // in-memory value: a fresh boot would have neither.
  EXPECT_EQ(InVm(*restored, "cat /tmp/counter.pid"), pid);
  EXPECT_TRUE(absl::StrContains(InVm(*restored, "cat /proc/" + pid + "/cmdline"), "python3"));
  const int after = std::stoi(InVm(*restored, "sleep 0.5; cat /tmp/n"));
  EXPECT_GT(after, before);
  Timing("debian-python", image->build_ms(), boot_ms, restore_ms);

  // In use (by a VM and a snapshot): not deletable, and the error says by what.
  auto refused = Manager().delete_image("debian-python");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "vm:py-restored"))
      << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "snapshot:py-snap"))
      << refused.status();
  EXPECT_TRUE(Manager().get_image("debian-python").ok());
  EXPECT_TRUE(restored->close().ok());
  EXPECT_TRUE(Manager().delete_snapshot("py-snap").ok());
}

// The busybox image stays available as "minimal" and is the fastest.
TEST_F(ImageTest, MinimalImageBootsAndRestores) {
  absl::Time t0 = absl::Now();
  SmolVM vm(SmallVm("mini", "minimal"), daemon_->client_options());
  ASSERT_TRUE(vm.start().ok());
  const int64_t first_ms = Ms(t0);
  auto image = Manager().get_image("minimal:latest");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->source_kind(), "minimal");
  EXPECT_EQ(InVm(vm, "cat /etc/os-release | grep -c busybox"), "1");
  EXPECT_TRUE(vm.close().ok());
  t0 = absl::Now();
  SmolVM again(SmallVm("mini2", "minimal"), daemon_->client_options());
  ASSERT_TRUE(again.start().ok());
  const int64_t boot_ms = Ms(t0);
  ASSERT_TRUE(again.snapshot("mini-snap").ok());
  ASSERT_TRUE(again.close().ok());
  t0 = absl::Now();
  auto restored = SmolVM::from_snapshot("mini-snap", true, "mini3", daemon_->client_options());
  ASSERT_TRUE(restored.ok()) << restored.status();
  const int64_t restore_ms = Ms(t0);
  EXPECT_EQ(InVm(*restored, "echo up"), "up");
  EXPECT_TRUE(restored->close().ok());
  EXPECT_TRUE(Manager().delete_snapshot("mini-snap").ok());
  std::cout << "minimal first boot incl. build: " << first_ms << " ms" << std::endl;
  Timing("minimal", image->build_ms(), boot_ms, restore_ms);
}

// A warm template: the build boots a VM of the new image, starts a process,
// waits until the ready command succeeds and snapshots the running VM.
// Restoring that snapshot gives a VM whose process is already running (same
// pid, counting on from its in-memory state) without a boot.
TEST_F(ImageTest, WarmTemplateRestoresARunningProcess) {
  v1::BuildImageRequest request;
  request.set_name("warm-counter");
  request.set_minimal(true);
  v1::WarmStart* warm = request.mutable_warm();
  warm->set_start_command(
      "echo $$ >/tmp/warm.pid; n=0; while :; do n=$((n+1)); echo $n >/tmp/warm.n.tmp; "
      "mv /tmp/warm.n.tmp /tmp/warm.n; sleep 0.1; done");
  warm->set_ready_command("test \"$(cat /tmp/warm.n 2>/dev/null)\" -ge 5");
  warm->set_memory_mib(256);
  warm->set_vcpu_count(1);
  std::vector<std::string> steps;
  absl::Time t0 = absl::Now();
  auto built = BuildWithWarm(request, &steps);
  ASSERT_TRUE(built.ok()) << built.status();
  const int64_t build_ms = Ms(t0);
  ASSERT_TRUE(built->warm_snapshot.has_value());
  const v1::SnapshotInfo& snap = *built->warm_snapshot;
  EXPECT_EQ(snap.snapshot_id(), "warm-counter-warm");  // Derived from the name.
  EXPECT_EQ(snap.vm_config().image_digest(), built->image.digest());
  EXPECT_NE(std::find(steps.begin(), steps.end(), "warm: snapshotting warm-counter-warm"),
            steps.end());
  ExpectNoWarmBuildVm();

  // Another warm build naming the same snapshot is refused before it builds.
  v1::BuildImageRequest clash = request;
  clash.set_name("warm-counter2");
  clash.mutable_warm()->set_snapshot_id("warm-counter-warm");
  auto refused = Build(clash);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
  EXPECT_EQ(Manager().get_image("warm-counter2").status().code(), absl::StatusCode::kNotFound);

  t0 = absl::Now();
  auto vm = SmolVM::from_snapshot("warm-counter-warm", true, "warm-clone",
                                  daemon_->client_options());
  ASSERT_TRUE(vm.ok()) << vm.status();
  const std::string pid = InVm(*vm, "cat /tmp/warm.pid");
  const int64_t first_exec_ms = Ms(t0);
  EXPECT_EQ(InVm(*vm, "kill -0 " + pid + " && echo alive"), "alive");
  const int before = std::stoi(InVm(*vm, "cat /tmp/warm.n"));
  EXPECT_GE(before, 5);
  const int after = std::stoi(InVm(*vm, "sleep 0.5; cat /tmp/warm.n"));
  EXPECT_GT(after, before);
  std::cout << "WARM-TIMING minimal build_with_warm_ms=" << build_ms
            << " restore_to_first_exec_ms=" << first_exec_ms << std::endl;

  // The snapshot keeps the image in use; once it is gone the image goes.
  auto in_use = Manager().delete_image("warm-counter");
  EXPECT_EQ(in_use.status().code(), absl::StatusCode::kFailedPrecondition) << in_use.status();
  EXPECT_TRUE(absl::StrContains(in_use.status().message(), "snapshot:warm-counter-warm"))
      << in_use.status();
  EXPECT_TRUE(vm->close().ok());
  EXPECT_TRUE(Manager().delete_snapshot("warm-counter-warm").ok());
  auto deleted = Manager().delete_image("warm-counter");
  EXPECT_TRUE(deleted.ok()) << deleted.status();
}

// A warm start whose command fails keeps nothing: not the image's name, the
// build VM or a snapshot; the error carries the command's status and output.
// A warm start without any command is refused before building.
TEST_F(ImageTest, FailedWarmStartLeavesNothing) {
  auto images = Manager().list_images();
  ASSERT_TRUE(images.ok()) << images.status();
  const size_t images_before = images->size();

  v1::BuildImageRequest request;
  request.set_name("warm-bad");
  request.set_minimal(true);
  request.mutable_warm();
  auto empty = Build(request);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument) << empty.status();

  request.mutable_warm()->set_start_command("echo broken-start >&2; exit 3");
  request.mutable_warm()->set_ready_command("false");
  request.mutable_warm()->set_ready_timeout_s(60);
  request.mutable_warm()->set_memory_mib(256);
  auto failed = Build(request);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "status 3")) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "broken-start")) << failed.status();
  EXPECT_EQ(Manager().get_image("warm-bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Manager().get_snapshot("warm-bad-warm").status().code(),
            absl::StatusCode::kNotFound);
  ExpectNoWarmBuildVm();
  ExpectNothingHalfBuilt(images_before);
}

// The linux-image .deb of the test kernel (the one the daemon boots by
// default), downloaded once into "<kernel dir>-deb" in the build tree.
std::string TestKernelDeb(std::string* package_version) {
  const char* env = std::getenv("SMOLVM_TEST_KERNEL_DIR");
  const std::string kernel_dir = env && *env ? env : "/var/cache/smolvmd/kernel";
  std::ifstream in(kernel_dir + "/package-version");
  std::getline(in, *package_version);
  if (package_version->empty()) return "";
  const std::string cache = kernel_dir + "-deb";
  fs::create_directories(cache);
  auto find = [&]() -> std::string {
    for (const auto& e : fs::directory_iterator(cache)) {
      if (e.path().extension() == ".deb") return e.path().string();
    }
    return "";
  };
  if (std::string deb = find(); !deb.empty()) return deb;
  ProcResult got = RunProcess({"sh", "-c",
                               "cd \"$1\" && apt-get download -qq -o APT::Sandbox::User=root \"$2\"",
                               "sh", cache, *package_version});
  if (got.exit_code != 0) {
    ADD_FAILURE() << "apt-get download " << *package_version << ": " << got.Describe();
    return "";
  }
  return find();
}

// An admin builds an image on a kernel package of its choosing: the image
// records the package, its initramfs carries that kernel's modules, and a
// VM of it boots that kernel. A file that is no kernel package is
// INVALID_ARGUMENT and leaves nothing.
TEST_F(ImageTest, AdminKernelPackage) {
  std::string package_version;
  const std::string deb = TestKernelDeb(&package_version);
  ASSERT_FALSE(deb.empty());
  auto images = Manager().list_images();
  ASSERT_TRUE(images.ok()) << images.status();
  const size_t images_before = images->size();

  v1::BuildImageRequest request;
  request.set_name("own-kernel");
  request.set_minimal(true);
  request.set_kernel_deb(daemon_->dir() + "/no-such.deb");
  EXPECT_EQ(Build(request).status().code(), absl::StatusCode::kNotFound);
  const std::string not_a_deb = daemon_->dir() + "/not-a-kernel.deb";
  std::ofstream(not_a_deb) << "not a Debian package\n";
  request.set_kernel_deb(not_a_deb);
  auto bad = Build(request);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << bad.status();
  ExpectNothingHalfBuilt(images_before);

  request.set_kernel_deb(deb);
  std::vector<std::string> steps;
  auto image = Build(request, &steps);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->kernel_package(), package_version);
  EXPECT_TRUE(std::any_of(steps.begin(), steps.end(), [](const std::string& step) {
    return absl::StartsWith(step, "kernel: ");
  })) << absl::StrJoin(steps, "; ");
  {
    SmolVM vm(SmallVm("own-kernel-vm", "own-kernel"), daemon_->client_options());
    ASSERT_TRUE(vm.start().ok());
    EXPECT_EQ(InVm(vm, "uname -r"), image->kernel_version());
    EXPECT_TRUE(vm.close().ok());
  }
  auto deleted = Manager().delete_image("own-kernel");
  EXPECT_TRUE(deleted.ok() && *deleted) << deleted.status();
}

// smolvmctl's image commands, as scripts use them (--json): build streams
// JSON Lines ending with `done`; list, get, tag and rm speak JSON; an image
// in use is refused with the precondition exit code.
TEST_F(ImageTest, SmolvmctlImageCommands) {
  ProcResult built = daemon_->Ctl({"image", "build", "cli-min:v1", "--minimal"});
  ASSERT_EQ(built.exit_code, 0) << built.Describe();
  std::vector<std::string> lines = absl::StrSplit(built.out, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 2u) << built.out;
  for (size_t i = 0; i + 1 < lines.size(); ++i) {
    nlohmann::json event = nlohmann::json::parse(lines[i], nullptr, false);
    EXPECT_TRUE(event.contains("progress")) << lines[i];
  }
  nlohmann::json done = nlohmann::json::parse(lines.back(), nullptr, false);
  ASSERT_TRUE(done.contains("done")) << lines.back();
  const std::string digest = done["done"].value("digest", "");
  EXPECT_TRUE(absl::StartsWith(digest, "sha256:")) << lines.back();
  EXPECT_EQ(done["done"]["names"], nlohmann::json::array({"cli-min:v1"}));

  ProcResult listed = daemon_->Ctl({"image", "list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  nlohmann::json list = nlohmann::json::parse(listed.out, nullptr, false);
  ASSERT_TRUE(list.is_array()) << listed.out;
  bool found = false;
  for (const auto& image : list) found |= image.value("digest", "") == digest;
  EXPECT_TRUE(found) << listed.out;

  ProcResult tagged = daemon_->Ctl({"image", "tag", "cli-min:v1", "cli-min:stable"});
  ASSERT_EQ(tagged.exit_code, 0) << tagged.Describe();
  EXPECT_EQ(nlohmann::json::parse(tagged.out, nullptr, false)["names"].size(), 2u) << tagged.out;
  ProcResult got = daemon_->Ctl({"image", "get", "cli-min:stable"});
  ASSERT_EQ(got.exit_code, 0) << got.Describe();
  EXPECT_EQ(nlohmann::json::parse(got.out, nullptr, false).value("digest", ""), digest);

  ProcResult created = daemon_->Ctl({"vm", "create", "--id", "cli-vm", "--image", "cli-min:v1",
                                     "--vcpus", "1", "--memory-mib", "256", "--no-start"});
  ASSERT_EQ(created.exit_code, 0) << created.Describe();
  EXPECT_TRUE(absl::StrContains(created.out, digest)) << created.out;
  EXPECT_EQ(daemon_->Ctl({"image", "rm", "cli-min:stable"}).exit_code, 0);
  ProcResult refused = daemon_->Ctl({"image", "rm", "cli-min:v1"});
  EXPECT_EQ(refused.exit_code, 5) << refused.Describe();  // FAILED_PRECONDITION
  EXPECT_TRUE(absl::StrContains(refused.err, "vm:cli-vm")) << refused.Describe();
  EXPECT_EQ(daemon_->Ctl({"vm", "delete", "cli-vm"}).exit_code, 0);
  ProcResult removed = daemon_->Ctl({"image", "rm", digest});
  ASSERT_EQ(removed.exit_code, 0) << removed.Describe();
  EXPECT_EQ(nlohmann::json::parse(removed.out, nullptr, false).value("image_deleted", false),
            true)
      << removed.out;
  EXPECT_EQ(daemon_->Ctl({"image", "get", "cli-min:v1"}).exit_code, 3);  // NOT_FOUND
  // Warm options without a warm command are a usage error, before any build.
  ProcResult no_warm = daemon_->Ctl({"image", "build", "cli-warm", "--minimal", "--warm-timeout", "5"});
  EXPECT_EQ(no_warm.exit_code, 2) << no_warm.Describe();  // INVALID_ARGUMENT
  EXPECT_TRUE(absl::StrContains(no_warm.err, "--warm-start")) << no_warm.Describe();
}

// An OCI image made here: layer 1 a busybox tree with /etc/gone, layer 2
// deletes it (a whiteout) and adds /app/hello.txt; the config sets Env and
// WorkingDir. Saved as a docker-archive tarball, as `docker save` makes.
TEST_F(ImageTest, OciArchiveBootsWithEnvWorkdirAndWhiteout) {
  const std::string work = daemon_->dir() + "/oci";
  const std::string layout = work + "/layout";
  const std::string bundle = work + "/bundle";
  fs::create_directories(work);
  std::string err;
  ASSERT_TRUE(RunOk({"umoci", "init", "--layout", layout}, &err)) << err;
  ASSERT_TRUE(RunOk({"umoci", "new", "--image", layout + ":base"}, &err)) << err;
  ASSERT_TRUE(RunOk({"umoci", "unpack", "--image", layout + ":base", bundle}, &err)) << err;
  MakeBusyboxTree(bundle + "/rootfs");
  std::ofstream(bundle + "/rootfs/etc/gone") << "layer 1\n";
  ASSERT_TRUE(RunOk({"umoci", "repack", "--image", layout + ":base", bundle}, &err)) << err;
  fs::remove_all(bundle);
  ASSERT_TRUE(RunOk({"umoci", "unpack", "--image", layout + ":base", bundle}, &err)) << err;
  fs::remove(bundle + "/rootfs/etc/gone");
  fs::create_directories(bundle + "/rootfs/app");
  std::ofstream(bundle + "/rootfs/app/hello.txt") << "hello from layer 2\n";
  ASSERT_TRUE(RunOk({"umoci", "repack", "--image", layout + ":v1", bundle}, &err)) << err;
  ASSERT_TRUE(RunOk({"umoci", "config", "--image", layout + ":v1", "--config.env",
                     "GREETING=hello oci", "--config.workingdir", "/app"},
                    &err))
      << err;
  const std::string archive = work + "/image.tar";
  ASSERT_TRUE(RunOk({"skopeo", "--insecure-policy", "copy", "oci:" + layout + ":v1",
                     "docker-archive:" + archive + ":smolvm-test:v1"},
                    &err))
      << err;

  v1::BuildImageRequest request;
  request.set_name("oci-test:v1");
  request.mutable_oci()->set_path(archive);
  absl::Time t0 = absl::Now();
  std::vector<std::string> steps;
  auto image = Build(request, &steps);
  ASSERT_TRUE(image.ok()) << image.status();
  const int64_t build_ms = Ms(t0);
  EXPECT_FALSE(steps.empty()) << "BuildImage streamed no progress";
  EXPECT_EQ(image->source_kind(), "oci");
  EXPECT_EQ(image->exec_defaults().working_dir(), "/app");
  EXPECT_EQ(image->exec_defaults().env().at("GREETING"), "hello oci");

  t0 = absl::Now();
  SmolVM vm(SmallVm("oci", "oci-test:v1"), daemon_->client_options());
  ASSERT_TRUE(vm.start().ok());
  const int64_t boot_ms = Ms(t0);
  EXPECT_EQ(InVm(vm, "pwd"), "/app");
  EXPECT_EQ(InVm(vm, "echo \"$GREETING\""), "hello oci");
  EXPECT_EQ(InVm(vm, "cat hello.txt"), "hello from layer 2");
  EXPECT_EQ(InVm(vm, "test -e /etc/gone && echo present || echo whiteout-applied"),
            "whiteout-applied");
  Timing("oci", build_ms, boot_ms, -1);

  // Tags: a second name; removing one name keeps the image.
  auto tagged = Manager().tag_image("oci-test:v1", "oci-test:stable");
  ASSERT_TRUE(tagged.ok()) << tagged.status();
  EXPECT_EQ(tagged->names_size(), 2);
  auto untagged = Manager().delete_image("oci-test:stable");
  ASSERT_TRUE(untagged.ok()) << untagged.status();
  EXPECT_FALSE(*untagged) << "removing one of two names deleted the image";
  // In use by the VM: its last name cannot go.
  auto refused = Manager().delete_image("oci-test:v1");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "vm:oci")) << refused.status();
  ASSERT_TRUE(vm.close().ok());
  auto deleted = Manager().delete_image("oci-test:v1");
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_TRUE(*deleted);
  EXPECT_FALSE(fs::exists(daemon_->state_dir() + "/images/sha256-" +
                          image->digest().substr(7)));
  EXPECT_EQ(Manager().get_image("oci-test:v1").status().code(), absl::StatusCode::kNotFound);
}

// A root filesystem directory on the host becomes an image.
TEST_F(ImageTest, DirectoryImageBoots) {
  const std::string tree = daemon_->dir() + "/tree";
  MakeBusyboxTree(tree);
  std::ofstream(tree + "/marker") << "from a directory\n";
  v1::BuildImageRequest request;
  request.set_name("dir-test");
  request.set_directory(tree);
  absl::Time t0 = absl::Now();
  auto image = Build(request);
  ASSERT_TRUE(image.ok()) << image.status();
  const int64_t build_ms = Ms(t0);
  t0 = absl::Now();
  SmolVM vm(SmallVm("dir", "dir-test"), daemon_->client_options());
  ASSERT_TRUE(vm.start().ok());
  const int64_t boot_ms = Ms(t0);
  EXPECT_EQ(InVm(vm, "cat /marker"), "from a directory");
  // Packages need room: a VM can ask for a bigger disk than its image's.
  EXPECT_TRUE(vm.close().ok());
  v1::VMConfig big = SmallVm("dir-big", "dir-test");
  big.set_disk_size_mib(2048);
  SmolVM grown(big, daemon_->client_options());
  ASSERT_TRUE(grown.start().ok());
  const std::string df = InVm(grown, "df -m / | tail -1");
  std::vector<std::string> cols = absl::StrSplit(df, ' ', absl::SkipEmpty());
  ASSERT_GE(cols.size(), 2u) << df;
  EXPECT_GT(std::stoi(cols[1]), 1800) << df;
  EXPECT_TRUE(grown.close().ok());
  v1::VMConfig small = SmallVm("dir-small", "dir-test");
  small.set_disk_size_mib(64);
  SmolVM too_small(small, daemon_->client_options());
  EXPECT_EQ(too_small.start().code(), absl::StatusCode::kInvalidArgument);
  Timing("directory", build_ms, boot_ms, -1);
}

// Bad input: clear errors with the right codes, nothing registered, no
// build files left.
TEST_F(ImageTest, BadInputLeavesNothing) {
  auto before = Manager().list_images();
  ASSERT_TRUE(before.ok()) << before.status();
  const size_t count = before->size();
  auto code_of = [](const v1::BuildImageRequest& r) { return Build(r).status(); };

  v1::BuildImageRequest bad_name;
  bad_name.set_name("Bad Name!");
  bad_name.set_minimal(true);
  EXPECT_EQ(code_of(bad_name).code(), absl::StatusCode::kInvalidArgument);

  v1::BuildImageRequest no_source;
  no_source.set_name("nosource");
  EXPECT_EQ(code_of(no_source).code(), absl::StatusCode::kInvalidArgument);

  v1::BuildImageRequest missing_dir;
  missing_dir.set_name("missing-dir");
  missing_dir.set_directory(daemon_->dir() + "/no/such/dir");
  EXPECT_EQ(code_of(missing_dir).code(), absl::StatusCode::kNotFound);

  const std::string corrupt = daemon_->dir() + "/corrupt.tar";
  std::ofstream(corrupt) << std::string(5000, 'x');
  v1::BuildImageRequest bad_tar;
  bad_tar.set_name("corrupt");
  bad_tar.mutable_oci()->set_path(corrupt);
  auto s = code_of(bad_tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  v1::BuildImageRequest bad_rootfs_tar;
  bad_rootfs_tar.set_name("corrupt-rootfs");
  bad_rootfs_tar.set_tarball(corrupt);
  s = code_of(bad_rootfs_tar);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  v1::BuildImageRequest bad_package;
  bad_package.set_name("nopkg");
  bad_package.mutable_debian()->add_packages("smolvm-no-such-package");
  s = code_of(bad_package);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "smolvm-no-such-package")) << s;

  v1::BuildImageRequest bad_suite;
  bad_suite.set_name("nosuite");
  bad_suite.mutable_debian()->set_suite("smolvm-no-such-suite");
  s = code_of(bad_suite);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  v1::BuildImageRequest builtin;
  builtin.set_name("minimal");  // Taken (built in, or built by another test).
  builtin.set_minimal(true);
  auto built_in = Manager().get_image("minimal");
  if (built_in.ok()) {
    EXPECT_EQ(code_of(builtin).code(), absl::StatusCode::kAlreadyExists);
  }
  ExpectNothingHalfBuilt(count);

  // An unknown image for a VM is NOT_FOUND, and no VM is left.
  SmolVM vm(SmallVm("noimage", "no-such-image"), daemon_->client_options());
  EXPECT_EQ(vm.start().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Manager().get_vm("noimage").status().code(), absl::StatusCode::kNotFound);
}

// A build the daemon did not finish (killed mid-build) leaves a tmp dir;
// the next start removes it and registers nothing.
TEST_F(ImageTest, InterruptedBuildIsCleanedAtStart) {
  v1::BuildImageRequest request;
  request.set_name("interrupted");
  request.set_directory(daemon_->dir() + "/tree-int");
  MakeBusyboxTree(daemon_->dir() + "/tree-int");
  // A deadline far shorter than the build: the client goes away, the
  // daemon stops the build.
  ClientOptions opts = daemon_->client_options();
  opts.timeout = absl::Milliseconds(300);
  auto cancelled = SmolVMManager(opts).build_image(request);
  EXPECT_FALSE(cancelled.ok());
  // Give the daemon time to notice and clean up.
  for (int i = 0; i < 100 && Manager().get_image("interrupted").ok(); ++i) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  absl::SleepFor(absl::Seconds(3));
  EXPECT_EQ(Manager().get_image("interrupted").status().code(), absl::StatusCode::kNotFound);
  // A leftover build dir (what a kill -9 mid-build leaves) goes at start.
  const std::string leftover = daemon_->state_dir() + "/images/tmp/build-leftover";
  fs::create_directories(leftover + "/rootfs/etc");
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_TRUE(daemon_->Start({"--default-image", "debian-python"}).ok()) << daemon_->DaemonLog();
  EXPECT_FALSE(fs::exists(leftover));
}

}  // namespace
}  // namespace smolvm::testing
