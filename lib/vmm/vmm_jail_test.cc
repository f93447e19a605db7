// SpawnJailed with a shell instead of QEMU: the process runs as the given
// uid with no capabilities and no_new_privs, sees only /usr, the base
// devices and what it was given, can write only what was given writable,
// gets its passed descriptors at 3.., and a failing step is reported.
// Needs root (mount namespaces, uid switch); skipped otherwise.
#include "lib/vmm/vmm_jail.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::vmm {
namespace {

using ::smolvm_testing::StatusIs;

constexpr uint32_t kUid = 1879048192 + 65000;  // In the default VMM range, unlikely used.

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Alive and not a zombie (the jailed process is not our child: its reaper
// may be slow, or absent in a container).
bool Running(pid_t pid) {
  std::string stat = Slurp(absl::StrCat("/proc/", pid, "/stat"));
  return !stat.empty() && !absl::StrContains(stat, ") Z ");
}

void WaitGone(pid_t pid) {
  for (int i = 0; i < 500 && Running(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

class VmmJailTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root (mount namespaces, setuid)";
    ASSERT_TRUE(MakeDirs(mount_point_).ok());
    ASSERT_TRUE(MakeDirs(given_dir_).ok());
    ASSERT_TRUE(WriteFileAtomic(readonly_file_, "ro\n").ok());
    ASSERT_TRUE(WriteFileAtomic(secret_, "secret\n").ok());
    ASSERT_EQ(chown(given_dir_.c_str(), kUid, kUid), 0);
  }

  JailSpec Spec(const std::string& script) {
    JailSpec spec;
    spec.argv = {"/usr/bin/sh", "-c", script};
    spec.env = {"PATH=/usr/bin:/bin"};
    spec.mount_point = mount_point_;
    spec.mounts = BaseJailMounts(false);
    spec.mounts.push_back({given_dir_, true});
    spec.mounts.push_back({readonly_file_, false});
    spec.uid = spec.gid = kUid;
    return spec;
  }

  smolvm_testing::TempDir temp_{"smolvm-jail-test"};
  std::string mount_point_ = temp_.path() + "/jail";
  std::string given_dir_ = temp_.path() + "/vm";
  std::string readonly_file_ = temp_.path() + "/kernel";
  std::string secret_ = temp_.path() + "/other-vm-disk";
};

TEST_F(VmmJailTest, SeesOnlyWhatItWasGivenAsItsOwnUidWithoutPrivileges) {
  UniqueFd out(open((temp_.path() + "/out").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(out.valid());
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd pass_r(p[0]), pass_w(p[1]);
  JailSpec spec = Spec(absl::StrCat(
      "id -u; id -G; ls /; cat ", readonly_file_, "; ",
      "test -e ", secret_, " && echo SEES-SECRET; ",
      "echo hi > ", given_dir_, "/written && echo WROTE-OWN; ",
      "echo x > ", readonly_file_, " 2>/dev/null && echo WROTE-RO; ",
      "echo x > /new 2>/dev/null && echo WROTE-ROOT; ",
      "echo via-fd >&3; ",
      "sleep 3"));
  spec.pass_fds = {pass_w.get()};
  spec.output_fd = out.get();
  auto pid = SpawnJailed(spec);
  ASSERT_TRUE(pid.ok()) << pid.status();
  pass_w.Reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));

  std::map<std::string, std::string> status;
  for (absl::string_view line :
       absl::StrSplit(Slurp(absl::StrCat("/proc/", *pid, "/status")), '\n')) {
    auto colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    status[std::string(line.substr(0, colon))] =
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
  }
  EXPECT_EQ(status["CapEff"], "0000000000000000");
  EXPECT_EQ(status["CapBnd"], "0000000000000000");
  EXPECT_EQ(status["NoNewPrivs"], "1");
  EXPECT_EQ(status["Groups"], "");
  EXPECT_NE(Slurp(absl::StrCat("/proc/", *pid, "/cgroup")), "");
  // Not our child: a new session, reparented away.
  EXPECT_NE(getsid(*pid), getsid(0));

  char buf[64] = {};
  ASSERT_GT(read(pass_r.get(), buf, sizeof(buf) - 1), 0);
  EXPECT_EQ(std::string(buf), "via-fd\n");
  kill(*pid, SIGKILL);
  WaitGone(*pid);

  std::string output = Slurp(temp_.path() + "/out");
  std::vector<std::string> lines = absl::StrSplit(output, '\n');
  ASSERT_GE(lines.size(), 3u) << output;
  EXPECT_EQ(lines[0], absl::StrCat(kUid));
  EXPECT_EQ(lines[1], absl::StrCat(kUid));
  EXPECT_TRUE(absl::StrContains(output, "ro\n")) << output;
  EXPECT_TRUE(absl::StrContains(output, "WROTE-OWN")) << output;
  EXPECT_FALSE(absl::StrContains(output, "SEES-SECRET")) << output;
  EXPECT_FALSE(absl::StrContains(output, "WROTE-RO")) << output;
  EXPECT_FALSE(absl::StrContains(output, "WROTE-ROOT")) << output;
  EXPECT_FALSE(absl::StrContains(output, "proc")) << output;
  EXPECT_EQ(Slurp(given_dir_ + "/written"), "hi\n");
  // Nothing leaked into the host's mount table.
  EXPECT_FALSE(absl::StrContains(Slurp("/proc/self/mountinfo"), mount_point_));
}

TEST_F(VmmJailTest, AFailingStepIsReportedWithItsName) {
  JailSpec spec = Spec("true");
  spec.argv = {"/usr/bin/no-such-vmm"};
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kInternal, "exec: errno 2"));
  spec.argv = {"/usr/bin/true"};
  spec.cgroup_procs = {temp_.path() + "/missing/cgroup.procs"};
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kInternal, "cgroup"));
}

TEST_F(VmmJailTest, RefusesRootAndBadPaths) {
  JailSpec spec = Spec("true");
  spec.uid = 0;
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kInvalidArgument, "uid"));
  spec = Spec("true");
  spec.argv = {"sh"};
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kInvalidArgument, "absolute"));
  spec = Spec("true");
  spec.mounts.push_back({temp_.path() + "/../etc", false});
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kInvalidArgument, "bad path"));
  spec = Spec("true");
  spec.mounts.push_back({temp_.path() + "/absent", false});
  EXPECT_THAT(SpawnJailed(spec), StatusIs(absl::StatusCode::kNotFound, "absent"));
}

}  // namespace
}  // namespace smolvm::vmm
