// File: vm.h
//
// The domain model shared by the store, the VMM backends and the manager:
// what a VM is, what a snapshot is, and their states. Plain structs, no
// behaviour beyond naming; validation lives in validation.h.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "lib/model/lifetime.h"
#include "lib/model/mounts.h"

namespace smolvm {

inline constexpr uint32_t kDefaultVcpus = 2;
inline constexpr uint32_t kMinVcpus = 1;
inline constexpr uint32_t kMaxVcpus = 32;
inline constexpr uint32_t kDefaultMemoryMib = 512;
inline constexpr uint32_t kMinMemoryMib = 128;
inline constexpr uint32_t kMaxMemoryMib = 16384;
inline constexpr uint32_t kMinDiskMib = 64;
inline constexpr uint32_t kMaxDiskMib = 256 * 1024;

enum class VmState { kCreated, kRunning, kPaused, kStopped, kError };

// "created", "running", ... (the store's and the logs' spelling).
const char* VmStateName(VmState state);
// Parses VmStateName's output; nullopt for anything else.
std::optional<VmState> ParseVmState(const std::string& name);

// key=value tags of VMs and snapshots (ValidateLabels).
using Labels = std::map<std::string, std::string>;

enum class EgressMode { kOpen, kOff, kRestricted };

// What a guest may reach beyond its VM (never other VMs or the host).
struct EgressPolicy {
  EgressMode mode = EgressMode::kOpen;
  std::vector<std::string> allow_cidrs;  // IPv4 CIDRs, kRestricted only.
  // IPv4 CIDRs the guest may not reach (kOpen and kRestricted): checked
  // before any allow, so they also carve holes into allow_cidrs.
  std::vector<std::string> deny_cidrs;
  // Domain rules (domain_rules.h), enforced by the daemon's resolver from
  // the answers the guest receives: names (or "*." wildcards) whose
  // addresses a restricted guest may reach, and names no guest resolves.
  std::vector<std::string> allow_domains;  // kRestricted only.
  std::vector<std::string> deny_domains;   // kOpen and kRestricted.

  bool operator==(const EgressPolicy&) const = default;
};

// A guest port reachable on a host address.
struct PortForward {
  std::string host_ip = "127.0.0.1";
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  std::string protocol = "tcp";  // "tcp" | "udp"

  bool operator==(const PortForward&) const = default;
};

struct VmConfig {
  std::string vm_id;
  uint32_t vcpu_count = kDefaultVcpus;
  uint32_t memory_mib = kDefaultMemoryMib;
  std::string kernel_path;
  std::string initrd_path;
  std::string rootfs_path;
  // The image the VM was made from: the reference as asked ("" = the
  // daemon's default, "debian-python:latest", "sha256:...") and the digest it
  // resolved to when the VM was created (what keeps the image in use).
  std::string image;
  std::string image_digest;
  // Root disk size; 0 = the image's. Larger grows the VM's copy.
  uint32_t disk_size_mib = 0;
  // Working directory of every exec without its own ("" = /root); from the
  // image's config (OCI WorkingDir).
  std::string working_dir;
  std::string boot_args;
  // Environment of every exec in the guest (an exec's own env wins).
  std::map<std::string, std::string> env;
  EgressPolicy egress;
  // Forwards requested at create time (the live set is NetworkConfig's).
  std::vector<PortForward> port_forwards;
  // The caller's key=value tags (ValidateLabels).
  std::map<std::string, std::string> labels;
  // When the daemon stops, pauses, snapshots or deletes it by itself.
  Lifetime lifetime;
  // Host directories shown to the guest (mounts.h).
  std::vector<Mount> mounts;

  bool operator==(const VmConfig&) const = default;
};

struct NetworkConfig {
  std::string guest_ip;
  std::string gateway_ip;
  std::string netmask;
  std::string tap_device;
  std::string guest_mac;
  std::string dns_server;
  std::vector<PortForward> port_forwards;  // Currently exposed.
  EgressPolicy egress;                     // In force (a copy of VmConfig's).

  bool operator==(const NetworkConfig&) const = default;
};

inline constexpr char kFixupClock[] = "clock";
inline constexpr char kFixupReaddress[] = "clock+readdress";

// A VM as persisted by the store.
struct VmRecord {
  std::string vm_id;
  VmState state = VmState::kCreated;
  VmConfig config;
  NetworkConfig network;
  absl::Time created_at = absl::UnixEpoch();
  absl::Time updated_at = absl::UnixEpoch();
  std::string error;          // Why the VM is in kError.
  int64_t vmm_pid = 0;        // VMM process while running or paused.
  std::string restored_from;  // Snapshot id, "" for cold-booted VMs.
  std::string owner;          // Tenant (lib/model/tenant.h).
  uint32_t vmm_uid = 0;       // The VMM's unprivileged uid (Store::AllocateVmmUid).
  // A VM restored PAUSED: what its resume must do first. "" (nothing),
  // kFixupClock (clock and entropy) or kFixupReaddress (also re-address a
  // clone). Persisted so a daemon restart cannot skip it.
  std::string pending_fixup;
  // The warm pool (lib/model/pool.h) holding this VM until it is claimed;
  // "" for every other VM, claimed ones included.
  std::string pool_id;

  bool operator==(const VmRecord&) const = default;
};

// Content checksums of a snapshot's three files, "xxh3-128:<32 hex>" each
// (lib/snapshot/checksum.h).
struct SnapshotChecksums {
  std::string vmstate;
  std::string mem;
  std::string disk;

  bool operator==(const SnapshotChecksums&) const = default;
};

// What fstat says about a file, to notice that it changed without reading
// it: any write, truncation, chmod or replacement changes ctime (or the
// inode). Times in nanoseconds since the epoch.
struct FileStamp {
  uint64_t ino = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;

  bool operator==(const FileStamp&) const = default;
};

// The stamps of a snapshot's three files.
struct SnapshotStamps {
  FileStamp vmstate;
  FileStamp mem;
  FileStamp disk;

  bool operator==(const SnapshotStamps&) const = default;
};

// A snapshot as persisted by the store (SmolVM's SnapshotInfo plus extras).
struct SnapshotRecord {
  std::string snapshot_id;
  std::string vm_id;
  std::string snapshot_path;  // vmstate.bin
  std::string mem_file_path;  // mem.bin
  std::string disk_path;      // disk.ext4
  VmConfig vm_config;
  NetworkConfig network_config;
  absl::Time created_at = absl::UnixEpoch();
  bool restored = false;
  std::optional<std::string> restored_vm_id;
  uint64_t size_bytes = 0;
  std::string accelerator;  // "kvm" | "tcg"
  std::string owner;        // Tenant (lib/model/tenant.h).
  // Checksums computed when the snapshot was taken (also in its manifest);
  // nullopt for snapshots taken before checksums existed, which cannot be
  // verified.
  std::optional<SnapshotChecksums> checksums;
  // The files' stamps at their last successful verification (or at
  // creation): while the files still have them, a restore need not hash
  // them again. nullopt = never verified.
  std::optional<SnapshotStamps> verified_stamps;
  // The caller's key=value tags of the snapshot itself (the source VM's are
  // vm_config.labels).
  std::map<std::string, std::string> labels;

  bool operator==(const SnapshotRecord&) const = default;
};

// What a listing keeps; every set part must match.
struct ListFilter {
  std::map<std::string, std::string> labels;  // All of these (the snapshot's own for snapshots).
  std::vector<VmState> states;                // Any of these (VMs only); none = any.
  // Any of these as VmConfig.image or image_digest; none = any.
  std::vector<std::string> images;
};

// `filter` with each image name also in its other spelling: "minimal" adds
// "minimal:latest" and the reverse, as the image store treats them alike.
// Digests ("sha256:...") are left as they are.
ListFilter WithImageAliases(ListFilter filter);

}  // namespace smolvm
