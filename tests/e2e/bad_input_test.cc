// Bad input and failures through the real daemon, using the raw generated
// gRPC stubs (only the names of the API contract): the right status code, a
// message that names the fix, nothing left half-created, and the daemon
// still serving afterwards.
#include <filesystem>
#include <fstream>

#include "client/smolvm.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"
#include "smolvm/v1/vm_service.grpc.pb.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

using grpc::StatusCode;

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    // Named image files must come from an allow-listed directory.
    std::filesystem::create_directories(ImageDir());
    auto s = daemon_->Start({}, "[images]\nallowed_dirs = [\"" + ImageDir() + "\"]\n");
    ASSERT_TRUE(s.ok()) << s;
    auto channel = grpc::CreateChannel("unix:" + daemon_->socket_path(),
                                       grpc::InsecureChannelCredentials());
    vms_ = v1::VmService::NewStub(channel).release();
    snaps_ = v1::SnapshotService::NewStub(channel).release();
  }
  static void TearDownTestSuite() {
    delete vms_;
    delete snaps_;
    delete daemon_;
  }
  void TearDown() override {
    // The daemon survived the case and nothing was left half-created.
    v1::ListVmsResponse list;
    grpc::ClientContext ctx;
    ASSERT_TRUE(vms_->ListVms(&ctx, v1::ListVmsRequest(), &list).ok());
    for (const auto& vm : list.vms()) Delete(vm.vm_id());
    EXPECT_TRUE(daemon_->QemuPids().empty());
    namespace fs = std::filesystem;
    for (const char* sub : {"/vms", "/snapshots"}) {
      std::string dir = daemon_->state_dir() + sub;
      if (fs::exists(dir)) {
        EXPECT_TRUE(fs::is_empty(dir)) << dir;
      }
    }
  }

  static std::string ImageDir() { return daemon_->dir() + "/images"; }
  static grpc::Status Create(const v1::VMConfig& config, bool start, v1::Vm* out = nullptr) {
    grpc::ClientContext ctx;
    v1::CreateVmRequest req;
    *req.mutable_config() = config;
    req.set_start(start);
    v1::Vm vm;
    auto s = vms_->CreateVm(&ctx, req, &vm);
    if (out) *out = vm;
    return s;
  }
  static v1::VMConfig Config(const std::string& id) {
    v1::VMConfig c;
    c.set_vm_id(id);
    return c;
  }
  static grpc::Status Get(const std::string& id, v1::Vm* out = nullptr) {
    grpc::ClientContext ctx;
    v1::GetVmRequest req;
    req.set_vm_id(id);
    v1::Vm vm;
    auto s = vms_->GetVm(&ctx, req, &vm);
    if (out) *out = vm;
    return s;
  }
  static grpc::Status Delete(const std::string& id) {
    grpc::ClientContext ctx;
    v1::DeleteVmRequest req;
    req.set_vm_id(id);
    v1::DeleteVmResponse resp;
    return vms_->DeleteVm(&ctx, req, &resp);
  }
  static grpc::Status Snapshot(const std::string& vm_id, const std::string& snap_id) {
    grpc::ClientContext ctx;
    v1::CreateSnapshotRequest req;
    req.set_vm_id(vm_id);
    req.set_snapshot_id(snap_id);
    v1::SnapshotInfo info;
    return snaps_->CreateSnapshot(&ctx, req, &info);
  }
  static grpc::Status Restore(const std::string& snap_id, const std::string& vm_id) {
    grpc::ClientContext ctx;
    v1::RestoreSnapshotRequest req;
    req.set_snapshot_id(snap_id);
    req.set_vm_id(vm_id);
    req.set_resume_vm(true);
    v1::Vm vm;
    return snaps_->RestoreSnapshot(&ctx, req, &vm);
  }

  static TestDaemon* daemon_;
  static v1::VmService::Stub* vms_;
  static v1::SnapshotService::Stub* snaps_;
};
TestDaemon* BadInputTest::daemon_ = nullptr;
v1::VmService::Stub* BadInputTest::vms_ = nullptr;
v1::SnapshotService::Stub* BadInputTest::snaps_ = nullptr;

TEST_F(BadInputTest, InvalidIdsAreRejectedWithTheRule) {
  for (const std::string& id : std::vector<std::string>{"../x", "UPPER", "-lead", "trail-", "a_b", "a/b", "a b",
                               std::string(65, 'a'), std::string("nul\0x", 5)}) {
    auto s = Create(Config(id), false);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_NE(s.error_message().find("lowercase letters, digits and hyphens"),
              std::string::npos) << s.error_message();
    EXPECT_EQ(Get(id).error_code(), StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_EQ(Snapshot("ok-vm", id).error_code(), StatusCode::INVALID_ARGUMENT) << id;
    EXPECT_EQ(Restore(id, "").error_code(), StatusCode::INVALID_ARGUMENT) << id;
  }
  EXPECT_EQ(Get("").error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_FALSE(std::filesystem::exists(daemon_->state_dir() + "/x"));
}

TEST_F(BadInputTest, OutOfRangeResources) {
  auto c = Config("range");
  c.set_vcpu_count(33);
  auto s = Create(c, false);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("1-32"), std::string::npos) << s.error_message();
  c.set_vcpu_count(2);
  c.set_memory_mib(64);
  s = Create(c, false);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("128-16384"), std::string::npos) << s.error_message();
  c.set_memory_mib(16385);
  EXPECT_EQ(Create(c, false).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get("range").error_code(), StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, MissingImageFiles) {
  auto c = Config("nofile");
  const std::string missing = ImageDir() + "/nonexistent-vmlinuz";
  c.set_kernel_path(missing);
  auto s = Create(c, true);
  EXPECT_EQ(s.error_code(), StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_NE(s.error_message().find(missing), std::string::npos) << s.error_message();
  // Outside the allowed directories it does not matter whether it exists.
  c.set_kernel_path("/nonexistent/vmlinuz");
  s = Create(c, true);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("allowed_dirs"), std::string::npos) << s.error_message();
  c.clear_kernel_path();
  c.set_rootfs_path("relative/rootfs.ext4");
  EXPECT_EQ(Create(c, true).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Get("nofile").error_code(), StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, UnknownIdsAreNotFound) {
  EXPECT_EQ(Get("no-such-vm").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete("no-such-vm").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Snapshot("no-such-vm", "s1").error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Restore("no-such-snap", "").error_code(), StatusCode::NOT_FOUND);
  grpc::ClientContext ctx;
  v1::GetSnapshotRequest req;
  req.set_snapshot_id("no-such-snap");
  v1::SnapshotInfo info;
  EXPECT_EQ(snaps_->GetSnapshot(&ctx, req, &info).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, DuplicatesAndWrongStates) {
  v1::Vm vm;
  ASSERT_TRUE(Create(Config("twice"), false, &vm).ok());
  EXPECT_EQ(vm.status(), v1::CREATED);
  EXPECT_EQ(Create(Config("twice"), false).error_code(), StatusCode::ALREADY_EXISTS);
  // A CREATED VM cannot be snapshotted, paused, resumed or stopped.
  auto s = Snapshot("twice", "snap-of-created");
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("start it first"), std::string::npos) << s.error_message();
  grpc::ClientContext c1, c2, c3;
  v1::PauseVmRequest p;
  p.set_vm_id("twice");
  v1::ResumeVmRequest r;
  r.set_vm_id("twice");
  v1::StopVmRequest st;
  st.set_vm_id("twice");
  EXPECT_EQ(vms_->PauseVm(&c1, p, &vm).error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(vms_->ResumeVm(&c2, r, &vm).error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(vms_->StopVm(&c3, st, &vm).error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_FALSE(std::filesystem::exists(daemon_->state_dir() + "/snapshots/snap-of-created"));
  EXPECT_TRUE(Delete("twice").ok());
  EXPECT_EQ(Get("twice").error_code(), StatusCode::NOT_FOUND);
}

TEST_F(BadInputTest, InvalidPageTokens) {
  grpc::ClientContext ctx;
  v1::ListVmsRequest req;
  req.set_page_token("../../etc");
  v1::ListVmsResponse resp;
  EXPECT_EQ(vms_->ListVms(&ctx, req, &resp).error_code(), StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext ctx2;
  req.set_page_token("");
  req.set_page_size(-1);
  EXPECT_EQ(vms_->ListVms(&ctx2, req, &resp).error_code(), StatusCode::INVALID_ARGUMENT);
}

// A QEMU whose guest dies at boot: ERROR with the console tail, VMM gone.
TEST_F(BadInputTest, GuestThatDiesAtBootIsErrorWithConsoleTail) {
  std::string garbage = ImageDir() + "/garbage.img";
  {
    std::ofstream f(garbage, std::ios::binary);
    std::string junk(8 << 20, 'x');
    f.write(junk.data(), junk.size());
  }
  auto c = Config("dies");
  c.set_rootfs_path(garbage);
  c.set_memory_mib(128);
  c.set_vcpu_count(1);
  auto s = Create(c, true);
  EXPECT_EQ(s.error_code(), StatusCode::INTERNAL) << s.error_message();
  EXPECT_NE(s.error_message().find("console tail"), std::string::npos) << s.error_message();
  v1::Vm vm;
  ASSERT_TRUE(Get("dies", &vm).ok());
  EXPECT_EQ(vm.status(), v1::ERROR);
  EXPECT_NE(vm.error().find("smolvm-initramfs"), std::string::npos) << vm.error();
  EXPECT_EQ(vm.vmm_pid(), 0);
  EXPECT_TRUE(daemon_->QemuPids().empty());
  EXPECT_FALSE(std::filesystem::exists(daemon_->run_dir() + "/vms/dies"));
}

}  // namespace
}  // namespace smolvm::testing
