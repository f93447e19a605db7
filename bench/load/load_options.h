// File: bench/load/load_options.h
// -----------------------------------------------------------------------------
//
// How a load run is shaped (bench/load/load_runner.h runs it): how many
// clients, for how long, the weights of the RPC mix and the bounds on what
// the clients may create at once.
#ifndef SMOLVM_BENCH_LOAD_LOAD_OPTIONS_H_
#define SMOLVM_BENCH_LOAD_LOAD_OPTIONS_H_

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "bench/load/load_stats.h"
#include "client/connection.h"

namespace smolvm::load {

// Relative weights of the RPC kinds, indexed by Rpc. A client draws its next
// call from them; a drawn call it cannot make now (RestoreSnapshot with no
// free VM slot, DeleteVm with no VM of its own, ...) is drawn again.
using Mix = std::array<int, kRpcCount>;

// The default mix: mostly reads and Exec, a VM created or deleted in about
// one call of five (each costs a VMM start or end, hundreds of ms under TCG).
Mix DefaultMix();
// Parses "list_vms=20,exec=30,..." (names of RpcFlagName); kinds not named
// keep their weight in `mix`.
absl::Status ParseMix(absl::string_view text, Mix* mix);
std::string MixToString(const Mix& mix);

struct LoadOptions {
  // How to reach smolvmd.
  ClientOptions client;
  // Concurrent clients, each a thread with its own connection.
  int clients = 4;
  // The mix runs for `warmup` (not measured; the daemon's RSS and fds are
  // sampled after it) and then for `duration` (measured).
  absl::Duration warmup = absl::Seconds(20);
  absl::Duration duration = absl::Seconds(60);
  // The measured phase is cut into `rounds` equal rounds; after each the
  // clients delete what they made and the daemon's usage is sampled: a
  // series that shows whether RSS levels off or keeps growing.
  int rounds = 1;
  // At most this many clones (restored or forked VMs) live at once, over
  // all clients, besides the one cold-booted base VM.
  int max_clones = 3;
  // At most this many snapshots of clones at once, besides the base's.
  int max_snapshots = 2;
  // Clones per ForkSnapshot.
  uint32_t fork_count = 2;
  // The base VM (and so every clone): memory and vCPUs.
  uint32_t memory_mib = 256;
  uint32_t vcpu_count = 1;
  Mix mix = DefaultMix();
  // Seeds each client's choices (client i uses seed + i).
  uint64_t seed = 1;
  // The daemon's pid, to sample its RSS and fds; 0 = found from the socket
  // (FindDaemonPid). Without either (a TCP endpoint) nothing is sampled.
  pid_t daemon_pid = 0;
  // Every VM and snapshot id starts with this; "" = "load-<6 random hex>".
  std::string id_prefix;
  // RSS may grow from after the warmup to the end by at most
  // max(rss_tolerance_mib MiB, rss_tolerance_fraction of the warmed-up RSS).
  // Measured here (4 clients, 20 s warmup): a daemon with glibc's default
  // per-thread malloc arenas grows by +7 MiB in the first minute and levels
  // off near +13 MiB after four, all of it RssAnon; with
  // MALLOC_ARENA_MAX=1 the same load stays flat (+136 KiB over 3 min, 147
  // clones deleted). So
  // the default allows arena growth; a leak check runs the daemon with
  // MALLOC_ARENA_MAX=1 and a tolerance of a few MiB (tests/e2e/load_test).
  int64_t rss_tolerance_mib = 16;
  double rss_tolerance_fraction = 0.25;
  // Set from outside (SIGINT) to stop early; the run then cleans up.
  const std::atomic<bool>* interrupted = nullptr;
  // Progress lines (none if empty).
  std::function<void(const std::string&)> progress;
};

}  // namespace smolvm::load

#endif  // SMOLVM_BENCH_LOAD_LOAD_OPTIONS_H_
