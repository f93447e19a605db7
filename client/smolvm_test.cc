// Tests of SmolVM / SmolVMManager / Connection against an in-process fake
// smolvmd (both services, in memory) on a temporary Unix socket. The fake
// follows the state rules documented in proto/smolvm/v1/*.proto just far
// enough to check that each SDK method sends the right RPC and handles the
// answer; the real daemon is covered by the e2e tests in tests/. The
// SmolvmctlTest cases run the smolvmctl binary against the same fake.

#include "client/smolvm.h"

#include <fcntl.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/status.h"
#include "client/test_env.h"
#include "tests/testing/temp_dir.h"

extern char** environ;

namespace smolvm {
namespace {

constexpr int kFakePageSize = 2;  // Small, so that lists take several pages.

using ::smolvm::client_testing::NoClientEnv;
using ::smolvm::client_testing::ScopedEnv;

// FakeDaemon implements both services over two maps.
class FakeDaemon final : public v1::VmService::Service,
                         public v1::SnapshotService::Service {
 public:
  grpc::Status CreateVm(grpc::ServerContext* ctx,
                        const v1::CreateVmRequest* req, v1::Vm* resp) override {
    RecordTenant(ctx);
    absl::MutexLock lock(&mu_);
    last_create_ = *req;
    ++create_calls_;
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
  grpc::Status GetVm(grpc::ServerContext* ctx, const v1::GetVmRequest* req,
                     v1::Vm* resp) override {
    RecordTenant(ctx);
    if (req->vm_id() == "busy") {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "get vm busy: qmp not up yet");
    }
    if (req->vm_id() == "evil") {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          "get vm evil: console says \x1b[2J\x1b]0;owned\x07"
                          "\r\ngone");
    }
    if (req->vm_id() == "slow") absl::SleepFor(absl::Milliseconds(300));
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(req->vm_id());
    if (it == vms_.end()) return NotFound("vm", req->vm_id());
    *resp = it->second;
    return grpc::Status::OK;
  }
  grpc::Status ListVms(grpc::ServerContext* ctx, const v1::ListVmsRequest* req,
                       v1::ListVmsResponse* resp) override {
    RecordTenant(ctx);
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
  grpc::Status ListSnapshots(grpc::ServerContext* ctx,
                             const v1::ListSnapshotsRequest* req,
                             v1::ListSnapshotsResponse* resp) override {
    RecordTenant(ctx);
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

  // ForkSnapshot names clones <prefix>-<n> (<snapshot>-fork-<n> without a
  // prefix) and gives clone n the address 10.0.0.<n+1>. A clone whose id
  // exists fails with ALREADY_EXISTS; SetForkFailure scripts other outcomes.
  grpc::Status ForkSnapshot(grpc::ServerContext*,
                            const v1::ForkSnapshotRequest* req,
                            v1::ForkSnapshotResponse* resp) override {
    absl::MutexLock lock(&mu_);
    last_fork_ = *req;
    auto snap = snapshots_.find(req->snapshot_id());
    if (snap == snapshots_.end()) {
      return NotFound("snapshot", req->snapshot_id());
    }
    if (req->count() < 1 || req->count() > 128) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "fork snapshot: count must be 1-128");
    }
    const std::string prefix = req->vm_id_prefix().empty()
                                   ? req->snapshot_id() + "-fork"
                                   : req->vm_id_prefix();
    for (uint32_t n = 1; n <= req->count(); ++n) {
      v1::ForkResult* result = resp->add_results();
      result->set_vm_id(absl::StrCat(prefix, "-", n));
      if (auto it = fork_failures_.find(result->vm_id());
          it != fork_failures_.end()) {
        result->set_error_code(it->second.first);
        result->set_error_message(it->second.second);
        continue;
      }
      if (vms_.count(result->vm_id())) {
        result->set_error_code(grpc::StatusCode::ALREADY_EXISTS);
        result->set_error_message(
            absl::StrCat("fork: vm ", result->vm_id(), " already exists"));
        continue;
      }
      v1::Vm vm;
      vm.set_vm_id(result->vm_id());
      *vm.mutable_config() = snap->second.vm_config();
      vm.mutable_config()->set_vm_id(vm.vm_id());
      vm.set_status(req->resume_vm() ? v1::RUNNING : v1::PAUSED);
      vm.set_restored_from_snapshot_id(req->snapshot_id());
      v1::NetworkConfig* net = vm.mutable_network();
      net->set_guest_ip(absl::StrCat("10.0.0.", n + 1));
      net->set_guest_mac(absl::StrCat("02:53:0a:00:00:0", n + 1));
      net->set_tap_device(absl::StrCat("smv", n));
      *result->mutable_vm() = vms_[vm.vm_id()] = vm;
    }
    return grpc::Status::OK;
  }

  // ExposePort appends the forward to the VM's network; a (host_ip,
  // host_port, protocol) in use is ALREADY_EXISTS.
  grpc::Status ExposePort(grpc::ServerContext*,
                          const v1::ExposePortRequest* req,
                          v1::Vm* resp) override {
    absl::MutexLock lock(&mu_);
    last_expose_ = *req;
    ++expose_calls_;
    auto it = vms_.find(req->vm_id());
    if (it == vms_.end()) return NotFound("vm", req->vm_id());
    for (const v1::PortForward& f : it->second.network().port_forwards()) {
      if (SameHostSide(f, req->forward().host_ip(), req->forward().host_port(),
                       req->forward().protocol())) {
        return grpc::Status(
            grpc::StatusCode::ALREADY_EXISTS,
            absl::StrCat("expose port ", req->forward().host_port(),
                         ": host port taken"));
      }
    }
    *it->second.mutable_network()->add_port_forwards() = req->forward();
    *resp = it->second;
    return grpc::Status::OK;
  }
  grpc::Status UnexposePort(grpc::ServerContext*,
                            const v1::UnexposePortRequest* req,
                            v1::Vm* resp) override {
    absl::MutexLock lock(&mu_);
    last_unexpose_ = *req;
    ++unexpose_calls_;
    auto it = vms_.find(req->vm_id());
    if (it == vms_.end()) return NotFound("vm", req->vm_id());
    auto* forwards = it->second.mutable_network()->mutable_port_forwards();
    for (int i = 0; i < forwards->size(); ++i) {
      if (SameHostSide(forwards->Get(i), req->host_ip(), req->host_port(),
                       req->protocol())) {
        forwards->DeleteSubrange(i, 1);
        *resp = it->second;
        return grpc::Status::OK;
      }
    }
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("unexpose port ", req->host_port(), ": not exposed"));
  }

  // Exec plays the script set by SetExecScript (pausing exec_delay before
  // each message); without one it echoes stdin to stdout and exits 0.
  grpc::Status Exec(grpc::ServerContext* ctx, const v1::ExecRequest* req,
                    grpc::ServerWriter<v1::ExecResponse>* writer) override {
    RecordTenant(ctx);
    std::vector<v1::ExecResponse> script;
    absl::Duration delay;
    {
      absl::MutexLock lock(&mu_);
      last_exec_ = *req;
      ++exec_calls_;
      if (grpc::Status s = CheckRunning(req->vm_id()); !s.ok()) return s;
      script = exec_script_;
      delay = exec_delay_;
    }
    if (script.empty()) {
      if (!req->stdin().empty()) script.push_back(Out(req->stdin()));
      script.push_back(Exit(0));
    }
    for (const v1::ExecResponse& message : script) {
      absl::SleepFor(delay);
      if (!writer->Write(message)) break;
    }
    return grpc::Status::OK;
  }

  // UploadFile records the order of the messages and stores the data as the
  // content of header.path (a tar stream for tar uploads).
  grpc::Status UploadFile(grpc::ServerContext* ctx,
                          grpc::ServerReader<v1::UploadFileRequest>* reader,
                          v1::UploadFileResponse* resp) override {
    RecordTenant(ctx);
    Upload upload;
    v1::UploadFileRequest message;
    while (reader->Read(&message)) {
      if (message.has_header()) {
        upload.parts.push_back("header");
        if (upload.parts.size() != 1) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "upload: a second header");
        }
        upload.header = message.header();
      } else {
        upload.parts.push_back(absl::StrCat("data:", message.data().size()));
        if (upload.parts.size() == 1) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "upload: the first message must be the header");
        }
        upload.data += message.data();
      }
    }
    absl::MutexLock lock(&mu_);
    if (ctx->IsCancelled()) {
      ++cancelled_uploads_;
      return grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled");
    }
    if (grpc::Status s = CheckRunning(upload.header.vm_id()); !s.ok()) return s;
    files_[upload.header.path()] = {
        upload.data, upload.header.mode() ? upload.header.mode() : 0644u};
    resp->set_bytes_written(upload.data.size());
    last_upload_ = std::move(upload);
    return grpc::Status::OK;
  }

  // DownloadFile sends a stored file in 64 KiB chunks, then the eof message.
  // "/lying" claims one byte more than it sends.
  grpc::Status DownloadFile(
      grpc::ServerContext* ctx, const v1::DownloadFileRequest* req,
      grpc::ServerWriter<v1::DownloadFileResponse>* writer) override {
    RecordTenant(ctx);
    StoredFile file;
    {
      absl::MutexLock lock(&mu_);
      last_download_ = *req;
      if (grpc::Status s = CheckRunning(req->vm_id()); !s.ok()) return s;
      auto it = files_.find(req->path());
      if (it == files_.end()) return NotFound("file", req->path());
      file = it->second;
    }
    v1::DownloadFileResponse message;
    for (size_t at = 0; at < file.data.size(); at += 64 << 10) {
      message.set_data(file.data.substr(at, 64 << 10));
      if (!writer->Write(message)) return grpc::Status::CANCELLED;
    }
    message.Clear();
    message.set_eof(true);
    message.set_mode(file.mode);
    message.set_total_bytes(file.data.size() + (req->path() == "/lying"));
    writer->Write(message);
    return grpc::Status::OK;
  }

  static v1::ExecResponse Out(const std::string& data) {
    v1::ExecResponse message;
    message.set_stdout(data);
    return message;
  }
  static v1::ExecResponse Err(const std::string& data) {
    v1::ExecResponse message;
    message.set_stderr(data);
    return message;
  }
  static v1::ExecResponse Exit(int code, int signal = 0,
                               bool timed_out = false) {
    v1::ExecResponse message;
    message.mutable_exit()->set_exit_code(code);
    message.mutable_exit()->set_signal(signal);
    message.mutable_exit()->set_timed_out(timed_out);
    return message;
  }

  struct Upload {
    v1::UploadFileHeader header;
    std::vector<std::string> parts;  // "header", "data:<size>", in order.
    std::string data;
  };
  struct StoredFile {
    std::string data;
    uint32_t mode = 0;
  };

  // Test access.

  // tenants returns the x-smolvm-tenant metadata of each call so far, in
  // order ("-" for a call without it), and forgets them.
  std::vector<std::string> TakeTenants() {
    absl::MutexLock lock(&tenants_mu_);
    return std::exchange(tenants_, {});
  }

  void SetExecScript(std::vector<v1::ExecResponse> script,
                     absl::Duration delay = absl::ZeroDuration()) {
    absl::MutexLock lock(&mu_);
    exec_script_ = std::move(script);
    exec_delay_ = delay;
  }
  v1::ExecRequest last_exec() {
    absl::MutexLock lock(&mu_);
    return last_exec_;
  }
  int exec_calls() {
    absl::MutexLock lock(&mu_);
    return exec_calls_;
  }
  Upload last_upload() {
    absl::MutexLock lock(&mu_);
    return last_upload_;
  }
  int cancelled_uploads() {
    absl::MutexLock lock(&mu_);
    return cancelled_uploads_;
  }
  void PutFile(const std::string& path, std::string data, uint32_t mode) {
    absl::MutexLock lock(&mu_);
    files_[path] = {std::move(data), mode};
  }
  std::optional<StoredFile> GetFile(const std::string& path) {
    absl::MutexLock lock(&mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return std::nullopt;
    return it->second;
  }
  v1::DownloadFileRequest last_download() {
    absl::MutexLock lock(&mu_);
    return last_download_;
  }

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
  // SetForkFailure makes ForkSnapshot report clone `vm_id` with `code` and
  // `message` (code 0: success without a VM).
  void SetForkFailure(const std::string& vm_id, int code,
                      const std::string& message) {
    absl::MutexLock lock(&mu_);
    fork_failures_[vm_id] = {code, message};
  }
  v1::ForkSnapshotRequest last_fork() {
    absl::MutexLock lock(&mu_);
    return last_fork_;
  }
  v1::ExposePortRequest last_expose() {
    absl::MutexLock lock(&mu_);
    return last_expose_;
  }
  v1::UnexposePortRequest last_unexpose() {
    absl::MutexLock lock(&mu_);
    return last_unexpose_;
  }
  int expose_calls() {
    absl::MutexLock lock(&mu_);
    return expose_calls_;
  }
  int unexpose_calls() {
    absl::MutexLock lock(&mu_);
    return unexpose_calls_;
  }
  int create_calls() {
    absl::MutexLock lock(&mu_);
    return create_calls_;
  }

 private:
  // SameHostSide compares host ends with the API's defaults ("" =
  // 127.0.0.1, "" = tcp).
  static bool SameHostSide(const v1::PortForward& f, const std::string& ip,
                           uint32_t port, const std::string& protocol) {
    auto ip_or_default = [](const std::string& v) {
      return v.empty() ? std::string("127.0.0.1") : v;
    };
    auto proto_or_default = [](const std::string& v) {
      return v.empty() ? std::string("tcp") : v;
    };
    return f.host_port() == port &&
           ip_or_default(f.host_ip()) == ip_or_default(ip) &&
           proto_or_default(f.protocol()) == proto_or_default(protocol);
  }
  void RecordTenant(grpc::ServerContext* ctx) {
    const auto& metadata = ctx->client_metadata();
    const size_t n = metadata.count(kTenantMetadataKey);
    std::string tenant = "-";
    if (auto it = metadata.find(kTenantMetadataKey); it != metadata.end()) {
      tenant = std::string(it->second.data(), it->second.size());
      if (n > 1) tenant += " (sent " + std::to_string(n) + " times)";
    }
    absl::MutexLock lock(&tenants_mu_);
    tenants_.push_back(std::move(tenant));
  }
  static grpc::Status NotFound(const std::string& kind, const std::string& id) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("get ", kind, " ", id, ": not found"));
  }
  grpc::Status CheckRunning(const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = vms_.find(id);
    if (it == vms_.end()) return NotFound("vm", id);
    if (it->second.status() != v1::RUNNING) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("vm ", id, " is not RUNNING"));
    }
    return grpc::Status::OK;
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
  int create_calls_ ABSL_GUARDED_BY(mu_) = 0;
  v1::ForkSnapshotRequest last_fork_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::pair<int, std::string>> fork_failures_
      ABSL_GUARDED_BY(mu_);
  v1::ExposePortRequest last_expose_ ABSL_GUARDED_BY(mu_);
  v1::UnexposePortRequest last_unexpose_ ABSL_GUARDED_BY(mu_);
  int expose_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int unexpose_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int generated_ ABSL_GUARDED_BY(mu_) = 0;
  int delete_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<v1::ExecResponse> exec_script_ ABSL_GUARDED_BY(mu_);
  absl::Duration exec_delay_ ABSL_GUARDED_BY(mu_);
  v1::ExecRequest last_exec_ ABSL_GUARDED_BY(mu_);
  int exec_calls_ ABSL_GUARDED_BY(mu_) = 0;
  Upload last_upload_ ABSL_GUARDED_BY(mu_);
  int cancelled_uploads_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, StoredFile> files_ ABSL_GUARDED_BY(mu_);
  v1::DownloadFileRequest last_download_ ABSL_GUARDED_BY(mu_);
  std::atomic<int> start_calls_{0};
  absl::Mutex tenants_mu_;
  std::vector<std::string> tenants_ ABSL_GUARDED_BY(tenants_mu_);
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

// --- networking / fork -------------------------------------------------------

TEST_F(SmolVMTest, ExposeAndUnexposeSendOneRpcAndUpdateTheCache) {
  MakeVm("web", v1::RUNNING);
  absl::StatusOr<SmolVM> vm = SmolVM::attach("web", options_);
  ASSERT_TRUE(vm.ok()) << vm.status();

  ASSERT_TRUE(vm->expose_port(8080, 80).ok());
  v1::ExposePortRequest sent = daemon_.last_expose();
  EXPECT_EQ(sent.vm_id(), "web");
  EXPECT_EQ(sent.forward().host_ip(), "");
  EXPECT_EQ(sent.forward().host_port(), 8080u);
  EXPECT_EQ(sent.forward().guest_port(), 80u);
  EXPECT_EQ(sent.forward().protocol(), "tcp");
  ASSERT_EQ(vm->info().network().port_forwards_size(), 1);
  EXPECT_EQ(vm->info().network().port_forwards(0).host_port(), 8080u);

  ASSERT_TRUE(vm->expose_port(5353, 53, "0.0.0.0", "udp").ok());
  sent = daemon_.last_expose();
  EXPECT_EQ(sent.forward().host_ip(), "0.0.0.0");
  EXPECT_EQ(sent.forward().host_port(), 5353u);
  EXPECT_EQ(sent.forward().guest_port(), 53u);
  EXPECT_EQ(sent.forward().protocol(), "udp");
  EXPECT_EQ(vm->info().network().port_forwards_size(), 2);

  // Daemon errors come back unchanged and leave the cache as it was.
  absl::Status taken = vm->expose_port(8080, 81, "127.0.0.1");
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists) << taken;
  EXPECT_EQ(taken.message(), "expose port 8080: host port taken");
  EXPECT_EQ(vm->info().network().port_forwards_size(), 2);

  ASSERT_TRUE(vm->unexpose_port(8080).ok());
  v1::UnexposePortRequest removed = daemon_.last_unexpose();
  EXPECT_EQ(removed.vm_id(), "web");
  EXPECT_EQ(removed.host_ip(), "");
  EXPECT_EQ(removed.host_port(), 8080u);
  EXPECT_EQ(removed.protocol(), "tcp");
  ASSERT_EQ(vm->info().network().port_forwards_size(), 1);
  EXPECT_EQ(vm->info().network().port_forwards(0).host_port(), 5353u);

  ASSERT_TRUE(vm->unexpose_port(5353, "0.0.0.0", "udp").ok());
  removed = daemon_.last_unexpose();
  EXPECT_EQ(removed.host_ip(), "0.0.0.0");
  EXPECT_EQ(removed.protocol(), "udp");
  EXPECT_EQ(vm->info().network().port_forwards_size(), 0);
  EXPECT_EQ(vm->unexpose_port(5353, "0.0.0.0", "udp").code(),
            absl::StatusCode::kNotFound);

  // Refused before any RPC without a VM.
  const int exposes = daemon_.expose_calls();
  const int unexposes = daemon_.unexpose_calls();
  SmolVM unstarted({}, options_);
  EXPECT_EQ(unstarted.expose_port(1, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(unstarted.unexpose_port(1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(daemon_.expose_calls(), exposes);
  EXPECT_EQ(daemon_.unexpose_calls(), unexposes);
}

TEST_F(SmolVMTest, ForkSnapshotReportsEachClone) {
  SmolVM source({}, options_);
  ASSERT_TRUE(source.start().ok());
  ASSERT_TRUE(source.snapshot("base", /*resume_source=*/true).ok());
  MakeVm("clone-5", v1::STOPPED);  // Taken: that clone fails on its own.
  daemon_.SetForkFailure("clone-2", grpc::StatusCode::RESOURCE_EXHAUSTED,
                         "fork clone-2: no free address");
  daemon_.SetForkFailure("clone-3", 99, "from the future");
  daemon_.SetForkFailure("clone-4", 0, "");  // "OK" without a VM.

  SmolVMManager manager(options_);
  absl::StatusOr<std::vector<ForkOutcome>> outcomes =
      manager.fork_snapshot("base", 6, /*resume_vm=*/false, "clone");
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  const v1::ForkSnapshotRequest sent = daemon_.last_fork();
  EXPECT_EQ(sent.snapshot_id(), "base");
  EXPECT_EQ(sent.count(), 6u);
  EXPECT_FALSE(sent.resume_vm());
  EXPECT_EQ(sent.vm_id_prefix(), "clone");

  ASSERT_EQ(outcomes->size(), 6u);
  std::vector<std::string> ids;
  for (const ForkOutcome& o : *outcomes) ids.push_back(o.vm_id);
  EXPECT_EQ(ids, (std::vector<std::string>{"clone-1", "clone-2", "clone-3",
                                           "clone-4", "clone-5", "clone-6"}));
  const ForkOutcome& first = (*outcomes)[0];
  ASSERT_TRUE(first.ok()) << first.vm.status();
  EXPECT_EQ(first.vm->vm_id(), "clone-1");
  EXPECT_EQ(first.vm->status(), v1::PAUSED);
  EXPECT_EQ(first.vm->network().guest_ip(), "10.0.0.2");
  EXPECT_EQ(first.vm->restored_from_snapshot_id(), "base");

  EXPECT_EQ((*outcomes)[1].vm.status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*outcomes)[1].vm.status().message(),
            "fork clone-2: no free address");
  EXPECT_EQ((*outcomes)[2].vm.status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ((*outcomes)[2].vm.status().message(), "from the future");
  EXPECT_EQ((*outcomes)[3].vm.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ((*outcomes)[4].vm.status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE((*outcomes)[5].ok());
  EXPECT_EQ((*outcomes)[5].vm->network().tap_device(), "smv6");

  // Defaults: resumed, the daemon's prefix.
  outcomes = manager.fork_snapshot("base", 1);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  EXPECT_TRUE(daemon_.last_fork().resume_vm());
  EXPECT_EQ(daemon_.last_fork().vm_id_prefix(), "");
  ASSERT_EQ(outcomes->size(), 1u);
  EXPECT_EQ((*outcomes)[0].vm_id, "base-fork-1");
  EXPECT_EQ((*outcomes)[0].vm->status(), v1::RUNNING);

  // Only a bad request fails the call.
  EXPECT_EQ(manager.fork_snapshot("base", 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager.fork_snapshot("nope", 2).status().code(),
            absl::StatusCode::kNotFound);
}

// --- run / exec --------------------------------------------------------------

using Event = std::pair<ExecStream, std::string>;

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFileOrDie(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Patterned, so that reordered or dropped chunks are noticed.
std::string Pattern(size_t size) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    data[i] = static_cast<char>((i * 7 + i / 4096) & 0xff);
  }
  return data;
}

class SmolVMExecTest : public SmolVMTest {
 protected:
  void SetUp() override {
    SmolVMTest::SetUp();
    MakeVm("box", v1::RUNNING);
    absl::StatusOr<SmolVM> vm = SmolVM::attach("box", options_);
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_ = std::make_unique<SmolVM>(*std::move(vm));
  }

  std::unique_ptr<SmolVM> vm_;
};

TEST_F(SmolVMExecTest, RunSeparatesStreamsAndANonZeroExitIsAResult) {
  daemon_.SetExecScript({FakeDaemon::Out("hello\n"), FakeDaemon::Err("oops\n"),
                         FakeDaemon::Out("world\n"), FakeDaemon::Exit(3)});
  absl::StatusOr<CommandResult> result = vm_->run("python3 -c 'exit(3)'");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_EQ(result->signal, 0);
  EXPECT_FALSE(result->timed_out);
  EXPECT_FALSE(result->ok());
  EXPECT_EQ(result->stdout_text, "hello\nworld\n");
  EXPECT_EQ(result->stderr_text, "oops\n");
  EXPECT_EQ(result->output(), "hello\nworld");

  const v1::ExecRequest sent = daemon_.last_exec();
  EXPECT_EQ(sent.vm_id(), "box");
  EXPECT_EQ(sent.command(), "python3 -c 'exit(3)'");  // Shell form.
  EXPECT_TRUE(sent.argv().empty());
  EXPECT_FALSE(sent.has_stdin());
  EXPECT_EQ(sent.timeout_ms(), 0u);
}

TEST_F(SmolVMExecTest, RunArgvFormSendsOptions) {
  daemon_.SetExecScript({FakeDaemon::Out("  42\n"), FakeDaemon::Exit(0)});
  RunOptions options;
  options.env = {{"A", "1"}, {"B", "x=y"}};
  options.cwd = "/srv";
  options.stdin_data = "";  // Empty stdin, not /dev/null.
  options.timeout = absl::Microseconds(1500);
  absl::StatusOr<CommandResult> result =
      vm_->run({"python3", "-c", "print(42)"}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->ok());
  EXPECT_EQ(result->output(), "42");

  const v1::ExecRequest sent = daemon_.last_exec();
  EXPECT_EQ(std::vector<std::string>(sent.argv().begin(), sent.argv().end()),
            (std::vector<std::string>{"python3", "-c", "print(42)"}));
  EXPECT_EQ(sent.command(), "");
  EXPECT_EQ(sent.env().size(), 2u);
  EXPECT_EQ(sent.env().at("B"), "x=y");
  EXPECT_EQ(sent.cwd(), "/srv");
  EXPECT_TRUE(sent.has_stdin());
  EXPECT_EQ(sent.stdin(), "");
  EXPECT_EQ(sent.timeout_ms(), 2u);  // Rounded up.

  // A one-element braced list is argv too, spaces and all.
  ASSERT_TRUE(vm_->run({"echo hi"}).ok());
  EXPECT_EQ(daemon_.last_exec().argv_size(), 1);
  EXPECT_EQ(daemon_.last_exec().command(), "");
}

TEST_F(SmolVMExecTest, StdinIsSent) {
  RunOptions options;
  options.stdin_data = std::string("bin\0ary", 7);
  absl::StatusOr<CommandResult> result = vm_->run({"cat"}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stdout_text, std::string("bin\0ary", 7));  // Echoed.
}

TEST_F(SmolVMExecTest, ExecCallsBackInOrder) {
  daemon_.SetExecScript(
      {FakeDaemon::Out("a"), FakeDaemon::Err("b"), FakeDaemon::Out("c"),
       FakeDaemon::Err("d"), FakeDaemon::Exit(0, /*signal=*/9)},
      absl::Milliseconds(5));
  std::vector<Event> events;
  absl::StatusOr<ExecExit> exit = vm_->exec(
      {"sh", "-c", "..."}, {}, [&](ExecStream stream, absl::string_view data) {
        events.emplace_back(stream, std::string(data));
      });
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->signal, 9);
  EXPECT_FALSE(exit->ok());
  EXPECT_EQ(events, (std::vector<Event>{{ExecStream::kStdout, "a"},
                                        {ExecStream::kStderr, "b"},
                                        {ExecStream::kStdout, "c"},
                                        {ExecStream::kStderr, "d"}}));
  // No callback: the output is dropped, the exit still comes back.
  ASSERT_TRUE(vm_->exec({"true"}, {}, nullptr).ok());
}

TEST_F(SmolVMExecTest, TimeoutIsAResult) {
  daemon_.SetExecScript(
      {FakeDaemon::Out("partial"), FakeDaemon::Exit(0, 9, /*timed_out=*/true)});
  RunOptions options;
  options.timeout = absl::Seconds(2);
  absl::StatusOr<CommandResult> result = vm_->run("sleep 100", options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->timed_out);
  EXPECT_FALSE(result->ok());
  EXPECT_EQ(result->stdout_text, "partial");
  EXPECT_EQ(daemon_.last_exec().timeout_ms(), 2000u);
}

TEST_F(SmolVMExecTest, Errors) {
  // A stream without the exit is not a result.
  daemon_.SetExecScript({FakeDaemon::Out("x")});
  EXPECT_EQ(vm_->run("true").status().code(), absl::StatusCode::kInternal);
  // Two exits neither.
  daemon_.SetExecScript({FakeDaemon::Exit(0), FakeDaemon::Exit(1)});
  EXPECT_EQ(vm_->run("true").status().code(), absl::StatusCode::kInternal);

  // Daemon errors come back unchanged.
  MakeVm("off", v1::STOPPED);
  absl::StatusOr<SmolVM> off = SmolVM::attach("off", options_);
  ASSERT_TRUE(off.ok());
  absl::StatusOr<CommandResult> refused = off->run("true");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.status().message(), "vm off is not RUNNING");

  // Refused before any RPC.
  const int calls = daemon_.exec_calls();
  EXPECT_EQ(vm_->run(std::vector<std::string>{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  RunOptions negative;
  negative.timeout = -absl::Seconds(1);
  EXPECT_EQ(vm_->run("true", negative).status().code(),
            absl::StatusCode::kInvalidArgument);
  RunOptions huge;
  huge.timeout = absl::Hours(24 * 60);
  EXPECT_EQ(vm_->run("true", huge).status().code(),
            absl::StatusCode::kInvalidArgument);
  SmolVM unstarted({}, options_);
  EXPECT_EQ(unstarted.run("true").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(daemon_.exec_calls(), calls);
}

TEST_F(SmolVMExecTest, ClientTimeoutDoesNotCutACommandShort) {
  ClientOptions options = options_;
  options.timeout = absl::Milliseconds(100);
  absl::StatusOr<SmolVM> vm = SmolVM::attach("box", options);
  ASSERT_TRUE(vm.ok());
  daemon_.SetExecScript({FakeDaemon::Out("slow"), FakeDaemon::Exit(0)},
                        absl::Milliseconds(200));
  // No command limit: no deadline at all.
  absl::StatusOr<CommandResult> result = vm->run("sleep 0.4");
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->stdout_text, "slow");
  // A command limit: deadline max(100 ms, limit + 60 s).
  RunOptions limited;
  limited.timeout = absl::Milliseconds(10);
  EXPECT_TRUE(vm->run("sleep 0.4", limited).ok());
  // Other calls keep the client's deadline.
  daemon_.SetExecScript({});
  EXPECT_EQ(SmolVMManager(options).get_vm("slow").status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

// --- files -------------------------------------------------------------------

TEST_F(SmolVMExecTest, UploadSendsHeaderThenChunksInOrder) {
  const std::string local = temp_.Join("data.bin");
  const std::string content = Pattern((5 << 20) / 2);  // 2.5 MiB.
  WriteFileOrDie(local, content);
  ASSERT_TRUE(vm_->upload_file(local, "/root/data.bin", 0755).ok());

  const FakeDaemon::Upload upload = daemon_.last_upload();
  EXPECT_EQ(upload.parts,
            (std::vector<std::string>{"header", "data:1048576", "data:1048576",
                                      "data:524288"}));
  EXPECT_EQ(upload.header.vm_id(), "box");
  EXPECT_EQ(upload.header.path(), "/root/data.bin");
  EXPECT_EQ(upload.header.mode(), 0755u);
  EXPECT_FALSE(upload.header.tar());
  EXPECT_TRUE(upload.header.make_parents());
  EXPECT_TRUE(upload.data == content);

  // An empty file is the header alone.
  WriteFileOrDie(local, "");
  ASSERT_TRUE(vm_->upload_file(local, "/root/empty").ok());
  EXPECT_EQ(daemon_.last_upload().parts, std::vector<std::string>{"header"});
  EXPECT_EQ(daemon_.GetFile("/root/empty")->mode, 0644u);
}

TEST_F(SmolVMExecTest, UploadErrors) {
  EXPECT_EQ(vm_->upload_file(temp_.Join("missing"), "/root/x").code(),
            absl::StatusCode::kNotFound);
  absl::Status dir = vm_->upload_file(temp_.path(), "/root/x");
  EXPECT_EQ(dir.code(), absl::StatusCode::kInvalidArgument) << dir;
  EXPECT_NE(dir.message().find("upload_dir"), absl::string_view::npos) << dir;
  const std::string local = temp_.Join("f");
  WriteFileOrDie(local, "x");
  MakeVm("off", v1::STOPPED);
  absl::StatusOr<SmolVM> off = SmolVM::attach("off", options_);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->upload_file(local, "/root/x").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SmolVMExecTest, DownloadWritesATempFileThenRenames) {
  const std::string content = Pattern(300 << 10);
  daemon_.PutFile("/root/out.bin", content, 0750);
  const std::string local = temp_.Join("out.bin");
  WriteFileOrDie(local, "old");
  ASSERT_TRUE(vm_->download_file("/root/out.bin", local).ok());
  EXPECT_TRUE(ReadFileOrDie(local) == content);
  struct stat st;
  ASSERT_EQ(stat(local.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_FALSE(daemon_.last_download().tar());
  std::vector<std::string> names = DirEntries(temp_.path());
  EXPECT_EQ(std::count(names.begin(), names.end(), "out.bin"), 1);
  for (const std::string& name : names) {
    EXPECT_EQ(name.find(".smolvm-download"), std::string::npos) << name;
  }

  // Failures, also after some data arrived, leave the target as it was and
  // no temporary file behind.
  const std::vector<std::string> before = DirEntries(temp_.path());
  WriteFileOrDie(local, "old");
  EXPECT_EQ(vm_->download_file("/root/missing", local).code(),
            absl::StatusCode::kNotFound);
  daemon_.PutFile("/lying", content, 0644);
  absl::Status lying = vm_->download_file("/lying", local);
  EXPECT_EQ(lying.code(), absl::StatusCode::kDataLoss) << lying;
  EXPECT_EQ(ReadFileOrDie(local), "old");
  EXPECT_EQ(DirEntries(temp_.path()), before);

  // A relative target in the working directory also works.
  daemon_.PutFile("/root/small", "small", 0);
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(temp_.path());
  absl::Status relative = vm_->download_file("/root/small", "small.txt");
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(relative.ok()) << relative;
  EXPECT_EQ(ReadFileOrDie(temp_.Join("small.txt")), "small");
  ASSERT_EQ(stat(temp_.Join("small.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);  // No mode reported: 0644.
}

TEST_F(SmolVMExecTest, DirectoriesTravelAsTar) {
  const std::string src = temp_.Join("src");
  std::filesystem::create_directories(src + "/sub/deeper");
  WriteFileOrDie(src + "/top.txt", "top");
  WriteFileOrDie(src + "/sub/deeper/big.bin", Pattern(3 << 20));
  chmod((src + "/top.txt").c_str(), 0700);
  std::filesystem::create_symlink("top.txt", src + "/link");

  ASSERT_TRUE(vm_->upload_dir(src, "/srv/app").ok());
  const FakeDaemon::Upload upload = daemon_.last_upload();
  EXPECT_TRUE(upload.header.tar());
  EXPECT_TRUE(upload.header.make_parents());
  EXPECT_EQ(upload.header.path(), "/srv/app");
  ASSERT_GE(upload.parts.size(), 4u);  // Header + 3 MiB and more of tar.
  EXPECT_EQ(upload.parts[1], "data:1048576");

  // The fake hands the same tar stream back.
  const std::string dst = temp_.Join("dst/nested");
  absl::StatusOr<DirDownload> down = vm_->download_dir("/srv/app", dst);
  ASSERT_TRUE(down.ok()) << down.status();
  EXPECT_TRUE(down->refused.empty());
  EXPECT_TRUE(daemon_.last_download().tar());
  EXPECT_EQ(ReadFileOrDie(dst + "/top.txt"), "top");
  EXPECT_TRUE(ReadFileOrDie(dst + "/sub/deeper/big.bin") == Pattern(3 << 20));
  EXPECT_EQ(std::filesystem::read_symlink(dst + "/link"), "top.txt");
  struct stat st;
  ASSERT_EQ(stat((dst + "/top.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  EXPECT_EQ(vm_->upload_dir(temp_.Join("nope"), "/srv").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(vm_->upload_dir(src + "/top.txt", "/srv").code(),
            absl::StatusCode::kInvalidArgument);
  // Not a tar stream: the extractor says so.
  daemon_.PutFile("/junk", "this is not a tar archive", 0644);
  absl::StatusOr<DirDownload> junk =
      vm_->download_dir("/junk", temp_.Join("junk"));
  EXPECT_EQ(junk.status().code(), absl::StatusCode::kDataLoss) << junk.status();
  EXPECT_NE(junk.status().message().find("extract into " + temp_.Join("junk")),
            absl::string_view::npos)
      << junk.status();
}

// A directory download unpacks what the guest sent as hostile (the unit
// tests of client/safe_extract.h cover every case): no setuid bit, no FIFO,
// the refusals reported, the rest extracted.
TEST_F(SmolVMExecTest, DirectoryDownloadsAreExtractedSafely) {
  const std::string src = temp_.Join("src");
  std::filesystem::create_directories(src);
  WriteFileOrDie(src + "/suid", "x");
  ASSERT_EQ(chmod((src + "/suid").c_str(), 04755), 0);
  ASSERT_EQ(mkfifo((src + "/fifo").c_str(), 0644), 0);
  std::filesystem::create_symlink("/etc", src + "/etc");
  ASSERT_TRUE(vm_->upload_dir(src, "/srv/evil").ok());  // Host tar keeps all.

  const std::string dst = temp_.Join("dst");
  absl::StatusOr<DirDownload> down = vm_->download_dir("/srv/evil", dst);
  ASSERT_TRUE(down.ok()) << down.status();
  std::vector<std::string> refused = down->refused;
  std::sort(refused.begin(), refused.end());
  EXPECT_EQ(refused, (std::vector<std::string>{
                         "./etc: symlink to /etc leaves the directory",
                         "./fifo: FIFO"}));
  EXPECT_EQ(down->refused_count, 2u);
  struct stat st;
  ASSERT_EQ(lstat((dst + "/suid").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode, S_IFREG | 0755u);
  EXPECT_NE(lstat((dst + "/fifo").c_str(), &st), 0);
  EXPECT_NE(lstat((dst + "/etc").c_str(), &st), 0);
}

// With a `tar` that fails, the upload is cancelled rather than committed.
TEST_F(SmolVMExecTest, FailingTarCancelsTheUpload) {
  const std::string bin = temp_.Join("bin");
  std::filesystem::create_directories(bin);
  WriteFileOrDie(bin + "/tar",
                 "#!/bin/sh\necho partial\necho tar broke >&2\nexit 2\n");
  chmod((bin + "/tar").c_str(), 0755);
  const char* saved = std::getenv("PATH");
  const std::string saved_path = saved ? saved : "";
  setenv("PATH", (bin + ":" + saved_path).c_str(), 1);
  absl::Status status = vm_->upload_dir(temp_.path(), "/srv/app");
  setenv("PATH", saved_path.c_str(), 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal) << status;
  EXPECT_NE(status.message().find("exited with status 2: tar broke"),
            absl::string_view::npos)
      << status;
  EXPECT_FALSE(daemon_.GetFile("/srv/app").has_value());
  // The fake sees the cancellation once its handler runs.
  for (int i = 0; i < 100 && daemon_.cancelled_uploads() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(daemon_.cancelled_uploads(), 1);
}

// --- endpoints and tenants
// ----------------------------------------------------

TEST_F(SmolVMTest, UnixEndpointFormsReachTheDaemon) {
  NoClientEnv env;
  MakeVm("a", v1::RUNNING);
  for (const std::string& endpoint :
       {"unix://" + options_.socket_path, "unix:" + options_.socket_path,
        options_.socket_path}) {
    ClientOptions options;
    options.endpoint = endpoint;
    options.socket_path = "/nonexistent/smolvmd.sock";  // The endpoint wins.
    Connection conn(options);
    EXPECT_EQ(conn.endpoint(), "unix://" + options_.socket_path);
    EXPECT_EQ(conn.socket_path(), options_.socket_path);
    absl::StatusOr<v1::Vm> vm = SmolVMManager(options).get_vm("a");
    EXPECT_TRUE(vm.ok()) << endpoint << ": " << vm.status();
  }
}

TEST_F(SmolVMTest, ActAsTenantTravelsWithEveryCall) {
  MakeVm("box", v1::RUNNING);
  daemon_.PutFile("/root/f", "data", 0644);
  const std::string local = dir_ + "/f";
  ClientOptions options = options_;
  options.act_as_tenant = "alice";

  SmolVMManager manager(options);
  ASSERT_TRUE(manager.list_vms().ok());                        // ListVms
  ASSERT_TRUE(manager.list_snapshots().ok());                  // ListSnapshots
  absl::StatusOr<SmolVM> vm = SmolVM::attach("box", options);  // GetVm
  ASSERT_TRUE(vm.ok()) << vm.status();
  ASSERT_TRUE(vm->run("true").ok());                      // Exec
  ASSERT_TRUE(vm->download_file("/root/f", local).ok());  // DownloadFile
  ASSERT_TRUE(vm->upload_file(local, "/root/g").ok());    // UploadFile
  EXPECT_EQ(daemon_.TakeTenants(), std::vector<std::string>(6, "alice"));

  // Without it, nothing is sent.
  ASSERT_TRUE(SmolVMManager(options_).get_vm("box").ok());
  EXPECT_EQ(daemon_.TakeTenants(), std::vector<std::string>{"-"});
}

TEST_F(SmolVMTest, UnusableOptionsFailEveryCallWithoutSending) {
  NoClientEnv env;
  ClientOptions tcp;
  tcp.endpoint = "127.0.0.1:7443";
  {
    Connection conn(tcp);
    EXPECT_EQ(conn.endpoint(), "127.0.0.1:7443");
    EXPECT_EQ(conn.socket_path(), "");
    absl::StatusOr<std::vector<v1::Vm>> vms = SmolVMManager(tcp).list_vms();
    ASSERT_EQ(vms.status().code(), absl::StatusCode::kFailedPrecondition)
        << vms.status();
    for (const char* name :
         {"tls_cert (--tls-cert or $SMOLVMD_TLS_CERT)",
          "tls_key (--tls-key or $SMOLVMD_TLS_KEY)",
          "tls_ca (--tls-ca or $SMOLVMD_TLS_CA)", "127.0.0.1:7443"}) {
      EXPECT_NE(vms.status().message().find(name), absl::string_view::npos)
          << name << " in " << vms.status();
    }
    // The streaming RPCs prepare their context the same way.
    grpc::ClientContext context;
    EXPECT_EQ(conn.PrepareContext(&context), vms.status());
    // A stub call that skips PrepareContext fails too, sending nothing.
    grpc::ClientContext raw;
    v1::Vm ignored;
    EXPECT_FALSE(conn.vm_stub().GetVm(&raw, {}, &ignored).ok());
  }

  // Files from the environment count; only the missing ones are named.
  const std::string cert = dir_ + "/cert.pem";
  WriteFileOrDie(cert, "-----BEGIN CERTIFICATE-----\n");
  {
    ScopedEnv env_cert(kTlsCertEnvVar, cert.c_str());
    ScopedEnv env_ca(kTlsCaEnvVar, cert.c_str());
    absl::Status status = SmolVMManager(tcp).get_vm("x").status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(status.message().find("tls_key"), absl::string_view::npos)
        << status;
    EXPECT_EQ(status.message().find("tls_cert"), absl::string_view::npos)
        << status;
    EXPECT_EQ(Connection(tcp).options().tls_cert, cert);
  }

  // A file that cannot be read is named with its path.
  tcp.tls_cert = tcp.tls_key = cert;
  tcp.tls_ca = dir_ + "/missing-ca.pem";
  absl::Status unreadable = SmolVMManager(tcp).get_vm("x").status();
  EXPECT_EQ(unreadable.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(unreadable.message().find("tls_ca"), absl::string_view::npos)
      << unreadable;
  EXPECT_NE(unreadable.message().find(dir_ + "/missing-ca.pem"),
            absl::string_view::npos)
      << unreadable;

  // Malformed endpoints and tenants are invalid arguments, not crashes.
  for (const char* endpoint :
       {"unix:", "unix://host/path", "localhost", "host:", "host:0",
        "host:65536", "::1:7443", "[::1]7443", ":7443", "dns:///h:1"}) {
    ClientOptions bad;
    bad.endpoint = endpoint;
    EXPECT_EQ(SmolVMManager(bad).get_vm("x").status().code(),
              absl::StatusCode::kInvalidArgument)
        << endpoint;
  }
  ClientOptions bad_tenant = options_;
  bad_tenant.act_as_tenant = "al\nice";
  absl::Status tenant = SmolVMManager(bad_tenant).get_vm("x").status();
  EXPECT_EQ(tenant.code(), absl::StatusCode::kInvalidArgument) << tenant;
  EXPECT_TRUE(daemon_.TakeTenants().empty());  // Nothing reached the daemon.
}

// --- smolvmctl ---------------------------------------------------------------

struct CtlResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

class SmolvmctlTest : public SmolVMExecTest {
 protected:
  // Ctl runs smolvmctl against the fake daemon with `stdin_data` on stdin.
  CtlResult Ctl(std::vector<std::string> args,
                const std::string& stdin_data = "") {
    const std::string in = temp_.Join("ctl.in"), out = temp_.Join("ctl.out"),
                      err = temp_.Join("ctl.err");
    WriteFileOrDie(in, stdin_data);
    args.insert(args.begin(),
                {SMOLVMCTL_PATH, "--socket", options_.socket_path});
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, in.c_str(), O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    CtlResult result;
    const int spawned =
        posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    EXPECT_EQ(spawned, 0) << SMOLVMCTL_PATH;
    if (spawned != 0) return result;
    int status = 0;
    waitpid(pid, &status, 0);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = ReadFileOrDie(out);
    result.err = ReadFileOrDie(err);
    return result;
  }
};

TEST_F(SmolvmctlTest, ExecStreamsAndExitsWithTheCommandsStatus) {
  daemon_.SetExecScript({FakeDaemon::Out("o1 "), FakeDaemon::Err("e1"),
                         FakeDaemon::Out("o2"), FakeDaemon::Exit(7)});
  CtlResult r =
      Ctl({"vm", "exec", "box", "--env", "A=1", "--env", "B=", "--cwd", "/tmp",
           "--", "ls", "-la", "a b", "--json"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "o1 o2");
  EXPECT_EQ(r.err, "e1");
  const v1::ExecRequest sent = daemon_.last_exec();
  EXPECT_EQ(std::vector<std::string>(sent.argv().begin(), sent.argv().end()),
            (std::vector<std::string>{"ls", "-la", "a b", "--json"}));
  EXPECT_EQ(sent.env().at("A"), "1");
  EXPECT_EQ(sent.env().at("B"), "");
  EXPECT_EQ(sent.cwd(), "/tmp");
  EXPECT_FALSE(sent.has_stdin());
  EXPECT_EQ(sent.timeout_ms(), 0u);

  // One argument with spaces stays one argv element (no shell).
  daemon_.SetExecScript({FakeDaemon::Exit(0)});
  r = Ctl({"vm", "exec", "box", "--", "echo hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(daemon_.last_exec().argv_size(), 1);
  EXPECT_EQ(daemon_.last_exec().argv(0), "echo hi");
  EXPECT_EQ(daemon_.last_exec().command(), "");
}

TEST_F(SmolvmctlTest, ExecSignalTimeoutStdinAndErrors) {
  daemon_.SetExecScript({FakeDaemon::Exit(0, /*signal=*/9)});
  EXPECT_EQ(Ctl({"vm", "exec", "box", "--", "sleep", "9"}).exit_code, 137);

  daemon_.SetExecScript({FakeDaemon::Exit(0, 9, /*timed_out=*/true)});
  CtlResult r =
      Ctl({"vm", "exec", "box", "--timeout-ms", "250", "--", "sleep", "9"});
  EXPECT_EQ(r.exit_code, 124);
  EXPECT_NE(r.err.find("timed out after 250 ms"), std::string::npos) << r.err;
  EXPECT_EQ(daemon_.last_exec().timeout_ms(), 250u);

  daemon_.SetExecScript({});  // Echo stdin.
  r = Ctl({"vm", "exec", "box", "--stdin", "--", "cat"}, "piped input\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "piped input\n");
  EXPECT_TRUE(daemon_.last_exec().has_stdin());

  // smolvmctl's and the daemon's errors are 125 for exec (docs/cli.md).
  r = Ctl({"vm", "exec", "nope", "--", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_EQ(r.err, "smolvmctl: get vm nope: not found\n");
  r = Ctl({"vm", "exec", "box", "--env", "NOEQUALS", "--", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("want NAME=VALUE"), std::string::npos) << r.err;
  EXPECT_EQ(Ctl({"vm", "exec", "box"}).exit_code, 125);  // No command.
}

TEST_F(SmolvmctlTest, CreateWithEnv) {
  CtlResult r = Ctl({"vm", "create", "--id", "envy", "--env", "LANG=C.UTF-8",
                     "--env", "X=a=b"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const v1::CreateVmRequest sent = daemon_.last_create();
  const auto& env = sent.config().env();
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env.at("LANG"), "C.UTF-8");
  EXPECT_EQ(env.at("X"), "a=b");
}

TEST_F(SmolvmctlTest, CreateWithEgressAndForwards) {
  CtlResult r = Ctl({"vm", "create", "--id", "net", "--egress", "restricted",
                     "--allow", "198.51.100.0/24", "--allow", "1.2.3.4/32",
                     "--forward", "8080:80", "--forward", "0.0.0.0:5353:53/udp",
                     "--forward", "10.1.2.3:22:2222/tcp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::VMConfig sent = daemon_.last_create().config();
  ASSERT_TRUE(sent.has_egress());
  EXPECT_EQ(sent.egress().mode(), v1::EgressPolicy::EGRESS_RESTRICTED);
  EXPECT_EQ(std::vector<std::string>(sent.egress().allow_cidrs().begin(),
                                     sent.egress().allow_cidrs().end()),
            (std::vector<std::string>{"198.51.100.0/24", "1.2.3.4/32"}));
  ASSERT_EQ(sent.port_forwards_size(), 3);
  EXPECT_EQ(sent.port_forwards(0).host_ip(), "");
  EXPECT_EQ(sent.port_forwards(0).host_port(), 8080u);
  EXPECT_EQ(sent.port_forwards(0).guest_port(), 80u);
  EXPECT_EQ(sent.port_forwards(0).protocol(), "tcp");
  EXPECT_EQ(sent.port_forwards(1).host_ip(), "0.0.0.0");
  EXPECT_EQ(sent.port_forwards(1).host_port(), 5353u);
  EXPECT_EQ(sent.port_forwards(1).guest_port(), 53u);
  EXPECT_EQ(sent.port_forwards(1).protocol(), "udp");
  EXPECT_EQ(sent.port_forwards(2).host_ip(), "10.1.2.3");
  EXPECT_EQ(sent.port_forwards(2).guest_port(), 2222u);
  EXPECT_EQ(sent.port_forwards(2).protocol(), "tcp");

  // --allow alone implies restricted; no flags leave the policy unset.
  ASSERT_EQ(
      Ctl({"vm", "create", "--id", "net2", "--allow", "1.2.3.4/32"}).exit_code,
      0);
  EXPECT_EQ(daemon_.last_create().config().egress().mode(),
            v1::EgressPolicy::EGRESS_RESTRICTED);
  ASSERT_EQ(Ctl({"vm", "create", "--id", "net3", "--egress", "off"}).exit_code,
            0);
  EXPECT_EQ(daemon_.last_create().config().egress().mode(),
            v1::EgressPolicy::EGRESS_OFF);
  ASSERT_EQ(Ctl({"vm", "create", "--id", "net4"}).exit_code, 0);
  EXPECT_FALSE(daemon_.last_create().config().has_egress());
  EXPECT_EQ(daemon_.last_create().config().port_forwards_size(), 0);
}

TEST_F(SmolvmctlTest, BadForwardAndEgressFlagsAreUsageErrors) {
  const int creates = daemon_.create_calls();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--forward", "8080"}, "--forward 8080: wrong number of fields"},
      {{"--forward", "1:2:3:4"}, "--forward 1:2:3:4: wrong number of fields"},
      {{"--forward", ":8080:80"}, "HOST_IP \"\" is not an IPv4 address"},
      {{"--forward", "localhost:8080:80"}, "HOST_IP \"localhost\""},
      {{"--forward", "0:80"}, "port \"0\" is not a number in 1-65535"},
      {{"--forward", "8080:65536"}, "port \"65536\""},
      {{"--forward", "8080:+80"}, "port \"+80\""},
      {{"--forward", "http:80"}, "port \"http\""},
      {{"--forward", "8080:80/sctp"}, "protocol \"sctp\" is not tcp or udp"},
      {{"--forward", "8080:80/"}, "protocol \"\""},
      {{"--egress", "sometimes"}, "--egress sometimes: want open, off or"},
      {{"--egress", "open", "--allow", "1.2.3.4/32"},
       "--allow needs --egress restricted"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> args = {"vm", "create", "--id", "bad"};
    args.insert(args.end(), flags.begin(), flags.end());
    CtlResult r = Ctl(args);
    EXPECT_EQ(r.exit_code, 2) << flags[1] << ": " << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(r.err.rfind("smolvmctl: ", 0), 0u) << r.err;
  }
  CtlResult r = Ctl({"vm", "create", "--forward", "8080"});
  EXPECT_NE(r.err.find("want [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(daemon_.create_calls(), creates);  // Nothing was sent.
  EXPECT_FALSE(daemon_.HasVm("bad"));
}

TEST_F(SmolvmctlTest, ExposeUnexposeAndGet) {
  CtlResult r = Ctl({"vm", "expose", "box", "127.0.0.2:8080:80/udp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::ExposePortRequest sent = daemon_.last_expose();
  EXPECT_EQ(sent.vm_id(), "box");
  EXPECT_EQ(sent.forward().host_ip(), "127.0.0.2");
  EXPECT_EQ(sent.forward().host_port(), 8080u);
  EXPECT_EQ(sent.forward().guest_port(), 80u);
  EXPECT_EQ(sent.forward().protocol(), "udp");
  EXPECT_EQ(r.out, "127.0.0.2:8080 -> 80/udp\n");

  ASSERT_EQ(Ctl({"vm", "expose", "box", "9090:90"}).exit_code, 0);
  EXPECT_EQ(daemon_.last_expose().forward().host_ip(), "");
  EXPECT_EQ(daemon_.last_expose().forward().protocol(), "tcp");
  r = Ctl({"vm", "expose", "box", "9090:91"});
  EXPECT_EQ(r.exit_code, 4) << r.err;  // ALREADY_EXISTS.

  r = Ctl({"vm", "get", "box"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("network.port_forwards:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("127.0.0.2:8080:80/udp, 9090:90/tcp"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("config.egress:"), std::string::npos) << r.out;

  r = Ctl({"vm", "unexpose", "box", "127.0.0.2:8080/udp"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  v1::UnexposePortRequest removed = daemon_.last_unexpose();
  EXPECT_EQ(removed.vm_id(), "box");
  EXPECT_EQ(removed.host_ip(), "127.0.0.2");
  EXPECT_EQ(removed.host_port(), 8080u);
  EXPECT_EQ(removed.protocol(), "udp");
  ASSERT_EQ(Ctl({"vm", "unexpose", "box", "9090"}).exit_code, 0);
  EXPECT_EQ(daemon_.last_unexpose().host_ip(), "");
  EXPECT_EQ(daemon_.last_unexpose().protocol(), "tcp");
  EXPECT_EQ(Ctl({"vm", "unexpose", "box", "9090"}).exit_code, 3);

  // Malformed specs: exit 2 with a message, nothing sent.
  const int exposes = daemon_.expose_calls();
  const int unexposes = daemon_.unexpose_calls();
  r = Ctl({"vm", "expose", "box", "8080"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "smolvmctl: expose 8080: wrong number of fields; want "
            "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]\n");
  r = Ctl({"vm", "expose", "box", "8080:99999"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("not a number in 1-65535"), std::string::npos) << r.err;
  r = Ctl({"vm", "unexpose", "box", "8080:80"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err,
            "smolvmctl: unexpose 8080:80: HOST_IP \"8080\" is not an IPv4 "
            "address; want [HOST_IP:]HOST_PORT[/udp]\n");
  r = Ctl({"vm", "unexpose", "box", "8080/icmp"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("protocol \"icmp\""), std::string::npos) << r.err;
  EXPECT_EQ(Ctl({"vm", "expose", "box"}).exit_code, 2);  // No spec.
  EXPECT_EQ(daemon_.expose_calls(), exposes);
  EXPECT_EQ(daemon_.unexpose_calls(), unexposes);
}

TEST_F(SmolvmctlTest, ForkPrintsEveryCloneAndFailsIfAnyFailed) {
  ASSERT_TRUE(vm_->snapshot("base", /*resume_source=*/true).ok());
  CtlResult r = Ctl({"snapshot", "fork", "base", "--count", "2", "--prefix",
                     "ok", "--paused"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(daemon_.last_fork().count(), 2u);
  EXPECT_EQ(daemon_.last_fork().vm_id_prefix(), "ok");
  EXPECT_FALSE(daemon_.last_fork().resume_vm());
  EXPECT_EQ(r.out,
            "VM     STATUS   IP         MAC                 TAP    ERROR\n"
            "ok-1   PAUSED   10.0.0.2   02:53:0a:00:00:02   smv1   -\n"
            "ok-2   PAUSED   10.0.0.3   02:53:0a:00:00:03   smv2   -\n");

  daemon_.SetForkFailure("c-2", grpc::StatusCode::RESOURCE_EXHAUSTED,
                         "no free address");
  r = Ctl({"snapshot", "fork", "base", "--count", "3", "--prefix", "c"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(daemon_.last_fork().resume_vm());
  EXPECT_NE(r.out.find("c-1   RUNNING"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("c-2   FAILED    -          -                   -      "
                       "RESOURCE_EXHAUSTED: no free address"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("c-3   RUNNING"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "smolvmctl: fork snapshot base: 1 of 3 clones failed\n");

  r = Ctl({"--json", "snapshot", "fork", "base", "--count", "2", "--prefix",
           "c"});  // c-1 exists by now; c-2 is scripted to fail.
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out.front(), '[');
  EXPECT_NE(r.out.find("\"error_code\": 6"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"error_code\": 8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"error_message\": \"no free address\""),
            std::string::npos)
      << r.out;

  // A bad request is the call's error.
  r = Ctl({"snapshot", "fork", "nope", "--count", "2"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "smolvmctl: get snapshot nope: not found\n");
  EXPECT_EQ(Ctl({"snapshot", "fork", "base"}).exit_code, 2);  // No --count.
}

TEST_F(SmolvmctlTest, FilePutAndGet) {
  const std::string local = temp_.Join("script.sh");
  WriteFileOrDie(local, "#!/bin/sh\necho hi\n");
  CtlResult r =
      Ctl({"file", "put", "box", local, "/root/bin/", "--mode", "0755"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::optional<FakeDaemon::StoredFile> stored =
      daemon_.GetFile("/root/bin/script.sh");
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->mode, 0755u);
  EXPECT_EQ(stored->data, "#!/bin/sh\necho hi\n");

  const std::string dir = temp_.Join("got");
  std::filesystem::create_directories(dir);
  r = Ctl({"file", "get", "box", "/root/bin/script.sh", dir});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadFileOrDie(dir + "/script.sh"), "#!/bin/sh\necho hi\n");

  r = Ctl({"file", "put", "box", local, "/x", "--mode", "999"});
  EXPECT_EQ(r.exit_code, 2);
  r = Ctl({"file", "get", "box", "/missing", temp_.Join("m")});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.err, "smolvmctl: get file /missing: not found\n");

  // Directories.
  std::filesystem::create_directories(temp_.Join("tree/a"));
  WriteFileOrDie(temp_.Join("tree/a/f"), "f");
  r = Ctl({"file", "put", "box", temp_.Join("tree"), "/srv/tree"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Ctl({"file", "get", "box", "--dir", "/srv/tree", temp_.Join("copy")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(ReadFileOrDie(temp_.Join("copy/a/f")), "f");

  // Refused entries are warnings, their guest-chosen names escaped; the rest
  // is copied.
  ASSERT_EQ(mkfifo(temp_.Join("tree/evil\x1b]0;owned\x07").c_str(), 0644), 0);
  r = Ctl({"file", "put", "box", temp_.Join("tree"), "/srv/tree"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Ctl({"file", "get", "box", "--dir", "/srv/tree", temp_.Join("copy2")});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "smolvmctl: refused ./evil\\x1b]0;owned\\x07: FIFO\n");
  EXPECT_EQ(ReadFileOrDie(temp_.Join("copy2/a/f")), "f");
}

TEST_F(SmolvmctlTest, DaemonTextIsEscaped) {
  CtlResult r = Ctl({"vm", "get", "evil"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_EQ(r.err,
            "smolvmctl: get vm evil: console says \\x1b[2J\\x1b]0;owned\\x07"
            "\\x0d\ngone\n");

  v1::Vm vm;
  vm.set_vm_id("web");
  vm.set_status(v1::RUNNING);
  vm.set_owner("mallory\x1b[31m");
  daemon_.PutVm(vm);
  r = Ctl({"vm", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OWNER"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mallory\\x1b[31m"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  r = Ctl({"--json", "vm", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"owner\": \"mallory\\u001b[31m\""), std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  r = Ctl({"vm", "get", "web"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("mallory\\x1b[31m"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
}

TEST_F(SmolvmctlTest, EndpointTlsAndTenantFlags) {
  NoClientEnv env;
  MakeVm("web", v1::RUNNING);
  daemon_.TakeTenants();
  // --endpoint wins over --socket (which Ctl always passes).
  CtlResult r = Ctl({"--endpoint", "unix://" + options_.socket_path,
                     "--as-tenant", "alice", "vm", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("web"), std::string::npos) << r.out;
  EXPECT_EQ(daemon_.TakeTenants(), std::vector<std::string>{"alice"});
  r = Ctl({"vm", "exec", "web", "--as-tenant", "bob", "--", "true"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // attach (GetVm), then Exec.
  EXPECT_EQ(daemon_.TakeTenants(), (std::vector<std::string>{"bob", "bob"}));

  r = Ctl(
      {"--endpoint", "unix:///nonexistent/smolvmd-test.sock", "vm", "list"});
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_NE(r.err.find("is smolvmd running? socket "
                       "/nonexistent/smolvmd-test.sock"),
            std::string::npos)
      << r.err;

  r = Ctl(
      {"--endpoint", "127.0.0.1:7443", "--tls-ca", "/ca.pem", "vm", "list"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.err.find("--tls-cert"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--tls-key"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("--tls-ca"), std::string::npos) << r.err;

  r = Ctl({"--endpoint", "nonsense", "vm", "list"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(daemon_.TakeTenants().empty());
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

TEST(ConnectionTest, EndpointResolutionOrder) {
  NoClientEnv env;
  ClientOptions options;
  auto resolved = [&] { return Connection(options).endpoint(); };
  EXPECT_EQ(resolved(), "unix:///run/smolvmd/smolvmd.sock");
  EXPECT_EQ(Connection(options).socket_path(), "/run/smolvmd/smolvmd.sock");
  ScopedEnv socket_env(kSocketEnvVar, "/tmp/env.sock");
  EXPECT_EQ(resolved(), "unix:///tmp/env.sock");
  ScopedEnv endpoint_env(kEndpointEnvVar, "unix:/tmp/env-endpoint.sock");
  EXPECT_EQ(resolved(), "unix:///tmp/env-endpoint.sock");
  EXPECT_EQ(Connection(options).socket_path(), "/tmp/env-endpoint.sock");
  options.socket_path = "/tmp/flag.sock";
  EXPECT_EQ(resolved(), "unix:///tmp/flag.sock");
  options.endpoint = "smolvm.example:7443";
  EXPECT_EQ(resolved(), "smolvm.example:7443");
  EXPECT_EQ(Connection(options).socket_path(), "");
  EXPECT_EQ(ResolveEndpoint(options), "smolvm.example:7443");
  options.endpoint.clear();
  EXPECT_EQ(ResolveEndpoint(options), "unix:///tmp/flag.sock");
  options.socket_path = "//tmp/odd.sock";  // Still that path.
  EXPECT_EQ(Connection(options).socket_path(), "//tmp/odd.sock");
  options.socket_path = "rel.sock";
  EXPECT_EQ(Connection(options).endpoint(), "unix:rel.sock");
  EXPECT_EQ(Connection(options).socket_path(), "rel.sock");
  options.socket_path = "/tmp/flag.sock";

  // The TLS files fall back to the environment only for TCP endpoints.
  ScopedEnv cert_env(kTlsCertEnvVar, "/tmp/env-cert.pem");
  options.tls_key = "/tmp/key.pem";
  EXPECT_EQ(Connection(options).options().tls_cert, "");
  EXPECT_EQ(Connection(options).options().tls_key, "");
  options.endpoint = "[::1]:7443";
  EXPECT_EQ(Connection(options).options().tls_cert, "/tmp/env-cert.pem");
  EXPECT_EQ(Connection(options).options().tls_key, "/tmp/key.pem");
  EXPECT_EQ(Connection(options).options().tls_ca, "");
}

}  // namespace
}  // namespace smolvm
