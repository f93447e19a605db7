#include "daemon/proto_convert.h"

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/time_util.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {
namespace {

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

void ToProto(const EgressPolicy& e, v1::EgressPolicy* out) {
  switch (e.mode) {
    case EgressMode::kOpen: out->set_mode(v1::EgressPolicy::EGRESS_OPEN); break;
    case EgressMode::kOff: out->set_mode(v1::EgressPolicy::EGRESS_OFF); break;
    case EgressMode::kRestricted: out->set_mode(v1::EgressPolicy::EGRESS_RESTRICTED); break;
  }
  for (const auto& c : e.allow_cidrs) out->add_allow_cidrs(c);
  for (const auto& c : e.deny_cidrs) out->add_deny_cidrs(c);
  for (const auto& d : e.allow_domains) out->add_allow_domains(d);
  for (const auto& d : e.deny_domains) out->add_deny_domains(d);
}

void ToProto(const PortForward& f, v1::PortForward* out) {
  out->set_host_ip(f.host_ip);
  out->set_host_port(f.host_port);
  out->set_guest_port(f.guest_port);
  out->set_protocol(f.protocol);
}

v1::LifetimeAction ToProto(LifetimeAction action) {
  switch (action) {
    case LifetimeAction::kDelete: return v1::LIFETIME_DELETE;
    case LifetimeAction::kStop: return v1::LIFETIME_STOP;
    case LifetimeAction::kPause: return v1::LIFETIME_PAUSE;
    case LifetimeAction::kSnapshot: return v1::LIFETIME_SNAPSHOT;
  }
  return v1::LIFETIME_ACTION_UNSPECIFIED;
}

absl::StatusOr<LifetimeAction> FromProto(v1::LifetimeAction action, LifetimeAction unset,
                                         const char* field) {
  switch (action) {
    case v1::LIFETIME_ACTION_UNSPECIFIED: return unset;
    case v1::LIFETIME_DELETE: return LifetimeAction::kDelete;
    case v1::LIFETIME_STOP: return LifetimeAction::kStop;
    case v1::LIFETIME_PAUSE: return LifetimeAction::kPause;
    case v1::LIFETIME_SNAPSHOT: return LifetimeAction::kSnapshot;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, " ", static_cast<int>(action),
          " is not LIFETIME_DELETE, LIFETIME_STOP, LIFETIME_PAUSE or LIFETIME_SNAPSHOT"));
  }
}

void ToProto(const Lifetime& l, v1::Lifetime* out) {
  out->set_max_lifetime_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(l.max_lifetime)));
  out->set_max_lifetime_action(ToProto(l.max_lifetime_action));
  out->set_idle_timeout_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(l.idle_timeout)));
  out->set_idle_action(ToProto(l.idle_action));
  out->set_auto_resume(l.auto_resume);
}

}  // namespace

absl::StatusOr<Lifetime> FromProto(const v1::Lifetime& l) {
  Lifetime out;
  out.max_lifetime = absl::Seconds(l.max_lifetime_seconds());
  out.idle_timeout = absl::Seconds(l.idle_timeout_seconds());
  SMOLVM_ASSIGN_OR_RETURN(out.max_lifetime_action,
                          FromProto(l.max_lifetime_action(), LifetimeAction::kDelete,
                                    "lifetime.max_lifetime_action"));
  SMOLVM_ASSIGN_OR_RETURN(out.idle_action, FromProto(l.idle_action(), LifetimeAction::kPause,
                                                     "lifetime.idle_action"));
  out.auto_resume = !l.has_auto_resume() || l.auto_resume();
  return out;
}

void ToProto(const std::string& vm_id, const core::VmStats& s, v1::VmStats* out) {
  out->set_vm_id(vm_id);
  SetTimestamp(s.taken_at, out->mutable_taken_at());
  out->set_uptime_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(s.uptime)));
  out->set_cpu_time_ns(s.cpu_time_ns);
  out->set_vmm_rss_bytes(s.vmm_rss_bytes);
  out->set_vmm_pss_bytes(s.vmm_pss_bytes);
  out->set_disk_allocated_bytes(s.disk_allocated_bytes);
  out->set_guest_tx_bytes(s.guest_tx_bytes);
  out->set_guest_tx_packets(s.guest_tx_packets);
  out->set_guest_rx_bytes(s.guest_rx_bytes);
  out->set_guest_rx_packets(s.guest_rx_packets);
  out->set_guest_memory_known(s.guest_memory_known);
  out->set_guest_memory_total_bytes(s.guest_memory_total_bytes);
  out->set_guest_memory_available_bytes(s.guest_memory_available_bytes);
}

absl::StatusOr<EgressPolicy> FromProto(const v1::EgressPolicy& e) {
  EgressPolicy out;
  switch (e.mode()) {
    case v1::EgressPolicy::EGRESS_OPEN: out.mode = EgressMode::kOpen; break;
    case v1::EgressPolicy::EGRESS_OFF: out.mode = EgressMode::kOff; break;
    case v1::EgressPolicy::EGRESS_RESTRICTED: out.mode = EgressMode::kRestricted; break;
    default:
      // A mode from a newer client must not read as open.
      return absl::InvalidArgumentError(absl::StrCat(
          "egress.mode ", e.mode(), " is not EGRESS_OPEN, EGRESS_OFF or EGRESS_RESTRICTED"));
  }
  out.allow_cidrs.assign(e.allow_cidrs().begin(), e.allow_cidrs().end());
  out.deny_cidrs.assign(e.deny_cidrs().begin(), e.deny_cidrs().end());
  out.allow_domains.assign(e.allow_domains().begin(), e.allow_domains().end());
  out.deny_domains.assign(e.deny_domains().begin(), e.deny_domains().end());
  return out;
}

PortForward FromProto(const v1::PortForward& f) {
  PortForward out;
  out.host_ip = f.host_ip();
  out.host_port = f.host_port();
  out.guest_port = f.guest_port();
  out.protocol = f.protocol();
  return out;
}

absl::StatusOr<VmConfig> FromProto(const v1::VMConfig& c) {
  VmConfig config;
  config.vm_id = c.vm_id();
  config.vcpu_count = c.vcpu_count();
  config.memory_mib = c.memory_mib();
  config.kernel_path = c.kernel_path();
  config.initrd_path = c.initrd_path();
  config.rootfs_path = c.rootfs_path();
  config.image = c.image();
  config.disk_size_mib = c.disk_size_mib();
  // image_digest and working_dir are the daemon's to set.
  config.boot_args = c.boot_args();
  config.env.insert(c.env().begin(), c.env().end());
  config.labels.insert(c.labels().begin(), c.labels().end());
  SMOLVM_ASSIGN_OR_RETURN(config.egress, FromProto(c.egress()));
  for (const auto& f : c.port_forwards()) config.port_forwards.push_back(FromProto(f));
  if (c.has_lifetime()) {
    SMOLVM_ASSIGN_OR_RETURN(config.lifetime, FromProto(c.lifetime()));
  }
  for (const auto& m : c.mounts()) {
    config.mounts.push_back(Mount{m.host_path(), m.guest_path(), m.read_only(),
                                  m.detach_on_snapshot()});
  }
  return config;
}

void ToProto(const VmConfig& c, v1::VMConfig* out) {
  out->set_vm_id(c.vm_id);
  out->set_vcpu_count(c.vcpu_count);
  out->set_memory_mib(c.memory_mib);
  out->set_kernel_path(c.kernel_path);
  out->set_initrd_path(c.initrd_path);
  out->set_rootfs_path(c.rootfs_path);
  out->set_image(c.image);
  out->set_disk_size_mib(c.disk_size_mib);
  out->set_image_digest(c.image_digest);
  out->set_boot_args(c.boot_args);
  for (const auto& [k, v] : c.env) (*out->mutable_env())[k] = v;
  for (const auto& [k, v] : c.labels) (*out->mutable_labels())[k] = v;
  ToProto(c.egress, out->mutable_egress());
  for (const auto& f : c.port_forwards) ToProto(f, out->add_port_forwards());
  if (c.lifetime.has_policy()) ToProto(c.lifetime, out->mutable_lifetime());
  for (const auto& m : c.mounts) {
    v1::Mount* pm = out->add_mounts();
    pm->set_host_path(m.host_path);
    pm->set_guest_path(m.guest_path);
    pm->set_read_only(m.read_only);
    pm->set_detach_on_snapshot(m.detach_on_snapshot);
  }
}

void ToProto(const NetworkConfig& n, v1::NetworkConfig* out) {
  out->set_guest_ip(n.guest_ip);
  out->set_gateway_ip(n.gateway_ip);
  out->set_netmask(n.netmask);
  out->set_tap_device(n.tap_device);
  out->set_guest_mac(n.guest_mac);
  out->set_dns_server(n.dns_server);
  for (const auto& f : n.port_forwards) ToProto(f, out->add_port_forwards());
  ToProto(n.egress, out->mutable_egress());
}

v1::VmStatus ToProto(VmState state) {
  switch (state) {
    case VmState::kCreated: return v1::CREATED;
    case VmState::kRunning: return v1::RUNNING;
    case VmState::kPaused: return v1::PAUSED;
    case VmState::kStopped: return v1::STOPPED;
    case VmState::kError: return v1::ERROR;
  }
  return v1::VM_STATUS_UNSPECIFIED;
}

void ToProto(const VmRecord& vm, v1::Vm* out) {
  out->set_vm_id(vm.vm_id);
  out->set_status(ToProto(vm.state));
  ToProto(vm.config, out->mutable_config());
  ToProto(vm.network, out->mutable_network());
  SetTimestamp(vm.created_at, out->mutable_created_at());
  SetTimestamp(vm.updated_at, out->mutable_updated_at());
  out->set_error(vm.error);
  out->set_vmm_pid(vm.vmm_pid);
  out->set_vmm_uid(vm.vmm_uid);
  out->set_restored_from_snapshot_id(vm.restored_from);
  out->set_owner(vm.owner);
  out->set_pool_id(vm.pool_id);
  const Lifetime& lifetime = vm.config.lifetime;
  if (lifetime.expires_at != absl::InfinitePast()) {
    SetTimestamp(lifetime.expires_at, out->mutable_lifetime_deadline());
    out->set_lifetime_action(ToProto(lifetime.max_lifetime_action));
  }
  out->set_idle_paused(lifetime.idle_paused);
  out->set_lifetime_snapshot_id(lifetime.snapshot_id);
}

void ToProto(const SnapshotRecord& s, v1::SnapshotInfo* out) {
  out->set_snapshot_id(s.snapshot_id);
  out->set_vm_id(s.vm_id);
  out->set_snapshot_path(s.snapshot_path);
  out->set_mem_file_path(s.mem_file_path);
  out->set_disk_path(s.disk_path);
  ToProto(s.vm_config, out->mutable_vm_config());
  ToProto(s.network_config, out->mutable_network_config());
  SetTimestamp(s.created_at, out->mutable_created_at());
  out->set_restored(s.restored);
  if (s.restored_vm_id) out->set_restored_vm_id(*s.restored_vm_id);
  out->set_size_bytes(s.size_bytes);
  out->set_accelerator(s.accelerator);
  out->set_owner(s.owner);
  for (const auto& [k, v] : s.labels) (*out->mutable_labels())[k] = v;
}

absl::StatusOr<ListFilter> FilterFromProto(const v1::ListVmsRequest& req) {
  ListFilter filter;
  filter.labels.insert(req.labels().begin(), req.labels().end());
  for (int status : req.statuses()) {
    switch (status) {
      case v1::CREATED: filter.states.push_back(VmState::kCreated); break;
      case v1::RUNNING: filter.states.push_back(VmState::kRunning); break;
      case v1::PAUSED: filter.states.push_back(VmState::kPaused); break;
      case v1::STOPPED: filter.states.push_back(VmState::kStopped); break;
      case v1::ERROR: filter.states.push_back(VmState::kError); break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "statuses: ", status, " is not a VM status (CREATED, RUNNING, PAUSED, STOPPED, ERROR)"));
    }
  }
  if (!req.image().empty()) filter.images.push_back(req.image());
  return filter;
}

ListFilter FilterFromProto(const v1::ListSnapshotsRequest& req) {
  ListFilter filter;
  filter.labels.insert(req.labels().begin(), req.labels().end());
  if (!req.image().empty()) filter.images.push_back(req.image());
  return filter;
}

void ToProto(const std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>& clones,
             google::protobuf::RepeatedPtrField<v1::ForkResult>* out) {
  for (const auto& [vm_id, vm] : clones) {
    v1::ForkResult* r = out->Add();
    r->set_vm_id(vm_id);
    if (vm.ok()) {
      ToProto(*vm, r->mutable_vm());
    } else {
      r->set_error_code(static_cast<int>(vm.status().code()));
      r->set_error_message(std::string(vm.status().message()));
    }
  }
}

void ToProto(const core::OperationState& op, v1::Operation* out) {
  out->set_operation_id(op.operation_id);
  out->set_kind(op.kind);
  out->set_target(op.target);
  out->set_stage(op.stage);
  out->set_done(op.done);
  out->set_total(op.total);
  out->set_unit(op.unit);
  out->set_stage_number(op.stage_number);
  out->set_finished(op.finished);
  if (op.finished) {
    // What the call itself answered (grpc_status.h maps codes 1:1).
    out->set_code(static_cast<int32_t>(op.outcome.code()));
    out->set_error_message(std::string(op.outcome.message()));
  }
  SetTimestamp(op.started_at, out->mutable_started_at());
  SetTimestamp(op.updated_at, out->mutable_updated_at());
}

void ToProto(const PoolStatus& status, v1::Pool* out) {
  out->set_pool_id(status.pool.pool_id);
  out->set_snapshot_id(status.pool.snapshot_id);
  out->set_size(status.pool.size);
  out->set_owner(status.pool.owner);
  SetTimestamp(status.pool.created_at, out->mutable_created_at());
  for (const auto& id : status.ready) out->add_ready_vm_ids(id);
  out->set_starting(status.starting);
  out->set_last_error(status.last_error);
}

void ToProto(const snapshot::VerifyReport& report, v1::VerifySnapshotResponse* out) {
  out->set_snapshot_id(report.snapshot_id);
  for (const snapshot::FileCheck& f : report.files) {
    v1::FileCheck* file = out->add_files();
    file->set_name(f.name);
    file->set_path(f.path);
    file->set_expected(f.expected);
    file->set_actual(f.actual);
    file->set_ok(f.ok);
  }
  out->set_ok(report.ok);
  out->set_duration_ms(static_cast<uint64_t>(absl::ToInt64Milliseconds(report.duration)));
  out->set_legacy(report.legacy);
  out->set_bytes_read(report.bytes_read);
}

absl::StatusOr<agent::ExecSpec> ExecSpecFromProto(const v1::ExecRequest& req) {
  absl::StatusOr<agent::ExecSpec> command = CommandSpecFromProto(req, "exec");
  if (!command.ok()) return command.status();
  agent::ExecSpec spec = *std::move(command);
  spec.timeout = absl::Milliseconds(req.timeout_ms());
  if (req.has_stdin() || !req.stdin().empty()) {
    if (req.stdin().size() > (16u << 20)) {
      return absl::InvalidArgumentError(
          "exec: stdin is larger than 16 MiB; upload the data as a file instead");
    }
    spec.stdin_data = req.stdin();
  }
  return spec;
}

void ToProto(const agent::ExecEvent& event, v1::ExecResponse* out) {
  switch (event.kind) {
    case agent::ExecEvent::Kind::kStdout: out->set_stdout(event.data); break;
    case agent::ExecEvent::Kind::kStderr: out->set_stderr(event.data); break;
    case agent::ExecEvent::Kind::kExit: {
      auto* exit = out->mutable_exit();
      exit->set_exit_code(event.exit_code);
      exit->set_signal(event.signal);
      exit->set_timed_out(event.timed_out);
      break;
    }
  }
}

// EventKinds() is in the order of v1::EventKind, from 1.
void ToProto(const EventRecord& event, v1::Event* out) {
  out->set_event_id(event.event_id);
  SetTimestamp(event.at, out->mutable_time());
  const auto& kinds = EventKinds();
  auto kind = std::find(kinds.begin(), kinds.end(), event.kind);
  out->set_kind(kind == kinds.end() ? v1::EVENT_KIND_UNSPECIFIED
                                    : static_cast<v1::EventKind>(kind - kinds.begin() + 1));
  out->set_owner(event.owner);
  out->set_vm_id(event.vm_id);
  out->set_snapshot_id(event.snapshot_id);
  if (std::optional<VmState> state = ParseVmState(event.state)) out->set_state(ToProto(*state));
  out->set_detail(event.detail);
}

absl::StatusOr<EventFilter> FromProto(const v1::EventFilter& filter) {
  EventFilter out{.vm_id = filter.vm_id(), .snapshot_id = filter.snapshot_id()};
  const auto& kinds = EventKinds();
  for (int kind : filter.kinds()) {
    if (kind < 1 || kind > static_cast<int>(kinds.size())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "filter.kinds: unknown event kind ", kind, " (1-", kinds.size(), ")"));
    }
    out.kinds.push_back(kinds[kind - 1]);
  }
  return out;
}

}  // namespace smolvm::daemon
