#include "daemon/proto_convert.h"

#include "google/protobuf/util/time_util.h"

namespace smolvm::daemon {
namespace {

void SetTimestamp(absl::Time t, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

}  // namespace

VmConfig FromProto(const v1::VMConfig& c) {
  VmConfig config;
  config.vm_id = c.vm_id();
  config.vcpu_count = c.vcpu_count();
  config.memory_mib = c.memory_mib();
  config.kernel_path = c.kernel_path();
  config.initrd_path = c.initrd_path();
  config.rootfs_path = c.rootfs_path();
  config.boot_args = c.boot_args();
  return config;
}

void ToProto(const VmConfig& c, v1::VMConfig* out) {
  out->set_vm_id(c.vm_id);
  out->set_vcpu_count(c.vcpu_count);
  out->set_memory_mib(c.memory_mib);
  out->set_kernel_path(c.kernel_path);
  out->set_initrd_path(c.initrd_path);
  out->set_rootfs_path(c.rootfs_path);
  out->set_boot_args(c.boot_args);
}

void ToProto(const NetworkConfig& n, v1::NetworkConfig* out) {
  out->set_guest_ip(n.guest_ip);
  out->set_gateway_ip(n.gateway_ip);
  out->set_netmask(n.netmask);
  out->set_tap_device(n.tap_device);
  out->set_guest_mac(n.guest_mac);
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
  out->set_restored_from_snapshot_id(vm.restored_from);
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
}

}  // namespace smolvm::daemon
