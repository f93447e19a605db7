// Multi-tenant access on the Unix socket, end to end: real users made by the
// test (test_users.h), the real daemon started with their group as its
// socket group and a configuration file with tenants, quotas and an image
// allow-list, smolvmctl run as those users (setpriv), and grpc_probe for
// the exact status code of single RPCs.
//
// Users: A and B (tenants "uid:<uid>"), C (configured tenant "quota" with
// small quotas), all members of the socket group, and O, who is not.
// Root is an admin; "qbytes" is a configured tenant that only root acts for
// (--as-tenant). Cold boots: A's and B's VMs (at once) in the suite set-up,
// C's and qbytes' VMs (at once) in the quota test, one VM from an
// allow-listed image; everything else is snapshots, restores and forks.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_daemon.h"
#include "tests/e2e/test_users.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kRoot = -1;
// Users (test_users.h order: socket-group members, admin-group members,
// outsiders). kOps is the one uid of tenant "ops" (admin = true).
constexpr int kA = 0, kB = 1, kC = 2, kOps = 3, kAdminGroup = 4, kOutsider = 5;
// Each tenant's VM and snapshot, made in SetUpTestSuite.
const char* const kVm[] = {"ta-vm", "tb-vm"};
const char* const kSnap[] = {"ta-snap", "tb-snap"};
constexpr char kMissingVm[] = "zz-missing-vm";
constexpr char kMissingSnap[] = "zz-missing-snap";

// The status code name grpc_probe printed ("NOT_FOUND: ...").
std::string CodeOf(const std::string& probe_out) {
  return probe_out.substr(0, probe_out.find(':'));
}

class TenantsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto users = TestUsers::Create(4, 1, 1);
    ASSERT_TRUE(users.ok()) << users.status();
    users_ = users->release();
    daemon_ = new TestDaemon();
    fs::create_directories(AllowedDir());
    chmod(AllowedDir().c_str(), 0755);
    for (size_t i = 0; i < users_->size(); ++i) {
      fs::create_directories(Home(static_cast<int>(i)));
      ASSERT_EQ(chown(Home(static_cast<int>(i)).c_str(), users_->user(i).uid, users_->user(i).gid),
                0);
      chmod(Home(static_cast<int>(i)).c_str(), 0700);
    }
    // clang-format off
    config_ = absl::StrCat(
        "[images]\n"
        "allowed_dirs = [\"", AllowedDir(), "\"]\n"
        "\n"
        "[quotas]\n"
        "snapshots = 10\n"
        "port_forwards = 2\n"
        "\n"
        "[tenants.quota]\n"
        "uids = [", users_->user(kC).uid, "]\n"
        "[tenants.quota.quotas]\n"
        "running_vms = 1\n"
        "vcpus = 2\n"
        "memory_mib = 320\n"
        "snapshots = 1\n"
        "port_forwards = 1\n"
        "\n"
        "[tenants.qbytes]\n"
        "[tenants.qbytes.quotas]\n"
        "snapshot_bytes = 1\n"
        "\n"
        "[tenants.ops]\n"
        "uids = [", users_->user(kOps).uid, "]\n"
        "admin = true\n");
    // clang-format on
    auto s = daemon_->Start(DaemonArgs(), config_);
    ASSERT_TRUE(s.ok()) << s;

    // A's and B's VMs boot at the same time.
    ProcResult created[2];
    std::thread boots[2];
    for (int t : {kA, kB}) {
      boots[t] = std::thread([t, &created] {
        created[t] =
            Ctl(t, {"vm", "create", "--id", kVm[t], "--memory-mib", "192", "--vcpus", "1"});
      });
    }
    for (auto& b : boots) b.join();
    for (int t : {kA, kB}) {
      ASSERT_EQ(created[t].exit_code, 0) << created[t].Describe() << daemon_->DaemonLog();
      auto snap = Ctl(t, {"snapshot", "create", kVm[t], "--id", kSnap[t], "--resume"});
      ASSERT_EQ(snap.exit_code, 0) << snap.Describe();
    }
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete daemon_;  // First: it ends the processes that use the users' files.
    delete users_;
  }
  void SetUp() override {
    if (!ready_) FAIL() << "suite set-up failed (see above)";
  }

  static std::vector<std::string> DaemonArgs() {
    return {"--socket-group", users_->group(), "--admin-group", users_->admin_group(),
            "--max-streams-per-tenant", "3"};
  }
  static std::string AllowedDir() { return daemon_->dir() + "/images"; }
  static std::string Home(int user) { return absl::StrCat(daemon_->dir(), "/home-", user); }
  static std::optional<RunAs> As(int user) {
    if (user == kRoot) return std::nullopt;
    return RunAs{users_->user(user).uid, users_->user(user).gid};
  }
  static std::string Tenant(int user) { return absl::StrCat("uid:", users_->user(user).uid); }
  static ProcResult Ctl(int user, const std::vector<std::string>& args) {
    return daemon_->Ctl(args, As(user));
  }
  // One raw RPC as `user`; "CODE: message[ details]".
  static std::string Probe(int user, const std::string& method, const std::string& request = "",
                           const std::string& as_tenant = "") {
    std::vector<std::string> argv = AsUser(As(user));
    argv.insert(argv.end(), {GRPC_PROBE_BINARY, "unix:" + daemon_->socket_path(), method});
    if (!request.empty()) argv.push_back(request);
    if (!as_tenant.empty()) argv.insert(argv.end(), {"--as-tenant", as_tenant});
    ProcResult r = RunProcess(argv);
    std::string out = std::string(absl::StripTrailingAsciiWhitespace(r.out));
    if (std::getenv("SMOLVM_TEST_VERBOSE")) std::cerr << "probe " << method << ": " << out << "\n";
    return r.exit_code == 0 ? out : "PROBE FAILED: " + r.Describe();
  }
  // Copies the default image (kernel, initrd, rootfs) into AllowedDir()
  // as vmlinuz, initrd.img, rootfs.ext4, once.
  static bool CopyDefaultImage() {
    if (fs::exists(AllowedDir() + "/rootfs.ext4")) return true;
    json config = VmAsRoot(kVm[kA]).value("config", json::object());
    const std::string kernel = config.value("kernel_path", "");
    const std::string initrd = config.value("initrd_path", "");
    const std::string rootfs = config.value("rootfs_path", "");
    std::string error;
    bool ok = !kernel.empty() && !rootfs.empty() &&
              RunOk({"cp", "--sparse=always", kernel, AllowedDir() + "/vmlinuz"}, &error) &&
              (initrd.empty() ||
               RunOk({"cp", "--sparse=always", initrd, AllowedDir() + "/initrd.img"}, &error)) &&
              RunOk({"cp", "--sparse=always", rootfs, AllowedDir() + "/rootfs.ext4"}, &error);
    EXPECT_TRUE(ok) << "copying the default image (" << config.dump() << "): " << error;
    return ok;
  }
  static json VmAsRoot(const std::string& id) { return One(Ctl(kRoot, {"vm", "get", id}).out); }

  static TestUsers* users_;
  static TestDaemon* daemon_;
  static std::string config_;
  static bool ready_;
};
std::string TenantsTest::config_;
TestUsers* TenantsTest::users_ = nullptr;
TestDaemon* TenantsTest::daemon_ = nullptr;
bool TenantsTest::ready_ = false;

TEST_F(TenantsTest, SocketIsForTheGroupOnly) {
  struct stat st {};
  ASSERT_EQ(stat(daemon_->socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, users_->group_gid());
  EXPECT_EQ(Ctl(kA, {"vm", "list"}).exit_code, 0);
  // A user outside the group cannot even connect.
  ProcResult outsider = Ctl(kOutsider, {"vm", "list"});
  EXPECT_NE(outsider.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(outsider.err), "permission denied"))
      << outsider.Describe();
  EXPECT_EQ(outsider.out, "");
  EXPECT_EQ(CodeOf(Probe(kOutsider, "ListVms")), "UNAVAILABLE");
}

// Every call of tenant X on tenant Y's VM and snapshot is NOT_FOUND, with the
// very message a missing id gets, and changes nothing.
TEST_F(TenantsTest, TenantsCannotSeeOrTouchEachOther) {
  const HostPicture before = Picture(*daemon_);
  for (int x : {kA, kB}) {
    const int y = 1 - x;
    const std::string vm = kVm[y], snap = kSnap[y];
    SCOPED_TRACE(absl::StrCat("tenant ", Tenant(x), " on ", Tenant(y), "'s objects"));
    // The raw RPCs (smolvmctl would look the VM up first).
    const std::vector<std::pair<std::string, std::string>> vm_calls = {
        {"GetVm", R"({"vm_id":"%"})"},
        {"PauseVm", R"({"vm_id":"%"})"},
        {"ResumeVm", R"({"vm_id":"%"})"},
        {"StopVm", R"({"vm_id":"%"})"},
        {"StartVm", R"({"vm_id":"%"})"},
        {"Exec", R"({"vm_id":"%","argv":["cat","/etc/hostname"]})"},
        {"Exec", R"({"vm_id":"%","command":"echo stolen"})"},
        {"ExecStream", R"({"exec":{"vm_id":"%","argv":["cat"]}})"},
        {"ExecStream", R"({"exec":{"vm_id":"%","argv":["sh"]},"tty":true})"},
        {"DownloadFile", R"({"vm_id":"%","path":"/etc/hostname"})"},
        {"StreamConsole", R"({"vm_id":"%"})"},
        {"GetVmStats", R"({"vm_id":"%"})"},
        {"WatchVmStats", R"({"vm_id":"%"})"},
        {"UploadFile", R"({"vm_id":"%","path":"/root/planted"})"},
        {"PingAgent", R"({"vm_id":"%"})"},
        {"StatPath", R"({"vm_id":"%","path":"/etc/hostname"})"},
        {"ListDir", R"({"vm_id":"%","path":"/root"})"},
        {"MakeDir", R"({"vm_id":"%","path":"/root/planted-dir"})"},
        {"RenamePath", R"({"vm_id":"%","path":"/etc/hostname","new_path":"/root/stolen"})"},
        {"RemovePath", R"({"vm_id":"%","path":"/etc/hostname"})"},
        {"StartProcess", R"({"vm_id":"%","command":"echo planted"})"},
        {"ListProcesses", R"({"vm_id":"%"})"},
        {"SignalProcess", R"({"vm_id":"%","pid":2})"},
        {"WaitProcess", R"({"vm_id":"%","pid":2,"timeoutMs":10})"},
        {"ExposePort", R"({"vm_id":"%","forward":{"host_port":22001,"guest_port":80}})"},
        {"UnexposePort", R"({"vm_id":"%","host_port":22001})"},
        {"UpdateNetworkPolicy", R"({"vm_id":"%","egress":{"mode":"EGRESS_OPEN"}})"},
        {"SetLifetime", R"({"vm_id":"%","lifetime":{"max_lifetime_seconds":1}})"},
        {"CreateSnapshot", R"({"vm_id":"%","snapshot_id":"x-steal-snap"})"},
        {"ListSnapshots", R"({"vm_id":"%"})"},
        {"DeleteVm", R"({"vm_id":"%"})"},
    };
    const std::vector<std::pair<std::string, std::string>> snap_calls = {
        {"GetSnapshot", R"({"snapshot_id":"%"})"},
        {"RestoreSnapshot", R"({"snapshot_id":"%","vm_id":"x-steal-vm","resume_vm":true})"},
        {"RestoreSnapshot", R"({"snapshot_id":"%","resume_vm":true})"},
        {"ForkSnapshot",
         R"({"snapshot_id":"%","count":1,"resume_vm":true,"vm_id_prefix":"x-steal"})"},
        {"DeleteSnapshot", R"({"snapshot_id":"%"})"},
    };
    for (const auto& [calls, target, missing] :
         {std::tuple{&vm_calls, vm, std::string(kMissingVm)},
          std::tuple{&snap_calls, snap, std::string(kMissingSnap)}}) {
      for (const auto& [method, request] : *calls) {
        std::string other = Probe(x, method, absl::StrReplaceAll(request, {{"%", target}}));
        std::string none = Probe(x, method, absl::StrReplaceAll(request, {{"%", missing}}));
        if (method == "ListSnapshots") {
          // A filter on someone else's VM shows what one on a missing VM shows.
          EXPECT_EQ(absl::StrReplaceAll(other, {{target, missing}}), none) << method;
          EXPECT_FALSE(absl::StrContains(other, snap)) << other;
          continue;
        }
        EXPECT_EQ(CodeOf(other), "NOT_FOUND") << method << " " << request << ": " << other;
        EXPECT_EQ(absl::StrReplaceAll(other, {{target, missing}}), none)
            << method << ": someone else's object must look exactly like a missing one";
      }
    }
    // Ids are global: taking the other's id for a new object fails without
    // touching the other's object (Diff below). The refusal necessarily
    // tells that the id is taken (see e2e-bugs.md if it says more).
    for (const auto& [method, request] : std::vector<std::pair<std::string, std::string>>{
             {"CreateVm", absl::StrCat(R"({"config":{"vm_id":")", vm, R"("},"start":false})")},
             {"RestoreSnapshot", absl::StrCat(R"({"snapshot_id":")", kSnap[x], R"(","vm_id":")", vm,
                                              R"(","resume_vm":true})")},
             {"CreateSnapshot", absl::StrCat(R"({"vm_id":")", kVm[x], R"(","snapshot_id":")", snap,
                                             R"(","resume_source":true})")},
         }) {
      std::string out = Probe(x, method, request);
      EXPECT_NE(CodeOf(out), "OK") << method << " " << request << ": " << out;
      EXPECT_FALSE(absl::StrContains(out, Tenant(y))) << "the refusal names the owner: " << out;
    }
    // The same through smolvmctl.
    const std::string local = Home(x) + "/loot";
    std::ofstream(Home(x) + "/plant.txt") << "planted\n";
    chown((Home(x) + "/plant.txt").c_str(), users_->user(x).uid, users_->user(x).gid);
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"vm", "get", vm},
             {"vm", "exec", vm, "--", "true"},
             {"vm", "pause", vm},
             {"vm", "resume", vm},
             {"vm", "stop", vm},
             {"vm", "expose", vm, "127.0.0.1:22002:80"},
             {"vm", "unexpose", vm, "127.0.0.1:22002"},
             {"file", "get", vm, "/etc/hostname", local},
             {"file", "put", vm, Home(x) + "/plant.txt", "/root/planted"},
             {"snapshot", "create", vm, "--id", "x-steal-snap"},
             {"snapshot", "get", snap},
             {"snapshot", "restore", snap, "--vm-id", "x-steal-vm"},
             {"snapshot", "restore", snap},
             {"snapshot", "fork", snap, "--count", "1", "--prefix", "x-steal"},
             {"snapshot", "delete", snap},
             {"vm", "delete", vm},
         }) {
      ProcResult r = Ctl(x, args);
      // `vm exec` keeps 0-124 for the command: its own failures are 125.
      EXPECT_EQ(r.exit_code, args[1] == "exec" ? 125 : kExitNotFound)
          << absl::StrJoin(args, " ") << ": " << r.Describe();
    }
    EXPECT_FALSE(fs::exists(local));
    ProcResult vms = Ctl(x, {"vm", "list"});
    ASSERT_EQ(vms.exit_code, 0) << vms.Describe();
    EXPECT_EQ(Column(vms.out, "vm_id"), std::set<std::string>{kVm[x]}) << vms.out;
    ProcResult snaps = Ctl(x, {"snapshot", "list"});
    ASSERT_EQ(snaps.exit_code, 0) << snaps.Describe();
    EXPECT_EQ(Column(snaps.out, "snapshot_id"), std::set<std::string>{kSnap[x]}) << snaps.out;
  }
  // Nothing happened to anyone's objects.
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // Host ports are shared: B cannot take or drop A's forward, and the
  // refusal does not say whose it is.
  ASSERT_EQ(Ctl(kA, {"vm", "expose", kVm[kA], "127.0.0.1:22021:80"}).exit_code, 0);
  ProcResult clash = Ctl(kB, {"vm", "expose", kVm[kB], "127.0.0.1:22021:80"});
  EXPECT_NE(clash.exit_code, 0) << clash.Describe();
  EXPECT_FALSE(absl::StrContains(clash.err, kVm[kA])) << "names A's VM: " << clash.Describe();
  EXPECT_FALSE(absl::StrContains(clash.err, Tenant(kA))) << "names A: " << clash.Describe();
  ProcResult drop = Ctl(kB, {"vm", "unexpose", kVm[kB], "127.0.0.1:22021"});
  EXPECT_NE(drop.exit_code, 0) << drop.Describe();
  EXPECT_EQ(VmAsRoot(kVm[kA])
                .value("network", json::object())
                .value("port_forwards", json::array())
                .size(),
            1u);
  EXPECT_TRUE(VmAsRoot(kVm[kB])
                  .value("network", json::object())
                  .value("port_forwards", json::array())
                  .empty());
  EXPECT_EQ(Ctl(kA, {"vm", "unexpose", kVm[kA], "127.0.0.1:22021"}).exit_code, 0);
  for (int t : {kA, kB}) {
    json vm = VmAsRoot(kVm[t]);
    EXPECT_EQ(vm.value("status", ""), "RUNNING") << vm.dump();
    EXPECT_TRUE(vm.value("network", json::object()).value("port_forwards", json::array()).empty())
        << vm.dump();
    EXPECT_EQ(Ctl(kRoot, {"snapshot", "get", kSnap[t]}).exit_code, 0);
  }
  auto planted = Ctl(kRoot, {"vm", "exec", kVm[kA], "--", "ls", "/root"});
  EXPECT_FALSE(absl::StrContains(planted.out, "planted")) << planted.out;
  planted = Ctl(kRoot, {"vm", "exec", kVm[kB], "--", "ls", "/root"});
  EXPECT_FALSE(absl::StrContains(planted.out, "planted")) << planted.out;
}

// What a tenant may do with its own VM and snapshot; what it creates is its own.
TEST_F(TenantsTest, TenantsUseTheirOwnObjects) {
  for (int x : {kA, kB}) {
    SCOPED_TRACE(Tenant(x));
    const std::string vm = kVm[x], snap = kSnap[x];
    json got = One(Ctl(x, {"vm", "get", vm}).out);
    EXPECT_EQ(got.value("owner", ""), Tenant(x)) << got.dump();
    EXPECT_EQ(got.value("status", ""), "RUNNING");
    ProcResult exec = Ctl(x, {"vm", "exec", vm, "--", "echo", "mine"});
    EXPECT_EQ(exec.exit_code, 0) << exec.Describe();
    EXPECT_EQ(exec.out, "mine\n");
    EXPECT_EQ(Ctl(x, {"vm", "pause", vm}).exit_code, 0);
    EXPECT_EQ(Ctl(x, {"vm", "resume", vm}).exit_code, 0);
    const std::string port = x == kA ? "22011" : "22012";
    ProcResult expose = Ctl(x, {"vm", "expose", vm, "127.0.0.1:" + port + ":80"});
    EXPECT_EQ(expose.exit_code, 0) << expose.Describe();
    EXPECT_EQ(Ctl(x, {"vm", "unexpose", vm, "127.0.0.1:" + port}).exit_code, 0);
    const std::string local = Home(x) + "/up.txt";
    std::ofstream(local) << "round trip " << x << "\n";
    chown(local.c_str(), users_->user(x).uid, users_->user(x).gid);
    ProcResult put = Ctl(x, {"file", "put", vm, local, "/root/up.txt"});
    EXPECT_EQ(put.exit_code, 0) << put.Describe();
    ProcResult get = Ctl(x, {"file", "get", vm, "/root/up.txt", Home(x) + "/down.txt"});
    EXPECT_EQ(get.exit_code, 0) << get.Describe();
    EXPECT_EQ(ReadAll(Home(x) + "/down.txt"), absl::StrCat("round trip ", x, "\n"));
    json info = One(Ctl(x, {"snapshot", "get", snap}).out);
    EXPECT_EQ(info.value("owner", ""), Tenant(x)) << info.dump();

    // Restores and forks belong to the caller.
    const std::string copy = vm + "-copy";
    ProcResult restored = Ctl(x, {"snapshot", "restore", snap, "--vm-id", copy});
    ASSERT_EQ(restored.exit_code, 0) << restored.Describe() << daemon_->DaemonLog();
    EXPECT_EQ(One(restored.out).value("owner", ""), Tenant(x)) << restored.out;
    ProcResult forked = Ctl(x, {"snapshot", "fork", snap, "--count", "1", "--prefix", vm + "-f"});
    ASSERT_EQ(forked.exit_code, 0) << forked.Describe();
    json clone = One(Ctl(x, {"vm", "get", vm + "-f-1"}).out);
    EXPECT_EQ(clone.value("owner", ""), Tenant(x)) << clone.dump();
    EXPECT_EQ(Column(Ctl(1 - x, {"vm", "list"}).out, "vm_id").count(copy), 0u);
    EXPECT_EQ(Ctl(x, {"vm", "delete", copy}).exit_code, 0);
    EXPECT_EQ(Ctl(x, {"vm", "delete", vm + "-f-1"}).exit_code, 0);
  }
}

// Each exec, stream, watch and wait holds a server thread while it lasts:
// a tenant may hold only max_streams_per_tenant (3 here) at once, others
// and admins are not held up by it, and a place comes back when its call
// ends.
TEST_F(TenantsTest, LongCallsAreBoundedPerTenant) {
  ProcResult held[3];
  std::vector<std::thread> execs;
  for (int i = 0; i < 3; ++i) {
    execs.emplace_back([i, &held] {
      held[i] = Ctl(kA, {"vm", "exec", kVm[kA], "--", "sleep", "10"});
    });
  }
  // Refused once all three execs hold their places (a slow start is
  // waited for, not assumed).
  ProcResult refused;
  for (absl::Time end = absl::Now() + absl::Seconds(8); absl::Now() < end;) {
    refused = Ctl(kA, {"vm", "logs", "--tail", "10", kVm[kA]});
    if (refused.exit_code != 0) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(FailedWith(refused, kExitExhausted, "max_streams_per_tenant")) << refused.Describe();
  ProcResult other = Ctl(kB, {"vm", "logs", "--tail", "10", kVm[kB]});
  EXPECT_EQ(other.exit_code, 0) << other.Describe();
  ProcResult admin = Ctl(kRoot, {"vm", "logs", "--tail", "10", kVm[kA]});
  EXPECT_EQ(admin.exit_code, 0) << admin.Describe();
  for (auto& t : execs) t.join();
  for (const auto& r : held) EXPECT_EQ(r.exit_code, 0) << r.Describe();
  ProcResult again = Ctl(kA, {"vm", "logs", "--tail", "10", kVm[kA]});
  EXPECT_EQ(again.exit_code, 0) << again.Describe();
}

TEST_F(TenantsTest, AdminSeesEveryoneAndActsForATenant) {
  ProcResult vms = Ctl(kRoot, {"vm", "list"});
  ASSERT_EQ(vms.exit_code, 0) << vms.Describe();
  std::map<std::string, std::string> owner;
  for (const auto& vm : Json(vms.out)) owner[vm.value("vm_id", "")] = vm.value("owner", "");
  EXPECT_EQ(owner[kVm[kA]], Tenant(kA)) << vms.out;
  EXPECT_EQ(owner[kVm[kB]], Tenant(kB)) << vms.out;
  ProcResult snaps = Ctl(kRoot, {"snapshot", "list"});
  std::map<std::string, std::string> snap_owner;
  for (const auto& s : Json(snaps.out))
    snap_owner[s.value("snapshot_id", "")] = s.value("owner", "");
  EXPECT_EQ(snap_owner[kSnap[kA]], Tenant(kA)) << snaps.out;
  EXPECT_EQ(snap_owner[kSnap[kB]], Tenant(kB)) << snaps.out;

  // The table has an OWNER column.
  ProcResult table =
      RunProcess({SmolvmctlPath(), "--socket", daemon_->socket_path(), "vm", "list"});
  EXPECT_TRUE(absl::StrContains(table.out, "OWNER")) << table.Describe();
  EXPECT_TRUE(absl::StrContains(table.out, Tenant(kB))) << table.Describe();

  // Restores belong to the caller: root's own, or the tenant's it acts for.
  ProcResult mine = Ctl(kRoot, {"snapshot", "restore", kSnap[kA], "--vm-id", "adm-copy"});
  ASSERT_EQ(mine.exit_code, 0) << mine.Describe();
  EXPECT_EQ(One(mine.out).value("owner", ""), "uid:0");
  ProcResult for_a = Ctl(
      kRoot, {"--as-tenant", Tenant(kA), "snapshot", "restore", kSnap[kA], "--vm-id", "adm-for-a"});
  ASSERT_EQ(for_a.exit_code, 0) << for_a.Describe();
  EXPECT_EQ(One(for_a.out).value("owner", ""), Tenant(kA));
  EXPECT_EQ(Column(Ctl(kA, {"vm", "list"}).out, "vm_id"),
            (std::set<std::string>{kVm[kA], "adm-for-a"}));
  EXPECT_EQ(Ctl(kRoot, {"vm", "delete", "adm-copy"}).exit_code, 0);
  EXPECT_EQ(Ctl(kA, {"vm", "delete", "adm-for-a"}).exit_code, 0);

  // Acting for A, root sees exactly what A sees.
  ProcResult as_a = Ctl(kRoot, {"--as-tenant", Tenant(kA), "vm", "list"});
  ASSERT_EQ(as_a.exit_code, 0) << as_a.Describe();
  EXPECT_EQ(Column(as_a.out, "vm_id"), std::set<std::string>{kVm[kA]}) << as_a.out;
  ProcResult as_a_snaps = Ctl(kRoot, {"--as-tenant", Tenant(kA), "snapshot", "list"});
  EXPECT_EQ(Column(as_a_snaps.out, "snapshot_id"), std::set<std::string>{kSnap[kA]});
  EXPECT_EQ(Ctl(kRoot, {"--as-tenant", Tenant(kA), "vm", "get", kVm[kB]}).exit_code, kExitNotFound);
  // A tenant may not act for another.
  ProcResult a_as_b = Ctl(kA, {"--as-tenant", Tenant(kB), "vm", "list"});
  EXPECT_EQ(a_as_b.exit_code, kExitOther) << a_as_b.Describe();
  EXPECT_EQ(a_as_b.out, "");
  EXPECT_EQ(CodeOf(Probe(kA, "ListVms", "", Tenant(kB))), "PERMISSION_DENIED");
  EXPECT_EQ(CodeOf(Probe(kA, "GetVm", absl::StrCat(R"({"vm_id":")", kVm[kB], R"("})"), Tenant(kB))),
            "PERMISSION_DENIED");
}

// Members of --admin-group and tenants with admin = true are admins too.
// The event journal per tenant (smolvmctl events as each real uid): A's
// events are A's alone, with A as their owner; B sees none of A's; an admin
// sees both; a filter on the other's VM shows nothing rather than an error.
TEST_F(TenantsTest, EventsAreTheTenantsOwn) {
  auto vm_ids_seen = [](int user, const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"events"};
    args.insert(args.end(), extra.begin(), extra.end());
    ProcResult r = Ctl(user, args);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    std::set<std::string> ids;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      json event = json::parse(line);
      if (user != kAdminGroup) EXPECT_EQ(event.value("owner", ""), Tenant(user)) << line;
      ids.insert(event.value("vm_id", ""));
    }
    return ids;
  };
  for (int x : {kA, kB}) {
    std::set<std::string> own = vm_ids_seen(x, {});
    EXPECT_TRUE(own.count(kVm[x])) << Tenant(x);
    EXPECT_FALSE(own.count(kVm[1 - x])) << Tenant(x) << " sees the other tenant's events";
    EXPECT_TRUE(vm_ids_seen(x, {"--vm", kVm[1 - x]}).empty());
  }
  std::set<std::string> all = vm_ids_seen(kAdminGroup, {});
  EXPECT_TRUE(all.count(kVm[kA]) && all.count(kVm[kB]));
}

TEST_F(TenantsTest, AdminGroupAndAdminTenantsSeeEveryone) {
  for (int admin : {kAdminGroup, kOps}) {
    SCOPED_TRACE(admin == kOps ? "tenant ops (admin = true)" : "member of --admin-group");
    ProcResult all = Ctl(admin, {"vm", "list"});
    ASSERT_EQ(all.exit_code, 0) << all.Describe();
    std::set<std::string> ids = Column(all.out, "vm_id");
    EXPECT_TRUE(ids.count(kVm[kA]) && ids.count(kVm[kB])) << all.out;
    ProcResult as_a = Ctl(admin, {"--as-tenant", Tenant(kA), "vm", "list"});
    EXPECT_EQ(Column(as_a.out, "vm_id"), std::set<std::string>{kVm[kA]}) << as_a.Describe();
  }
}

// Each quota at its limit: RESOURCE_EXHAUSTED naming it, and nothing left.
TEST_F(TenantsTest, QuotasRefuseAtTheLimitAndLeaveNothing) {
  auto refused = [&](const ProcResult& r, const std::string& quota) {
    return r.exit_code == kExitExhausted && absl::StrContains(r.err, quota);
  };
  HostPicture before = Picture(*daemon_);
  // Over vcpus, memory and forwards before anything runs (1 running VM is
  // within running_vms = 1).
  ProcResult r = Ctl(kC, {"vm", "create", "--id", "q-cpu", "--vcpus", "3", "--memory-mib", "128"});
  EXPECT_TRUE(refused(r, "vcpus")) << r.Describe();
  r = Ctl(kC, {"vm", "create", "--id", "q-mem", "--vcpus", "1", "--memory-mib", "384"});
  EXPECT_TRUE(refused(r, "memory_mib")) << r.Describe();
  r = Ctl(kC, {"vm", "create", "--id", "q-fwd", "--vcpus", "1", "--memory-mib", "128", "--forward",
               "127.0.0.1:23001:80", "--forward", "127.0.0.1:23002:81"});
  EXPECT_TRUE(refused(r, "port_forwards")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // Two creates of the tenant race for its one running VM, while a VM of
  // qbytes (acted for by root) boots too: exactly one of the two wins.
  std::set<std::string> used_ips;
  for (const auto& vm : Json(Ctl(kRoot, {"vm", "list"}).out)) {
    used_ips.insert(vm.value("network", json::object()).value("guest_ip", ""));
  }
  ProcResult q1, q2, qb;
  std::thread boot_q1([&] {
    q1 = Ctl(kC, {"vm", "create", "--id", "q-a", "--vcpus", "1", "--memory-mib", "192"});
  });
  std::thread boot_q2([&] {
    q2 = Ctl(kC, {"vm", "create", "--id", "q-a2", "--vcpus", "1", "--memory-mib", "128"});
  });
  std::thread boot_qb([&] {
    qb = Ctl(kRoot, {"--as-tenant", "qbytes", "vm", "create", "--id", "qb-a", "--vcpus", "1",
                     "--memory-mib", "192"});
  });
  boot_q1.join();
  boot_q2.join();
  boot_qb.join();
  ASSERT_EQ((q1.exit_code == 0) + (q2.exit_code == 0), 1)
      << "running_vms = 1, two racing creates:\n"
      << q1.Describe() << "\n"
      << q2.Describe() << daemon_->DaemonLog();
  const ProcResult& q = q1.exit_code == 0 ? q1 : q2;
  const ProcResult& lost = q1.exit_code == 0 ? q2 : q1;
  const std::string qa = q1.exit_code == 0 ? "q-a" : "q-a2";
  EXPECT_TRUE(refused(lost, "running_vms")) << lost.Describe();
  ASSERT_EQ(qb.exit_code, 0) << qb.Describe();
  EXPECT_EQ(One(q.out).value("owner", ""), "quota");
  EXPECT_EQ(One(qb.out).value("owner", ""), "qbytes");
  // The refused creates held no address: the two new VMs got the lowest free ones.
  std::set<std::string> expected_ips;
  for (int host = 2; expected_ips.size() < 2; ++host) {
    std::string ip = absl::StrCat("10.123.0.", host);
    if (!used_ips.count(ip)) expected_ips.insert(ip);
  }
  EXPECT_EQ(
      (std::set<std::string>{One(q.out).value("network", json::object()).value("guest_ip", ""),
                             One(qb.out).value("network", json::object()).value("guest_ip", "")}),
      expected_ips);
  EXPECT_EQ(Ctl(kRoot, {"vm", "get", qa == "q-a" ? "q-a2" : "q-a"}).exit_code, kExitNotFound);

  // running_vms: a second running VM (within vcpus 2 and memory_mib 320).
  before = Picture(*daemon_);
  r = Ctl(kC, {"vm", "create", "--id", "q-b", "--vcpus", "1", "--memory-mib", "128"});
  EXPECT_TRUE(refused(r, "running_vms")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  // ... also when a created VM is started.
  r = Ctl(kC, {"vm", "create", "--id", "q-c", "--no-start", "--vcpus", "1", "--memory-mib", "128"});
  EXPECT_EQ(r.exit_code, 0) << "a CREATED VM does not run: " << r.Describe();
  before = Picture(*daemon_);
  r = Ctl(kC, {"vm", "start", "q-c"});
  EXPECT_TRUE(refused(r, "running_vms")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  EXPECT_EQ(VmAsRoot("q-c").value("status", ""), "CREATED");
  EXPECT_EQ(Ctl(kC, {"vm", "delete", "q-c"}).exit_code, 0);

  // port_forwards: one forward is the limit.
  r = Ctl(kC, {"vm", "expose", qa, "127.0.0.1:23001:80"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  before = Picture(*daemon_);
  r = Ctl(kC, {"vm", "expose", qa, "127.0.0.1:23002:81"});
  EXPECT_TRUE(refused(r, "port_forwards")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  EXPECT_EQ(
      VmAsRoot(qa).value("network", json::object()).value("port_forwards", json::array()).size(),
      1u);

  // snapshots: one is the limit.
  r = Ctl(kC, {"snapshot", "create", qa, "--id", "q-s1", "--resume"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  before = Picture(*daemon_);
  r = Ctl(kC, {"snapshot", "create", qa, "--id", "q-s2", "--resume"});
  EXPECT_TRUE(refused(r, "snapshots")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  EXPECT_EQ(VmAsRoot(qa).value("status", ""), "RUNNING") << "a refused snapshot paused the VM";

  // Restores and forks start VMs: running_vms again.
  r = Ctl(kC, {"snapshot", "restore", "q-s1", "--vm-id", "q-r"});
  EXPECT_TRUE(refused(r, "running_vms")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  r = Ctl(kC, {"snapshot", "fork", "q-s1", "--count", "1", "--prefix", "q-f"});
  // Refused as a whole, or as the one clone's error.
  bool fork_refused = refused(r, "running_vms");
  if (!fork_refused && r.exit_code == 1) {
    json clone = One(r.out);
    fork_refused = clone.value("error_code", 0) == 8 &&
                   absl::StrContains(clone.value("error_message", ""), "running_vms");
  }
  EXPECT_TRUE(fork_refused) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // snapshot_bytes = 1: no snapshot of qbytes fits.
  before = Picture(*daemon_);
  r = Ctl(kRoot,
          {"--as-tenant", "qbytes", "snapshot", "create", "qb-a", "--id", "qb-s1", "--resume"});
  EXPECT_TRUE(refused(r, "snapshot_bytes")) << r.Describe();
  if (r.exit_code == 0) {
    // Diagnostics only: a daemon that checks the usage before the snapshot
    // lets the first one exceed the quota; the next must be refused anyway.
    ProcResult second = Ctl(kRoot, {"--as-tenant", "qbytes", "snapshot", "create", "qb-a", "--id",
                                    "qb-s2", "--resume"});
    EXPECT_TRUE(refused(second, "snapshot_bytes")) << second.Describe();
    Ctl(kRoot, {"snapshot", "delete", "qb-s1"});
    Ctl(kRoot, {"snapshot", "delete", "qb-s2"});
  } else {
    EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  }
  EXPECT_EQ(VmAsRoot("qb-a").value("status", ""), "RUNNING");

  // The defaults ([quotas]) hold for tenants without their own entry.
  EXPECT_EQ(Ctl(kA, {"vm", "expose", kVm[kA], "127.0.0.1:23011:80"}).exit_code, 0);
  EXPECT_EQ(Ctl(kA, {"vm", "expose", kVm[kA], "127.0.0.1:23012:81"}).exit_code, 0);
  before = Picture(*daemon_);
  r = Ctl(kA, {"vm", "expose", kVm[kA], "127.0.0.1:23013:82"});
  EXPECT_TRUE(refused(r, "port_forwards")) << r.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");
  EXPECT_EQ(Ctl(kA, {"vm", "unexpose", kVm[kA], "127.0.0.1:23011"}).exit_code, 0);
  EXPECT_EQ(Ctl(kA, {"vm", "unexpose", kVm[kA], "127.0.0.1:23012"}).exit_code, 0);

  // Admins have no quota.
  for (const std::string& id : {qa, std::string("qb-a")}) {
    EXPECT_EQ(Ctl(kRoot, {"vm", "delete", id}).exit_code, 0);
  }
  EXPECT_EQ(Ctl(kRoot, {"snapshot", "delete", "q-s1"}).exit_code, 0);
}

// Named kernels, initrds and disks must lie inside [images] allowed_dirs,
// without symlinks or "..", for tenants and admins alike.
TEST_F(TenantsTest, HostPathsStayInsideAllowedDirs) {
  ASSERT_TRUE(CopyDefaultImage());
  const bool initrd = fs::exists(AllowedDir() + "/initrd.img");
  const std::string dir = AllowedDir();
  std::error_code ec;  // Already there on a repeated run.
  fs::create_symlink("/etc/shadow", dir + "/escape.ext4", ec);
  fs::create_symlink("/etc", dir + "/etc", ec);
  const std::string other_disk = daemon_->state_dir() + "/vms/" + kVm[kB] + "/disk.ext4";
  fs::create_symlink(other_disk, dir + "/other.ext4", ec);
  ASSERT_TRUE(fs::exists(other_disk)) << "the layout changed: " << other_disk;
  const std::string snap_disk = daemon_->state_dir() + "/snapshots/" + kSnap[kB] + "/disk.ext4";
  ASSERT_TRUE(fs::exists(snap_disk)) << "the layout changed: " << snap_disk;

  const HostPicture before = Picture(*daemon_);
  struct Case {
    const char* field;
    std::string path;
    std::string kernel;  // An initrd needs a kernel: a good one, so the initrd is judged.
  };
  const std::vector<Case> cases = {
      {"rootfs_path", "/etc/shadow"},
      {"rootfs_path", other_disk},
      {"rootfs_path", daemon_->state_dir() + "/vms/" + kVm[kA] + "/disk.ext4"},
      {"rootfs_path", snap_disk},
      {"rootfs_path", dir + "/escape.ext4"},
      {"rootfs_path", dir + "/etc/shadow"},
      {"rootfs_path", dir + "/other.ext4"},
      {"rootfs_path", dir + "/../../../etc/passwd"},
      {"rootfs_path", dir + "/../images/rootfs.ext4"},
      {"rootfs_path", "/proc/self/root/etc/shadow"},
      {"rootfs_path", dir},
      {"kernel_path", "/etc/shadow"},
      {"kernel_path", dir + "/escape.ext4"},
      {"initrd_path", "/etc/shadow", dir + "/vmlinuz"},
      {"initrd_path", dir + "/escape.ext4", dir + "/vmlinuz"},
      {"initrd_path", dir + "/../../../etc/passwd", dir + "/vmlinuz"},
  };
  for (int who : {kA, kRoot}) {
    for (const Case& c : cases) {
      SCOPED_TRACE(absl::StrCat(who == kRoot ? "root" : Tenant(who), ": ", c.field, "=", c.path));
      json request = {{"config", {{"vm_id", "hp-bad"}, {c.field, c.path}}}, {"start", false}};
      if (!c.kernel.empty()) request["config"]["kernel_path"] = c.kernel;
      std::string out = Probe(who, "CreateVm", request.dump());
      const std::string code = CodeOf(out);
      EXPECT_TRUE(code == "PERMISSION_DENIED" || code == "INVALID_ARGUMENT") << out;
      if (code == "PERMISSION_DENIED") {
        EXPECT_TRUE(absl::StrContains(out, "allowed_dirs")) << out;
      }
      if (code == "OK") Ctl(kRoot, {"vm", "delete", "hp-bad"});
    }
  }
  // smolvmctl says the same.
  ProcResult shadow =
      Ctl(kA, {"vm", "create", "--id", "hp-bad", "--no-start", "--rootfs", "/etc/shadow"});
  EXPECT_EQ(shadow.exit_code, kExitOther) << shadow.Describe();
  EXPECT_TRUE(absl::StrContains(shadow.err, "allowed_dirs")) << shadow.Describe();
  ProcResult dots = Ctl(kA, {"vm", "create", "--id", "hp-bad", "--no-start", "--rootfs",
                             dir + "/../../../etc/passwd"});
  EXPECT_EQ(dots.exit_code, kExitInvalid) << dots.Describe();
  EXPECT_EQ(Diff(before, Picture(*daemon_)), "");

  // An image in the allowed dir boots.
  std::vector<std::string> args = {
      "vm",           "create", "--id",     "hp-ok",          "--vcpus",  "1",
      "--memory-mib", "192",    "--kernel", dir + "/vmlinuz", "--rootfs", dir + "/rootfs.ext4"};
  if (initrd) args.insert(args.end(), {"--initrd", dir + "/initrd.img"});
  ProcResult ok = Ctl(kA, args);
  ASSERT_EQ(ok.exit_code, 0) << ok.Describe() << daemon_->DaemonLog();
  ProcResult hello = Ctl(kA, {"vm", "exec", "hp-ok", "--", "echo", "booted"});
  EXPECT_EQ(hello.out, "booted\n") << hello.Describe();
  EXPECT_EQ(Ctl(kA, {"vm", "delete", "hp-ok"}).exit_code, 0);
}

// A guest that writes terminal escapes to its console and dies at boot:
// its console tail reaches the VM's error, smolvmctl's output and the
// audit log only escaped.
TEST_F(TenantsTest, GuestConsoleTextIsEscaped) {
  ASSERT_TRUE(CopyDefaultImage());
  const std::string dir = AllowedDir();
  const std::string evil = dir + "/evil.ext4";
  const std::string init = daemon_->dir() + "/evil-init";
  std::ofstream(init) << "#!/bin/sh\n"
                         "printf 'EVIL-START \\033[2J\\033]0;pwned\\007\\n"
                         "{\"audit\":\"smolvmd\",\"forged\":true}\\n"
                         "\\033[31mEVIL-END\\n' > /dev/console\n"
                         "sleep 1\n"
                         // QEMU runs with -no-reboot: this ends it at once,
                         // without a panic trace pushing the text out of the
                         // console tail the error carries.
                         "/bin/busybox reboot -f\n";
  std::string error;
  ASSERT_TRUE(RunOk({"cp", "--sparse=always", dir + "/rootfs.ext4", evil}, &error)) << error;
  // The init every image runs is the daemon's payload's (/.smolvm/init).
  for (const std::string& cmd :
       {std::string("rm /.smolvm/init"), "write " + init + " /.smolvm/init",
        std::string("sif /.smolvm/init mode 0100755")}) {
    ASSERT_TRUE(RunOk({"debugfs", "-w", "-R", cmd, evil}, &error)) << error;
  }
  const size_t log_offset = daemon_->DaemonLog().size();
  absl::Cleanup delete_evil = [&] { Ctl(kA, {"vm", "delete", "evil"}); };
  std::vector<std::string> args = {
      "vm",           "create", "--id",     "evil",           "--vcpus",  "1",
      "--memory-mib", "128",    "--kernel", dir + "/vmlinuz", "--rootfs", evil};
  if (fs::exists(dir + "/initrd.img")) args.insert(args.end(), {"--initrd", dir + "/initrd.img"});
  ProcResult created = Ctl(kA, args);
  EXPECT_NE(created.exit_code, 0) << created.Describe();
  ASSERT_TRUE(absl::StrContains(daemon_->ConsoleLog("evil") + created.err + daemon_->DaemonLog(),
                                "EVIL-START"))
      << "the evil init did not run: " << created.Describe() << daemon_->DaemonLog();
  auto clean = [](const std::string& text) {
    for (unsigned char c : text) {
      if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) return false;
    }
    return true;
  };
  EXPECT_TRUE(clean(created.err)) << created.err;
  // The table and the details print the error; JSON is data (escaped by JSON).
  for (const std::vector<std::string>& show :
       {std::vector<std::string>{"vm", "get", "evil"}, std::vector<std::string>{"vm", "list"}}) {
    std::vector<std::string> argv = AsUser(As(kA));
    argv.insert(argv.end(), {SmolvmctlPath(), "--socket", daemon_->socket_path()});
    argv.insert(argv.end(), show.begin(), show.end());
    ProcResult r = RunProcess(argv);
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_TRUE(clean(r.out)) << r.out;
  }
  json vm = One(Ctl(kA, {"vm", "get", "evil"}).out);
  EXPECT_EQ(vm.value("status", ""), "ERROR") << vm.dump();
  EXPECT_TRUE(absl::StrContains(vm.value("error", ""), "EVIL-START")) << vm.dump();
  // Nor anywhere else in the log: the "vm evil: error:" warning carries the
  // console tail too.
  const std::string log = daemon_->DaemonLog().substr(log_offset);
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "raw ESC in the daemon log";
  EXPECT_FALSE(absl::StrContains(log, ",\"forged\":true")) << "a forged line: " << log;
  bool audited = false;
  for (const json& line : AuditLines(log)) {
    if (line.value("method", "") != "CreateVm" || line.value("object", "") != "evil") continue;
    audited = true;
    for (unsigned char c : line["_raw"].get<std::string>()) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << int(c) << " in an audit line";
    }
  }
  EXPECT_TRUE(audited) << log;
}

TEST_F(TenantsTest, TenantBootArgsAreLimitedAdminsAreNot) {
  for (const char* args :
       {"init=/bin/sh", "rdinit=/bin/sh", "quiet init=/bin/sh", "root=/dev/vdb", "init=sh",
        "rdinit=busybox", "root=vdb", "ro", "rw", "console=ttyS1", "smolvm.net=10.0.0.9",
        "\"quiet init=/bin/sh\"", "quiet -- -s", "virtio_net.napi_tx=1", "loglevel=8"}) {
    SCOPED_TRACE(args);
    json request = {{"config", {{"vm_id", "ba-bad"}, {"boot_args", args}}}, {"start", false}};
    EXPECT_EQ(CodeOf(Probe(kA, "CreateVm", request.dump())), "PERMISSION_DENIED");
  }
  ProcResult init =
      Ctl(kA, {"vm", "create", "--id", "ba-bad", "--no-start", "--boot-args", "init=/bin/sh"});
  EXPECT_EQ(init.exit_code, kExitOther) << init.Describe();
  EXPECT_TRUE(absl::StrContains(init.err, "init=")) << init.Describe();
  EXPECT_EQ(Ctl(kRoot, {"vm", "get", "ba-bad"}).exit_code, kExitNotFound);
  // Parameters on the allow-list are fine.
  ProcResult quiet = Ctl(kA, {"vm", "create", "--id", "ba-ok", "--no-start", "--boot-args",
                              "quiet loglevel=3 panic=-1"});
  EXPECT_EQ(quiet.exit_code, 0) << quiet.Describe();
  EXPECT_EQ(Ctl(kA, {"vm", "delete", "ba-ok"}).exit_code, 0);
  // Admins may pass anything.
  ProcResult admin =
      Ctl(kRoot, {"vm", "create", "--id", "ba-admin", "--no-start", "--boot-args", "init=/bin/sh"});
  EXPECT_EQ(admin.exit_code, 0) << admin.Describe();
  EXPECT_EQ(Ctl(kRoot, {"vm", "delete", "ba-admin"}).exit_code, 0);
}

// One audit line per mutating call, with the caller, and client/guest text
// JSON-escaped: no raw control byte, no forged line.
TEST_F(TenantsTest, AuditLogHasOneEscapedLinePerMutatingCall) {
  const size_t baseline = AuditLines(daemon_->DaemonLog()).size();
  const size_t log_offset = daemon_->DaemonLog().size();
  const std::string evil =
      "/no/such\n{\"audit\":\"smolvmd\",\"forged\":true}\x1b[31mred\x1b]0;t\x07";
  const std::string vm = kVm[kA];
  std::ofstream(Home(kA) + "/a.txt") << "x";
  chown((Home(kA) + "/a.txt").c_str(), users_->user(kA).uid, users_->user(kA).gid);
  // The mutating calls, in order; reads (GetVm, lists) are not audited.
  struct Step {
    std::vector<std::string> args;
    const char* method;
    bool ok;
  };
  const std::vector<Step> steps = {
      {{"vm", "pause", vm}, "PauseVm", true},
      {{"vm", "resume", vm}, "ResumeVm", true},
      {{"vm", "exec", vm, "--", evil}, "Exec", false},
      {{"file", "put", vm, Home(kA) + "/a.txt", "/proc/" + evil}, "UploadFile", false},
      {{"vm", "delete", kMissingVm}, "DeleteVm", false},
  };
  for (const Step& step : steps) {
    ProcResult r = Ctl(kA, step.args);
    EXPECT_EQ(r.exit_code == 0, step.ok) << step.method << ": " << r.Describe();
    // smolvmctl escapes what it prints too.
    EXPECT_EQ(r.err.find('\x1b'), std::string::npos) << step.method;
  }
  std::vector<json> lines;
  for (int i = 0; i < 20; ++i) {  // Lines of a call may land just after its reply.
    lines = AuditLines(daemon_->DaemonLog());
    if (lines.size() >= baseline + steps.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  lines = AuditLines(daemon_->DaemonLog());
  ASSERT_GE(lines.size(), baseline);
  std::vector<json> fresh(lines.begin() + static_cast<long>(baseline), lines.end());
  std::string all;
  for (const auto& l : fresh) all += l["_raw"].get<std::string>() + "\n";
  ASSERT_EQ(fresh.size(), steps.size()) << all;
  bool saw_escape = false;
  for (size_t i = 0; i < steps.size(); ++i) {
    const json& line = fresh[i];
    SCOPED_TRACE(line["_raw"].get<std::string>());
    EXPECT_FALSE(line.contains("_unparsable"));
    EXPECT_EQ(line.value("audit", ""), "smolvmd");
    EXPECT_TRUE(absl::StrContains(line.value("method", ""), steps[i].method));
    EXPECT_EQ(line.value("tenant", ""), Tenant(kA));
    // The caller's identity ("caller" in the spec, "identity" in daemon/audit.h).
    std::string who = line.value("caller", line.value("identity", ""));
    EXPECT_TRUE(absl::StrContains(who, absl::StrCat("uid:", users_->user(kA).uid))) << who;
    EXPECT_EQ(line.value("code", "") == "OK", steps[i].ok);
    for (unsigned char c : line["_raw"].get<std::string>()) {
      EXPECT_TRUE(c >= 0x20 && c < 0x7f) << "raw byte " << int(c) << " in an audit line";
    }
    for (const auto& [key, value] : line.items()) {
      if (key != "_raw" && value.is_string() &&
          absl::StrContains(value.get<std::string>(), "\x1b[31mred")) {
        saw_escape = true;  // The guest's text survived, escaped.
      }
    }
  }
  EXPECT_TRUE(saw_escape) << "no audit line quotes the exec's or upload's text: " << all;
  // Nowhere in the log (audit or not) is there a raw ESC or a forged line.
  std::string log = daemon_->DaemonLog().substr(log_offset);
  EXPECT_EQ(log.find('\x1b'), std::string::npos) << "raw ESC in the daemon log";
  // Escaped, the forged key reads ,\"forged\": in the log.
  EXPECT_FALSE(absl::StrContains(log, ",\"forged\":true")) << "a forged line: " << log;
}

// Owners, and with them every check above, survive a daemon restart (the
// VMs keep running and are re-attached).
TEST_F(TenantsTest, OwnersSurviveADaemonRestart) {
  daemon_->Stop();
  auto s = daemon_->Start(DaemonArgs(), config_);
  ASSERT_TRUE(s.ok()) << s;
  for (int t : {kA, kB}) {
    ProcResult vms = Ctl(t, {"vm", "list"});
    EXPECT_EQ(Column(vms.out, "vm_id"), std::set<std::string>{kVm[t]}) << vms.Describe();
    EXPECT_EQ(Column(Ctl(t, {"snapshot", "list"}).out, "snapshot_id"),
              std::set<std::string>{kSnap[t]});
    EXPECT_EQ(CodeOf(Probe(t, "Exec",
                           absl::StrCat(R"({"vm_id":")", kVm[1 - t], R"(","argv":["true"]})"))),
              "NOT_FOUND");
    ProcResult exec = Ctl(t, {"vm", "exec", kVm[t], "--", "echo", "still mine"});
    EXPECT_EQ(exec.out, "still mine\n") << exec.Describe();
    EXPECT_EQ(VmAsRoot(kVm[t]).value("owner", ""), Tenant(t));
  }
}

}  // namespace
}  // namespace smolvm::testing
