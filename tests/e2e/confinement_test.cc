// VMM confinement on real guests (issue 8, items 1-4): every QEMU runs as a
// uid of its own (not 0), under seccomp mode 2 with no capabilities and
// no_new_privs, in a private mount namespace whose root holds only /usr,
// a few devices and that VM's own files, and in a cgroup of its own with
// the memory, CPU and pids limits set. A process under one VM's uid cannot
// open another VM's disk. A guest that makes its VMM pass the memory limit
// ends ERROR with the reason and leaves nothing behind. A VM whose RAM
// cannot fit in the run dir is refused with RESOURCE_EXHAUSTED.
//
// One daemon, one cold boot (192 MiB, 1 vCPU), one snapshot and one clone;
// a second daemon (no VM) whose run dir is a small tmpfs.
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/process.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kMemoryMib = 192;
// Small, so a guest that fills its RAM takes its VMM over the limit.
constexpr int kOverheadMib = 64;

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "Key:\tvalue" lines of /proc/<pid>/status.
std::map<std::string, std::string> ProcStatus(pid_t pid) {
  std::map<std::string, std::string> fields;
  for (absl::string_view line : absl::StrSplit(Slurp(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    auto colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    fields[std::string(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  return fields;
}

// Every non-directory path under `root` (the VMM's "/"), relative to it,
// not descending into the read-only /usr.
std::set<std::string> FilesUnder(const std::string& root) {
  std::set<std::string> files;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::end(it);
       it.increment(ec)) {
    std::string rel = it->path().string().substr(root.size());
    if (rel == "/usr") {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_directory(ec) || it->is_symlink(ec)) files.insert(rel);
  }
  return files;
}

class ConfinementTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    // Guest RAM files on tmpfs, as on a production host (/run): unlike a
    // disk's page cache they cannot be written back, so the memory limit
    // holds them.
    std::filesystem::create_directories(daemon_->run_dir());
    ASSERT_EQ(mount("smolvm-test", daemon_->run_dir().c_str(), "tmpfs", 0, "mode=0700"), 0);
    ASSERT_TRUE(daemon_->Start({"--vmm-memory-overhead-mib", absl::StrCat(kOverheadMib)}).ok())
        << daemon_->DaemonLog();
    opts_ = daemon_->client_options();
    v1::VMConfig config;
    config.set_vm_id("jail-a");
    config.set_memory_mib(kMemoryMib);
    config.set_vcpu_count(1);
    vm_ = new SmolVM(config, opts_);
    ASSERT_TRUE(vm_->start().ok()) << daemon_->DaemonLog();
    ASSERT_TRUE(vm_->snapshot("jail-snap", /*resume_source=*/true).ok());
    auto clone = SmolVM::from_snapshot("jail-snap", /*resume_vm=*/true, "jail-b", opts_);
    ASSERT_TRUE(clone.ok()) << clone.status() << daemon_->DaemonLog();
    clone_ = new SmolVM(*std::move(clone));
  }
  static void TearDownTestSuite() {
    delete clone_;
    delete vm_;
    std::string run_dir = daemon_->run_dir();
    delete daemon_;  // Ends the VMs; its directory stays while mounted.
    umount2(run_dir.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path(run_dir).parent_path(), ec);
  }

  static v1::Vm Info(const std::string& vm_id) {
    auto vm = SmolVMManager(opts_).get_vm(vm_id);
    EXPECT_TRUE(vm.ok()) << vm.status();
    return vm.ok() ? *vm : v1::Vm();
  }
  static std::string CgroupFile(const std::string& controller, const std::string& vm_id,
                                const std::string& file) {
    return absl::StrCat("/sys/fs/cgroup/", controller, "/", daemon_->CgroupParent(), "/", vm_id,
                        "/", file);
  }

  static TestDaemon* daemon_;
  static ClientOptions opts_;
  static SmolVM* vm_;
  static SmolVM* clone_;
};
TestDaemon* ConfinementTest::daemon_ = nullptr;
ClientOptions ConfinementTest::opts_;
SmolVM* ConfinementTest::vm_ = nullptr;
SmolVM* ConfinementTest::clone_ = nullptr;

TEST_F(ConfinementTest, EveryVmmIsUnprivilegedUnderSeccompInItsOwnCgroup) {
  std::set<uint32_t> uids;
  for (const std::string id : {"jail-a", "jail-b"}) {
    SCOPED_TRACE(id);
    v1::Vm vm = Info(id);
    ASSERT_EQ(vm.status(), v1::RUNNING);
    const pid_t pid = static_cast<pid_t>(vm.vmm_pid());
    ASSERT_GT(pid, 0);
    ASSERT_GT(vm.vmm_uid(), 0u);
    uids.insert(vm.vmm_uid());
    auto status = ProcStatus(pid);
    const std::string u = absl::StrCat(vm.vmm_uid());
    EXPECT_EQ(status["Uid"], absl::StrCat(u, "\t", u, "\t", u, "\t", u));
    EXPECT_EQ(status["Gid"], absl::StrCat(u, "\t", u, "\t", u, "\t", u));
    EXPECT_EQ(status["Groups"], "");
    EXPECT_EQ(status["Seccomp"], "2");
    EXPECT_EQ(status["NoNewPrivs"], "1");
    EXPECT_EQ(status["CapEff"], "0000000000000000");
    EXPECT_EQ(status["CapPrm"], "0000000000000000");
    EXPECT_EQ(status["CapBnd"], "0000000000000000");

    // Its own cgroup, with the limits derived from the VM.
    std::string cgroups = Slurp(absl::StrCat("/proc/", pid, "/cgroup"));
    for (const std::string controller : {"memory", "pids", "cpu"}) {
      EXPECT_TRUE(absl::StrContains(
          cgroups, absl::StrCat(":", controller, ":/", daemon_->CgroupParent(), "/", id, "\n")))
          << controller << " in " << cgroups;
    }
    int64_t limit = 0;
    ASSERT_TRUE(absl::SimpleAtoi(
        absl::StripAsciiWhitespace(Slurp(CgroupFile("memory", id, "memory.limit_in_bytes"))),
        &limit));
    EXPECT_EQ(limit, int64_t{kMemoryMib + kOverheadMib} << 20);
    EXPECT_EQ(absl::StripAsciiWhitespace(Slurp(CgroupFile("pids", id, "pids.max"))), "512");
    EXPECT_EQ(absl::StripAsciiWhitespace(Slurp(CgroupFile("cpu", id, "cpu.cfs_quota_us"))),
              "100000");  // One vCPU: one CPU's worth.

    // A private mount namespace whose root holds /usr, a few devices and
    // this VM's files, nothing else.
    EXPECT_NE(fs::read_symlink(absl::StrCat("/proc/", pid, "/ns/mnt")),
              fs::read_symlink("/proc/self/ns/mnt"));
    const std::string root = absl::StrCat("/proc/", pid, "/root");
    const std::string run_dir = daemon_->run_dir() + "/vms/" + id;
    const std::string vm_dir = daemon_->state_dir() + "/vms/" + id;
    for (const std::string& file : FilesUnder(root)) {
      bool allowed = absl::StartsWith(file, run_dir + "/") || file == vm_dir + "/disk.ext4" ||
                     file == vm.config().kernel_path() || file == vm.config().initrd_path() ||
                     absl::StartsWith(file, "/dev/") || file == "/etc/ld.so.cache" ||
                     file == "/bin" || file == "/sbin" || absl::StartsWith(file, "/lib") ||
                     (id == "jail-b" &&
                      file == daemon_->state_dir() + "/snapshots/jail-snap/mem.bin");
      EXPECT_TRUE(allowed) << "the VMM of " << id << " can see " << file;
    }
    EXPECT_TRUE(fs::exists(root + run_dir + "/qmp.sock"));
    EXPECT_TRUE(fs::exists(root + "/usr/bin"));
    EXPECT_FALSE(fs::exists(root + daemon_->state_dir() + "/smolvmd.db"));
    EXPECT_FALSE(fs::exists(root + "/etc/passwd"));
    EXPECT_FALSE(fs::exists(root + "/proc/self"));
  }
  EXPECT_EQ(uids.size(), 2u) << "two VMs share a uid";
}

TEST_F(ConfinementTest, AVmmUidCannotOpenAnotherVmsDisk) {
  v1::Vm a = Info("jail-a"), b = Info("jail-b");
  const std::string b_disk = daemon_->state_dir() + "/vms/jail-b/disk.ext4";
  const std::string a_disk = daemon_->state_dir() + "/vms/jail-a/disk.ext4";
  ASSERT_TRUE(fs::exists(b_disk));
  const std::string uid = absl::StrCat(a.vmm_uid());
  // A helper process under A's uid on the host: the state dir is root-only.
  ProcResult host = RunProcess({"setpriv", "--reuid=" + uid, "--regid=" + uid,
                                "--clear-groups", "--", "head", "-c", "1", b_disk});
  EXPECT_NE(host.exit_code, 0) << host.Describe();
  EXPECT_TRUE(absl::StrContains(host.err, "Permission denied")) << host.Describe();
  // The same helper inside A's jail: B's disk does not exist there, A's
  // own does (and is the only disk).
  const std::string ns = absl::StrCat("--mount=/proc/", a.vmm_pid(), "/ns/mnt");
  ProcResult in_jail = RunProcess({"nsenter", ns, "--", "/usr/bin/setpriv", "--reuid=" + uid,
                                   "--regid=" + uid, "--clear-groups", "--", "/usr/bin/head",
                                   "-c", "1", b_disk});
  EXPECT_NE(in_jail.exit_code, 0) << in_jail.Describe();
  EXPECT_TRUE(absl::StrContains(in_jail.err, "No such file")) << in_jail.Describe();
  ProcResult own = RunProcess({"nsenter", ns, "--", "/usr/bin/setpriv", "--reuid=" + uid,
                               "--regid=" + uid, "--clear-groups", "--", "/usr/bin/head", "-c",
                               "1", a_disk});
  EXPECT_EQ(own.exit_code, 0) << own.Describe();
  // Nor can it signal another VM's VMM.
  ProcResult kill = RunProcess({"setpriv", "--reuid=" + uid, "--regid=" + uid, "--clear-groups",
                                "--", "kill", "-0", absl::StrCat(b.vmm_pid())});
  EXPECT_NE(kill.exit_code, 0) << kill.Describe();
}

int64_t RssKib(pid_t pid) {
  for (absl::string_view line : absl::StrSplit(Slurp(absl::StrCat("/proc/", pid, "/status")), '\n')) {
    if (!absl::ConsumePrefix(&line, "VmRSS:")) continue;
    int64_t kib = 0;
    (void)absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(line), " kB"), &kib);
    return kib;
  }
  return -1;
}

// A hostile guest (issue 8, item 5): jail-b's root kills its agent (and the
// loop that restarts it) and floods the host end of the channel with
// garbage. That VM's calls fail; the daemon's memory stays bounded (the
// agent client's per-VM bound is ~16 + 4 + 3 MiB, agent_client.h); the
// other VM and the daemon go on.
TEST_F(ConfinementTest, Y_AGuestFloodingItsAgentChannelHurtsOnlyItself) {
  const pid_t daemon_pid = daemon_->pid();
  const int64_t rss_before = RssKib(daemon_pid);
  auto r = clone_->run(
      "setsid sh -c 'sleep 1; a=$(pidof agent); "
      "p=$(cut -d\" \" -f4 /proc/$a/stat); kill -9 $p $a; sleep 0.3; "
      "for d in /sys/class/virtio-ports/*; do "
      "[ \"$(cat $d/name)\" = org.smolvm.agent ] && exec yes garbage > /dev/${d##*/}; "
      "done' </dev/null >/dev/null 2>&1 &");
  ASSERT_TRUE(r.ok()) << r.status();
  absl::SleepFor(absl::Seconds(4));  // The flood runs.
  RunOptions quick;
  quick.timeout = absl::Seconds(10);
  auto hurt = clone_->run("echo hi", quick);
  EXPECT_FALSE(hurt.ok() && hurt->exit_code == 0) << "the flooding guest still answers";
  if (!hurt.ok()) {
    EXPECT_EQ(hurt.status().code(), absl::StatusCode::kUnavailable) << hurt.status();
    EXPECT_TRUE(absl::StrContains(hurt.status().message(), "agent")) << hurt.status();
  }
  absl::SleepFor(absl::Seconds(2));
  const int64_t rss_after = RssKib(daemon_pid);
  EXPECT_LT(rss_after - rss_before, 64 * 1024)
      << "daemon RSS grew from " << rss_before << " to " << rss_after << " KiB";
  auto fine = vm_->run("echo fine");
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->stdout_text, "fine\n");
  EXPECT_EQ(Info("jail-a").status(), v1::RUNNING);
}

// Last: it ends jail-a.
TEST_F(ConfinementTest, ZZ_AGuestPastItsMemoryLimitEndsInErrorWithTheReason) {
  v1::Vm before = Info("jail-a");
  const std::string group = CgroupFile("memory", "jail-a", "");
  ASSERT_TRUE(fs::exists(group));
  // The guest fills its RAM: its VMM (RAM + QEMU) passes RAM + 48 MiB.
  RunOptions timeout;
  timeout.timeout = absl::Seconds(90);
  auto r = vm_->run("mkdir -p /mnt/fill && mount -t tmpfs -o size=170m tmpfs /mnt/fill && "
                    "dd if=/dev/zero of=/mnt/fill/x bs=1M count=150; echo done",
                    timeout);
  // The exec is cut off when the VMM dies (or, if the guest's own kernel
  // stopped first, the VMM still passed the limit; either way it is gone).
  v1::Vm after;
  for (int i = 0; i < 100; ++i) {
    after = Info("jail-a");
    if (after.status() == v1::ERROR) break;
    usleep(100 * 1000);
  }
  ASSERT_EQ(after.status(), v1::ERROR)
      << (r.ok() ? r->stdout_text + r->stderr_text : std::string(r.status().message()))
      << "\nmemory.max_usage_in_bytes " << Slurp(group + "memory.max_usage_in_bytes")
      << "memory.stat:\n" << Slurp(group + "memory.stat") << daemon_->DaemonLog();
  EXPECT_TRUE(absl::StrContains(after.error(), "OOM killer")) << after.error();
  EXPECT_TRUE(absl::StrContains(after.error(), absl::StrCat(kMemoryMib + kOverheadMib, " MiB")))
      << after.error();
  // Nothing left: no process, no cgroup, no run dir; the daemon goes on.
  // (Gone, or a zombie waiting for its reaper: the VMM is not smolvmd's child.)
  std::string stat = Slurp(absl::StrCat("/proc/", before.vmm_pid(), "/stat"));
  EXPECT_TRUE(stat.empty() || absl::StrContains(stat, ") Z ")) << stat;
  EXPECT_FALSE(fs::exists(group));
  EXPECT_FALSE(fs::exists(daemon_->run_dir() + "/vms/jail-a"));
  EXPECT_EQ(Info("jail-b").status(), v1::RUNNING);
  ASSERT_TRUE(vm_->close().ok());
  EXPECT_FALSE(fs::exists(daemon_->state_dir() + "/vms/jail-a"));
}

TEST(RunDirSpaceTest, AVmWhoseRamCannotFitInTheRunDirIsRefused) {
  TestDaemon daemon;
  ASSERT_TRUE(daemon.PrepareNetwork().ok());
  // The run dir on a 96 MiB tmpfs; a 192 MiB guest cannot fit.
  fs::create_directories(daemon.run_dir());
  ASSERT_EQ(mount("smolvm-test", daemon.run_dir().c_str(), "tmpfs", 0, "size=96m,mode=0700"), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{daemon.run_dir()};
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  v1::VMConfig config;
  config.set_vm_id("too-big");
  config.set_memory_mib(kMemoryMib);
  config.set_vcpu_count(1);
  SmolVM vm(config, daemon.client_options());
  absl::Status s = vm.start();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "run dir")) << s;
  EXPECT_TRUE(daemon.QemuPids().empty());
  daemon.Stop();
}

}  // namespace
}  // namespace smolvm::testing
