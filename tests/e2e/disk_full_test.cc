// A full state dir (issue 9, item 5), on a small tmpfs: a snapshot that
// cannot fit, a create and a restore whose disk copy runs out of space are
// RESOURCE_EXHAUSTED naming the space, leave nothing partial (no row, no
// temp or VM directory, no QEMU) and leave the running VM running; once
// space is freed, the same calls succeed.
//
// One cold boot (192 MiB).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

namespace fs = std::filesystem;

uint64_t FreeMiB(const std::string& dir) {
  struct statvfs st;
  if (statvfs(dir.c_str(), &st) != 0) return 0;
  return (uint64_t{st.f_bavail} * st.f_frsize) >> 20;
}

// Leaves about `leave_mib` free in `dir`'s filesystem (a filler file).
void FillLeaving(const std::string& dir, uint64_t leave_mib) {
  const std::string filler = dir + "/filler";
  uint64_t free_mib = FreeMiB(dir);
  ASSERT_GE(free_mib, leave_mib);
  int fd = open(filler.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  // Everything but `leave_mib`, past what the filler already holds:
  // fallocate as much as the filesystem takes.
  const off_t at = lseek(fd, 0, SEEK_END);
  off_t want = static_cast<off_t>((free_mib - leave_mib) << 20);
  while (want > 0 && posix_fallocate(fd, at, want) != 0) want -= 1 << 20;
  close(fd);
}

TEST(DiskFullTest, OutOfSpaceIsResourceExhaustedAndLeavesNothingPartial) {
  TestDaemon daemon;
  fs::create_directories(daemon.state_dir());
  ASSERT_EQ(mount("smolvm-test", daemon.state_dir().c_str(), "tmpfs", 0, "size=600m,mode=0700"),
            0);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{daemon.state_dir()};
  ASSERT_TRUE(daemon.Start().ok()) << daemon.DaemonLog();
  ClientOptions opts = daemon.client_options();
  v1::VMConfig config;
  config.set_vm_id("full-src");
  config.set_memory_mib(192);
  config.set_vcpu_count(1);
  SmolVM vm(config, opts);
  ASSERT_TRUE(vm.start().ok()) << daemon.DaemonLog();
  const std::string snaps = daemon.state_dir() + "/snapshots";
  auto nothing_partial = [&](const std::string& what) {
    SCOPED_TRACE(what);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(snaps, ec)) {
      if (e.path().filename() != "base") ADD_FAILURE() << "left in snapshots/: " << e.path();
    }
    auto listed = SmolVMManager(opts).list_snapshots();
    ASSERT_TRUE(listed.ok());
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].snapshot_id(), "base");
    auto vms = SmolVMManager(opts).list_vms();
    ASSERT_TRUE(vms.ok());
    EXPECT_EQ(vms->size(), 1u);
    EXPECT_EQ(daemon.QemuPids().size(), 1u);
    auto r = vm.run("echo running");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stdout_text, "running\n");
  };

  // 0. Room for a snapshot: the base every later restore uses.
  ASSERT_TRUE(vm.snapshot("base", /*resume_source=*/true).ok()) << daemon.DaemonLog();

  // 1. A snapshot that cannot fit: refused before the VM is even paused.
  FillLeaving(daemon.state_dir(), 40);
  std::printf("state dir free before the refused snapshot: %llu MiB\n",
              static_cast<unsigned long long>(FreeMiB(daemon.state_dir())));
  auto snap = vm.snapshot("too-big", /*resume_source=*/true);
  EXPECT_EQ(snap.status().code(), absl::StatusCode::kResourceExhausted) << snap.status();
  EXPECT_TRUE(absl::StrContains(snap.status().message(), "MiB free")) << snap.status();
  nothing_partial("snapshot");

  // 2. A create and a restore whose disk copy runs out of space mid-way.
  FillLeaving(daemon.state_dir(), 0);
  v1::VMConfig other = config;
  other.set_vm_id("full-new");
  SmolVM created(other, opts);
  absl::Status s = created.start();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_FALSE(fs::exists(daemon.state_dir() + "/vms/full-new"));
  EXPECT_EQ(SmolVMManager(opts).get_vm("full-new").status().code(), absl::StatusCode::kNotFound);
  nothing_partial("create");
  auto clone = SmolVM::from_snapshot("base", /*resume_vm=*/true, "full-clone", opts);
  EXPECT_EQ(clone.status().code(), absl::StatusCode::kResourceExhausted) << clone.status();
  EXPECT_FALSE(fs::exists(daemon.state_dir() + "/vms/full-clone"));
  nothing_partial("restore");

  // 3. Space again: the same calls succeed.
  ASSERT_EQ(unlink((daemon.state_dir() + "/filler").c_str()), 0);
  EXPECT_TRUE(created.start().ok()) << daemon.DaemonLog();
  EXPECT_TRUE(created.close().ok());
  clone = SmolVM::from_snapshot("base", /*resume_vm=*/true, "full-clone", opts);
  ASSERT_TRUE(clone.ok()) << clone.status();
  EXPECT_TRUE(clone->close().ok());

  EXPECT_TRUE(vm.close().ok());
  daemon.Stop();
}

}  // namespace
}  // namespace smolvm::testing
