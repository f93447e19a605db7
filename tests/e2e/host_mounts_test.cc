// Host mounts on real guests (issue 14 item 4): a read-only mount is
// readable and not writable in the guest, a read-write mount's writes
// appear on the host, paths outside [mounts] allowed_dirs or through a
// symlink out of it are refused, a snapshot of a VM with a mount that is not
// detach_on_snapshot is refused naming it, and one whose mounts all are
// works: the guest has them again after the snapshot, and so does a clone
// restored from it.
//
// Two cold boots (the generic kernel, 192 MiB, 1 vCPU) and one restore.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"
#include "tests/e2e/test_users.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

v1::VMConfig Config(const std::string& id) {
  v1::VMConfig c;
  c.set_vm_id(id);
  c.set_memory_mib(192);
  c.set_vcpu_count(1);
  return c;
}

void AddMount(v1::VMConfig& c, const std::string& host, const std::string& guest, bool ro,
              bool detach) {
  v1::Mount* m = c.add_mounts();
  m->set_host_path(host);
  m->set_guest_path(guest);
  m->set_read_only(ro);
  m->set_detach_on_snapshot(detach);
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The guest's output of a shell command that must succeed.
std::string InGuest(SmolVM& vm, const std::string& command) {
  auto r = vm.run(command);
  EXPECT_TRUE(r.ok()) << command << ": " << r.status();
  if (!r.ok()) return "";
  EXPECT_TRUE(r->ok()) << command << ": exit " << r->exit_code << ": " << r->stderr_text;
  return r->output();
}

class MountsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    share_ = daemon_.dir() + "/share";
    fs::create_directories(share_ + "/ro");
    fs::create_directories(share_ + "/rw");
    std::ofstream(share_ + "/ro/hello.txt") << "hello from the host\n";
    // The VMM runs as a per-VM uid: the directories must be open to it.
    chmod(share_.c_str(), 0755);
    chmod((share_ + "/ro").c_str(), 0755);
    chmod((share_ + "/ro/hello.txt").c_str(), 0644);
    chmod((share_ + "/rw").c_str(), 0777);
    fs::create_directory_symlink("/etc", share_ + "/escape");
    fs::create_directory_symlink(share_ + "/rw", share_ + "/inside-link");
    // One tenant user (not an admin) besides root.
    auto users = TestUsers::Create(/*members=*/1, /*outsiders=*/0);
    ASSERT_TRUE(users.ok()) << users.status();
    users_ = *std::move(users);
    ASSERT_TRUE(daemon_
                    .Start({"--socket-group", users_->group()},
                           absl::StrCat("[mounts]\nallowed_dirs = [\"", share_, "\"]\n"))
                    .ok())
        << daemon_.DaemonLog();
    opts_ = daemon_.client_options();
  }

  RunAs Tenant() const { return RunAs{users_->user(0).uid, users_->user(0).gid}; }

  std::unique_ptr<TestUsers> users_;
  TestDaemon daemon_;
  ClientOptions opts_;
  std::string share_;
};

TEST_F(MountsTest, ReadOnlyReadWriteSymlinksAndSnapshots) {
  // Refused at the edge, before anything exists.
  struct Bad {
    std::string host, guest;
    absl::StatusCode code;
    std::string needle;
  };
  for (const Bad& bad : {
           Bad{"/etc", "/mnt/x", absl::StatusCode::kPermissionDenied, "[mounts] allowed_dirs"},
           Bad{share_ + "/escape", "/mnt/x", absl::StatusCode::kPermissionDenied, "symlink"},
           Bad{share_ + "/escape/ssh", "/mnt/x", absl::StatusCode::kPermissionDenied, "symlink"},
           Bad{share_ + "/inside-link", "/mnt/x", absl::StatusCode::kPermissionDenied,
               "symlink"},
           Bad{share_ + "/../share/ro", "/mnt/x", absl::StatusCode::kInvalidArgument, ".."},
           Bad{share_ + "/missing", "/mnt/x", absl::StatusCode::kNotFound, "does not exist"},
           Bad{share_ + "/ro/hello.txt", "/mnt/x", absl::StatusCode::kInvalidArgument,
               "not a directory"},
           Bad{share_ + "/ro", "/proc/x", absl::StatusCode::kInvalidArgument, "/proc"},
       }) {
    SCOPED_TRACE(bad.host + " -> " + bad.guest);
    v1::VMConfig c = Config("mnt-bad");
    AddMount(c, bad.host, bad.guest, false, false);
    SmolVM vm(c, opts_);
    absl::Status s = vm.start();
    EXPECT_EQ(s.code(), bad.code) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), bad.needle)) << s;
  }
  EXPECT_EQ(SmolVMManager(opts_).get_vm("mnt-bad").status().code(), absl::StatusCode::kNotFound);
  // smolvmctl says the same, and shows a VM's mounts (JSON too).
  ProcResult outside = daemon_.Ctl({"vm", "create", "--id", "mnt-cli", "--no-start", "--mount",
                                    "/etc:/mnt/etc:ro"});
  EXPECT_NE(outside.exit_code, 0) << outside.Describe();
  EXPECT_TRUE(absl::StrContains(outside.err, "[mounts] allowed_dirs")) << outside.Describe();
  ProcResult created = daemon_.Ctl({"vm", "create", "--id", "mnt-cli", "--no-start", "--mount",
                                    share_ + "/ro:/mnt/ro:ro,detach"});
  EXPECT_EQ(created.exit_code, 0) << created.Describe();
  ProcResult json = daemon_.Ctl({"--json", "vm", "get", "mnt-cli"});
  EXPECT_TRUE(absl::StrContains(json.out, "\"guest_path\": \"/mnt/ro\"")) << json.Describe();
  EXPECT_TRUE(absl::StrContains(json.out, "\"detach_on_snapshot\": true")) << json.Describe();
  EXPECT_EQ(daemon_.Ctl({"vm", "delete", "mnt-cli"}).exit_code, 0);
  // A tenant gets no host mounts at all (the list is shared by every
  // tenant): outside it, through symlinks, and beneath it alike.
  for (const std::string& host :
       {std::string("/etc"), share_ + "/escape", share_ + "/rw"}) {
    ProcResult denied = daemon_.Ctl(
        {"vm", "create", "--id", "mnt-t", "--no-start", "--mount", host + ":/mnt/x"}, Tenant());
    EXPECT_NE(denied.exit_code, 0) << denied.Describe();
    EXPECT_TRUE(absl::StrContains(denied.err, "PERMISSION_DENIED") ||
                absl::StrContains(denied.err, "permission denied") ||
                absl::StrContains(denied.err, "allowed_dirs"))
        << denied.Describe();
  }
  ProcResult beneath = daemon_.Ctl(
      {"vm", "create", "--id", "mnt-t", "--no-start", "--mount", share_ + "/rw:/mnt/rw"},
      Tenant());
  EXPECT_TRUE(absl::StrContains(beneath.err, "host mounts are for admins")) << beneath.Describe();
  // A comma would add options to QEMU's -fsdev.
  ProcResult comma = daemon_.Ctl({"vm", "create", "--id", "mnt-c", "--no-start", "--mount",
                                  share_ + "/a,path=.:/mnt/x"});
  EXPECT_TRUE(absl::StrContains(comma.err, "holds a comma")) << comma.Describe();

  // A read-only and a read-write mount.
  v1::VMConfig a = Config("mnt-a");
  AddMount(a, share_ + "/ro", "/mnt/ro", /*ro=*/true, /*detach=*/false);
  AddMount(a, share_ + "/rw", "/mnt/rw", /*ro=*/false, /*detach=*/true);
  SmolVM vm_a(a, opts_);
  ASSERT_TRUE(vm_a.start().ok()) << daemon_.DaemonLog() << daemon_.ConsoleLog("mnt-a");
  EXPECT_EQ(InGuest(vm_a, "cat /mnt/ro/hello.txt"), "hello from the host");
  auto denied = vm_a.run("echo x > /mnt/ro/new.txt");
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_NE(denied->exit_code, 0);
  EXPECT_TRUE(absl::StrContains(denied->stderr_text, "Read-only")) << denied->stderr_text;
  EXPECT_FALSE(fs::exists(share_ + "/ro/new.txt"));
  InGuest(vm_a, "echo written by the guest > /mnt/rw/out.txt && sync");
  EXPECT_EQ(Slurp(share_ + "/rw/out.txt"), "written by the guest\n");
  // The guest cannot leave its export through a symlink it makes.
  InGuest(vm_a, "ln -s /etc /mnt/rw/guest-link");
  EXPECT_TRUE(fs::is_symlink(share_ + "/rw/guest-link"));

  // A mount without detach_on_snapshot blocks snapshots, by name.
  auto refused = vm_a.snapshot("mnt-refused", /*resume_source=*/true);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "/mnt/ro")) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "detach_on_snapshot"))
      << refused.status();
  EXPECT_FALSE(absl::StrContains(refused.status().message(), "/mnt/rw")) << refused.status();
  EXPECT_EQ(InGuest(vm_a, "cat /mnt/rw/out.txt"), "written by the guest");
  ASSERT_TRUE(vm_a.close().ok());

  // With every mount detach_on_snapshot: the snapshot works, the source and a
  // restored clone have the mount again.
  v1::VMConfig b = Config("mnt-b");
  AddMount(b, share_ + "/rw", "/data", /*ro=*/false, /*detach=*/true);
  SmolVM vm_b(b, opts_);
  ASSERT_TRUE(vm_b.start().ok()) << daemon_.DaemonLog() << daemon_.ConsoleLog("mnt-b");
  EXPECT_EQ(InGuest(vm_b, "cat /data/out.txt"), "written by the guest");
  auto snap = vm_b.snapshot("mnt-snap", /*resume_source=*/true);
  ASSERT_TRUE(snap.ok()) << snap.status() << daemon_.DaemonLog();
  ASSERT_EQ(snap->vm_config().mounts_size(), 1);
  EXPECT_EQ(InGuest(vm_b, "grep ' /data 9p ' /proc/mounts | wc -l"), "1");
  InGuest(vm_b, "echo after the snapshot > /data/after.txt");
  EXPECT_EQ(Slurp(share_ + "/rw/after.txt"), "after the snapshot\n");

  auto clone = SmolVM::from_snapshot("mnt-snap", /*resume_vm=*/true, "mnt-clone", opts_);
  ASSERT_TRUE(clone.ok()) << clone.status() << daemon_.DaemonLog();
  EXPECT_EQ(InGuest(*clone, "cat /data/after.txt"), "after the snapshot");
  InGuest(*clone, "echo from the clone > /data/clone.txt");
  EXPECT_EQ(Slurp(share_ + "/rw/clone.txt"), "from the clone\n");
  EXPECT_TRUE(clone->close().ok());
  EXPECT_TRUE(vm_b.close().ok());
  EXPECT_TRUE(SmolVMManager(opts_).delete_snapshot("mnt-snap").ok());
}

}  // namespace
}  // namespace smolvm::testing
