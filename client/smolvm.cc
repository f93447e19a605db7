#include "client/smolvm.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/operation_watch.h"
#include "client/status.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm {

namespace {

using VmStub = v1::VmService::Stub;
using SnapshotStub = v1::SnapshotService::Stub;

// A daemon that keeps handing out the token it was given would make the list
// loops spin forever; treat that as the broken invariant it is.
absl::Status CheckPageToken(const std::string& sent,
                            const std::string& received) {
  if (!received.empty() && received == sent) {
    return absl::InternalError(absl::StrCat(
        "list: daemon returned the same page token twice: ", received));
  }
  return absl::OkStatus();
}

// The clones of a ForkSnapshot / ForkVm reply, each OK with its VM or with
// the daemon's error_code (a google.rpc.Code, gRPC's numbering).
std::vector<ForkOutcome> ToForkOutcomes(google::protobuf::RepeatedPtrField<v1::ForkResult>* results,
                                        const std::string& what) {
  std::vector<ForkOutcome> outcomes;
  outcomes.reserve(results->size());
  for (v1::ForkResult& result : *results) {
    ForkOutcome outcome{result.vm_id(), v1::Vm()};
    if (result.error_code() != 0) {
      outcome.vm = FromGrpcCode(result.error_code(), result.error_message());
    } else if (!result.has_vm()) {
      outcome.vm = absl::InternalError(absl::StrCat(
          what, ": daemon reported clone ", result.vm_id(), " as created but returned no VM"));
    } else {
      outcome.vm = std::move(*result.mutable_vm());
    }
    outcomes.push_back(std::move(outcome));
  }
  return outcomes;
}

}  // namespace

// --- SmolVM ------------------------------------------------------------------

SmolVM::SmolVM(v1::VMConfig config, ClientOptions options)
    : connection_(std::move(options)), config_(std::move(config)) {}

SmolVM::SmolVM(SmolVM&&) noexcept = default;
SmolVM& SmolVM::operator=(SmolVM&&) noexcept = default;
SmolVM::~SmolVM() = default;

SmolVM::SmolVM(ExistingVmTag, v1::Vm vm, Connection connection)
    : connection_(std::move(connection)),
      config_(vm.config()),
      info_(std::move(vm)) {}

absl::Status SmolVM::CheckStarted(absl::string_view operation) const {
  if (closed_) {
    return absl::FailedPreconditionError(
        absl::StrCat(operation, " vm ", vm_id(), ": closed"));
  }
  if (vm_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat(operation, " vm: not started; call start() first"));
  }
  return absl::OkStatus();
}

absl::Status SmolVM::start(const ProgressCallback& on_progress) {
  if (closed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("start vm ", vm_id(), ": closed"));
  }
  absl::StatusOr<v1::Vm> vm;
  if (vm_id().empty()) {
    v1::CreateVmRequest request;
    *request.mutable_config() = config_;
    request.set_start(true);
    vm = CallWithProgress(connection_, request, on_progress,
                          [&] { return connection_.Call(&VmStub::CreateVm, request); });
  } else {
    v1::StartVmRequest request;
    request.set_vm_id(vm_id());
    vm = CallWithProgress(connection_, request, on_progress,
                          [&] { return connection_.Call(&VmStub::StartVm, request); });
  }
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::StatusOr<v1::SnapshotInfo> SmolVM::snapshot(
    const std::string& snapshot_id, bool resume_source,
    const ProgressCallback& on_progress, const std::map<std::string, std::string>& labels) {
  if (absl::Status s = CheckStarted("snapshot"); !s.ok()) return s;
  v1::CreateSnapshotRequest request;
  request.set_vm_id(vm_id());
  request.set_snapshot_id(snapshot_id);
  request.set_resume_source(resume_source);
  request.mutable_labels()->insert(labels.begin(), labels.end());
  absl::StatusOr<v1::SnapshotInfo> info = CallWithProgress(
      connection_, request, on_progress,
      [&] { return connection_.Call(&SnapshotStub::CreateSnapshot, request); });
  // CreateSnapshot returns the snapshot, not the VM; the API documents the
  // state it leaves the VM in.
  if (info.ok()) info_.set_status(resume_source ? v1::RUNNING : v1::PAUSED);
  return info;
}

absl::StatusOr<SmolVM::ForkVmResult> SmolVM::fork(uint32_t count, const ForkVmOptions& options,
                                                   const ProgressCallback& on_progress) {
  if (absl::Status s = CheckStarted("fork"); !s.ok()) return s;
  v1::ForkVmRequest request;
  request.set_vm_id(vm_id());
  request.set_count(count);
  request.set_snapshot_id(options.snapshot_id);
  request.set_vm_id_prefix(options.vm_id_prefix);
  request.set_paused(options.paused);
  request.mutable_labels()->insert(options.labels.begin(), options.labels.end());
  absl::StatusOr<v1::ForkVmResponse> response = CallWithProgress(
      connection_, request, on_progress, [&] { return connection_.Call(&VmStub::ForkVm, request); });
  if (!response.ok()) return response.status();
  ForkVmResult result;
  result.snapshot_id = response->snapshot_id();
  result.children = ToForkOutcomes(response->mutable_results(), "fork " + vm_id());
  return result;
}

absl::Status SmolVM::stop() {
  if (absl::Status s = CheckStarted("stop"); !s.ok()) return s;
  v1::StopVmRequest request;
  request.set_vm_id(vm_id());
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::StopVm, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::pause() {
  if (absl::Status s = CheckStarted("pause"); !s.ok()) return s;
  v1::PauseVmRequest request;
  request.set_vm_id(vm_id());
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::PauseVm, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::resume() {
  if (absl::Status s = CheckStarted("resume"); !s.ok()) return s;
  v1::ResumeVmRequest request;
  request.set_vm_id(vm_id());
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::ResumeVm, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::close() {
  if (closed_) return absl::OkStatus();
  if (!vm_id().empty()) {
    v1::DeleteVmRequest request;
    request.set_vm_id(vm_id());
    absl::StatusOr<v1::DeleteVmResponse> response =
        connection_.Call(&VmStub::DeleteVm, request);
    // NOT_FOUND: already deleted (by an earlier close() whose reply was lost,
    // or by someone else); either way the goal of close() is reached.
    if (!response.ok() && !absl::IsNotFound(response.status())) {
      return response.status();
    }
  }
  closed_ = true;
  info_.set_status(v1::VM_STATUS_UNSPECIFIED);
  return absl::OkStatus();
}

absl::StatusOr<v1::Vm> SmolVM::refresh() {
  if (absl::Status s = CheckStarted("refresh"); !s.ok()) return s;
  v1::GetVmRequest request;
  request.set_vm_id(vm_id());
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::GetVm, request);
  if (vm.ok()) info_ = *vm;
  return vm;
}

absl::Status SmolVM::expose_port(uint32_t host_port, uint32_t guest_port,
                                 const std::string& host_ip,
                                 const std::string& protocol) {
  if (absl::Status s = CheckStarted("expose port"); !s.ok()) return s;
  v1::ExposePortRequest request;
  request.set_vm_id(vm_id());
  v1::PortForward* forward = request.mutable_forward();
  forward->set_host_ip(host_ip);
  forward->set_host_port(host_port);
  forward->set_guest_port(guest_port);
  forward->set_protocol(protocol);
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::ExposePort, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::unexpose_port(uint32_t host_port,
                                   const std::string& host_ip,
                                   const std::string& protocol) {
  if (absl::Status s = CheckStarted("unexpose port"); !s.ok()) return s;
  v1::UnexposePortRequest request;
  request.set_vm_id(vm_id());
  request.set_host_ip(host_ip);
  request.set_host_port(host_port);
  request.set_protocol(protocol);
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::UnexposePort, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::update_network_policy(const v1::EgressPolicy& egress) {
  if (absl::Status s = CheckStarted("update the network policy of"); !s.ok()) return s;
  v1::UpdateNetworkPolicyRequest request;
  request.set_vm_id(vm_id());
  *request.mutable_egress() = egress;
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::UpdateNetworkPolicy, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::Status SmolVM::set_lifetime(const v1::Lifetime& lifetime) {
  if (absl::Status s = CheckStarted("set the lifetime of"); !s.ok()) return s;
  v1::SetLifetimeRequest request;
  request.set_vm_id(vm_id());
  *request.mutable_lifetime() = lifetime;
  absl::StatusOr<v1::Vm> vm = connection_.Call(&VmStub::SetLifetime, request);
  if (!vm.ok()) return vm.status();
  info_ = *std::move(vm);
  return absl::OkStatus();
}

absl::StatusOr<SmolVM> SmolVM::from_snapshot(const std::string& snapshot_id,
                                             bool resume_vm,
                                             const std::string& vm_id,
                                             ClientOptions options,
                                             const ProgressCallback& on_progress) {
  Connection connection(std::move(options));
  v1::RestoreSnapshotRequest request;
  request.set_snapshot_id(snapshot_id);
  request.set_resume_vm(resume_vm);
  request.set_vm_id(vm_id);
  absl::StatusOr<v1::Vm> vm = CallWithProgress(connection, request, on_progress, [&] {
    return connection.Call(&SnapshotStub::RestoreSnapshot, request);
  });
  if (!vm.ok()) return vm.status();
  return SmolVM(ExistingVmTag{}, *std::move(vm), std::move(connection));
}

absl::StatusOr<SmolVM> SmolVM::attach(const std::string& vm_id,
                                      ClientOptions options) {
  Connection connection(std::move(options));
  v1::GetVmRequest request;
  request.set_vm_id(vm_id);
  absl::StatusOr<v1::Vm> vm = connection.Call(&VmStub::GetVm, request);
  if (!vm.ok()) return vm.status();
  return SmolVM(ExistingVmTag{}, *std::move(vm), std::move(connection));
}

// --- SmolVMManager -----------------------------------------------------------

// The largest page the daemon serves: a full listing of 10,000 snapshots is
// 10 round trips, not 100.
constexpr int kListPageSize = 1000;

SmolVMManager::SmolVMManager(ClientOptions options)
    : connection_(std::move(options)) {}

absl::StatusOr<std::vector<v1::SnapshotInfo>> SmolVMManager::list_snapshots(
    const std::string& vm_id, const ListFilter& filter) const {
  std::vector<v1::SnapshotInfo> snapshots;
  v1::ListSnapshotsRequest request;
  request.set_page_size(kListPageSize);
  request.set_vm_id(vm_id);
  if (!filter.statuses.empty()) {
    return absl::InvalidArgumentError("list_snapshots: snapshots have no status to filter by");
  }
  request.mutable_labels()->insert(filter.labels.begin(), filter.labels.end());
  request.set_image(filter.image);
  while (true) {
    absl::StatusOr<v1::ListSnapshotsResponse> page =
        connection_.Call(&SnapshotStub::ListSnapshots, request);
    if (!page.ok()) return page.status();
    for (v1::SnapshotInfo& info : *page->mutable_snapshots()) {
      snapshots.push_back(std::move(info));
    }
    if (page->next_page_token().empty()) break;
    if (absl::Status s =
            CheckPageToken(request.page_token(), page->next_page_token());
        !s.ok()) {
      return s;
    }
    request.set_page_token(page->next_page_token());
  }
  return snapshots;
}

absl::StatusOr<v1::SnapshotInfo> SmolVMManager::get_snapshot(
    const std::string& id) const {
  v1::GetSnapshotRequest request;
  request.set_snapshot_id(id);
  return connection_.Call(&SnapshotStub::GetSnapshot, request);
}

absl::Status SmolVMManager::delete_snapshot(const std::string& id) const {
  v1::DeleteSnapshotRequest request;
  request.set_snapshot_id(id);
  return connection_.Call(&SnapshotStub::DeleteSnapshot, request).status();
}

absl::StatusOr<v1::VerifySnapshotResponse> SmolVMManager::verify_snapshot(
    const std::string& id) const {
  v1::VerifySnapshotRequest request;
  request.set_snapshot_id(id);
  return connection_.Call(&SnapshotStub::VerifySnapshot, request);
}

absl::StatusOr<std::vector<v1::Vm>> SmolVMManager::list_vms(const ListFilter& filter) const {
  std::vector<v1::Vm> vms;
  v1::ListVmsRequest request;
  request.set_page_size(kListPageSize);
  request.mutable_labels()->insert(filter.labels.begin(), filter.labels.end());
  for (v1::VmStatus status : filter.statuses) request.add_statuses(status);
  request.set_image(filter.image);
  while (true) {
    absl::StatusOr<v1::ListVmsResponse> page =
        connection_.Call(&VmStub::ListVms, request);
    if (!page.ok()) return page.status();
    for (v1::Vm& vm : *page->mutable_vms()) vms.push_back(std::move(vm));
    if (page->next_page_token().empty()) break;
    if (absl::Status s =
            CheckPageToken(request.page_token(), page->next_page_token());
        !s.ok()) {
      return s;
    }
    request.set_page_token(page->next_page_token());
  }
  return vms;
}

absl::StatusOr<v1::Vm> SmolVMManager::get_vm(const std::string& id) const {
  v1::GetVmRequest request;
  request.set_vm_id(id);
  return connection_.Call(&VmStub::GetVm, request);
}

absl::StatusOr<v1::Operation> SmolVMManager::get_operation(const std::string& id) const {
  v1::GetOperationRequest request;
  request.set_operation_id(id);
  return connection_.Call(&v1::OperationService::Stub::GetOperation, request);
}

absl::StatusOr<std::vector<ForkOutcome>> SmolVMManager::fork_snapshot(
    const std::string& snapshot_id, uint32_t count, bool resume_vm,
    const std::string& vm_id_prefix, const ProgressCallback& on_progress) const {
  v1::ForkSnapshotRequest request;
  request.set_snapshot_id(snapshot_id);
  request.set_count(count);
  request.set_resume_vm(resume_vm);
  request.set_vm_id_prefix(vm_id_prefix);
  absl::StatusOr<v1::ForkSnapshotResponse> response =
      CallWithProgress(connection_, request, on_progress,
                       [&] { return connection_.Call(&SnapshotStub::ForkSnapshot, request); });
  if (!response.ok()) return response.status();
  return ToForkOutcomes(response->mutable_results(), "fork snapshot " + snapshot_id);
}

}  // namespace smolvm
