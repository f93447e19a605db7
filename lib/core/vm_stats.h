// File: vm_stats.h
//
// What a running VM uses, read from the host: the VMM process (/proc:
// CPU time, RSS and PSS, age) and its disk file (allocated blocks) here;
// its TAP's counters (netlink, VmNetwork) and the guest's own view of its
// memory (its agent) are added by VmManager::GetVmStats. Plain reads of
// kernel files: no process is spawned, nothing is written.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace smolvm::core {

struct VmStats {
  absl::Time taken_at;
  absl::Duration uptime;      // Of the VMM process.
  uint64_t cpu_time_ns = 0;   // VMM user + system time (vCPUs and devices).
  uint64_t vmm_rss_bytes = 0;
  uint64_t vmm_pss_bytes = 0;
  uint64_t disk_allocated_bytes = 0;
  // The TAP's counters seen from the guest: what it sent (the TAP's rx)
  // and received (tx). 0 without networking.
  uint64_t guest_tx_bytes = 0, guest_tx_packets = 0;
  uint64_t guest_rx_bytes = 0, guest_rx_packets = 0;
  bool guest_memory_known = false;
  uint64_t guest_memory_total_bytes = 0, guest_memory_available_bytes = 0;
};

// The VMM process's and disk's share of VmStats: process `vmm_pid`, disk
// file `disk_path`. NOT_FOUND if the process is gone; a missing disk reads
// as 0.
absl::StatusOr<VmStats> CollectHostStats(pid_t vmm_pid, const std::string& disk_path);

// MemTotal and MemAvailable of a /proc/meminfo text, in bytes; false if
// either is missing.
bool ParseMeminfo(const std::string& text, uint64_t* total, uint64_t* available);

}  // namespace smolvm::core
