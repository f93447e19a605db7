// Snapshot integrity on a real guest (issue 8, item 7): checksums recorded
// at creation are verified before a restore; a flipped byte in mem.bin,
// vmstate.bin or disk.ext4, a truncated file and a manifest of another
// snapshot are refused with DATA_LOSS naming the file, leaving nothing
// behind; an unchanged snapshot is not hashed again on its next restore;
// VerifySnapshot (library and smolvmctl) reports the same; a snapshot from
// before checksums (legacy) still restores.
//
// One cold boot (192 MiB, 1 vCPU) and two snapshots of it for the whole file.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

constexpr char kSnap[] = "integ-a";
constexpr char kOther[] = "integ-b";

char ReadByte(const std::string& path, off_t offset) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  char c = 0;
  EXPECT_GE(fd, 0) << path;
  EXPECT_EQ(pread(fd, &c, 1, offset), 1) << path;
  close(fd);
  return c;
}

void WriteByte(const std::string& path, off_t offset, char c) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, &c, 1, offset), 1) << path;
  close(fd);
}

off_t SizeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return st.st_size;
}

void WriteWhole(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  close(fd);
}

// Lines of the daemon log that contain `needle`.
int CountLines(const TestDaemon& daemon, const std::string& needle) {
  int n = 0;
  for (absl::string_view line : absl::StrSplit(daemon.DaemonLog(), '\n')) {
    if (absl::StrContains(line, needle)) ++n;
  }
  return n;
}

class SnapshotIntegrityTest : public ::testing::Test {
 protected:
  // A restore that must be refused with DATA_LOSS mentioning `needle`,
  // starting nothing and leaving no trace.
  void ExpectRefused(const std::string& vm_id, const std::string& needle,
                     const std::string& what) {
    SCOPED_TRACE(what);
    HostPicture before = Picture(daemon_);
    auto restored = SmolVM::from_snapshot(kSnap, /*resume_vm=*/true, vm_id, opts_);
    EXPECT_EQ(restored.status().code(), absl::StatusCode::kDataLoss) << restored.status();
    EXPECT_TRUE(absl::StrContains(restored.status().message(), needle)) << restored.status();
    EXPECT_EQ(Diff(before, Picture(daemon_)), "") << "a refused restore left something";
    EXPECT_EQ(SmolVMManager(opts_).get_vm(vm_id).status().code(), absl::StatusCode::kNotFound);
  }

  std::string SnapFile(const std::string& snapshot_id, const std::string& name) const {
    return daemon_.state_dir() + "/snapshots/" + snapshot_id + "/" + name;
  }

  TestDaemon daemon_;
  ClientOptions opts_;
};

TEST_F(SnapshotIntegrityTest, CorruptionIsRefusedAndVerifiedSnapshotsRestoreForFree) {
  ASSERT_TRUE(daemon_.Start().ok()) << daemon_.DaemonLog();
  opts_ = daemon_.client_options();
  SmolVMManager manager(opts_);

  v1::VMConfig config;
  config.set_vm_id("integ-src");
  config.set_memory_mib(192);
  config.set_vcpu_count(1);
  SmolVM vm(config, opts_);
  ASSERT_TRUE(vm.start().ok()) << daemon_.DaemonLog();
  auto snap = vm.snapshot(kSnap, /*resume_source=*/true);
  ASSERT_TRUE(snap.ok()) << snap.status();
  // The daemon measured the checksums as part of the snapshot.
  EXPECT_EQ(CountLines(daemon_, absl::StrCat("snapshot ", kSnap, ": created from vm integ-src")),
            1);
  EXPECT_TRUE(absl::StrContains(daemon_.DaemonLog(), "checksums ")) << daemon_.DaemonLog();
  auto other = vm.snapshot(kOther);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE(vm.close().ok());
  ASSERT_TRUE(daemon_.QemuPids().empty());

  // The manifest carries the checksums.
  auto manifest = nlohmann::json::parse(ReadAll(SnapFile(kSnap, "manifest.json")));
  ASSERT_TRUE(manifest.contains("checksums")) << manifest.dump();
  for (const char* key : {"vmstate", "mem", "disk"}) {
    EXPECT_TRUE(absl::StartsWith(manifest["checksums"][key].get<std::string>(), "xxh3-128:"))
        << key;
  }
  const std::string verified_line = absl::StrCat("snapshot ", kSnap, ": verified 3 files in");
  EXPECT_EQ(CountLines(daemon_, verified_line), 0) << "created snapshots are not re-hashed";

  // --- A flipped byte in each file: refused, by restore and by verify.
  int n = 0;
  for (const char* name : {"mem.bin", "vmstate.bin", "disk.ext4"}) {
    const std::string path = SnapFile(kSnap, name);
    const off_t offset = SizeOf(path) / 2;
    const char original = ReadByte(path, offset);
    WriteByte(path, offset, static_cast<char>(original ^ 0x5a));
    ExpectRefused(absl::StrCat("bad-", ++n), path + " is corrupt", name);
    auto verified = manager.verify_snapshot(kSnap);
    EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss) << verified.status();
    EXPECT_TRUE(absl::StrContains(verified.status().message(), path)) << verified.status();
    // Put it back, so that the next case starts from a clean snapshot.
    WriteByte(path, offset, original);
  }

  // --- A truncated file: the size check names it.
  {
    const std::string path = SnapFile(kSnap, "vmstate.bin");
    const off_t size = SizeOf(path);
    const char last = ReadByte(path, size - 1);
    ASSERT_EQ(truncate(path.c_str(), size - 1), 0);
    ExpectRefused("bad-trunc", path, "truncated vmstate.bin");
    WriteByte(path, size - 1, last);  // pwrite past the end grows it back.
    ASSERT_EQ(SizeOf(path), size);
  }

  // --- The manifest of another snapshot.
  {
    const std::string path = SnapFile(kSnap, "manifest.json");
    const std::string mine = ReadAll(path);
    WriteWhole(path, ReadAll(SnapFile(kOther, "manifest.json")));
    ExpectRefused("bad-manifest", path + ": snapshot_id is \"integ-b\"", "foreign manifest");
    WriteWhole(path, mine);
  }
  EXPECT_EQ(CountLines(daemon_, verified_line), 0) << "refusals record no verification";

  // --- The untouched snapshot restores; its files changed (ctime) since
  // their last verification, so the first restore hashes them, the second
  // does not.
  auto ok1 = SmolVM::from_snapshot(kSnap, /*resume_vm=*/true, "ok-1", opts_);
  ASSERT_TRUE(ok1.ok()) << ok1.status() << daemon_.DaemonLog();
  EXPECT_EQ(ok1->status(), v1::RUNNING);
  EXPECT_EQ(CountLines(daemon_, verified_line), 1) << daemon_.DaemonLog();
  auto ok2 = SmolVM::from_snapshot(kSnap, /*resume_vm=*/false, "ok-2", opts_);
  ASSERT_TRUE(ok2.ok()) << ok2.status() << daemon_.DaemonLog();
  EXPECT_EQ(ok2->status(), v1::PAUSED);
  EXPECT_EQ(CountLines(daemon_, verified_line), 1) << "the second restore hashed again";
  ASSERT_TRUE(ok1->close().ok());
  ASSERT_TRUE(ok2->close().ok());

  // --- VerifySnapshot always hashes, and reports each file.
  auto verified = manager.verify_snapshot(kSnap);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_TRUE(verified->ok());
  EXPECT_FALSE(verified->legacy());
  EXPECT_EQ(verified->snapshot_id(), kSnap);
  ASSERT_EQ(verified->files_size(), 3);
  EXPECT_EQ(verified->files(0).name(), "vmstate.bin");
  EXPECT_EQ(verified->files(1).name(), "mem.bin");
  EXPECT_EQ(verified->files(2).name(), "disk.ext4");
  for (const v1::FileCheck& f : verified->files()) {
    EXPECT_TRUE(f.ok()) << f.name();
    EXPECT_EQ(f.actual(), f.expected()) << f.name();
    EXPECT_EQ(f.expected(), manifest["checksums"][f.name() == "vmstate.bin" ? "vmstate"
                                                  : f.name() == "mem.bin"   ? "mem"
                                                                            : "disk"]
                                .get<std::string>());
  }
  EXPECT_EQ(CountLines(daemon_, verified_line), 2);

  ProcResult ctl = daemon_.Ctl({"snapshot", "verify", kSnap});
  ASSERT_EQ(ctl.exit_code, 0) << ctl.err;
  nlohmann::json out = Json(ctl.out);
  EXPECT_EQ(out["ok"], true) << ctl.out;
  EXPECT_EQ(out["files"].size(), 3u) << ctl.out;

  {
    const std::string path = SnapFile(kSnap, "disk.ext4");
    const off_t offset = 4096 + 17;
    const char original = ReadByte(path, offset);
    WriteByte(path, offset, static_cast<char>(original ^ 0x01));
    ctl = daemon_.Ctl({"snapshot", "verify", kSnap});
    EXPECT_TRUE(FailedWith(ctl, kExitOther, path + " is corrupt")) << ctl.exit_code << ctl.err;
    WriteByte(path, offset, original);
  }
  ctl = daemon_.Ctl({"snapshot", "verify", kSnap});
  EXPECT_EQ(ctl.exit_code, 0) << ctl.err;

  // --- A fresh snapshot was verified when it was taken: its first restore
  // hashes nothing either.
  {
    auto fresh = SmolVM::from_snapshot(kOther, /*resume_vm=*/false, "fresh-1", opts_);
    ASSERT_TRUE(fresh.ok()) << fresh.status() << daemon_.DaemonLog();
    EXPECT_EQ(CountLines(daemon_, "snapshot integ-b: verified"), 0);
    ASSERT_TRUE(fresh->close().ok());
  }

  // --- A snapshot from before checksums (row and manifest without them):
  // restored unverified, reported as legacy.
  daemon_.Stop();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((daemon_.state_dir() + "/smolvmd.db").c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db,
                           "UPDATE snapshots SET integrity = '{}' "
                           "WHERE snapshot_id = 'integ-b'",
                           nullptr, nullptr, &error),
              SQLITE_OK)
        << (error ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
    const std::string path = SnapFile(kOther, "manifest.json");
    auto legacy_manifest = nlohmann::json::parse(ReadAll(path));
    legacy_manifest.erase("checksums");
    WriteWhole(path, legacy_manifest.dump(2));
  }
  ASSERT_TRUE(daemon_.Start().ok()) << daemon_.DaemonLog();
  auto legacy = SmolVM::from_snapshot(kOther, /*resume_vm=*/false, "legacy-1", opts_);
  ASSERT_TRUE(legacy.ok()) << legacy.status() << daemon_.DaemonLog();
  EXPECT_EQ(CountLines(daemon_, "snapshot integ-b: taken before checksums were recorded"), 1);
  ASSERT_TRUE(legacy->close().ok());
  auto legacy_verified = manager.verify_snapshot(kOther);
  ASSERT_TRUE(legacy_verified.ok()) << legacy_verified.status();
  EXPECT_TRUE(legacy_verified->legacy());
  EXPECT_FALSE(legacy_verified->ok());
  ctl = daemon_.Ctl({"snapshot", "verify", kOther});
  EXPECT_TRUE(FailedWith(ctl, kExitOther, "cannot be verified")) << ctl.exit_code << ctl.err;
  EXPECT_TRUE(daemon_.QemuPids().empty());
}

}  // namespace
}  // namespace smolvm::testing
