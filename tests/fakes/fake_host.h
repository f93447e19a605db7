// File: fake_host.h
//
// FAKES for unit tests of lib/core (no QEMU, no netlink, no nftables, no
// guest): a FakeHost is the "machine" the fakes share — the VMM processes
// that exist, the TAPs, the last firewall ruleset, and a FaultPlan that can
// make any one collaborator call fail. It outlives the VmManager under test,
// as a host outlives a daemon, so a test can "restart the daemon" (build a
// new manager over the same host, store and directories) and see what the
// previous one left behind.
//
// Every collaborator call of the fakes (and of the store's writes and
// StateFiles' file steps, through their test hooks) first asks
// FaultPlan::Hit with a step name. A test arms the plan to fail the n-th
// step, runs an operation, and checks that nothing was left half done;
// repeating for n = 1, 2, ... until the operation succeeds without reaching
// the fault covers a failure at every step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace smolvm::fakes {

class FaultPlan {
 public:
  // Fails the `n`-th step from now (1 = the next one); 0 disarms.
  void FailAt(int n);
  void Disarm() { FailAt(0); }
  // Called by every faultable step: UNAVAILABLE ("injected fault") when it
  // is the armed one, else OK.
  absl::Status Hit(std::string_view step);
  // Whether the armed fault fired, and at which step.
  bool fired() const;
  std::string fired_step() const;
  // Steps seen since the last FailAt.
  std::vector<std::string> steps() const;

 private:
  mutable absl::Mutex mu_;
  int countdown_ ABSL_GUARDED_BY(mu_) = 0;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  std::string fired_step_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> steps_ ABSL_GUARDED_BY(mu_);
};

// A VMM process as the fake host knows it.
struct FakeProcess {
  int64_t pid = 0;
  std::string vm_id;
  std::string run_dir;
  bool alive = true;
  // "running", "paused", "postmigrate" (saved, not run since), "inmigrate".
  std::string run_state = "paused";
  bool restored = false;
};

class FakeHost {
 public:
  FaultPlan faults;

  // Processes.
  absl::Mutex mu;
  std::map<int64_t, FakeProcess> processes ABSL_GUARDED_BY(mu);
  int64_t next_pid ABSL_GUARDED_BY(mu) = 1000;
  // Live VMM processes by VM id (a VM with two live VMMs is a defect the
  // tests look for, so this is a multimap in spirit: the count matters).
  std::map<std::string, int> LiveVmms();
  // Ends a VM's VMM behind the daemon's back (a crash of QEMU).
  void KillVmm(const std::string& vm_id);

  // Links: the bridge and the TAPs that exist.
  std::set<std::string> links ABSL_GUARDED_BY(mu);
  std::set<std::string> Links();

  // The firewall: the last ruleset applied, by VM id.
  std::set<std::string> firewall_vms ABSL_GUARDED_BY(mu);
  int firewall_applies ABSL_GUARDED_BY(mu) = 0;
  std::set<std::string> FirewallVms();
};

}  // namespace smolvm::fakes
