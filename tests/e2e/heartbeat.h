// File: heartbeat.h
//
// Reads the guest heartbeat (kernel argument smolvm.heartbeat=1, see
// guest/rootfs-init.sh) from a VM's console log: "SMOLVM_TICK <boot id> <n>".
// A restored guest that continues its snapshot keeps the boot id and counts
// on from where it was; a guest that rebooted would have a new boot id.
#pragma once

#include <optional>
#include <string>

#include "absl/time/time.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {

struct Tick {
  std::string boot_id;
  long n = 0;
};

inline constexpr char kHeartbeatArg[] = "smolvm.heartbeat=1";

// The last complete tick line in `console`, if any.
std::optional<Tick> LastTick(const std::string& console);

// Waits until the VM's console shows a tick with n >= min_n.
std::optional<Tick> WaitForTick(const TestDaemon& daemon, const std::string& vm_id,
                                long min_n, absl::Duration timeout);

}  // namespace smolvm::testing
