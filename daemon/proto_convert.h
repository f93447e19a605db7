// File: proto_convert.h
//
// Conversions between the wire API (smolvm.v1 messages) and lib's domain
// structs. Kept here so the SQLite schema, the QEMU arguments and the API
// can evolve separately.
#pragma once

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "lib/agent/agent_client.h"
#include "lib/core/operations.h"
#include "lib/core/vm_stats.h"
#include "lib/model/event.h"
#include "lib/model/pool.h"
#include "lib/model/vm.h"
#include "lib/snapshot/snapshot_files.h"
#include "smolvm/v1/event_service.pb.h"
#include "smolvm/v1/operation_service.pb.h"
#include "smolvm/v1/pool_service.pb.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/types.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm::daemon {

// INVALID_ARGUMENT for an egress mode this daemon does not know.
absl::StatusOr<VmConfig> FromProto(const v1::VMConfig& config);
absl::StatusOr<EgressPolicy> FromProto(const v1::EgressPolicy& egress);
PortForward FromProto(const v1::PortForward& forward);
// Unset actions are the defaults (delete, pause); INVALID_ARGUMENT for one
// this daemon does not know.
absl::StatusOr<Lifetime> FromProto(const v1::Lifetime& lifetime);
void ToProto(const VmConfig& config, v1::VMConfig* out);
void ToProto(const NetworkConfig& network, v1::NetworkConfig* out);
void ToProto(const VmRecord& vm, v1::Vm* out);
void ToProto(const SnapshotRecord& snapshot, v1::SnapshotInfo* out);
void ToProto(const PoolStatus& pool, v1::Pool* out);
void ToProto(const core::OperationState& op, v1::Operation* out);
void ToProto(const std::string& vm_id, const core::VmStats& stats, v1::VmStats* out);
void ToProto(const snapshot::VerifyReport& report, v1::VerifySnapshotResponse* out);
v1::VmStatus ToProto(VmState state);
// Events (EventService). A filter's kinds must be known (INVALID_ARGUMENT
// for EVENT_KIND_UNSPECIFIED or a number this daemon does not know).
void ToProto(const EventRecord& event, v1::Event* out);
absl::StatusOr<EventFilter> FromProto(const v1::EventFilter& filter);
// The filters of a list request; INVALID_ARGUMENT for an unknown status.
absl::StatusOr<ListFilter> FilterFromProto(const v1::ListVmsRequest& req);
ListFilter FilterFromProto(const v1::ListSnapshotsRequest& req);
// Clones of ForkSnapshot / ForkVm, in order, each with its VM or its error.
void ToProto(const std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>& clones,
             google::protobuf::RepeatedPtrField<v1::ForkResult>* out);
// Argv or shell form, env, cwd, stdin and timeout of an Exec request.
// The command every request that runs one carries (ExecRequest,
// StartProcessRequest): argv, or a shell command (/bin/sh -c), with env, cwd
// and user. `what` names the call in the error for both set.
template <typename Request>
absl::StatusOr<agent::ExecSpec> CommandSpecFromProto(const Request& req, const char* what) {
  agent::ExecSpec spec;
  if (req.argv_size() > 0 && !req.command().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": set either argv or command, not both"));
  }
  if (req.argv_size() > 0) {
    spec.argv.assign(req.argv().begin(), req.argv().end());
  } else if (!req.command().empty()) {
    spec.argv = {"/bin/sh", "-c", req.command()};
  }
  spec.env.insert(req.env().begin(), req.env().end());
  spec.cwd = req.cwd();
  spec.user = req.user();
  return spec;
}

absl::StatusOr<agent::ExecSpec> ExecSpecFromProto(const v1::ExecRequest& req);
// One exec event as a stream message.
void ToProto(const agent::ExecEvent& event, v1::ExecResponse* out);

}  // namespace smolvm::daemon
