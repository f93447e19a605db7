// File: boot_args.h
//
// Which kernel parameters a tenant may add to its VM's command line
// (VMConfig.boot_args); admins may pass any.
//
// The daemon builds the command line as base + boot_args + its own
// network/agent parameters, and the guest's initramfs and init read some
// of them (root=, rootfstype=, rootflags=, ro/rw, init=, smolvm.*). A
// tenant's guest is its own, but the daemon relies on that boot path for
// readiness, addressing and the console log, so only parameters that tune
// the guest kernel's behaviour and cannot change what runs as init, where
// the root comes from, where the console goes, or what the daemon tells the
// guest are allowed:
//
//   quiet                  Fewer boot messages on the console. Less output.
//   loglevel=0..7          Console log level, capped below debug (8+), so
//                          the console log the daemon keeps cannot be
//                          flooded with debug output.
//   panic=-1..3600         Seconds before a panicked guest reboots (-1: at
//                          once, which with QEMU's -no-reboot ends the VM;
//                          0: hang). Only the tenant's own vCPUs are spent.
//   mitigations=off|auto   CPU vulnerability mitigations inside the guest:
//                          protect the guest's processes from each other;
//                          the host's protection is the host kernel's.
//   nokaslr                No kernel address randomisation in the guest:
//                          weakens only the guest (useful for debugging).
//   random.trust_cpu=on|off
//                          Whether the guest seeds its RNG from RDRAND.
//   transparent_hugepage=always|madvise|never
//                          THP policy of guest memory; the host's memory
//                          is bounded by memory_mib either way.
//   tsc=reliable           Trust the TSC as a clocksource in the guest.
//   clocksource=kvm-clock|tsc|hpet|acpi_pm
//                          The guest's clocksource.
//   printk.devkmsg=on|off|ratelimit
//                          Whether guest userspace may write to /dev/kmsg
//                          unthrottled; stays inside the guest.
//   ipv6.disable=0|1       Turn IPv6 off in the guest (no effect on the
//                          host; egress rules are IPv4).
//   init_on_alloc=0|1, init_on_free=0|1
//                          Zero guest memory on allocation / free: a
//                          hardening vs. speed trade-off inside the guest.
//
// Anything else is refused, notably init=, rdinit= (what runs as PID 1),
// root=, rootfstype=, rootflags=, ro, rw (the root the initramfs mounts),
// console=, earlyprintk= (where the console goes), smolvm.* (the daemon's
// parameters to the guest's init), module parameters (they could reach
// virtio drivers), "--" (arguments to init), and quoted values (a quoted
// value may hold spaces and so smuggle further parameters).
#pragma once

#include <string>

#include "absl/status/status.h"

namespace smolvm {

// OK if every whitespace-separated parameter of `boot_args` is on the list
// above with an allowed value; values may only use [A-Za-z0-9._,:-].
// PERMISSION_DENIED naming the first refused parameter and listing the
// allowed ones otherwise. Empty is OK.
absl::Status ValidateTenantBootArgs(const std::string& boot_args);

// The allowed parameters as shown in errors and docs, e.g.
// "quiet, loglevel=0-7, panic=-1..3600, ...".
std::string TenantBootArgsAllowList();

}  // namespace smolvm
