// Unit tests of VmManager's operations and their failure paths, over the
// FAKES of tests/fakes (no QEMU, netlink, nftables or guest) with the real
// store (SQLite in a temp dir) and the real files (StateFiles, with fault
// injection).
//
// The core of it is ForEveryFault: an operation is run with a fault
// injected at its 1st collaborator call, then its 2nd, ... until it runs
// without reaching the fault. After each injected failure the host must be
// consistent (no VMM without a live record and vice versa, no partial disk,
// draft or snapshot), and after a "daemon restart" (a new manager over the
// same host, store and dirs) fully so (TAPs, addresses, firewall too), and
// the operation retried then succeeds.
#include "lib/core/vm_manager.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/fakes/fake_guest.h"
#include "tests/fakes/fake_host.h"
#include "tests/fakes/fake_network.h"
#include "tests/fakes/fake_vmm.h"
#include "tests/fakes/faulty_state_files.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::core {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::HasSubstr;

// A prebuilt image: two small files, whatever the VM names.
class FakeImages : public image::ImageStore {
 public:
  explicit FakeImages(std::string dir) : ImageStore({}, nullptr), dir_(std::move(dir)) {}
  absl::StatusOr<image::ResolvedImage> Resolve(const Caller&, const std::string&,
                                               Progress*) override {
    image::ResolvedImage image;
    image.record.digest = "sha256:" + std::string(64, 'f');
    image.kernel_path = JoinPath(dir_, "vmlinuz");
    image.rootfs_path = JoinPath(dir_, "rootfs.ext4");
    return image;
  }
  // VMs with host mounts boot "the generic kernel": here the same file.
  absl::StatusOr<image::KernelFiles> MountsKernel(Progress*) override {
    return image::KernelFiles{JoinPath(dir_, "vmlinuz"), ""};
  }

 private:
  std::string dir_;
};

const Caller kAdmin{"default", true, "test"};
constexpr char kBridge[] = "smvtest0";

// One host: its dirs, its fake processes and links, and the manager
// currently running on it (restartable).
class Host {
 public:
  Host() {
    image_dir_ = JoinPath(root_.path(), "image");
    EXPECT_THAT(MakeDirs(image_dir_), IsOk());
    EXPECT_THAT(WriteFileAtomic(JoinPath(image_dir_, "vmlinuz"), "kernel"), IsOk());
    EXPECT_THAT(WriteFileAtomic(JoinPath(image_dir_, "rootfs.ext4"), std::string(8192, 'r')),
                IsOk());
    state_dir_ = JoinPath(root_.path(), "state");
    run_dir_ = JoinPath(root_.path(), "run");
    EXPECT_THAT(MakeDirs(state_dir_), IsOk());
    EXPECT_THAT(MakeDirs(run_dir_), IsOk());
  }

  fakes::FakeHost& fake() { return fake_; }
  const snapshot::StateFiles& files() const { return layout_; }
  uint32_t fork_parallelism = 0;  // ManagerOptions::fork_parallelism at Start.
  // ManagerOptions::mount_paths at Start (unset: no host mounts).
  std::shared_ptr<const image::HostPathResolver> mount_paths;
  std::string root() const { return root_.path(); }
  // The protocol the fake guest agents speak at Start (1: no Reidentify),
  // and what they were asked.
  uint32_t agent_protocol_version = agent::kReidentifyProtocolVersion;
  const std::shared_ptr<fakes::FakeGuestLog> guest_log = std::make_shared<fakes::FakeGuestLog>();

  // Starts (or restarts) the daemon's manager.
  absl::Status Start() {
    manager_.reset();
    auto store = store::Store::Open(JoinPath(state_dir_, "smolvmd.db"));
    if (!store.ok()) return store.status();
    (*store)->SetWriteFaultForTesting([this](std::string_view write) {
      return fake_.faults.Hit(absl::StrCat("store.", std::string(write)));
    });
    ManagerOptions options;
    options.state_dir = state_dir_;
    options.run_dir = run_dir_;
    options.boot_timeout = absl::Seconds(5);
    options.restore_ready_timeout = absl::Seconds(5);
    options.network.enabled = true;
    options.network.bridge = kBridge;
    options.network.subnet = "10.77.0.0/24";
    options.network.nft_table = "smolvmd_unit";
    options.ports.min_port = 1;
    options.ports.max_port = 65535;
    options.vmm_uid_base = 1879048192;
    options.vmm_uid_count = 64;
    options.fork_parallelism = fork_parallelism;
    options.mount_paths = mount_paths;
    ManagerParts parts;
    parts.store = *std::move(store);
    parts.hypervisor = std::make_unique<fakes::FakeHypervisor>(&fake_);
    parts.images = std::make_unique<FakeImages>(image_dir_);
    parts.files = std::make_unique<fakes::FaultyStateFiles>(&fake_, state_dir_, run_dir_);
    parts.guests =
        std::make_unique<fakes::FakeGuestConnector>(&fake_, agent_protocol_version, guest_log);
    parts.links = std::make_unique<fakes::FakeLinkBackend>(&fake_);
    parts.firewall = std::make_unique<fakes::FakeFirewall>(&fake_);
    auto manager = VmManager::Create(options, std::move(parts));
    if (!manager.ok()) return manager.status();
    manager_ = *std::move(manager);
    return absl::OkStatus();
  }
  VmManager& manager() { return *manager_; }
  void Stop() { manager_.reset(); }

  std::unique_ptr<store::Store> OpenStore() {
    auto store = store::Store::Open(JoinPath(state_dir_, "smolvmd.db"));
    EXPECT_THAT(store.status(), IsOk());
    return store.ok() ? *std::move(store) : nullptr;
  }

  // What must hold after any operation, failed or not: VMM processes match
  // the records, every VM has its whole disk and nothing staged, every
  // snapshot is complete, nothing is left of what does not exist.
  void ExpectConsistent(const std::string& when, bool fully = false) {
    SCOPED_TRACE(when);
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto vms = store->AllVms();
    ASSERT_THAT(vms.status(), IsOk());
    auto snaps = store->AllSnapshots();
    ASSERT_THAT(snaps.status(), IsOk());
    std::map<std::string, int> live = fake_.LiveVmms();
    std::set<std::string> rows;
    for (const auto& vm : *vms) {
      rows.insert(vm.vm_id);
      const bool live_state = vm.state == VmState::kRunning || vm.state == VmState::kPaused;
      EXPECT_EQ(live[vm.vm_id], live_state ? 1 : 0)
          << "vm " << vm.vm_id << " is " << VmStateName(vm.state) << " with " << live[vm.vm_id]
          << " live VMMs";
      if (!PathExists(layout_.VmDir(vm.vm_id)) && !live_state && !fully) {
        // A delete that removed the files and not yet the row: the next
        // start (or a retried delete) finishes it.
        continue;
      }
      EXPECT_TRUE(PathExists(layout_.VmDisk(vm.vm_id))) << "vm " << vm.vm_id << " has no disk";
      for (const char* staged : {".creating", ".restoring", ".previous"}) {
        EXPECT_FALSE(PathExists(layout_.VmDisk(vm.vm_id) + staged))
            << "vm " << vm.vm_id << " left disk.ext4" << staged;
      }
    }
    for (const auto& [vm_id, n] : live) {
      EXPECT_TRUE(rows.count(vm_id)) << "a VMM runs for vm " << vm_id << ", which has no record";
    }
    for (const auto& name : layout_.VmDirNames()) {
      EXPECT_TRUE(rows.count(name)) << "files of unknown vm " << name;
    }
    std::set<std::string> snapshot_ids;
    for (const auto& snap : *snaps) {
      snapshot_ids.insert(snap.snapshot_id);
      EXPECT_THAT(snapshot::ReadAndVerify(layout_.SnapshotPathsOf(snap.snapshot_id)).status(),
                  IsOk())
          << "snapshot " << snap.snapshot_id << " is listed but incomplete";
    }
    for (const auto& name : layout_.SnapshotDirNames()) {
      EXPECT_FALSE(snapshot::StateFiles::IsDraft(name)) << "draft " << name << " left behind";
    }
  }

  // After a restart also the network: TAPs only of live VMs, addresses only
  // of existing ones, firewall rules of exactly the VMs holding addresses.
  void ExpectFullyConsistent(const std::string& when) {
    ExpectConsistent(when, /*fully=*/true);
    SCOPED_TRACE(when);
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    auto vms = store->AllVms();
    ASSERT_THAT(vms.status(), IsOk());
    auto allocations = store->AddressAllocations();
    ASSERT_THAT(allocations.status(), IsOk());
    std::set<std::string> rows, live_taps, holders;
    const std::set<std::string> firewall = fake_.FirewallVms();
    for (const auto& vm : *vms) {
      rows.insert(vm.vm_id);
      if (vm.state == VmState::kRunning || vm.state == VmState::kPaused) {
        live_taps.insert(vm.network.tap_device);
        EXPECT_TRUE(fake_.Links().count(vm.network.tap_device))
            << "live vm " << vm.vm_id << " has no tap";
        EXPECT_TRUE(firewall.count(vm.vm_id)) << "live vm " << vm.vm_id << " has no rules";
      } else {
        EXPECT_FALSE(PathExists(layout_.VmRunDir(vm.vm_id)))
            << "vm " << vm.vm_id << " is " << VmStateName(vm.state) << " but has a run dir";
      }
    }
    for (const auto& link : fake_.Links()) {
      if (link == kBridge) continue;
      EXPECT_TRUE(live_taps.count(link)) << "stale tap " << link;
    }
    auto snaps = store->AllSnapshots();
    ASSERT_THAT(snaps.status(), IsOk());
    std::set<std::string> snapshot_ids;
    for (const auto& snap : *snaps) snapshot_ids.insert(snap.snapshot_id);
    for (const auto& name : layout_.SnapshotDirNames()) {
      EXPECT_TRUE(snapshot_ids.count(name)) << "snapshot dir " << name << " has no record";
    }
    for (const auto& [ip, vm_id] : *allocations) {
      EXPECT_TRUE(rows.count(vm_id)) << "address " << ip << " held by vanished vm " << vm_id;
      holders.insert(vm_id);
    }
    // Rules only for VMs that hold their address (a created VM's rules may
    // wait for its first start).
    for (const auto& vm_id : firewall) {
      EXPECT_TRUE(holders.count(vm_id)) << "firewall rules of vm " << vm_id
                                        << ", which holds no address";
    }
  }

 private:
  smolvm_testing::TempDir root_{"vm-manager-test"};
  std::string image_dir_, state_dir_, run_dir_;
  fakes::FakeHost fake_;
  std::unique_ptr<VmManager> manager_;
  // The real layout, for checks (the same paths the manager uses).
  snapshot::StateFiles layout_{JoinPath(root_.path(), "state"), JoinPath(root_.path(), "run")};
};

VmConfig Config(const std::string& id) {
  VmConfig config;
  config.vm_id = id;
  config.vcpu_count = 1;
  config.memory_mib = 128;
  return config;
}

// Runs `op` on a fresh host prepared by `setup`, with a fault at its n-th
// collaborator call for n = 1, 2, ... until it runs without reaching the
// fault (then `done` checks its result). Returns how many faults it
// survived.
// Injected faults survived, over all tests (printed at the end).
int g_faults_survived = 0;

class FaultCountPrinter : public ::testing::Environment {
 public:
  void TearDown() override {
    std::printf("vm_manager_test: injected faults survived: %d\n", g_faults_survived);
  }
};
const auto* const kPrinter =
    ::testing::AddGlobalTestEnvironment(new FaultCountPrinter);

int ForEveryFault(const std::function<void(Host&)>& setup,
                  const std::function<absl::Status(VmManager&)>& op,
                  const std::function<void(Host&)>& done = nullptr) {
  for (int n = 1; n < 500; ++n) {
    Host host;
    if (!host.Start().ok()) {
      ADD_FAILURE() << "start";
      return n;
    }
    setup(host);
    if (::testing::Test::HasFatalFailure()) return n;
    host.fake().faults.FailAt(n);
    absl::Status status = op(host.manager());
    const bool fired = host.fake().faults.fired();
    const std::string step = host.fake().faults.fired_step();
    host.fake().faults.Disarm();
    if (!fired) {
      EXPECT_THAT(status, IsOk()) << "without a fault";
      host.ExpectFullyConsistent("after success");
      if (done) done(host);
      g_faults_survived += n - 1;
      return n - 1;
    }
    const std::string when = absl::StrCat("fault ", n, " at ", step, " (", status.ToString(), ")");
    host.ExpectConsistent(when);
    EXPECT_THAT(host.Start(), IsOk()) << when << ": restart";
    host.ExpectFullyConsistent(absl::StrCat(when, ", after a restart"));
    // The operation works once the fault is gone (or had in fact completed).
    absl::Status retry = op(host.manager());
    EXPECT_TRUE(retry.ok() || absl::IsAlreadyExists(retry)) << when << ": retry: " << retry;
    host.ExpectFullyConsistent(absl::StrCat(when, ", after the retry"));
    if (::testing::Test::HasFailure()) return n;
  }
  ADD_FAILURE() << "the operation never ran through";
  return 0;
}

void CreateRunning(Host& host, const std::string& id) {
  ASSERT_THAT(host.manager().CreateVm(kAdmin, Config(id), true).status(), IsOk());
}
void Snapshot(Host& host, const std::string& vm, const std::string& snap) {
  ASSERT_THAT(host.manager().CreateSnapshot(kAdmin, vm, snap, true).status(), IsOk());
}

absl::StatusOr<VmState> StateOf(Host& host, const std::string& id) {
  auto vm = host.manager().GetVm(kAdmin, id);
  if (!vm.ok()) return vm.status();
  return vm->state;
}

TEST(VmManagerFaults, CreateVm) {
  int faults = ForEveryFault([](Host&) {},
                             [](VmManager& m) { return m.CreateVm(kAdmin, Config("a"), false).status(); },
                             [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kCreated); });
  EXPECT_GT(faults, 3);
}

TEST(VmManagerFaults, CreateVmAndStart) {
  int faults = ForEveryFault(
      [](Host&) {}, [](VmManager& m) { return m.CreateVm(kAdmin, Config("a"), true).status(); },
      [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kRunning); });
  EXPECT_GT(faults, 6);
}

TEST(VmManagerFaults, StartVm) {
  ForEveryFault(
      [](Host& h) {
        ASSERT_THAT(h.manager().CreateVm(kAdmin, Config("a"), false).status(), IsOk());
      },
      [](VmManager& m) {
        auto vm = m.StartVm(kAdmin, "a");
        // A failed boot leaves the VM in ERROR, from which a start retries.
        return vm.status();
      },
      [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kRunning); });
}

TEST(VmManagerFaults, StopVm) {
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [](VmManager& m) {
                  auto vm = m.GetVm(kAdmin, "a");
                  if (vm.ok() && vm->state == VmState::kStopped) return absl::OkStatus();
                  return m.StopVm(kAdmin, "a").status();
                },
                [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kStopped); });
}

TEST(VmManagerFaults, PauseAndResume) {
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [](VmManager& m) {
                  auto vm = m.GetVm(kAdmin, "a");
                  if (vm.ok() && vm->state == VmState::kRunning) {
                    absl::Status s = m.PauseVm(kAdmin, "a").status();
                    if (!s.ok()) return s;
                  }
                  return m.ResumeVm(kAdmin, "a").status();
                },
                [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kRunning); });
}

TEST(VmManagerFaults, DeleteVm) {
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [](VmManager& m) {
                  absl::Status s = m.DeleteVm(kAdmin, "a");
                  return absl::IsNotFound(s) ? absl::OkStatus() : s;
                },
                [](Host& h) { EXPECT_TRUE(absl::IsNotFound(StateOf(h, "a").status())); });
}

TEST(VmManagerFaults, CreateSnapshot) {
  int faults = ForEveryFault(
      [](Host& h) { CreateRunning(h, "a"); },
      [](VmManager& m) { return m.CreateSnapshot(kAdmin, "a", "s", true).status(); },
      [](Host& h) {
        EXPECT_EQ(*StateOf(h, "a"), VmState::kRunning);
        EXPECT_THAT(h.manager().GetSnapshot(kAdmin, "s").status(), IsOk());
      });
  EXPECT_GT(faults, 8);
}

TEST(VmManagerFaults, CreateSnapshotLeavingSourcePaused) {
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [](VmManager& m) { return m.CreateSnapshot(kAdmin, "a", "s", false).status(); },
                [](Host& h) { EXPECT_EQ(*StateOf(h, "a"), VmState::kPaused); });
}

TEST(VmManagerFaults, DeleteSnapshot) {
  ForEveryFault(
      [](Host& h) {
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
      },
      [](VmManager& m) {
        absl::Status s = m.DeleteSnapshot(kAdmin, "s");
        return absl::IsNotFound(s) ? absl::OkStatus() : s;
      },
      [](Host& h) { EXPECT_TRUE(absl::IsNotFound(h.manager().GetSnapshot(kAdmin, "s").status())); });
}

TEST(VmManagerFaults, RestoreIntoOwnIdentity) {
  ForEveryFault(
      [](Host& h) {
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
        ASSERT_THAT(h.manager().StopVm(kAdmin, "a").status(), IsOk());
      },
      [](VmManager& m) {
        auto vm = m.GetVm(kAdmin, "a");
        if (vm.ok() && vm->state == VmState::kRunning) return absl::OkStatus();
        return m.RestoreSnapshot(kAdmin, "s", true, "").status();
      },
      [](Host& h) {
        auto vm = h.manager().GetVm(kAdmin, "a");
        ASSERT_THAT(vm.status(), IsOk());
        EXPECT_EQ(vm->state, VmState::kRunning);
        EXPECT_EQ(vm->restored_from, "s");
      });
}

TEST(VmManagerFaults, RestoreClone) {
  int faults = ForEveryFault(
      [](Host& h) {
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
      },
      [](VmManager& m) { return m.RestoreSnapshot(kAdmin, "s", true, "clone").status(); },
      [](Host& h) {
        auto clone = h.manager().GetVm(kAdmin, "clone");
        auto source = h.manager().GetVm(kAdmin, "a");
        ASSERT_THAT(clone.status(), IsOk());
        EXPECT_EQ(clone->state, VmState::kRunning);
        EXPECT_NE(clone->network.guest_ip, source->network.guest_ip);
      });
  EXPECT_GT(faults, 10);
}

TEST(VmManagerFaults, RestoreClonePausedThenResume) {
  ForEveryFault(
      [](Host& h) {
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
        ASSERT_THAT(h.manager().RestoreSnapshot(kAdmin, "s", false, "clone").status(), IsOk());
      },
      // The resume runs the fix-ups (clock, entropy, re-addressing) a paused
      // clone still owes; a failed one leaves it in ERROR.
      // (A clone whose fix-up failed is in ERROR: it must not run with its
      // snapshot's clock and RNG. Deleting it and restoring again is the
      // way back.)
      [](VmManager& m) {
        auto vm = m.GetVm(kAdmin, "clone");
        if (vm.ok() && vm->state == VmState::kRunning) return absl::OkStatus();
        if (vm.ok() && vm->state == VmState::kError) {
          if (absl::Status s = m.DeleteVm(kAdmin, "clone"); !s.ok()) return s;
          auto again = m.RestoreSnapshot(kAdmin, "s", false, "clone");
          if (!again.ok()) return again.status();
        }
        return m.ResumeVm(kAdmin, "clone").status();
      },
      [](Host& h) { EXPECT_EQ(*StateOf(h, "clone"), VmState::kRunning); });
}

// Images built before Reidentify keep their old agent: a clone of one is
// fixed up with SetClock, AddEntropy and the re-addressing script.
TEST(VmManagerFaults, RestoreCloneWithAnOldAgent) {
  ForEveryFault(
      [](Host& h) {
        h.agent_protocol_version = 1;
        ASSERT_THAT(h.Start(), IsOk());
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
      },
      [](VmManager& m) { return m.RestoreSnapshot(kAdmin, "s", true, "clone").status(); },
      [](Host& h) {
        EXPECT_EQ(*StateOf(h, "clone"), VmState::kRunning);
        EXPECT_TRUE(h.guest_log->reidentities().empty());
      });
}

TEST(VmManagerFaults, ExposeAndUnexpose) {
  PortForward forward;
  forward.host_ip = "127.0.0.1";
  forward.host_port = 1;  // Privileged and unused: the host check passes.
  forward.guest_port = 80;
  forward.protocol = "tcp";
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [forward](VmManager& m) {
                  auto vm = m.GetVm(kAdmin, "a");
                  if (vm.ok() && vm->network.port_forwards.empty()) {
                    absl::Status s = m.ExposePort(kAdmin, "a", forward).status();
                    if (!s.ok()) return s;
                  }
                  return m.UnexposePort(kAdmin, "a", forward).status();
                },
                [](Host& h) {
                  auto vm = h.manager().GetVm(kAdmin, "a");
                  EXPECT_TRUE(vm->network.port_forwards.empty());
                });
}

TEST(VmManagerFaults, ForkSnapshot) {
  ForEveryFault(
      [](Host& h) {
        CreateRunning(h, "a");
        Snapshot(h, "a", "s");
      },
      [](VmManager& m) -> absl::Status {
        auto results = m.ForkSnapshot(kAdmin, "s", 2, true, "f");
        if (!results.ok()) return results.status();
        for (const auto& [id, vm] : *results) {
          if (!vm.ok() && !absl::IsAlreadyExists(vm.status())) return vm.status();
        }
        return absl::OkStatus();
      },
      [](Host& h) {
        EXPECT_EQ(*StateOf(h, "f-1"), VmState::kRunning);
        EXPECT_EQ(*StateOf(h, "f-2"), VmState::kRunning);
      });
}

TEST(VmManagerFaults, GuestOperationsFailCleanly) {
  ForEveryFault([](Host& h) { CreateRunning(h, "a"); },
                [](VmManager& m) -> absl::Status {
                  agent::ExecSpec spec;
                  spec.argv = {"true"};
                  auto exec = m.StartExec(kAdmin, "a", spec);
                  if (!exec.ok()) return exec.status();
                  bool sent = false;
                  auto up = m.UploadFile(kAdmin, "a", {.path = "/tmp/x", .mode = 0644},
                                         [&]() -> absl::StatusOr<std::string> {
                                           if (sent) return std::string();
                                           sent = true;
                                           return std::string("data");
                                         });
                  if (!up.ok()) return up.status();
                  auto down = m.DownloadFile(kAdmin, "a", {.path = "/tmp/x"},
                                             [](const std::string&) { return absl::OkStatus(); });
                  if (!down.ok()) return down.status();
                  return m.PingAgent(kAdmin, "a", 2).status();
                });
}

// Startup itself can fail at any step; the next start still brings the
// host in line.
TEST(VmManagerFaults, Startup) {
  for (int n = 1; n < 200; ++n) {
    Host host;
    ASSERT_THAT(host.Start(), IsOk());
    CreateRunning(host, "a");
    Snapshot(host, "a", "s");
    ASSERT_THAT(host.manager().RestoreSnapshot(kAdmin, "s", false, "b").status(), IsOk());
    ASSERT_THAT(host.manager().CreateVm(kAdmin, Config("c"), false).status(), IsOk());
    host.Stop();
    host.fake().faults.FailAt(n);
    absl::Status status = host.Start();
    const bool fired = host.fake().faults.fired();
    host.fake().faults.Disarm();
    if (!fired) {
      EXPECT_THAT(status, IsOk());
      host.ExpectFullyConsistent("startup without fault");
      EXPECT_GT(n, 3);
      g_faults_survived += n - 1;
      return;
    }
    ASSERT_THAT(host.Start(), IsOk()) << "fault " << n;
    host.ExpectFullyConsistent(absl::StrCat("after startup fault ", n));
    EXPECT_EQ(*StateOf(host, "a"), VmState::kRunning);
    EXPECT_THAT(StateOf(host, "c").status(), IsOk());
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(VmManager, RestartReadoptsRunningVmsAndKeepsPendingFixups) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  ASSERT_THAT(host.manager().RestoreSnapshot(kAdmin, "s", false, "clone").status(), IsOk());
  const auto pids_before = host.fake().LiveVmms();
  ASSERT_THAT(host.Start(), IsOk());
  EXPECT_EQ(host.fake().LiveVmms(), pids_before);
  EXPECT_EQ(*StateOf(host, "a"), VmState::kRunning);
  auto clone = host.manager().GetVm(kAdmin, "clone");
  ASSERT_THAT(clone.status(), IsOk());
  EXPECT_EQ(clone->state, VmState::kPaused);
  EXPECT_EQ(clone->pending_fixup, kFixupReaddress);
  // The resume after the restart still fixes the clone up: its clock,
  // entropy and re-addressing go to the guest in one Reidentify.
  host.fake().faults.FailAt(1000);  // Only to record the steps.
  host.guest_log->Clear();
  ASSERT_THAT(host.manager().ResumeVm(kAdmin, "clone").status(), IsOk());
  auto steps = host.fake().faults.steps();
  EXPECT_THAT(steps, ::testing::Contains("guest.reidentify"));
  EXPECT_THAT(steps, ::testing::Not(::testing::Contains("guest.exec")));
  host.fake().faults.Disarm();
  auto reidentities = host.guest_log->reidentities();
  ASSERT_EQ(reidentities.size(), 1u);
  ASSERT_TRUE(reidentities[0].network.has_value());
  EXPECT_EQ(reidentities[0].network->ipv4_address, clone->network.guest_ip);
  host.ExpectFullyConsistent("after resume");
}

// A clone's clock, entropy and new address reach its guest in one
// Reidentify, built from the clone's record; nothing is exec'd.
TEST(VmManager, CloneRestoreReidentifiesTheGuestInOneRoundTrip) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  host.guest_log->Clear();
  host.fake().faults.FailAt(1000);  // Only to record the steps.
  const absl::Time before = absl::Now();
  auto clone = host.manager().RestoreSnapshot(kAdmin, "s", true, "clone");
  ASSERT_THAT(clone.status(), IsOk());
  auto steps = host.fake().faults.steps();
  host.fake().faults.Disarm();
  EXPECT_EQ(std::count(steps.begin(), steps.end(), "guest.reidentify"), 1);
  for (const char* old : {"guest.set_clock", "guest.add_entropy", "guest.exec"}) {
    EXPECT_THAT(steps, ::testing::Not(::testing::Contains(old)));
  }
  EXPECT_TRUE(host.guest_log->execs().empty());
  auto reidentities = host.guest_log->reidentities();
  ASSERT_EQ(reidentities.size(), 1u);
  const agent::Reidentity& r = reidentities[0];
  ASSERT_TRUE(r.clock.has_value());
  EXPECT_GE(*r.clock, before);
  EXPECT_EQ(r.entropy_seed.size(), 64u);
  ASSERT_TRUE(r.network.has_value());
  agent::GuestNetworkIdentity want;
  want.interface = "eth0";
  want.mac = clone->network.guest_mac;
  want.ipv4_address = clone->network.guest_ip;
  want.prefix_length = 24;
  want.gateway = "10.77.0.1";
  want.dns_server = clone->network.dns_server;
  EXPECT_EQ(*r.network, want);
  EXPECT_EQ(clone->pending_fixup, "");

  // Into its own identity: clock and entropy only, the address is its own.
  ASSERT_THAT(host.manager().StopVm(kAdmin, "a").status(), IsOk());
  host.guest_log->Clear();
  ASSERT_THAT(host.manager().RestoreSnapshot(kAdmin, "s", true, "").status(), IsOk());
  reidentities = host.guest_log->reidentities();
  ASSERT_EQ(reidentities.size(), 1u);
  EXPECT_TRUE(reidentities[0].clock.has_value());
  EXPECT_FALSE(reidentities[0].network.has_value());
  EXPECT_TRUE(host.guest_log->execs().empty());
}

TEST(VmManager, CloneRestoreWithAnOldAgentRunsTheReaddressScript) {
  Host host;
  host.agent_protocol_version = 1;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  host.guest_log->Clear();
  host.fake().faults.FailAt(1000);  // Only to record the steps.
  auto clone = host.manager().RestoreSnapshot(kAdmin, "s", true, "clone");
  ASSERT_THAT(clone.status(), IsOk());
  auto steps = host.fake().faults.steps();
  host.fake().faults.Disarm();
  for (const char* old : {"guest.set_clock", "guest.add_entropy", "guest.exec"}) {
    EXPECT_THAT(steps, ::testing::Contains(old));
  }
  EXPECT_THAT(steps, ::testing::Not(::testing::Contains("guest.reidentify")));
  auto execs = host.guest_log->execs();
  ASSERT_EQ(execs.size(), 1u);
  ASSERT_EQ(execs[0].size(), 3u);
  EXPECT_EQ(execs[0][0], "/bin/sh");
  const std::string& script = execs[0][2];
  EXPECT_THAT(script, HasSubstr("ip link set eth0 address " + clone->network.guest_mac));
  EXPECT_THAT(script, HasSubstr("ip addr add " + clone->network.guest_ip + "/24 dev eth0"));
  EXPECT_THAT(script, HasSubstr("ip route replace default via 10.77.0.1"));
  EXPECT_THAT(script, HasSubstr("arping -U -c 1 -I eth0 " + clone->network.guest_ip));
}

TEST(VmManager, VmmDeathIsNoticedAndReleasesResources) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  auto vm = host.manager().GetVm(kAdmin, "a");
  const std::string tap = vm->network.tap_device;
  ASSERT_TRUE(host.fake().Links().count(tap));
  host.fake().KillVmm("a");
  vm = host.manager().GetVm(kAdmin, "a");
  ASSERT_THAT(vm.status(), IsOk());
  EXPECT_EQ(vm->state, VmState::kError);
  EXPECT_THAT(vm->error, HasSubstr("exited unexpectedly"));
  EXPECT_FALSE(host.fake().Links().count(tap));
  host.ExpectFullyConsistent("after the VMM died");
  // And it can be started again.
  EXPECT_THAT(host.manager().StartVm(kAdmin, "a").status(), IsOk());
}

// Host mounts: refused without the operator's allow list; a snapshot is
// refused naming a mount that is not detach_on_snapshot, and with every
// mount detach_on_snapshot the guest unmounts before and mounts after.
TEST(VmManager, HostMountsAndSnapshots) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  VmConfig with_mount = Config("m");
  with_mount.mounts = {Mount{JoinPath(host.root(), "share"), "/mnt/share", false, false}};
  EXPECT_THAT(host.manager().CreateVm(kAdmin, with_mount, true).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, "[mounts] allowed_dirs"));

  ASSERT_THAT(MakeDirs(JoinPath(host.root(), "share")), IsOk());
  auto resolver = image::HostPathResolver::Create(HostPathPolicy{{JoinPath(host.root(), "share")}},
                                                  {}, "[mounts] allowed_dirs in smolvmd.toml");
  ASSERT_THAT(resolver.status(), IsOk());
  host.mount_paths = std::make_shared<const image::HostPathResolver>(*std::move(resolver));
  ASSERT_THAT(host.Start(), IsOk());
  ASSERT_THAT(host.manager().CreateVm(kAdmin, with_mount, true).status(), IsOk());
  EXPECT_THAT(host.manager().CreateSnapshot(kAdmin, "m", "s", true).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition, "/mnt/share"));
  EXPECT_EQ(StateOf(host, "m").value(), VmState::kRunning);

  VmConfig detached = Config("d");
  detached.mounts = {Mount{JoinPath(host.root(), "share"), "/data", true, true}};
  ASSERT_THAT(host.manager().CreateVm(kAdmin, detached, true).status(), IsOk());
  const size_t before = host.guest_log->execs().size();
  ASSERT_THAT(host.manager().CreateSnapshot(kAdmin, "d", "s", false).status(), IsOk());
  auto execs = host.guest_log->execs();
  ASSERT_EQ(execs.size(), before + 2);
  EXPECT_THAT(execs[before].back(), HasSubstr("umount /data"));
  EXPECT_THAT(execs[before + 1].back(), HasSubstr("mount -t 9p"));
  EXPECT_THAT(execs[before + 1].back(), HasSubstr(",ro smolvm-m0 /data"));
  // Left paused as asked (it ran only to mount again).
  EXPECT_EQ(StateOf(host, "d").value(), VmState::kPaused);
  host.ExpectFullyConsistent("after the snapshots");
}

TEST(VmManager, RetriedSnapshotIdIsAlreadyExistsWhateverTheSourceState) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  ASSERT_THAT(host.manager().CreateSnapshot(kAdmin, "a", "s", false).status(), IsOk());
  EXPECT_TRUE(absl::IsAlreadyExists(host.manager().CreateSnapshot(kAdmin, "a", "s", false).status()));
  // Not run since: a new id is refused for that reason instead.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      host.manager().CreateSnapshot(kAdmin, "a", "s2", false).status()));
}

// Clones restored side by side come back in clone order, each its own VM
// with its own address.
TEST(VmManager, ForkRestoresClonesConcurrentlyInOrder) {
  Host host;
  host.fork_parallelism = 3;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  auto results = host.manager().ForkSnapshot(kAdmin, "s", 7, true, "f");
  ASSERT_THAT(results.status(), IsOk());
  ASSERT_EQ(results->size(), 7u);
  std::set<std::string> ips;
  for (size_t i = 0; i < results->size(); ++i) {
    const auto& [id, vm] = (*results)[i];
    EXPECT_EQ(id, absl::StrCat("f-", i + 1));
    ASSERT_THAT(vm.status(), IsOk()) << id;
    EXPECT_EQ(vm->vm_id, id);
    EXPECT_EQ(vm->state, VmState::kRunning);
    ips.insert(vm->network.guest_ip);
  }
  EXPECT_EQ(ips.size(), 7u);
  host.ExpectConsistent("after a parallel fork");
  EXPECT_TRUE(absl::IsInvalidArgument(
      host.manager().ForkSnapshot(kAdmin, "s", 129, true, "g").status()));
}

// ForkVm: refusals before any snapshot; then a kept, labelled snapshot and
// running children while the source runs on; a paused source stays paused.
TEST(VmManager, ForkVmSnapshotsAndForksKeepingTheSource) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  VmManager& m = host.manager();
  EXPECT_TRUE(absl::IsInvalidArgument(m.ForkVm(kAdmin, "a", 0, "", "", false, {}).status()));
  EXPECT_TRUE(absl::IsNotFound(m.ForkVm(kAdmin, "gone", 1, "", "", false, {}).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      m.ForkVm(kAdmin, "a", 1, "", "", false, {{"bad key", "v"}}).status()));
  ASSERT_THAT(m.ListSnapshots(kAdmin, 0, "", "").status(), IsOk());
  EXPECT_TRUE(m.ListSnapshots(kAdmin, 0, "", "")->items.empty());  // nothing taken yet

  auto fork = m.ForkVm(kAdmin, "a", 3, "", "", false, {{"purpose", "fork"}});
  ASSERT_THAT(fork.status(), IsOk());
  EXPECT_THAT(fork->snapshot_id, testing::StartsWith("a-fork-"));
  ASSERT_EQ(fork->children.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(fork->children[i].first, absl::StrCat(fork->snapshot_id, "-", i + 1));
    ASSERT_THAT(fork->children[i].second.status(), IsOk());
    EXPECT_EQ(fork->children[i].second->state, VmState::kRunning);
  }
  EXPECT_EQ(m.GetVm(kAdmin, "a")->state, VmState::kRunning);
  auto snap = m.GetSnapshot(kAdmin, fork->snapshot_id);
  ASSERT_THAT(snap.status(), IsOk());
  EXPECT_EQ(snap->labels, (Labels{{"purpose", "fork"}}));
  auto listed = m.ListSnapshots(kAdmin, 0, "", "", ListFilter{.labels = {{"purpose", "fork"}}});
  ASSERT_THAT(listed.status(), IsOk());
  ASSERT_EQ(listed->items.size(), 1u);
  // The event journal: the snapshot, each child restored and running, then
  // one event tying them to the source.
  {
    auto store = host.OpenStore();
    ASSERT_NE(store, nullptr);
    auto events = store->ListEvents(0, "", {}, 1000);
    ASSERT_THAT(events.status(), IsOk());
    std::vector<std::string> kinds;
    for (const EventRecord& e : events->events) {
      if (e.kind != kEventRunning && e.kind != kEventPaused) kinds.push_back(e.kind + " " + e.vm_id);
    }
    const std::string kid = fork->snapshot_id + "-";
    EXPECT_THAT(kinds, testing::IsSupersetOf(std::vector<std::string>{
                           "created a", "snapshot_created a", "restored " + kid + "1",
                           "restored " + kid + "3", "forked a"}));
    EXPECT_EQ(kinds.back(), "forked a");
    EXPECT_EQ(events->events.back().detail,
              absl::StrCat("children: ", kid, "1,", kid, "2,", kid, "3"));
    EXPECT_EQ(events->events.back().snapshot_id, fork->snapshot_id);
    EXPECT_EQ(events->events.back().state, "running");
  }

  ASSERT_THAT(m.PauseVm(kAdmin, "a").status(), IsOk());
  fork = m.ForkVm(kAdmin, "a", 1, "again", "kid", /*paused=*/true, {});
  ASSERT_THAT(fork.status(), IsOk());
  EXPECT_EQ(fork->children[0].first, "kid-1");
  EXPECT_EQ(fork->children[0].second->state, VmState::kPaused);
  EXPECT_EQ(m.GetVm(kAdmin, "a")->state, VmState::kPaused);
  EXPECT_TRUE(absl::IsAlreadyExists(m.ForkVm(kAdmin, "a", 1, "again", "kid2", false, {}).status()));
  host.ExpectConsistent("after ForkVm");
}

TEST(VmManager, SlotMapHoldsOnlyVmsWithAVmm) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(absl::IsNotFound(host.manager().StopVm(kAdmin, absl::StrCat("nope", i)).status()));
  }
  EXPECT_EQ(host.manager().SlotCountForTesting(), 1u);
  ASSERT_THAT(host.manager().DeleteVm(kAdmin, "a"), IsOk());
  EXPECT_EQ(host.manager().SlotCountForTesting(), 0u);
}

TEST(VmManager, FactoryRefusesMissingCollaborators) {
  EXPECT_TRUE(absl::IsInvalidArgument(VmManager::Create(ManagerOptions{}, ManagerParts{}).status()));
}

}  // namespace
}  // namespace smolvm::core

namespace smolvm::core {
namespace {

// The journal: what a crash leaves in it is finished or rolled back at the
// next start, exactly (an existing VM a restore was replacing comes back
// as it was, with its disk).
TEST(VmManagerJournal, InterruptedOperationsAreFinishedOrRolledBack) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  ASSERT_THAT(host.manager().StopVm(kAdmin, "a").status(), IsOk());
  CreateRunning(host, "doomed");
  host.Stop();
  auto store = host.OpenStore();
  ASSERT_NE(store, nullptr);
  // A restore into "a" that got as far as its staged disk and row.
  auto before = store->GetVm("a");
  ASSERT_THAT(before.status(), IsOk());
  ASSERT_THAT(store->BeginOperation("a", "restore"), IsOk());
  VmRecord half = *before;
  half.state = VmState::kCreated;
  half.restored_from = "s";
  ASSERT_THAT(store->UpdateVm(half), IsOk());
  const std::string disk = host.files().VmDisk("a");
  ASSERT_EQ(rename(disk.c_str(), (disk + ".previous").c_str()), 0);
  ASSERT_THAT(WriteFileAtomic(disk, "half-copied snapshot disk"), IsOk());
  // A create that inserted its row.
  ASSERT_THAT(store->BeginOperation("new", "create"), IsOk());
  VmRecord created;
  created.vm_id = "new";
  created.config = Config("new");
  created.owner = "default";
  ASSERT_THAT(store->InsertVm(created), IsOk());
  // A delete that stopped its VM and removed its files.
  ASSERT_THAT(store->BeginOperation("doomed", "delete"), IsOk());
  ASSERT_THAT(RemoveTree(host.files().VmDir("doomed")), IsOk());
  store.reset();

  ASSERT_THAT(host.Start(), IsOk());
  auto a = host.manager().GetVm(kAdmin, "a");
  ASSERT_THAT(a.status(), IsOk());
  EXPECT_EQ(a->state, VmState::kStopped);
  EXPECT_EQ(a->restored_from, before->restored_from);
  auto content = ReadFileToString(host.files().VmDisk("a"), 1 << 20);
  ASSERT_THAT(content.status(), IsOk());
  EXPECT_EQ(*content, std::string(8192, 'r')) << "the previous disk did not come back";
  EXPECT_TRUE(absl::IsNotFound(StateOf(host, "new").status()));
  EXPECT_TRUE(absl::IsNotFound(StateOf(host, "doomed").status()));
  EXPECT_THAT(host.OpenStore()->PendingOperations()->size(), 0u);
  host.ExpectFullyConsistent("after the journal was replayed");
  // And "a" restores for real now.
  EXPECT_THAT(host.manager().RestoreSnapshot(kAdmin, "s", true, "").status(), IsOk());
}

// A warm pool fills in the background with paused clones that already
// have their identities; a claim resumes one with a clock-only
// Reidentify; the pool refills, survives a restart, and DeletePool removes
// only the unclaimed members.
absl::StatusOr<VmManager::PoolStatus> WaitPoolReady(Host& host, const std::string& id,
                                                    size_t ready) {
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (;;) {
    auto pool = host.manager().GetPool(kAdmin, id);
    if (!pool.ok() || pool->ready.size() >= ready || absl::Now() > deadline) return pool;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

TEST(VmManager, PoolFillsClaimsRefillsAndSurvivesRestart) {
  Host host;
  ASSERT_THAT(host.Start(), IsOk());
  CreateRunning(host, "a");
  Snapshot(host, "a", "s");
  PoolRecord request;
  request.pool_id = "p";
  request.snapshot_id = "s";
  request.size = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(
      host.manager().CreatePool(kAdmin, PoolRecord{"p", "", "s", 0}).status()));
  EXPECT_TRUE(absl::IsNotFound(
      host.manager().CreatePool(kAdmin, PoolRecord{"p", "", "nope", 1}).status()));
  ASSERT_THAT(host.manager().CreatePool(kAdmin, request).status(), IsOk());
  EXPECT_TRUE(absl::IsAlreadyExists(host.manager().CreatePool(kAdmin, request).status()));
  auto pool = WaitPoolReady(host, "p", 2);
  ASSERT_THAT(pool.status(), IsOk());
  ASSERT_EQ(pool->ready.size(), 2u) << pool->last_error;
  const std::string member = pool->ready[0];
  // Another tenant sees no pool and cannot claim from it; it cannot pool a
  // snapshot that is not its own either.
  const Caller other{"uid:4242", false, "other"};
  EXPECT_TRUE(absl::IsNotFound(host.manager().GetPool(other, "p").status()));
  EXPECT_TRUE(absl::IsNotFound(host.manager().ClaimVm(other, "p", "").status()));
  EXPECT_TRUE(absl::IsNotFound(host.manager().DeletePool(other, "p")));
  EXPECT_TRUE(host.manager().ListPools(other)->empty());
  EXPECT_TRUE(absl::IsNotFound(
      host.manager().CreatePool(other, PoolRecord{"q", "", "s", 1}).status()));
  auto vm = host.manager().GetVm(kAdmin, member);
  ASSERT_THAT(vm.status(), IsOk());
  EXPECT_EQ(vm->state, VmState::kPaused);
  EXPECT_EQ(vm->pool_id, "p");
  EXPECT_EQ(vm->pending_fixup, kFixupClock);
  // The pool's until claimed.
  auto page = host.manager().ListVms(kAdmin, 0, "");
  ASSERT_THAT(page.status(), IsOk());
  EXPECT_EQ(page->items.size(), 1u);  // "a" only.
  EXPECT_TRUE(absl::IsFailedPrecondition(host.manager().ResumeVm(kAdmin, member).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(host.manager().DeleteSnapshot(kAdmin, "s")));

  host.guest_log->Clear();
  auto claimed = host.manager().ClaimVm(kAdmin, "p", member);
  ASSERT_THAT(claimed.status(), IsOk());
  EXPECT_TRUE(claimed->from_pool);
  EXPECT_EQ(claimed->vm.vm_id, member);
  EXPECT_EQ(claimed->vm.state, VmState::kRunning);
  EXPECT_EQ(claimed->vm.pool_id, "");
  EXPECT_EQ(claimed->vm.pending_fixup, "");
  auto reidentities = host.guest_log->reidentities();
  ASSERT_EQ(reidentities.size(), 1u);  // Clock and entropy; the address is its own.
  EXPECT_TRUE(reidentities[0].clock.has_value());
  EXPECT_FALSE(reidentities[0].network.has_value());
  EXPECT_TRUE(absl::IsNotFound(host.manager().ClaimVm(kAdmin, "p", member).status()));

  // Refilled, and still there after a restart.
  pool = WaitPoolReady(host, "p", 2);
  ASSERT_THAT(pool.status(), IsOk());
  ASSERT_EQ(pool->ready.size(), 2u);
  const std::vector<std::string> before = pool->ready;
  ASSERT_THAT(host.Start(), IsOk());
  pool = host.manager().GetPool(kAdmin, "p");
  ASSERT_THAT(pool.status(), IsOk());
  EXPECT_EQ(pool->ready, before);
  auto any = host.manager().ClaimVm(kAdmin, "p", "");
  ASSERT_THAT(any.status(), IsOk());
  EXPECT_TRUE(any->from_pool);
  EXPECT_EQ(any->vm.state, VmState::kRunning);

  // Deleted: its unclaimed members go, the claimed VMs stay.
  ASSERT_THAT(host.manager().DeletePool(kAdmin, "p"), IsOk());
  EXPECT_TRUE(absl::IsNotFound(host.manager().GetPool(kAdmin, "p").status()));
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (;;) {
    auto store = host.OpenStore();
    ASSERT_NE(store, nullptr);
    auto left = store->PoolVms("p");
    ASSERT_THAT(left.status(), IsOk());
    if (left->empty()) break;
    ASSERT_LT(absl::Now(), deadline) << left->size() << " members left";
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(host.manager().GetVm(kAdmin, member).status(), IsOk());
  EXPECT_THAT(host.manager().GetVm(kAdmin, any->vm.vm_id).status(), IsOk());
  EXPECT_THAT(host.manager().DeleteSnapshot(kAdmin, "s"), IsOk());
  host.ExpectConsistent("after the pool was deleted");
}

}  // namespace
}  // namespace smolvm::core
