// Fuzz target: the API's request edge. The first byte picks a request type,
// the rest is that request in protobuf's binary wire format, as gRPC hands
// it to a handler. The request goes through the daemon's conversion
// (daemon/proto_convert.cc) and the checks VmManager runs before touching
// anything (lib/model/validation.cc, lib/model/boot_args.cc), in the same
// order. Beyond "no crash, no leak", it checks two properties:
//   - a normalized VmConfig normalizes again to itself (idempotent), and
//   - it survives ToProto/FromProto unchanged (the API can show what it
//     stored).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "daemon/proto_convert.h"
#include "lib/model/boot_args.h"
#include "lib/model/validation.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace {

using namespace smolvm;  // NOLINT: a fuzz target's one namespace

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "property violated: %s\n", what);
  std::abort();
}

// VmManager::CreateVm: id (generated when empty), NormalizeVmConfig, then
// the tenant's boot_args rule.
void CreateVm(const std::string& wire) {
  v1::CreateVmRequest req;
  if (!req.ParseFromString(wire)) return;
  absl::StatusOr<VmConfig> converted = daemon::FromProto(req.config());
  if (!converted.ok()) return;  // An egress mode this daemon does not know.
  VmConfig config = *std::move(converted);
  if (config.vm_id.empty()) config.vm_id = "vm-0123abcd";  // GenerateId is random
  if (!ValidateId(config.vm_id, "vm_id").ok()) return;
  if (!NormalizeVmConfig(config).ok()) return;
  (void)ValidateTenantBootArgs(config.boot_args);

  VmConfig again = config;
  Check(NormalizeVmConfig(again).ok() && again == config,
        "NormalizeVmConfig is not idempotent");
  v1::VMConfig shown;
  daemon::ToProto(config, &shown);
  absl::StatusOr<VmConfig> back = daemon::FromProto(shown);
  Check(back.ok() && *back == config, "VmConfig does not survive ToProto/FromProto");
}

// VmService.Exec: the conversion, then VmManager::StartExec's checks.
void Exec(const std::string& wire) {
  v1::ExecRequest req;
  if (!req.ParseFromString(wire)) return;
  if (!ValidateId(req.vm_id(), "vm_id").ok()) return;
  auto spec = daemon::ExecSpecFromProto(req);
  if (!spec.ok()) return;
  if (spec->argv.empty() || spec->argv[0].empty()) return;
  if (!ValidateEnv(spec->env, "env").ok()) return;
  if (!spec->cwd.empty()) (void)ValidateGuestPath(spec->cwd);
}

// VmService.ExposePort / UnexposePort: VmManager::ExposePort's checks.
void ExposePort(const std::string& wire) {
  v1::ExposePortRequest req;
  if (!req.ParseFromString(wire)) return;
  if (!ValidateId(req.vm_id(), "vm_id").ok()) return;
  PortForward forward = daemon::FromProto(req.forward());
  if (!NormalizePortForward(forward).ok()) return;
  PortForward again = forward;
  Check(NormalizePortForward(again).ok() && again == forward,
        "NormalizePortForward is not idempotent");
}

void UnexposePort(const std::string& wire) {
  v1::UnexposePortRequest req;
  if (!req.ParseFromString(wire)) return;
  if (!ValidateId(req.vm_id(), "vm_id").ok()) return;
  PortForward forward;
  forward.host_ip = req.host_ip();
  forward.host_port = req.host_port();
  forward.guest_port = 1;
  forward.protocol = req.protocol();
  (void)NormalizePortForward(forward);
}

// SnapshotService: the ids of CreateSnapshot, RestoreSnapshot and
// ForkSnapshot (whose clones are named <prefix>-<n>).
void Snapshot(const std::string& wire) {
  v1::CreateSnapshotRequest create;
  if (create.ParseFromString(wire)) {
    (void)ValidateId(create.vm_id(), "vm_id");
    if (!create.snapshot_id().empty()) (void)ValidateId(create.snapshot_id(), "snapshot_id");
  }
  v1::RestoreSnapshotRequest restore;
  if (restore.ParseFromString(wire)) {
    (void)ValidateId(restore.snapshot_id(), "snapshot_id");
    if (!restore.vm_id().empty()) (void)ValidateId(restore.vm_id(), "vm_id");
  }
  v1::ForkSnapshotRequest fork;
  if (fork.ParseFromString(wire) && ValidateId(fork.snapshot_id(), "snapshot_id").ok()) {
    const std::string prefix =
        fork.vm_id_prefix().empty() ? fork.snapshot_id() + "-fork" : fork.vm_id_prefix();
    (void)ValidateId(prefix + "-" + std::to_string(fork.count()), "vm_id_prefix + \"-N\"");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string wire(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 5) {
    case 0: CreateVm(wire); break;
    case 1: Exec(wire); break;
    case 2: ExposePort(wire); break;
    case 3: UnexposePort(wire); break;
    case 4: Snapshot(wire); break;
  }
  return 0;
}
