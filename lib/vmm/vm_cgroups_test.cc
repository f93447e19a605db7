#include "lib/vmm/vm_cgroups.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::vmm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

constexpr uint64_t kMiB = 1 << 20;

// Fake cgroup trees: directories with regular files standing in for the
// kernel's control files. Only files that exist can be written (the module
// never creates them), so each test creates what the kernel would.
void Put(const std::string& path, const std::string& content) {
  ASSERT_THAT(MakeDirs(path.substr(0, path.rfind('/')), 0755), IsOk());
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid()) << path << ": " << strerror(errno);
  ASSERT_EQ(write(fd.get(), content.data(), content.size()),
            static_cast<ssize_t>(content.size()));
}

std::string Get(const std::string& path) {
  auto text = ReadFileToString(path);
  return text.ok() ? *text : "<" + text.status().ToString() + ">";
}

// Files the kernel creates in a new v1 group, per controller mount.
void PutV1Group(const std::string& dir, const std::string& mount) {
  Put(dir + "/cgroup.procs", "");
  if (mount == "memory") {
    Put(dir + "/memory.limit_in_bytes", "9223372036854771712\n");
    Put(dir + "/memory.memsw.limit_in_bytes", "9223372036854771712\n");
    Put(dir + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n");
  } else if (mount == "cpu" || mount == "cpu,cpuacct") {
    Put(dir + "/cpu.cfs_period_us", "100000\n");
    Put(dir + "/cpu.cfs_quota_us", "-1\n");
  } else if (mount == "pids") {
    Put(dir + "/pids.max", "max\n");
  }
}

// Files the kernel creates in a new v2 group with all four controllers.
void PutV2Group(const std::string& dir) {
  for (const char* file : {"cgroup.procs", "cgroup.controllers", "cgroup.subtree_control",
                           "memory.max", "memory.swap.max", "memory.oom.group", "cpu.max",
                           "pids.max", "io.weight", "memory.events"}) {
    Put(JoinPath(dir, file), "");
  }
}

class VmCgroupsFakeTest : public ::testing::Test {
 protected:
  // A v1 tree with the given controller mounts (as on this machine).
  void MakeV1(const std::vector<std::string>& mounts) {
    for (const auto& m : mounts) Put(JoinPath(JoinPath(root_, m), "cgroup.procs"), "");
  }
  std::string V1Dir(const std::string& mount, const std::string& vm) const {
    return absl::StrCat(root_, "/", mount, "/smolvm/", vm);
  }

  smolvm_testing::TempDir temp_{"smolvm-cg-test"};
  std::string root_ = temp_.path();
};

TEST_F(VmCgroupsFakeTest, V1WritesExactLimits) {
  MakeV1({"memory", "cpu", "pids", "blkio"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_EQ((*cg)->version(), "v1");
  EXPECT_EQ((*cg)->Describe(),
            absl::StrCat("cgroup v1 under ", root_, "/{memory,cpu,pids,blkio}/smolvm"));
  for (const char* m : {"memory", "cpu", "pids", "blkio"}) {
    EXPECT_TRUE(PathExists(absl::StrCat(root_, "/", m, "/smolvm"))) << m;
    PutV1Group(V1Dir(m, "vm-1"), m);
  }
  Put(V1Dir("blkio", "vm-1") + "/blkio.weight", "500\n");

  auto created = (*cg)->Create("vm-1", {256 * kMiB, 150, 100, 50});
  ASSERT_THAT(created, IsOk());
  EXPECT_THAT(created->procs_files,
              UnorderedElementsAre(V1Dir("memory", "vm-1") + "/cgroup.procs",
                                   V1Dir("cpu", "vm-1") + "/cgroup.procs",
                                   V1Dir("pids", "vm-1") + "/cgroup.procs",
                                   V1Dir("blkio", "vm-1") + "/cgroup.procs"));
  EXPECT_THAT(created->warnings, IsEmpty());
  EXPECT_EQ(Get(V1Dir("memory", "vm-1") + "/memory.limit_in_bytes"), "268435456");
  // Swap pinned to the memory limit: memory + swap == memory.
  EXPECT_EQ(Get(V1Dir("memory", "vm-1") + "/memory.memsw.limit_in_bytes"), "268435456");
  EXPECT_EQ(Get(V1Dir("cpu", "vm-1") + "/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(Get(V1Dir("cpu", "vm-1") + "/cpu.cfs_quota_us"), "150000");
  EXPECT_EQ(Get(V1Dir("pids", "vm-1") + "/pids.max"), "100");
  // io weight 50 (v2 scale, default 100) is half the v1 default of 500.
  EXPECT_EQ(Get(V1Dir("blkio", "vm-1") + "/blkio.weight"), "250");

  // Reused after a daemon restart with no limits: every old limit is lifted,
  // the io weight is left as it was.
  created = (*cg)->Create("vm-1", {});
  ASSERT_THAT(created, IsOk());
  EXPECT_EQ(Get(V1Dir("memory", "vm-1") + "/memory.limit_in_bytes"), "-1");
  EXPECT_EQ(Get(V1Dir("memory", "vm-1") + "/memory.memsw.limit_in_bytes"), "-1");
  EXPECT_EQ(Get(V1Dir("cpu", "vm-1") + "/cpu.cfs_quota_us"), "-1");
  EXPECT_EQ(Get(V1Dir("pids", "vm-1") + "/pids.max"), "max");
  EXPECT_EQ(Get(V1Dir("blkio", "vm-1") + "/blkio.weight"), "250");
}

TEST_F(VmCgroupsFakeTest, V1IoWeightScales) {
  MakeV1({"memory", "blkio"});
  auto cg = VmCgroups::Open(root_, "");  // Default parent "smolvm".
  ASSERT_THAT(cg, IsOk());
  std::string cfq = V1Dir("blkio", "a") + "/blkio.weight";
  Put(cfq, "");
  struct Case {
    uint32_t v2;
    const char* v1;
  };
  for (Case c : {Case{1, "10"}, Case{100, "500"}, Case{150, "750"}, Case{10000, "1000"}}) {
    ASSERT_THAT((*cg)->Create("a", {0, 0, 0, c.v2}), IsOk());
    EXPECT_EQ(Get(cfq), c.v1) << c.v2;
  }
  // BFQ's v1 weight shares io.weight's default of 100: 1..1000.
  std::string bfq = V1Dir("blkio", "b") + "/blkio.bfq.weight";
  Put(bfq, "");
  for (Case c : {Case{1, "1"}, Case{100, "100"}, Case{700, "700"}, Case{5000, "1000"}}) {
    ASSERT_THAT((*cg)->Create("b", {0, 0, 0, c.v2}), IsOk());
    EXPECT_EQ(Get(bfq), c.v1) << c.v2;
  }
  EXPECT_THAT((*cg)->Create("b", {0, 0, 0, 10001}),
              StatusIs(absl::StatusCode::kInvalidArgument, "1-10000"));
}

TEST_F(VmCgroupsFakeTest, V1CombinedCpuMount) {
  MakeV1({"memory", "cpu,cpuacct", "pids"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_EQ((*cg)->Describe(), absl::StrCat("cgroup v1 under ", root_,
                                            "/{memory,cpu,cpuacct,pids}/smolvm (not mounted: "
                                            "blkio)"));
  PutV1Group(V1Dir("cpu,cpuacct", "vm"), "cpu,cpuacct");
  auto created = (*cg)->Create("vm", {0, 250, 0, 0});
  ASSERT_THAT(created, IsOk());
  EXPECT_EQ(Get(V1Dir("cpu,cpuacct", "vm") + "/cpu.cfs_quota_us"), "250000");
  EXPECT_THAT(created->procs_files, Contains(V1Dir("cpu,cpuacct", "vm") + "/cgroup.procs"));
}

TEST_F(VmCgroupsFakeTest, V1MissingOptionalControllerIsWarning) {
  MakeV1({"memory", "pids", "blkio"});  // No cpu; blkio without a weight.
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_THAT((*cg)->Describe(), HasSubstr("(not mounted: cpu)"));
  for (const char* m : {"memory", "pids", "blkio"}) PutV1Group(V1Dir(m, "vm"), m);
  auto created = (*cg)->Create("vm", {128 * kMiB, 50, 10, 100});
  ASSERT_THAT(created, IsOk());
  ASSERT_THAT(created->warnings, SizeIs(2));
  EXPECT_THAT(created->warnings[0], HasSubstr("cpu limit 50% not applied"));
  EXPECT_THAT(created->warnings[0], HasSubstr(root_ + "/cpu/smolvm/vm/cpu.cfs_quota_us"));
  EXPECT_THAT(created->warnings[1], HasSubstr("io weight 100 not applied"));
  EXPECT_EQ(Get(V1Dir("memory", "vm") + "/memory.limit_in_bytes"), "134217728");
  EXPECT_EQ(Get(V1Dir("pids", "vm") + "/pids.max"), "10");
}

TEST_F(VmCgroupsFakeTest, V1MissingMemoryIsFailedPreconditionAndLeavesNothing) {
  MakeV1({"cpu", "pids"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  std::string want = root_ + "/memory/smolvm/vm/memory.limit_in_bytes";
  EXPECT_THAT((*cg)->Create("vm", {64 * kMiB, 0, 0, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition, want));
  EXPECT_THAT((*cg)->Create("vm", {64 * kMiB, 0, 0, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "cgroup_enable"));
  // The groups this Create made are gone again.
  EXPECT_FALSE(PathExists(V1Dir("cpu", "vm")));
  EXPECT_FALSE(PathExists(V1Dir("pids", "vm")));
  // Without a memory limit there is nothing to enforce.
  EXPECT_THAT((*cg)->Create("vm", {}), IsOk());
}

TEST_F(VmCgroupsFakeTest, V1MissingPidsMaxIsFailedPrecondition) {
  MakeV1({"memory", "pids"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  PutV1Group(V1Dir("memory", "vm"), "memory");
  Put(V1Dir("pids", "vm") + "/cgroup.procs", "");  // Reused group, no pids.max.
  EXPECT_THAT((*cg)->Create("vm", {64 * kMiB, 0, 16, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition, V1Dir("pids", "vm") + "/pids.max"));
  // Groups that existed before the call are left alone.
  EXPECT_TRUE(PathExists(V1Dir("pids", "vm")));
}

TEST_F(VmCgroupsFakeTest, NoHierarchyIsFailedPrecondition) {
  EXPECT_THAT(VmCgroups::Open(root_, "smolvm"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no cgroup hierarchy"));
}

TEST_F(VmCgroupsFakeTest, HostileVmIdsAreRefused) {
  MakeV1({"memory", "pids"});
  Put(root_ + "/memory/victim/memory.limit_in_bytes", "1");
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  const std::vector<std::string> hostile = {
      "", ".", "..", "../victim", "a/b", "/abs", "a..b", ".hidden", "x\n", "x y",
      std::string("x\0y", 3), "caf\xc3\xa9", std::string(256, 'a')};
  for (const auto& id : hostile) {
    EXPECT_THAT((*cg)->Create(id, {kMiB, 0, 0, 0}),
                StatusIs(absl::StatusCode::kInvalidArgument, "vm id"))
        << id;
    EXPECT_THAT((*cg)->Remove(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
    EXPECT_THAT((*cg)->OomKills(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
    EXPECT_THAT((*cg)->MemoryLimit(id), StatusIs(absl::StatusCode::kInvalidArgument)) << id;
  }
  EXPECT_EQ(Get(root_ + "/memory/victim/memory.limit_in_bytes"), "1");
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/memory/smolvm"));
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/pids/smolvm"));
  // The longest and oddest ids that are allowed work.
  EXPECT_THAT((*cg)->Create(std::string(255, 'a'), {}), IsOk());
  EXPECT_THAT((*cg)->Create("A.b_c-9", {}), IsOk());
}

TEST_F(VmCgroupsFakeTest, HostileParentsAreRefused) {
  MakeV1({"memory"});
  for (const char* parent : {"..", "../x", "a/../b", "a//b", "./a"}) {
    EXPECT_THAT(VmCgroups::Open(root_, parent),
                StatusIs(absl::StatusCode::kInvalidArgument, "cgroup parent"))
        << parent;
  }
  // Nested parents are fine.
  auto cg = VmCgroups::Open(root_, "/a/b/");
  ASSERT_THAT(cg, IsOk());
  EXPECT_TRUE(PathExists(root_ + "/memory/a/b"));
}

TEST_F(VmCgroupsFakeTest, RemoveIsIdempotent) {
  MakeV1({"memory", "pids"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_THAT((*cg)->Remove("never-made"), IsOk());
  ASSERT_THAT((*cg)->Create("vm", {}), IsOk());
  EXPECT_TRUE(PathExists(V1Dir("memory", "vm")));
  EXPECT_THAT((*cg)->Remove("vm"), IsOk());
  EXPECT_FALSE(PathExists(V1Dir("memory", "vm")));
  EXPECT_FALSE(PathExists(V1Dir("pids", "vm")));
  EXPECT_THAT((*cg)->Remove("vm"), IsOk());
}

TEST_F(VmCgroupsFakeTest, ListVmGroups) {
  MakeV1({"memory", "pids"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_THAT((*cg)->ListVmGroups(), IsEmpty());
  ASSERT_THAT(MakeDirs(V1Dir("memory", "vm-b")), IsOk());
  ASSERT_THAT(MakeDirs(V1Dir("memory", "vm-a")), IsOk());
  ASSERT_THAT(MakeDirs(V1Dir("pids", "vm-a")), IsOk());
  ASSERT_THAT(MakeDirs(V1Dir("pids", "vm-c")), IsOk());  // Half-removed VM.
  ASSERT_THAT(MakeDirs(V1Dir("pids", "not a vm")), IsOk());
  Put(V1Dir("memory", "cgroup.procs"), "");  // Control files are no VMs.
  EXPECT_THAT((*cg)->ListVmGroups(), ElementsAre("vm-a", "vm-b", "vm-c"));
}

TEST_F(VmCgroupsFakeTest, OomKillsV1) {
  MakeV1({"memory"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  EXPECT_THAT((*cg)->OomKills("vm"), StatusIs(absl::StatusCode::kNotFound));
  Put(V1Dir("memory", "vm") + "/memory.oom_control",
      "oom_kill_disable 0\nunder_oom 1\noom_kill 3\n");
  auto kills = (*cg)->OomKills("vm");
  ASSERT_THAT(kills, IsOk());
  EXPECT_EQ(*kills, 3u);
  // Kernels before 4.13 have no oom_kill line.
  Put(V1Dir("memory", "vm") + "/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\n");
  kills = (*cg)->OomKills("vm");
  ASSERT_THAT(kills, IsOk());
  EXPECT_EQ(*kills, 0u);
}

TEST_F(VmCgroupsFakeTest, MemoryLimitIsTheSmallestUpTheTree) {
  MakeV1({"memory"});
  auto cg = VmCgroups::Open(root_, "smolvm");
  ASSERT_THAT(cg, IsOk());
  const std::string unlimited = "9223372036854771712\n";
  Put(root_ + "/memory/memory.limit_in_bytes", unlimited);
  Put(root_ + "/memory/smolvm/memory.limit_in_bytes", unlimited);
  Put(V1Dir("memory", "vm") + "/memory.limit_in_bytes", unlimited);
  auto limit = (*cg)->MemoryLimit("vm");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, VmCgroups::kNoLimit);
  Put(root_ + "/memory/smolvm/memory.limit_in_bytes", "1073741824\n");
  limit = (*cg)->MemoryLimit("vm");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, 1073741824u);
  Put(V1Dir("memory", "vm") + "/memory.limit_in_bytes", "268435456\n");
  limit = (*cg)->MemoryLimit("vm");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, 268435456u);
  EXPECT_THAT((*cg)->MemoryLimit("other"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(VmCgroupsFakeTest, JoinFromChildWritesZeroToEach) {
  Put(root_ + "/a/cgroup.procs", "");
  Put(root_ + "/b/cgroup.procs", "");
  EXPECT_EQ(VmCgroups::JoinFromChild({root_ + "/a/cgroup.procs", root_ + "/b/cgroup.procs"}), 0);
  EXPECT_EQ(Get(root_ + "/a/cgroup.procs"), "0");
  EXPECT_EQ(Get(root_ + "/b/cgroup.procs"), "0");
  EXPECT_EQ(VmCgroups::JoinFromChild({root_ + "/missing/cgroup.procs"}), ENOENT);
}

// --- v2 ---

class VmCgroupsV2FakeTest : public VmCgroupsFakeTest {
 protected:
  void SetUp() override {
    Put(root_ + "/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
    Put(root_ + "/cgroup.subtree_control", "cpu io memory pids\n");
  }
  // A FIFO stands in for a control file written several times, so that
  // every write can be read back (a regular file keeps only the last).
  // Returns the read end, held open so that writers never block.
  UniqueFd MakeRecorder(const std::string& path) {
    unlink(path.c_str());
    EXPECT_EQ(mkfifo(path.c_str(), 0600), 0) << path << ": " << strerror(errno);
    return UniqueFd(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  }
  static std::string Drain(const UniqueFd& fd) {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = read(fd.get(), buf, sizeof(buf))) > 0) out.append(buf, n);
    return out;
  }
};

TEST_F(VmCgroupsV2FakeTest, ExplicitParentWritesExactLimits) {
  std::string parent = root_ + "/smolvm.slice";
  Put(parent + "/cgroup.controllers", "cpuset cpu io memory pids\n");
  UniqueFd enabled = MakeRecorder(parent + "/cgroup.subtree_control");
  ASSERT_TRUE(enabled.valid());
  auto cg = VmCgroups::Open(root_, "smolvm.slice");
  ASSERT_THAT(cg, IsOk());
  EXPECT_EQ((*cg)->version(), "v2");
  EXPECT_EQ((*cg)->Describe(), "cgroup v2 under " + parent + " (memory,cpu,pids,io)");
  EXPECT_EQ(Drain(enabled), "+memory+cpu+pids+io");

  PutV2Group(parent + "/vm-1");
  auto created = (*cg)->Create("vm-1", {512 * kMiB, 250, 64, 300});
  ASSERT_THAT(created, IsOk());
  EXPECT_THAT(created->procs_files, ElementsAre(parent + "/vm-1/cgroup.procs"));
  EXPECT_THAT(created->warnings, IsEmpty());
  EXPECT_EQ(Get(parent + "/vm-1/memory.max"), "536870912");
  EXPECT_EQ(Get(parent + "/vm-1/memory.swap.max"), "0");
  EXPECT_EQ(Get(parent + "/vm-1/memory.oom.group"), "1");
  EXPECT_EQ(Get(parent + "/vm-1/cpu.max"), "250000 100000");
  EXPECT_EQ(Get(parent + "/vm-1/pids.max"), "64");
  EXPECT_EQ(Get(parent + "/vm-1/io.weight"), "default 300");

  // Reused with no limits: lifted, except the io weight (left as it was).
  ASSERT_THAT((*cg)->Create("vm-1", {}), IsOk());
  EXPECT_EQ(Get(parent + "/vm-1/memory.max"), "max");
  EXPECT_EQ(Get(parent + "/vm-1/memory.swap.max"), "0");
  EXPECT_EQ(Get(parent + "/vm-1/cpu.max"), "max 100000");
  EXPECT_EQ(Get(parent + "/vm-1/pids.max"), "max");
  EXPECT_EQ(Get(parent + "/vm-1/io.weight"), "default 300");

  Put(parent + "/vm-1/memory.events",
      "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 7\n");
  auto kills = (*cg)->OomKills("vm-1");
  ASSERT_THAT(kills, IsOk());
  EXPECT_EQ(*kills, 2u);
  EXPECT_THAT((*cg)->ListVmGroups(), ElementsAre("vm-1"));
}

TEST_F(VmCgroupsV2FakeTest, AutoParentMovesTheDaemonAndEnablesControllers) {
  std::string own = root_ + "/system.slice/smolvmd.service";
  Put(own + "/cgroup.controllers", "cpu memory pids\n");  // No io delegated.
  Put(own + "/cgroup.procs", "4242\n");
  UniqueFd own_enabled = MakeRecorder(own + "/cgroup.subtree_control");
  ASSERT_TRUE(own_enabled.valid());
  Put(own + "/daemon/cgroup.procs", "");
  Put(own + "/vms/cgroup.controllers", "cpu memory pids\n");
  Put(own + "/vms/cgroup.subtree_control", "");
  std::string self = temp_.Join("self-cgroup");
  Put(self, "4:memory:/system.slice/smolvmd.service\n0::/system.slice/smolvmd.service\n");

  auto cg = VmCgroups::Open(root_, "", self);
  ASSERT_THAT(cg, IsOk());
  EXPECT_EQ(Get(own + "/daemon/cgroup.procs"), "0");
  EXPECT_EQ(Drain(own_enabled), "+memory+cpu+pids");
  EXPECT_EQ(Get(own + "/vms/cgroup.subtree_control"), "+pids");  // The last of three writes.
  EXPECT_EQ((*cg)->Describe(), "cgroup v2 under " + own + "/vms (memory,cpu,pids; unavailable: "
                               "io; smolvmd itself in " + own + "/daemon)");

  PutV2Group(own + "/vms/vm-1");
  unlink((own + "/vms/vm-1/io.weight").c_str());
  auto created = (*cg)->Create("vm-1", {256 * kMiB, 100, 32, 500});
  ASSERT_THAT(created, IsOk());
  EXPECT_THAT(created->procs_files, ElementsAre(own + "/vms/vm-1/cgroup.procs"));
  ASSERT_THAT(created->warnings, SizeIs(1));
  EXPECT_THAT(created->warnings[0], HasSubstr(own + "/vms/vm-1/io.weight is missing"));
  EXPECT_EQ(Get(own + "/vms/vm-1/memory.max"), "268435456");
  EXPECT_EQ(Get(own + "/vms/vm-1/cpu.max"), "100000 100000");

  // A daemon that already sits in <own>/daemon manages the same tree.
  Put(self, "0::/system.slice/smolvmd.service/daemon\n");
  auto again = VmCgroups::Open(root_, "", self);
  ASSERT_THAT(again, IsOk());
  EXPECT_THAT((*again)->ListVmGroups(), ElementsAre("vm-1"));
  EXPECT_FALSE(PathExists(own + "/daemon/daemon"));
}

TEST_F(VmCgroupsV2FakeTest, AutoParentNeedsADelegatedCgroup) {
  std::string self = temp_.Join("self-cgroup");
  Put(self, "0::/\n");
  EXPECT_THAT(VmCgroups::Open(root_, "", self),
              StatusIs(absl::StatusCode::kFailedPrecondition, "Delegate=yes"));
  Put(self, "4:memory:/\n1:name=systemd:/\n");
  EXPECT_THAT(VmCgroups::Open(root_, "", self),
              StatusIs(absl::StatusCode::kFailedPrecondition, "no cgroup v2 line"));
  EXPECT_THAT(VmCgroups::Open(root_, "", temp_.Join("missing")),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(VmCgroupsV2FakeTest, MissingMemoryMaxIsFailedPrecondition) {
  Put(root_ + "/p/cgroup.controllers", "cpu pids\n");
  Put(root_ + "/p/cgroup.subtree_control", "");
  auto cg = VmCgroups::Open(root_, "p");
  ASSERT_THAT(cg, IsOk());
  EXPECT_THAT((*cg)->Describe(), HasSubstr("unavailable: memory,io"));
  // A fresh group (mkdir gives an empty directory in a fake tree).
  auto created = (*cg)->Create("vm", {64 * kMiB, 0, 0, 0});
  EXPECT_THAT(created, StatusIs(absl::StatusCode::kFailedPrecondition,
                                root_ + "/p/vm/memory.max is missing"));
  EXPECT_THAT(created, StatusIs(absl::StatusCode::kFailedPrecondition,
                                root_ + "/p/cgroup.subtree_control"));
  EXPECT_FALSE(PathExists(root_ + "/p/vm"));

  // pids is required too; cpu is optional.
  Put(root_ + "/p/vm/memory.max", "max\n");
  EXPECT_THAT((*cg)->Create("vm", {64 * kMiB, 0, 8, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition, root_ + "/p/vm/pids.max"));
  auto ok = (*cg)->Create("vm", {64 * kMiB, 50, 0, 0});
  ASSERT_THAT(ok, IsOk());
  ASSERT_THAT(ok->warnings, SizeIs(1));
  EXPECT_THAT(ok->warnings[0], HasSubstr("cpu limit 50% not applied"));
}

TEST_F(VmCgroupsV2FakeTest, VmIdNamingAControlFileIsNoGroup) {
  Put(root_ + "/p/cgroup.controllers", "memory pids\n");
  Put(root_ + "/p/cgroup.subtree_control", "");
  auto cg = VmCgroups::Open(root_, "p");
  ASSERT_THAT(cg, IsOk());
  Put(root_ + "/p/memory.max", "1234\n");  // The parent's own control file.
  EXPECT_THAT((*cg)->Create("memory.max", {kMiB, 0, 0, 0}),
              StatusIs(absl::StatusCode::kFailedPrecondition, "not a cgroup directory"));
  EXPECT_EQ(Get(root_ + "/p/memory.max"), "1234\n");
  EXPECT_THAT((*cg)->ListVmGroups(), IsEmpty());
}

TEST_F(VmCgroupsV2FakeTest, MemoryLimitReadsMax) {
  Put(root_ + "/p/cgroup.controllers", "memory pids\n");
  Put(root_ + "/p/cgroup.subtree_control", "");
  Put(root_ + "/p/memory.max", "max\n");
  auto cg = VmCgroups::Open(root_, "p");
  ASSERT_THAT(cg, IsOk());
  Put(root_ + "/p/vm/memory.max", "max\n");
  auto limit = (*cg)->MemoryLimit("vm");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, VmCgroups::kNoLimit);
  Put(root_ + "/p/memory.max", "2147483648\n");
  limit = (*cg)->MemoryLimit("vm");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, 2147483648u);
}

// --- The real v1 hierarchy of this machine (root only) ---
//
// Each test makes /sys/fs/cgroup/<controller>/smolvm-test-<pid>, forks a
// child that joins the VM group the way a VMM launcher does, and removes
// everything again also when an assertion fails (the Janitor).

constexpr char kRealRoot[] = "/sys/fs/cgroup";

// rmdir with retries while the kernel finishes exiting tasks.
void RmdirPatiently(const std::string& dir) {
  for (int i = 0; i < 100; ++i) {
    if (rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (errno != EBUSY) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ADD_FAILURE() << "cannot remove test cgroup " << dir << ": " << strerror(errno);
}

class Janitor {
 public:
  explicit Janitor(std::string parent) : parent_(std::move(parent)) {}
  ~Janitor() {
    for (pid_t pid : children_) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    for (const char* mount : {"memory", "cpu", "cpu,cpuacct", "pids", "blkio"}) {
      std::string dir = absl::StrCat(kRealRoot, "/", mount, "/", parent_);
      std::error_code ec;
      if (!std::filesystem::is_directory(dir, ec)) continue;
      for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
        if (entry.is_directory(ec)) RmdirPatiently(entry.path());
      }
      RmdirPatiently(dir);
    }
  }
  void Adopt(pid_t pid) { children_.push_back(pid); }
  // The child has been reaped.
  void Release(pid_t pid) {
    children_.erase(std::remove(children_.begin(), children_.end(), pid), children_.end());
  }

 private:
  std::string parent_;
  std::vector<pid_t> children_;
};

class VmCgroupsRealV1Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to create cgroups";
    if (!PathExists(absl::StrCat(kRealRoot, "/memory/cgroup.procs"))) {
      GTEST_SKIP() << "no cgroup v1 memory hierarchy at " << kRealRoot
                   << "/memory (a v2 host); covered by the fake-tree tests";
    }
    auto cg = VmCgroups::Open(kRealRoot, parent_);
    ASSERT_THAT(cg, IsOk());
    cg_ = *std::move(cg);
    std::cout << cg_->Describe() << "\n";
  }

  // "<n>:<controllers>:/<parent>/<vm>\n" appears once per joined hierarchy.
  std::string GroupSuffix(const std::string& vm) const {
    return absl::StrCat(":/", parent_, "/", vm, "\n");
  }

  // pid-unique, so parallel runs and leftovers of a crashed run never clash.
  std::string parent_ = absl::StrCat("smolvm-test-", getpid());
  Janitor janitor_{parent_};
  std::unique_ptr<VmCgroups> cg_;
};

// In the child after fork: only async-signal-safe calls, then _exit.
// Joins the groups and checks /proc/self/cgroup names the group in each.
void JoinOrExit(const std::vector<std::string>& procs_files, const char* suffix) {
  if (VmCgroups::JoinFromChild(procs_files) != 0) _exit(10);
  char buf[8192];
  int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
  if (n <= 0) _exit(11);
  size_t found = 0, suffix_len = strlen(suffix);
  for (char* p = buf; (p = static_cast<char*>(memmem(p, buf + n - p, suffix, suffix_len)));
       p += suffix_len) {
    ++found;
  }
  if (found != procs_files.size()) _exit(12);
}

std::string DescribeExit(int status) {
  if (WIFSIGNALED(status)) return absl::StrCat("killed by signal ", WTERMSIG(status));
  const int code = WEXITSTATUS(status);
  const char* why = code == 0    ? "finished without being killed"
                    : code == 10 ? "could not join the cgroups"
                    : code == 11 ? "could not read /proc/self/cgroup"
                    : code == 12 ? "/proc/self/cgroup does not name the group"
                    : code < 20  ? "could not set up its private tmpfs"
                                 : "a write failed (errno sent on the pipe)";
  return absl::StrCat("exited with ", code, ": ", why);
}

TEST_F(VmCgroupsRealV1Test, TmpfsPagesAreChargedAndOomKill) {
  auto created = cg_->Create("oom", {64 * kMiB, 50, 16, 100});
  ASSERT_THAT(created, IsOk());
  for (const auto& w : created->warnings) std::cout << "warning: " << w << "\n";
  const std::string memory_dir = absl::StrCat(kRealRoot, "/memory/", parent_, "/oom");
  EXPECT_EQ(Get(memory_dir + "/memory.limit_in_bytes"), "67108864\n");
  EXPECT_EQ(Get(absl::StrCat(kRealRoot, "/pids/", parent_, "/oom/pids.max")), "16\n");
  auto limit = cg_->MemoryLimit("oom");
  ASSERT_THAT(limit, IsOk());
  EXPECT_EQ(*limit, 64 * kMiB);

  // The child mounts a tmpfs in a mount namespace of its own: when it dies
  // the namespace, the tmpfs and every page in it go away with it, so no
  // file is left behind even if this test crashes.
  smolvm_testing::TempDir mount_point("smolvm-cg-tmpfs");
  const std::string fill = mount_point.Join("fill");
  const std::string suffix = GroupSuffix("oom");
  int progress[2];
  ASSERT_EQ(pipe2(progress, O_CLOEXEC), 0);
  UniqueFd progress_read(progress[0]), progress_write(progress[1]);

  pid_t pid = fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) {
    JoinOrExit(created->procs_files, suffix.c_str());
    if (unshare(CLONE_NEWNS) != 0) _exit(13);
    if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) _exit(14);
    if (mount("smolvm-test", mount_point.path().c_str(), "tmpfs", 0, "size=256m") != 0) {
      _exit(15);
    }
    int fd = open(fill.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) _exit(16);
    static char chunk[64 << 10];
    memset(chunk, 'x', sizeof(chunk));
    for (int32_t mib = 1; mib <= 128; ++mib) {
      for (size_t done = 0; done < kMiB; done += sizeof(chunk)) {
        if (write(fd, chunk, sizeof(chunk)) != static_cast<ssize_t>(sizeof(chunk))) {
          int32_t err = -errno;
          (void)!write(progress[1], &err, sizeof(err));
          _exit(20);
        }
      }
      (void)!write(progress[1], &mib, sizeof(mib));
    }
    _exit(0);
  }
  janitor_.Adopt(pid);
  progress_write.Reset();

  int32_t last = 0, value;
  while (read(progress_read.get(), &value, sizeof(value)) == sizeof(value)) last = value;
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  janitor_.Release(pid);

  auto kills = cg_->OomKills("oom");
  ASSERT_THAT(kills, IsOk());
  std::cout << "child " << DescribeExit(status) << "; last progress "
            << (last < 0 ? absl::StrCat("write error ", strerror(-last))
                         : absl::StrCat(last, " MiB written"))
            << "; oom_kill " << *kills << "; max_usage_in_bytes "
            << Get(memory_dir + "/memory.max_usage_in_bytes").substr(0, 20)
            << "; failcnt " << Get(memory_dir + "/memory.failcnt").substr(0, 20) << "\n";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeExit(status);
  EXPECT_GE(*kills, 1u);
  EXPECT_GE(last, 32) << "the tmpfs pages were charged long before the limit";
  EXPECT_LT(last, 64) << "more than the limit was written before the kill";

  // The dead namespace frees the tmpfs and uncharges its pages (maybe a
  // moment later: the final unmount runs after the task is reaped). Some
  // kernel objects and per-CPU charge caches may stay charged: allow 8 MiB.
  uint64_t usage = 0;
  for (int i = 0; i < 100; ++i) {
    usage = std::stoull(Get(memory_dir + "/memory.usage_in_bytes"));
    if (usage < 8 * kMiB) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::cout << "memory.usage_in_bytes after the child died: " << usage << "\n";
  EXPECT_LT(usage, 8 * kMiB);

  EXPECT_THAT(cg_->Remove("oom"), IsOk());
  EXPECT_FALSE(PathExists(memory_dir));
  EXPECT_THAT(cg_->ListVmGroups(), IsEmpty());
}

TEST_F(VmCgroupsRealV1Test, PidsMaxStopsForks) {
  if (!PathExists(absl::StrCat(kRealRoot, "/pids/cgroup.procs"))) {
    GTEST_SKIP() << "no v1 pids hierarchy";
  }
  auto created = cg_->Create("pids", {0, 0, 4, 0});
  ASSERT_THAT(created, IsOk());
  const std::string suffix = GroupSuffix("pids");
  int result[2], hold[2];
  ASSERT_EQ(pipe2(result, O_CLOEXEC), 0);
  UniqueFd result_read(result[0]), result_write(result[1]);
  ASSERT_EQ(pipe2(hold, O_CLOEXEC), 0);
  UniqueFd hold_read(hold[0]), hold_write(hold[1]);

  pid_t pid = fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) {
    JoinOrExit(created->procs_files, suffix.c_str());
    int32_t forked = 0, err = 0;
    for (int i = 0; i < 10; ++i) {
      pid_t g = fork();
      if (g == 0) {
        // Waits until its parent closes the hold pipe (or dies); the alarm
        // ends it even if something goes wrong.
        close(hold[1]);
        alarm(20);
        char c;
        (void)!read(hold[0], &c, 1);
        _exit(0);
      }
      if (g < 0) {
        err = errno;
        break;
      }
      ++forked;
    }
    close(hold[1]);
    while (wait(nullptr) > 0) {
    }
    int32_t report[2] = {forked, err};
    (void)!write(result[1], report, sizeof(report));
    _exit(0);
  }
  janitor_.Adopt(pid);
  result_write.Reset();
  hold_write.Reset();

  int32_t report[2] = {-1, -1};
  ssize_t n = read(result_read.get(), report, sizeof(report));
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  janitor_.Release(pid);
  ASSERT_EQ(n, static_cast<ssize_t>(sizeof(report))) << DescribeExit(status);
  std::cout << "forks before the limit: " << report[0] << ", then " << strerror(report[1])
            << "\n";
  EXPECT_EQ(report[0], 3) << "the child itself is the 4th task";
  EXPECT_EQ(report[1], EAGAIN);
  EXPECT_THAT(cg_->Remove("pids"), IsOk());
}

}  // namespace
}  // namespace smolvm::vmm
