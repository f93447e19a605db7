// File: hypervisor.h
//
// The VMM backend interface. The manager (lib/core) only sees Hypervisor and
// VmInstance; QEMU is the first implementation (qemu_backend.h), and another
// VMM (Firecracker, Cloud Hypervisor) is added by implementing these two
// classes, without touching the manager or the daemon.
//
// Process lifetime: VMM processes are detached from the daemon so that they
// survive a daemon restart. A VmInstance is a handle, not an owner: destroying
// it leaves the VMM running; Kill()/Quit() end it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace smolvm::vmm {

// A host directory exported to the guest over virtio-9p (VMConfig.mounts).
struct HostMount {
  std::string tag;  // The 9p mount_tag (and the QEMU fsdev id).
  // The directory, opened O_PATH by the caller and kept open until Launch
  // returns: the backend binds it by descriptor, never by name.
  int dir_fd = -1;
  bool read_only = false;
};

// Everything a backend needs to start one VMM process.
struct LaunchSpec {
  std::string vm_id;
  uint32_t vcpu_count = 2;
  uint32_t memory_mib = 512;
  std::string kernel_path;
  std::string initrd_path;  // May be empty.
  std::string disk_path;    // The VM's own writable root disk (raw ext4).
  std::string kernel_cmdline;
  // Directory for the VMM's sockets, pid file and console log.
  std::string run_dir;
  // File that backs guest RAM. Cold boots create it (shared mapping, so a
  // snapshot can copy it); restores map a snapshot's mem.bin privately
  // (copy-on-write) so the snapshot is never modified.
  std::string mem_path;
  bool mem_shared = true;
  // The VM's NIC: a TAP the daemon created, and the NIC's MAC. Empty: no NIC.
  std::string tap_device;
  std::string guest_mac;
  // The unprivileged uid (and gid) the VMM runs as; the manager allocates
  // one per VM. The backend gives it the VM's files.
  uint32_t vmm_uid = 0;
  // When set, the VMM starts paused and loads device state from this file
  // (a snapshot's vmstate.bin) instead of booting.
  std::optional<std::string> incoming_state_path;
  // Host mounts, in the VM's order (the device model of a restore must be
  // the snapshot's: the same mounts, in the same order).
  std::vector<HostMount> mounts;
  // Held until the launch is over (e.g. the descriptors of `mounts`).
  std::shared_ptr<void> resources;
};

// A running VMM process. Methods are not thread-safe; the manager serializes
// operations per VM.
class VmInstance {
 public:
  virtual ~VmInstance() = default;

  virtual int64_t pid() const = 0;
  // True while the VMM process exists (not a zombie).
  virtual bool IsAlive() const = 0;
  // The host end of the guest-agent channel (virtio-serial port
  // org.smolvm.agent), a Unix socket; one client at a time.
  virtual std::string agent_socket_path() const = 0;
  // Stops / continues the vCPUs.
  virtual absl::Status Pause() = 0;
  virtual absl::Status Resume() = 0;
  // "running", "paused", ... as the VMM reports it.
  virtual absl::StatusOr<std::string> QueryRunState() = 0;
  // Writes device state (not guest RAM, which lives in mem_path) to `path`.
  // The VM must be paused.
  virtual absl::Status SaveDeviceState(const std::string& path) = 0;
  // Completes a launch with incoming_state_path: loads the state and leaves
  // the VM paused.
  virtual absl::Status LoadDeviceState(const std::string& path) = 0;
  // Asks the VMM to exit, then kills it if it has not within `grace`.
  virtual absl::Status Shutdown(absl::Duration grace) = 0;
  // The last `max_bytes` of the guest console (for error messages).
  virtual std::string ConsoleTail(size_t max_bytes) const = 0;
  // Why a VMM that is gone ended, when the host knows (e.g. the kernel's OOM
  // killer, seen in its cgroup); "" otherwise.
  virtual std::string ExitCause() const = 0;
};

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;
  // "qemu".
  virtual std::string name() const = 0;
  // "kvm" or "tcg": snapshots record it and restores require the same.
  virtual std::string accelerator() const = 0;
  // Version of the VMM binary, recorded in snapshot manifests.
  virtual std::string version() const = 0;
  // Starts a VMM process. On error nothing is left running.
  virtual absl::StatusOr<std::unique_ptr<VmInstance>> Launch(
      const LaunchSpec& spec) = 0;
  // Re-attaches to a VMM process started earlier (possibly by a previous
  // daemon). NOT_FOUND if `pid` is gone or is not this VM's VMM.
  virtual absl::StatusOr<std::unique_ptr<VmInstance>> Attach(
      const std::string& vm_id, int64_t pid, const std::string& run_dir) = 0;
  // Ends a VMM of `vm_id` that a previous daemon started in `run_dir` but
  // never recorded (it died mid-boot); a no-op if there is none.
  virtual void EndStrayProcess(const std::string& vm_id,
                               const std::string& run_dir) = 0;
};

}  // namespace smolvm::vmm
