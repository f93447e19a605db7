// File: bench/load/load_client.h
// -----------------------------------------------------------------------------
//
// One client of the load benchmark: a thread's worth of RPCs drawn from the
// mix, on its own connection. It reads everything (the shared base VM and
// snapshot, its own objects, the lists), runs Exec in the base VM or its
// clones, and creates and deletes only objects it owns: clones restored or
// forked from the base snapshot or from its own snapshots, and snapshots of
// its clones. Live clones and clone snapshots are bounded over all clients
// by slots in LoadShared. A ForkSnapshot needs several slots at once: when
// a client draws one and too few are free, its fork waits (tried first in
// each later step) and no other client takes a new slot until it ran, so
// forks are not starved by single restores.
#ifndef SMOLVM_BENCH_LOAD_LOAD_CLIENT_H_
#define SMOLVM_BENCH_LOAD_LOAD_CLIENT_H_

#include <atomic>
#include <random>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "bench/load/load_options.h"
#include "bench/load/load_stats.h"
#include "client/connection.h"

namespace smolvm::load {

// What the clients of one run share. The slot counters are the only state
// written by several threads.
struct LoadShared {
  const LoadOptions* options = nullptr;
  std::string base_vm, base_snapshot;
  std::atomic<int> live_clones{0};
  std::atomic<int> clone_snapshots{0};
  // The client whose fork waits for free slots; -1 = none.
  std::atomic<int> fork_waiter{-1};
};

// Not thread-safe: one thread drives one LoadClient.
class LoadClient {
 public:
  LoadClient(int index, LoadShared* shared);

  // Makes calls drawn from the mix until `end` or an interruption, counting
  // each in `stats`. Objects it made stay alive for the next call of Run.
  void Run(absl::Time end, PhaseStats* stats);
  // Deletes every VM and snapshot this client owns (counted in `stats` as
  // DeleteVm / DeleteSnapshot) and frees their slots.
  void Release(PhaseStats* stats);

 private:
  // Makes one `rpc` call, or returns false without calling when it cannot
  // be made now (no free slot, nothing of its own to delete, ...).
  bool TryCall(Rpc rpc, PhaseStats* stats);
  absl::Status Exec(const std::string& vm_id);
  bool Restore(PhaseStats* stats);
  bool Fork(PhaseStats* stats);
  // Takes `n` clone slots, unless another client's fork waits for them.
  bool ReserveClones(int n);
  bool Snapshot(PhaseStats* stats);
  void DeleteVm(size_t i, PhaseStats* stats);
  void DeleteSnapshot(size_t i, PhaseStats* stats);
  // An id for a new object of this client: <prefix>-c<index>-<kind><n>.
  std::string NewId(char kind);
  // A uniformly chosen element of {first} ∪ rest.
  const std::string& Any(const std::string& first, const std::vector<std::string>& rest);
  // A uniformly chosen element of non-empty `from`.
  const std::string& Pick(const std::vector<std::string>& from);
  bool Interrupted() const;

  const int index_;
  LoadShared* const shared_;
  Connection conn_;
  std::mt19937_64 rng_;
  std::discrete_distribution<int> pick_;
  std::vector<std::string> vms_;        // Live clones it made.
  std::vector<std::string> snapshots_;  // Snapshots of its clones.
  int next_id_ = 0;
  bool fork_waiting_ = false;  // This client is LoadShared::fork_waiter.
};

}  // namespace smolvm::load

#endif  // SMOLVM_BENCH_LOAD_LOAD_CLIENT_H_
