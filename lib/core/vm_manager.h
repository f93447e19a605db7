// File: vm_manager.h
//
// VmManager is the core of smolvmd: it owns every VM's lifecycle, its files
// and its VMM process, and every snapshot. The gRPC layer is a thin shell
// over it. It persists intent before side effects and results after them
// (store first, then disk/VMM, then store again), so that startup
// reconciliation (Reconcile) can finish or undo whatever a crash interrupted.
//
// Threading: all methods are thread-safe. Operations on one VM are
// serialized by that VM's lock; different VMs proceed in parallel.
// Snapshot files are guarded by a reader/writer lock: creates and restores
// share it, DeleteSnapshot takes it exclusively.
//
// Collaborators, each behind its own interface and file, injected by the
// factory (unit tests inject fakes from tests/fakes):
//   store::Store            SQLite: the records (lib/store)
//   vmm::Hypervisor         VMM processes (lib/vmm)
//   snapshot::StateFiles    every file under the state and run dirs
//   agent::GuestConnector   connections to guest agents (lib/agent)
//   VmNetwork               addresses, TAPs, firewall (vm_network.h), over
//                           net::LinkBackend / Firewall / HostFirewall
//   image::ImageStore       the images VMs boot from
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <thread>
#include <set>
#include <optional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "lib/agent/guest_agent.h"
#include "lib/core/vm_stats.h"
#include "lib/core/vm_activity.h"
#include "lib/core/vm_network.h"
#include "lib/core/events.h"
#include "lib/core/quota.h"
#include "lib/base/progress.h"
#include "lib/base/unique_fd.h"
#include "lib/image/host_paths.h"
#include "lib/image/image_store.h"
#include "lib/net/firewall.h"
#include "lib/net/host_firewall.h"
#include "lib/net/ip_pool.h"
#include "lib/net/link_backend.h"
#include "lib/snapshot/snapshot_files.h"
#include "lib/snapshot/state_files.h"
#include "lib/model/policy.h"
#include "lib/model/pool.h"
#include "lib/model/tenant.h"
#include "lib/model/vm.h"
#include "lib/store/store.h"
#include "lib/vmm/console_log_reader.h"
#include "lib/vmm/hypervisor.h"

namespace smolvm::core {

struct ManagerOptions {
  std::string state_dir;
  std::string run_dir;
  // How long a cold-booted guest has to signal readiness.
  absl::Duration boot_timeout = absl::Seconds(120);
  // How long a restored guest's agent has to answer and be fixed up.
  absl::Duration restore_ready_timeout = absl::Seconds(30);
  // Clones ForkSnapshot restores at once; 0 = the number of cores.
  uint32_t fork_parallelism = 0;
  // Largest upload accepted (0 = unlimited).
  uint64_t max_upload_bytes = uint64_t{64} << 30;
  NetworkOptions network;
  // Kernel arguments the default image needs; VMConfig.boot_args follow.
  std::string base_cmdline = "console=ttyS0 root=/dev/vda rw panic=-1";
  // Access policy (issue 7). Quota of a tenant; unset = no quotas.
  std::function<QuotaLimits(const std::string& tenant)> quota_for;
  // Host files VMConfigs may name; unset = none (only the default image).
  std::shared_ptr<const image::HostPathResolver> host_paths;
  // Host directories VMConfig.mounts may name ([mounts] allowed_dirs, one
  // list for every tenant); unset = no mounts (vm_mounts.h).
  std::shared_ptr<const image::HostPathResolver> mount_paths;
  PortPolicy ports;
  EgressDenyPolicy egress_deny;
  // The range of unprivileged uids (and equal gids) VMMs run as, one per VM
  // (issue 8). count 0: VMMs are not confined (measurement only).
  uint32_t vmm_uid_base = 1879048192;  // 0x70000000, see docs/decisions.md
  uint32_t vmm_uid_count = 65536;
  // Where the core reports what it did (the daemon's metrics); unset = nowhere.
  EventSink events;
};

// What a VmManager works with. `files` and `guests` default to the real
// ones (the state and run dirs of ManagerOptions, AgentClient); `links` and
// `firewall` are required when networking is enabled.
struct ManagerParts {
  std::unique_ptr<store::Store> store;
  std::unique_ptr<vmm::Hypervisor> hypervisor;
  std::unique_ptr<image::ImageStore> images;
  std::unique_ptr<snapshot::StateFiles> files;
  std::unique_ptr<agent::GuestConnector> guests;
  std::unique_ptr<net::LinkBackend> links;
  std::unique_ptr<net::Firewall> firewall;
  std::unique_ptr<net::HostFirewall> host_firewall;
};

class VmManager {
 public:
  // A ready manager: networking set up and the store brought in line with
  // the host after a (re)start (see Reconcile).
  static absl::StatusOr<std::unique_ptr<VmManager>> Create(ManagerOptions options,
                                                           ManagerParts parts);
  // Stops the pool refill worker (waiting for a member it is restoring);
  // the VMs themselves keep running for the next daemon.
  ~VmManager();
  VmManager(const VmManager&) = delete;
  VmManager& operator=(const VmManager&) = delete;

  // Every operation below acts for `caller`: objects of other tenants are
  // NOT_FOUND to it (with the message a missing object gets), new objects
  // belong to caller.tenant, and quotas of the owner apply unless the
  // caller is an admin.
  //
  // Validates `config` (generating vm_id if empty), copies the root disk and
  // records the VM as CREATED; with `start`, boots it and returns once the
  // guest is ready. On a boot failure the VM is left in ERROR with the
  // reason and the VMM is gone; validation failures leave nothing behind.
  // `progress` (optional, also on the calls below) hears the call's stages
  // as it goes (OperationService).
  absl::StatusOr<VmRecord> CreateVm(const Caller& caller, VmConfig config, bool start,
                                    Progress* progress = nullptr);
  // CREATED/STOPPED/ERROR → RUNNING (cold boot from the VM's disk).
  absl::StatusOr<VmRecord> StartVm(const Caller& caller, const std::string& vm_id,
                                   Progress* progress = nullptr);
  // RUNNING/PAUSED → STOPPED.
  absl::StatusOr<VmRecord> StopVm(const Caller& caller, const std::string& vm_id);
  // RUNNING → PAUSED.
  absl::StatusOr<VmRecord> PauseVm(const Caller& caller, const std::string& vm_id);
  // PAUSED → RUNNING.
  absl::StatusOr<VmRecord> ResumeVm(const Caller& caller, const std::string& vm_id);
  // Any state; ends the VMM, removes disk and record. Snapshots are kept.
  absl::Status DeleteVm(const Caller& caller, const std::string& vm_id);
  absl::StatusOr<VmRecord> GetVm(const Caller& caller, const std::string& vm_id);
  // What a RUNNING or PAUSED VM uses (vm_stats.h), the guest's memory
  // view only while RUNNING; FAILED_PRECONDITION in another state.
  absl::StatusOr<VmStats> GetVmStats(const Caller& caller, const std::string& vm_id);
  // A reader of the guest console, positioned `tail_bytes` (nullopt:
  // everything kept) before the end: a RUNNING or PAUSED VM's live log (its
  // run dir), another VM's last run's (kept when it stopped);
  // FAILED_PRECONDITION for a VM that never ran.
  absl::StatusOr<vmm::ConsoleLogReader> OpenConsole(const Caller& caller,
                                                    const std::string& vm_id,
                                                    std::optional<uint64_t> tail_bytes);
  // `filter`'s images also match their tagged/untagged spelling
  // ("minimal" ~ "minimal:latest").
  absl::StatusOr<store::Page<VmRecord>> ListVms(const Caller& caller, int page_size,
                                                const std::string& page_token,
                                                const ListFilter& filter = {});

  // RUNNING/PAUSED VM → snapshot; the VM is PAUSED afterwards unless
  // `resume_source`. Published atomically (complete and listed, or nothing).
  absl::StatusOr<SnapshotRecord> CreateSnapshot(const Caller& caller, const std::string& vm_id,
                                                std::string snapshot_id, bool resume_source,
                                                Progress* progress = nullptr,
                                                const Labels& labels = {});
  absl::StatusOr<SnapshotRecord> GetSnapshot(const Caller& caller, const std::string& snapshot_id);
  absl::StatusOr<store::Page<SnapshotRecord>> ListSnapshots(const Caller& caller, int page_size,
                                                            const std::string& page_token,
                                                            const std::string& vm_id,
                                                            const ListFilter& filter = {});
  absl::Status DeleteSnapshot(const Caller& caller, const std::string& snapshot_id);
  // Checks a snapshot's content as a restore would, but always hashes its
  // files (whatever their recorded stamps say): the manifest must describe
  // this snapshot and this host's VMM, and each file must match the
  // checksum recorded when the snapshot was taken. DATA_LOSS naming the
  // first bad file (or manifest field); on success the files' stamps are
  // recorded, so that the next restore does not hash them again. A legacy
  // snapshot (taken before checksums existed) is a report with `legacy`
  // set and `ok` false.
  absl::StatusOr<snapshot::VerifyReport> VerifySnapshot(const Caller& caller,
                                                        const std::string& snapshot_id);
  // Starts a VM from a snapshot (see RestoreSnapshotRequest in the proto).
  // Before anything is started the snapshot's integrity is checked as in
  // VerifySnapshot, except that files whose stamps are those of their last
  // verification are not hashed again; a mismatch is DATA_LOSS.
  absl::StatusOr<VmRecord> RestoreSnapshot(const Caller& caller, const std::string& snapshot_id,
                                           bool resume_vm, std::string vm_id,
                                           Progress* progress = nullptr);

  // Runs a command in a RUNNING VM's guest. `spec.env` is layered over the
  // VM's VMConfig.env. The handle streams output then the exit; dropping it
  // early kills the command's process group.
  absl::StatusOr<std::unique_ptr<agent::ExecHandle>> StartExec(const Caller& caller,
                                                               const std::string& vm_id,
                                                               agent::ExecSpec spec);
  // Writes `file.path` in a RUNNING VM's guest from `next_chunk` ("" ends it).
  absl::StatusOr<agent::FileInfo> UploadFile(
      const Caller& caller, const std::string& vm_id, agent::FileRequest file,
      const std::function<absl::StatusOr<std::string>()>& next_chunk);
  // Reads `file.path` from a RUNNING VM's guest into `sink`.
  absl::StatusOr<agent::FileInfo> DownloadFile(
      const Caller& caller, const std::string& vm_id, agent::FileRequest file,
      const std::function<absl::Status(const std::string&)>& sink);
  // Background processes of a RUNNING VM's guest (ProcessService), tracked
  // by its agent. StartProcess completes `spec` as StartExec does (the VM's
  // env, its working dir) and refuses stdin and a time limit.
  absl::StatusOr<agent::ProcessInfo> StartProcess(const Caller& caller, const std::string& vm_id,
                                                  agent::ExecSpec spec);
  absl::StatusOr<std::vector<agent::ProcessInfo>> ListProcesses(const Caller& caller,
                                                                const std::string& vm_id);
  // `signal` 0 = SIGTERM; 1-64 otherwise.
  absl::StatusOr<agent::ProcessInfo> SignalProcess(const Caller& caller, const std::string& vm_id,
                                                   uint32_t pid, int signal, bool group);
  // Follows a process's output (from `tail_bytes` back) and exit; dropping
  // the handle detaches.
  absl::StatusOr<std::unique_ptr<agent::ExecHandle>> AttachProcess(const Caller& caller,
                                                                   const std::string& vm_id,
                                                                   uint32_t pid,
                                                                   uint32_t tail_bytes,
                                                                   bool output);
  // One filesystem call in a RUNNING VM's guest (FilesystemService): the
  // paths absolute or relative to the user's home, validated here.
  absl::StatusOr<agent::FsResult> FileSystem(const Caller& caller, const std::string& vm_id,
                                             agent::FsCall call);
  // Starts watching a directory of a RUNNING VM's guest; returns once the
  // watch is in place. Dropping the handle ends the watch.
  absl::StatusOr<std::unique_ptr<agent::WatchHandle>> WatchDir(const Caller& caller,
                                                               const std::string& vm_id,
                                                               const std::string& path,
                                                               std::string user,
                                                               bool recursive);
  // Exposes / removes a port forward of a VM (any state); the firewall is
  // updated before returning.
  absl::StatusOr<VmRecord> ExposePort(const Caller& caller, const std::string& vm_id,
                                      PortForward forward);
  // Changes the egress policy of a VM in any state (UpdateNetworkPolicy): a
  // running one's at once (the next packet of every connection is judged by
  // it), persisted in its config so restarts, snapshots and forks keep it.
  absl::StatusOr<VmRecord> UpdateNetworkPolicy(const Caller& caller, const std::string& vm_id,
                                               const EgressPolicy& egress);
  absl::StatusOr<VmRecord> UnexposePort(const Caller& caller, const std::string& vm_id,
                                        PortForward forward);
  // Replaces a VM's lifetime policy in any state (SetLifetime): its
  // max_lifetime counts from now; an empty policy clears it. Clears
  // idle_paused (a paused VM stays paused until resumed).
  absl::StatusOr<VmRecord> SetLifetime(const Caller& caller, const std::string& vm_id,
                                       const Lifetime& lifetime);
  // One pass of the lifetime worker (every second): takes the action of each
  // VM whose max_lifetime ran out or that was idle too long, and resumes
  // VMs its idle policy paused that a forwarded connection waits for.
  void LifetimePass();

  // `count` clones of a snapshot named <prefix>-<n>, one result each, in
  // order; up to ManagerOptions::fork_parallelism restore at once.
  // INVALID_ARGUMENT / NOT_FOUND only for a bad request.
  absl::StatusOr<std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>>> ForkSnapshot(
      const Caller& caller, const std::string& snapshot_id, uint32_t count, bool resume_vm,
      const std::string& vm_id_prefix, Progress* progress = nullptr);

  // ForkVm: a snapshot of a RUNNING or PAUSED VM (kept, with `labels`;
  // `snapshot_id` "" = "<vm_id>-fork-<unix ms>") and `count` children
  // restored from it as ForkSnapshot does (named <vm_id_prefix or the
  // snapshot id>-<n>, RUNNING unless `paused`). The source is left in its
  // state. Refusals (count, ids, labels, a missing or stopped source) come
  // before the snapshot.
  struct ForkVmResult {
    std::string snapshot_id;
    std::vector<std::pair<std::string, absl::StatusOr<VmRecord>>> children;
  };
  absl::StatusOr<ForkVmResult> ForkVm(const Caller& caller, const std::string& vm_id,
                                      uint32_t count, std::string snapshot_id,
                                      const std::string& vm_id_prefix, bool paused,
                                      const Labels& labels, Progress* progress = nullptr);

  // OK while the state store answers a query: what the systemd watchdog
  // pings on (a wedged store blocks here, and the pings stop).
  absl::Status CheckHealth();

  // What the store holds, counted (the daemon's metrics, read per scrape).
  absl::StatusOr<store::Store::Census> TakeCensus();

  // `count` bare round trips over a RUNNING VM's agent channel.
  absl::StatusOr<std::vector<absl::Duration>> PingAgent(const Caller& caller,
                                                        const std::string& vm_id, uint32_t count);

  // Warm pools (vm_manager_pools.cc): `size` clones of a snapshot restored
  // ahead of time with their own identities, then paused; ClaimVm resumes
  // one, steps its clock and hands it over RUNNING, and a background worker
  // restores a replacement. Members are VMs of the pool's owner (its quotas
  // apply) that only ClaimVm, GetVm and DeleteVm act on until claimed.
  using PoolStatus = smolvm::PoolStatus;
  struct ClaimedVm {
    VmRecord vm;
    // false: the pool had no ready member and the VM was restored on demand.
    bool from_pool = true;
  };
  // The caller's snapshot; the pool starts filling in the background.
  absl::StatusOr<PoolStatus> CreatePool(const Caller& caller, PoolRecord request);
  absl::StatusOr<PoolStatus> GetPool(const Caller& caller, const std::string& pool_id);
  absl::StatusOr<std::vector<PoolStatus>> ListPools(const Caller& caller);
  // Deletes the pool and its unclaimed members; claimed VMs stay.
  absl::Status DeletePool(const Caller& caller, const std::string& pool_id);
  // A ready member (`vm_id` picks one, else any), RUNNING with its clock
  // stepped. An empty pool restores a clone on demand (from_pool false).
  absl::StatusOr<ClaimedVm> ClaimVm(const Caller& caller, const std::string& pool_id,
                                    const std::string& vm_id);
  const std::string& accelerator() const { return accelerator_; }

 private:
  VmManager(ManagerOptions options, ManagerParts parts, std::unique_ptr<VmNetwork> network);
  // Re-attaches to VMM processes that outlived the previous daemon, marks
  // VMs whose VMM is gone as ERROR, finishes or rolls back operations a
  // crash interrupted, ends VMM processes of VMs that are not running,
  // removes half-written snapshots and files of VMs that no longer exist.
  absl::Status Reconcile();
  // Finishes (delete) or rolls back (create, restore) an operation the
  // journal says a crash interrupted.
  absl::Status FinishOrRollBack(const store::PendingOperation& op);

  // Per-VM serialization point and the handle of its VMM, if running.
  struct VmSlot {
    absl::Mutex mu;
    std::unique_ptr<vmm::VmInstance> instance ABSL_GUARDED_BY(mu);
    // The guest agent's connection; shared with running execs, which keep
    // it alive until they end.
    std::shared_ptr<agent::GuestAgent> agent ABSL_GUARDED_BY(mu);
    // Restored paused: clock and entropy are fixed when it is resumed.
    bool needs_fixup ABSL_GUARDED_BY(mu) = false;
    // A clone's guest still has its snapshot's address until re-addressed.
    bool needs_readdress ABSL_GUARDED_BY(mu) = false;
    // SlotRefs alive (calls holding or waiting for `mu`); under the
    // manager's mu_.
    int users = 0;
  };

  // A counted reference to a VM's slot. The slot stays in the map while any
  // call holds or waits for it — so a DeleteVm can never leave a waiting
  // CreateVm or RestoreSnapshot on a slot later calls do not find — and an
  // idle slot without a VMM is removed: the map holds the VMs with a VMM
  // and the calls in flight, not every id ever asked for. Destroy it after
  // any lock on its mutex.
  class SlotRef {
   public:
    SlotRef(VmManager* manager, std::string vm_id, std::shared_ptr<VmSlot> slot)
        : manager_(manager), vm_id_(std::move(vm_id)), slot_(std::move(slot)) {}
    SlotRef(const SlotRef&) = delete;
    SlotRef& operator=(const SlotRef&) = delete;
    ~SlotRef() { manager_->ReleaseSlot(vm_id_, slot_); }
    VmSlot* operator->() const { return slot_.get(); }
    VmSlot& operator*() const { return *slot_; }

   private:
    VmManager* manager_;
    std::string vm_id_;
    std::shared_ptr<VmSlot> slot_;
  };

  SlotRef SlotFor(const std::string& vm_id) ABSL_LOCKS_EXCLUDED(mu_);
  void ReleaseSlot(const std::string& vm_id, const std::shared_ptr<VmSlot>& slot)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Fills empty image paths from the default image; named ones must be
  // allowed host files (ManagerOptions::host_paths): kernel and initrd are
  // imported into the daemon's store, the root disk is opened into
  // `rootfs` for the copy. Nothing is read by a client-given name later.
  // Fills the VM's kernel, initrd, rootfs and exec defaults from its image
  // (or checks its admin-named host files). Returns the image's lease.
  absl::StatusOr<std::shared_ptr<void>> ResolveImage(const Caller& caller, VmConfig& config,
                                                     UniqueFd& rootfs, Progress* progress);
  // NOT_FOUND, worded like a missing object, unless `caller` may access
  // an object of `owner`.
  static absl::Status CheckAccess(const Caller& caller, const char* kind,
                                  const std::string& id, const std::string& owner);
  // Claims `usage` for the object `key` of `owner` (see QuotaLedger);
  // admins are not limited.
  absl::StatusOr<QuotaLedger::Claim> ClaimQuota(const Caller& caller, const std::string& owner,
                                                const std::string& key,
                                                const QuotaUsage& usage);
  // What `tenant` uses according to the store, without the objects `skip`.
  absl::StatusOr<QuotaUsage> StoredUsage(const std::string& tenant,
                                         const std::set<std::string>& skip);
  // Cold-boots `vm` and waits for readiness; on failure records ERROR.
  absl::StatusOr<VmRecord> BootLocked(VmSlot& slot, VmRecord vm, Progress* progress = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // Records `vm` as ERROR with `cause`, ending its VMM and freeing its RAM.
  absl::Status FailVmLocked(VmSlot& slot, VmRecord& vm, const absl::Status& cause)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // RUNNING/PAUSED → STOPPED: recorded, VMM ended, TAP removed. On failure
  // the VM is as it was.
  absl::Status StopLocked(VmSlot& slot, VmRecord& vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // Copies the VM's console log out of its run dir into its state dir.
  void KeepLastConsole(const std::string& vm_id);
  // Ends the VMM (if any) and removes the runtime dir (keeping the console).
  absl::Status TearDownLocked(VmSlot& slot, const std::string& vm_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // Notices a VMM that died behind our back: RUNNING/PAUSED → ERROR.
  absl::StatusOr<VmRecord> RefreshLocked(VmSlot& slot, VmRecord vm)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  absl::StatusOr<VmRecord> Refresh(VmRecord vm);
  // The stored VM if `caller` may access it, refreshed (a VMM that died is
  // noticed).
  absl::StatusOr<VmRecord> LoadLocked(VmSlot& slot, const Caller& caller,
                                      const std::string& vm_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // The guest of a clone still has its snapshot's address until moved.
  absl::Status ReaddressGuestLocked(VmSlot& slot, const VmRecord& vm)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // Fills what every launch of `vm` shares (kernel, cmdline, NIC, uid).
  absl::StatusOr<vmm::LaunchSpec> LaunchSpecFor(VmRecord& vm);

  // The agent connection of a RUNNING VM, connecting if needed.
  // Validates a command (`spec`) and completes it with the VM's env and
  // working dir; returns the VM's agent to run it on.
  absl::StatusOr<std::shared_ptr<agent::GuestAgent>> PrepareCommand(const Caller& caller,
                                                                    const std::string& vm_id,
                                                                    agent::ExecSpec& spec);
  // Resumes a VM its idle policy paused first (auto_resume), and counts as
  // the VM's use unless `internal`.
  absl::StatusOr<std::shared_ptr<agent::GuestAgent>> AgentFor(const Caller& caller,
                                                               const std::string& vm_id,
                                                               bool internal = false);
  // PAUSED → RUNNING (fix-ups of a restored VM first); clears idle_paused.
  absl::Status ResumeLocked(VmSlot& slot, VmRecord& vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // The lifetime worker (vm_manager_lifetime.cc): takes `action` on `vm`
  // (`why`: "max_lifetime" or "idle") and records what it left.
  void TakeLifetimeAction(const VmRecord& vm, LifetimeAction action, const char* why);
  // Whether the guest runs a background process, or cannot say (asked only
  // when it would otherwise be idle).
  bool GuestMayBeBusy(const std::string& vm_id);
  // Whether RUNNING `vm` has been unused for its idle timeout at `now`.
  bool IdleFor(const VmRecord& vm, absl::Time now);
  // Whether the limit `why` the worker saw in `seen` still holds for the
  // VM's current record `fresh` (the owner may have changed or used it).
  bool StillDue(const VmRecord& seen, const VmRecord& fresh, const char* why);
  void TakePauseLocked(VmSlot& slot, VmRecord& vm, const char* why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // The lifetime_action event, written before the action is taken.
  void AnnounceLifetimeAction(const VmRecord& vm, LifetimeAction action, const char* why);
  void LifetimeWorkerLoop();
  // Passes an event to ManagerOptions::events, if set.
  void Report(CoreEvent event, absl::Duration took = absl::ZeroDuration()) const;
  // Connects to the guest agent (greeting it) unless already connected.
  absl::Status ConnectAgentLocked(VmSlot& slot, const std::string& vm_id,
                                  absl::Duration timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // After a restore: steps the guest clock to the host's and reseeds its
  // entropy, and checks both took.
  absl::Status FixUpRestoredLocked(VmSlot& slot, const std::string& vm_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // RestoreSnapshot's work once the snapshot is read-locked; calls
  // `release_files` (which drops that read lock) once the VMM has loaded the
  // snapshot, before the guest's fix-ups.
  // `pool_id`: the new VM is recorded as that pool's member from the start.
  absl::StatusOr<VmRecord> RestoreLocked(VmSlot& slot, const Caller& caller,
                                         const SnapshotRecord& snap, bool resume_vm,
                                         const std::string& vm_id, bool own_identity,
                                         const std::function<void()>& release_files,
                                         const std::string& pool_id = "",
                                         Progress* progress = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  // RestoreSnapshot's locking around RestoreLocked.
  absl::StatusOr<VmRecord> RestoreAs(const Caller& caller, const std::string& snapshot_id,
                                     bool resume_vm, std::string vm_id,
                                     const std::string& pool_id, Progress* progress = nullptr);
  // The pool refill worker (vm_manager_pools.cc): one pass tops every pool
  // up by at most one member, removes failed and orphaned members and
  // pauses members a crash left running; returns whether more work is due.
  void PoolWorkerLoop();
  bool RefillPass();
  // Restores one member of `pool` and pauses it, ready for a claim.
  absl::Status AddPoolMember(const PoolRecord& pool);
  // Takes the unclaimed member `vm_id` of `pool_id` if it is ready: resumed,
  // clock and entropy fixed, recorded RUNNING and no longer a member.
  // NOT_FOUND/FAILED_PRECONDITION when it is not (claimed meanwhile, busy).
  absl::StatusOr<VmRecord> TakeMember(const std::string& pool_id, const std::string& vm_id,
                                      bool wait_for_lock);
  absl::StatusOr<PoolStatus> StatusOf(const PoolRecord& pool);
  void KickPoolWorker();
  // The integrity checks of a restore and of VerifySnapshot: `manifest`
  // (read from `paths`) describes `snap` and this host's VMM; then the
  // files are hashed and compared with the recorded checksums, unless
  // `force` is false and they still have the stamps of their last
  // verification (or the snapshot is legacy: nothing to compare). Records
  // the new stamps after a successful hash. DATA_LOSS on any mismatch.
  absl::StatusOr<snapshot::VerifyReport> CheckIntegrity(const SnapshotRecord& snap,
                                                        const snapshot::SnapshotPaths& paths,
                                                        const snapshot::Manifest& manifest,
                                                        bool force)
      ABSL_SHARED_LOCKS_REQUIRED(snapshot_files_mu_);

  // Gives `vm` its VMM uid (allocated once, kept until the VM is deleted).
  absl::Status AssignVmmUid(VmRecord& vm);

  const ManagerOptions options_;
  const std::unique_ptr<store::Store> store_;
  const std::unique_ptr<vmm::Hypervisor> hypervisor_;
  const std::unique_ptr<image::ImageStore> images_;
  const std::unique_ptr<snapshot::StateFiles> files_;
  const std::unique_ptr<agent::GuestConnector> guests_;
  const std::unique_ptr<VmNetwork> network_;
  const std::string accelerator_;

  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<VmSlot>> slots_ ABSL_GUARDED_BY(mu_);
  // (For tests and logs) how many slots the map holds.
 public:
  size_t SlotCountForTesting() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Snapshot ids whose CreateSnapshot is under way: a second create of the
  // same id (on any VM) is ALREADY_EXISTS at once instead of racing it.
  std::set<std::string> creating_snapshots_ ABSL_GUARDED_BY(mu_);
  // Readers: snapshot create/restore; writer: snapshot delete.
  absl::Mutex snapshot_files_mu_;
  QuotaLedger quota_;
  // The pool refill worker and what it shares with callers.
  struct PoolHealth {
    std::string last_error;
    absl::Time retry_after = absl::InfinitePast();
    absl::Duration backoff = absl::ZeroDuration();
  };
  absl::Mutex pools_mu_;
  std::map<std::string, PoolHealth> pool_health_ ABSL_GUARDED_BY(pools_mu_);
  // Members being restored by the refill worker: vm_id -> pool_id.
  std::map<std::string, std::string> pool_members_starting_ ABSL_GUARDED_BY(pools_mu_);
  bool pool_work_due_ ABSL_GUARDED_BY(pools_mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(pools_mu_) = false;
  std::thread pool_worker_;
  // When each VM was last used (idle timeouts) and the worker that enforces
  // lifetimes; it stops with the pool worker (stopping_).
  VmActivity activity_{absl::Now()};
  // VMs whose last lifetime action failed, and when to try again.
  std::map<std::string, absl::Time> lifetime_retry_after_ ABSL_GUARDED_BY(pools_mu_);
  // The connection table's absence is logged once.
  std::atomic<bool> conntrack_warned_{false};
  std::thread lifetime_worker_;
};

}  // namespace smolvm::core
