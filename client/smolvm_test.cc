// Tests of SmolVM / SmolVMManager / Connection against an in-process fake
// smolvmd (both services, in memory) on a temporary Unix socket. The fake
// follows the state rules documented in proto/smolvm/v1/*.proto just far
// enough to check that each SDK method sends the right RPC and handles the
// answer; the real daemon is covered by the e2e tests in tests/.

#include "client/smolvm.h"

#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/status.h"
#include "tests/testing/temp_dir.h"

namespace smolvm {
namespace {

constexpr int kFakePageSize = 2;  // Small, so that lists take several pages.

// FakeDaemon implements both services over two maps.
class FakeDaemon final : public v1::VmService::Service,
                         public v1::SnapshotService::Service {
 public:
  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest* req,
                        v1::Vm* resp) override {
    absl::MutexLock lock(&mu_);
    last_create_ = *req;
    v1::Vm vm;
    *vm.mutable_config() = req->config();
    vm.set_vm_id(req->config().vm_id().empty()
                     ? absl::StrCat("vm-", ++generated_)
                     : req->config().vm_id());
    if (vms_.count(vm.vm_id())) {
      return grpc::Status(
          grpc::StatusCode::ALREADY_EXISTS,
          absl::StrCat("create vm ", vm.vm_id(), ": already exists"));
    }
    vm.mutable_config()->set_vm_id(vm.vm_id());
    vm.set_status(req->start() ? v1::RUNNING : v1::CREATED);
    *resp = vms_[vm.vm_id()] = vm;
    return grpc::Status::OK;
  }
  grpc::Status StartVm(grpc::ServerContext*, const v1::StartVmRequest* req,
                       v1::Vm* resp) override {
    ++start_calls_;
    return Transition(req->vm_id(), {v1::CREATED, v1::STOPPED, v1::ERROR},
                      v1::RUNNING, resp);
  }
  grpc::Status StopVm(grpc::ServerContext*, const v1::StopVmRequest* req,
                      v1::Vm* resp) override {
    return Transition(req->vm_id(), {v1::RUNNING, v1::PAUSED}, v1::STOPPED,
                      resp);
  }
  grpc::Status PauseVm(grpc::ServerContext*, const v1::PauseVmRequest* req,
                       v1::Vm* resp) override {
    return Transition(req->vm_id(), {v1::RUNNING}, v1::PAUSED, resp);
  }
  grpc::Status ResumeVm(grpc::ServerContext*, const v1::ResumeVmRequest* req,
                        v1::Vm* resp) override {
    return Transition(req->vm_id(), {v1::PAUSED}, v1::RUNNING, resp);
  }
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest* req,
                        v1::DeleteVmResponse*) override {
    absl::MutexLock lock(&mu_);
    ++delete_calls_;
    if (vms_.erase(req->vm_id()) == 0) return NotFound("vm", req->vm_id());
    return grpc::Status::OK;
  }
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest* req,
                     v1::Vm* resp) override {
    if (req->vm_id() == "busy") {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "get vm busy: qmp not up yet");
    }
    if (req->vm_id() == "slow") absl::SleepFor(absl::Milliseconds(300));
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(req->vm_id());
    if (it == vms_.end()) return NotFound("vm", req->vm_id());
    *resp = it->second;
    return grpc::Status::OK;
  }
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest* req,
                       v1::ListVmsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (auto it = vms_.upper_bound(req->page_token()); it != vms_.end();
         ++it) {
      if (n++ == kFakePageSize) {
        resp->set_next_page_token(resp->vms().rbegin()->vm_id());
        break;
      }
      *resp->add_vms() = it->second;
    }
    return grpc::Status::OK;
  }

  grpc::Status CreateSnapshot(grpc::ServerContext*,
                              const v1::CreateSnapshotRequest* req,
                              v1::SnapshotInfo* resp) override {
    absl::MutexLock lock(&mu_);
    auto vm = vms_.find(req->vm_id());
    if (vm == vms_.end()) return NotFound("vm", req->vm_id());
    if (vm->second.status() != v1::RUNNING &&
        vm->second.status() != v1::PAUSED) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "snapshot vm: not running");
    }
    vm->second.set_status(req->resume_source() ? v1::RUNNING : v1::PAUSED);
    v1::SnapshotInfo info;
    info.set_snapshot_id(req->snapshot_id().empty()
                             ? absl::StrCat("snap-", ++generated_)
                             : req->snapshot_id());
    info.set_vm_id(req->vm_id());
    *info.mutable_vm_config() = vm->second.config();
    info.set_snapshot_path("/state/snapshots/" + info.snapshot_id() +
                           "/vmstate.bin");
    *resp = snapshots_[info.snapshot_id()] = info;
    return grpc::Status::OK;
  }
  grpc::Status GetSnapshot(grpc::ServerContext*,
                           const v1::GetSnapshotRequest* req,
                           v1::SnapshotInfo* resp) override {
    absl::MutexLock lock(&mu_);
    auto it = snapshots_.find(req->snapshot_id());
    if (it == snapshots_.end()) return NotFound("snapshot", req->snapshot_id());
    *resp = it->second;
    return grpc::Status::OK;
  }
  grpc::Status ListSnapshots(grpc::ServerContext*,
                             const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (auto it = snapshots_.upper_bound(req->page_token());
         it != snapshots_.end(); ++it) {
      if (!req->vm_id().empty() && it->second.vm_id() != req->vm_id()) {
        continue;
      }
      if (n++ == kFakePageSize) {
        resp->set_next_page_token(resp->snapshots().rbegin()->snapshot_id());
        break;
      }
      *resp->add_snapshots() = it->second;
    }
    return grpc::Status::OK;
  }
  grpc::Status DeleteSnapshot(grpc::ServerContext*,
                              const v1::DeleteSnapshotRequest* req,
                              v1::DeleteSnapshotResponse*) override {
    absl::MutexLock lock(&mu_);
    if (snapshots_.erase(req->snapshot_id()) == 0) {
      return NotFound("snapshot", req->snapshot_id());
    }
    return grpc::Status::OK;
  }
  grpc::Status RestoreSnapshot(grpc::ServerContext*,
                               const v1::RestoreSnapshotRequest* req,
                               v1::Vm* resp) override {
    absl::MutexLock lock(&mu_);
    auto snap = snapshots_.find(req->snapshot_id());
    if (snap == snapshots_.end()) {
      return NotFound("snapshot", req->snapshot_id());
    }
    const std::string id =
        req->vm_id().empty() ? snap->second.vm_id() : req->vm_id();
    if (auto it = vms_.find(id);
        it != vms_.end() && (it->second.status() == v1::RUNNING ||
                             it->second.status() == v1::PAUSED)) {
      return grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("restore snapshot: vm ", id, " is live"));
    }
    v1::Vm vm;
    vm.set_vm_id(id);
    *vm.mutable_config() = snap->second.vm_config();
    vm.mutable_config()->set_vm_id(id);
    vm.set_status(req->resume_vm() ? v1::RUNNING : v1::PAUSED);
    vm.set_restored_from_snapshot_id(req->snapshot_id());
    snap->second.set_restored(true);
    snap->second.set_restored_vm_id(id);
    *resp = vms_[id] = vm;
    return grpc::Status::OK;
  }

  // Test access.
  void PutVm(const v1::Vm& vm) {
    absl::MutexLock lock(&mu_);
    vms_[vm.vm_id()] = vm;
  }
  void EraseVm(const std::string& id) {
    absl::MutexLock lock(&mu_);
    vms_.erase(id);
  }
  bool HasVm(const std::string& id) {
    absl::MutexLock lock(&mu_);
    return vms_.count(id) > 0;
  }
  v1::CreateVmRequest last_create() {
    absl::MutexLock lock(&mu_);
    return last_create_;
  }
  int delete_calls() {
    absl::MutexLock lock(&mu_);
    return delete_calls_;
  }
  int start_calls() const { return start_calls_; }

 private:
  static grpc::Status NotFound(const std::string& kind, const std::string& id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("get ", kind, " ", id, ": not found"));
  }
  grpc::Status Transition(const std::string& id,
                          std::initializer_list<v1::VmStatus> from,
                          v1::VmStatus to, v1::Vm* resp) {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(id);
    if (it == vms_.end()) return NotFound("vm", id);
    if (std::find(from.begin(), from.end(), it->second.status()) ==
        from.end()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("vm ", id, " is ",
                                       v1::VmStatus_Name(it->second.status())));
    }
    it->second.set_status(to);
    *resp = it->second;
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::map<std::string, v1::Vm> vms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::SnapshotInfo> snapshots_ ABSL_GUARDED_BY(mu_);
  v1::CreateVmRequest last_create_ ABSL_GUARDED_BY(mu_);
  int generated_ ABSL_GUARDED_BY(mu_) = 0;
  int delete_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::atomic<int> start_calls_{0};
};

class SmolVMTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.socket_path = dir_ + "/smolvmd.sock";
    options_.timeout = absl::Seconds(30);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + options_.socket_path,
                             grpc::InsecureServerCredentials());
    builder.RegisterService(static_cast<v1::VmService::Service*>(&daemon_));
    builder.RegisterService(
        static_cast<v1::SnapshotService::Service*>(&daemon_));
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  void TearDown() override {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(5));
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  v1::Vm MakeVm(const std::string& id, v1::VmStatus status) {
    v1::Vm vm;
    vm.set_vm_id(id);
    vm.set_status(status);
    daemon_.PutVm(vm);
    return vm;
  }

  smolvm_testing::TempDir temp_{"smolvm-client-test"};

  std::string dir_ = temp_.path();
  ClientOptions options_;
  FakeDaemon daemon_;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(SmolVMTest, StartSnapshotCloseFlow) {
  v1::VMConfig config;
  config.set_vcpu_count(2);
  config.set_memory_mib(256);
  SmolVM vm(config, options_);
  EXPECT_EQ(vm.vm_id(), "");
  EXPECT_EQ(vm.status(), v1::VM_STATUS_UNSPECIFIED);

  ASSERT_TRUE(vm.start().ok());
  EXPECT_TRUE(daemon_.last_create().start());
  EXPECT_EQ(daemon_.last_create().config().memory_mib(), 256u);
  EXPECT_EQ(vm.vm_id(), "vm-1");
  EXPECT_EQ(vm.status(), v1::RUNNING);
  EXPECT_EQ(vm.info().config().vcpu_count(), 2u);

  absl::StatusOr<v1::SnapshotInfo> snap = vm.snapshot("my-checkpoint");
  ASSERT_TRUE(snap.ok()) << snap.status();
  EXPECT_EQ(snap->snapshot_id(), "my-checkpoint");
  EXPECT_EQ(snap->vm_id(), "vm-1");
  EXPECT_EQ(vm.status(), v1::PAUSED);

  ASSERT_TRUE(vm.close().ok());
  EXPECT_FALSE(daemon_.HasVm("vm-1"));
  EXPECT_EQ(vm.status(), v1::VM_STATUS_UNSPECIFIED);
  EXPECT_EQ(vm.vm_id(), "vm-1");
  ASSERT_TRUE(vm.close().ok());  // Idempotent, and sends nothing.
  EXPECT_EQ(daemon_.delete_calls(), 1);
  EXPECT_EQ(vm.pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(vm.start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SmolVMTest, SnapshotWithResumeKeepsRunning) {
  SmolVM vm({}, options_);
  ASSERT_TRUE(vm.start().ok());
  ASSERT_TRUE(vm.snapshot("", /*resume_source=*/true).ok());
  EXPECT_EQ(vm.status(), v1::RUNNING);
  ASSERT_TRUE(vm.refresh().ok());
  EXPECT_EQ(vm.status(), v1::RUNNING);
}

TEST_F(SmolVMTest, StartAfterStopUsesStartVm) {
  SmolVM vm({}, options_);
  ASSERT_TRUE(vm.start().ok());
  ASSERT_TRUE(vm.pause().ok());
  EXPECT_EQ(vm.status(), v1::PAUSED);
  ASSERT_TRUE(vm.resume().ok());
  EXPECT_EQ(vm.status(), v1::RUNNING);
  ASSERT_TRUE(vm.stop().ok());
  EXPECT_EQ(vm.status(), v1::STOPPED);
  ASSERT_TRUE(vm.start().ok());
  EXPECT_EQ(daemon_.start_calls(), 1);
  EXPECT_EQ(vm.status(), v1::RUNNING);
  EXPECT_EQ(vm.vm_id(), "vm-1");
}

TEST_F(SmolVMTest, MethodsNeedAStartedVm) {
  SmolVM vm({}, options_);
  EXPECT_EQ(vm.pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(vm.snapshot("x").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(vm.refresh().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(vm.close().ok());
  EXPECT_EQ(daemon_.delete_calls(), 0);
}

TEST_F(SmolVMTest, CloseTreatsNotFoundAsDone) {
  MakeVm("gone", v1::RUNNING);
  absl::StatusOr<SmolVM> vm = SmolVM::attach("gone", options_);
  ASSERT_TRUE(vm.ok()) << vm.status();
  daemon_.EraseVm("gone");
  EXPECT_TRUE(vm->close().ok());
}

TEST_F(SmolVMTest, DaemonErrorsKeepCodeAndMessage) {
  MakeVm("taken", v1::RUNNING);
  v1::VMConfig config;
  config.set_vm_id("taken");
  SmolVM vm(config, options_);
  absl::Status s = vm.start();
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(s.message(), "create vm taken: already exists");
  EXPECT_EQ(vm.vm_id(), "");  // Nothing recorded on failure.

  MakeVm("off", v1::STOPPED);
  absl::StatusOr<SmolVM> off = SmolVM::attach("off", options_);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->pause().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(off->status(), v1::STOPPED);  // Cache unchanged on failure.
}

TEST_F(SmolVMTest, AttachUnknownIsNotFound) {
  absl::StatusOr<SmolVM> vm = SmolVM::attach("nope", options_);
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ExitCodeFor(vm.status()), 3);
}

TEST_F(SmolVMTest, FromSnapshotRestoresIdentityOrClones) {
  SmolVM source({}, options_);
  ASSERT_TRUE(source.start().ok());
  ASSERT_TRUE(source.snapshot("ckpt").ok());

  // The source is still PAUSED, so its identity is taken.
  EXPECT_EQ(SmolVM::from_snapshot("ckpt", true, "", options_).status().code(),
            absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<SmolVM> clone =
      SmolVM::from_snapshot("ckpt", /*resume_vm=*/false, "clone-1", options_);
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_EQ(clone->vm_id(), "clone-1");
  EXPECT_EQ(clone->status(), v1::PAUSED);
  EXPECT_EQ(clone->info().restored_from_snapshot_id(), "ckpt");

  ASSERT_TRUE(source.close().ok());
  absl::StatusOr<SmolVM> restored =
      SmolVM::from_snapshot("ckpt", true, "", options_);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ(restored->vm_id(), source.vm_id());
  EXPECT_EQ(restored->status(), v1::RUNNING);
  ASSERT_TRUE(restored->refresh().ok());  // Its connection moved along.
  SmolVM moved = *std::move(restored);
  EXPECT_TRUE(moved.close().ok());
}

TEST_F(SmolVMTest, ManagerFollowsAllPages) {
  for (const char* id : {"a", "b", "c", "d", "e"}) MakeVm(id, v1::RUNNING);
  SmolVMManager manager(options_);
  absl::StatusOr<std::vector<v1::Vm>> vms = manager.list_vms();
  ASSERT_TRUE(vms.ok()) << vms.status();
  std::vector<std::string> ids;
  for (const v1::Vm& vm : *vms) ids.push_back(vm.vm_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"a", "b", "c", "d", "e"}));

  absl::StatusOr<SmolVM> a = SmolVM::attach("a", options_);
  absl::StatusOr<SmolVM> b = SmolVM::attach("b", options_);
  ASSERT_TRUE(a.ok() && b.ok());
  for (const char* id : {"s1", "s2", "s3"}) ASSERT_TRUE(a->snapshot(id).ok());
  ASSERT_TRUE(b->snapshot("s4").ok());
  absl::StatusOr<std::vector<v1::SnapshotInfo>> all = manager.list_snapshots();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 4u);
  absl::StatusOr<std::vector<v1::SnapshotInfo>> of_a =
      manager.list_snapshots("a");
  ASSERT_TRUE(of_a.ok());
  EXPECT_EQ(of_a->size(), 3u);

  absl::StatusOr<v1::SnapshotInfo> s4 = manager.get_snapshot("s4");
  ASSERT_TRUE(s4.ok()) << s4.status();
  EXPECT_EQ(s4->vm_id(), "b");
  absl::StatusOr<v1::Vm> c = manager.get_vm("c");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->status(), v1::RUNNING);
  EXPECT_TRUE(manager.delete_snapshot("s4").ok());
  EXPECT_EQ(manager.delete_snapshot("s4").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(manager.get_snapshot("s4").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SmolVMTest, DaemonUnavailableHasNoSocketHint) {
  absl::StatusOr<v1::Vm> vm = SmolVMManager(options_).get_vm("busy");
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(vm.status().message(), "get vm busy: qmp not up yet");
}

TEST_F(SmolVMTest, DeadlineApplies) {
  ClientOptions options = options_;
  options.timeout = absl::Milliseconds(50);
  absl::StatusOr<v1::Vm> vm = SmolVMManager(options).get_vm("slow");
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ConnectionTest, MissingDaemonSaysSoWithSocketPath) {
  ClientOptions options;
  options.socket_path = "/nonexistent/smolvmd-test/smolvmd.sock";
  absl::StatusOr<std::vector<v1::Vm>> vms = SmolVMManager(options).list_vms();
  ASSERT_EQ(vms.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(
      vms.status().message().find("is smolvmd running? socket "
                                  "/nonexistent/smolvmd-test/smolvmd.sock"),
      absl::string_view::npos)
      << vms.status();
  EXPECT_EQ(ExitCodeFor(vms.status()), 7);
}

TEST(ConnectionTest, SocketPathResolution) {
  const char* saved = std::getenv(kSocketEnvVar);
  const std::string saved_value = saved ? saved : "";
  unsetenv(kSocketEnvVar);
  EXPECT_EQ(ResolveSocketPath(""), "/run/smolvmd/smolvmd.sock");
  setenv(kSocketEnvVar, "", 1);
  EXPECT_EQ(ResolveSocketPath(""), "/run/smolvmd/smolvmd.sock");
  setenv(kSocketEnvVar, "/tmp/env.sock", 1);
  EXPECT_EQ(ResolveSocketPath(""), "/tmp/env.sock");
  EXPECT_EQ(ResolveSocketPath("/tmp/flag.sock"), "/tmp/flag.sock");
  EXPECT_EQ(Connection(ClientOptions{}).socket_path(), "/tmp/env.sock");
  if (saved) {
    setenv(kSocketEnvVar, saved_value.c_str(), 1);
  } else {
    unsetenv(kSocketEnvVar);
  }
}

}  // namespace
}  // namespace smolvm
