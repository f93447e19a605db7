#include "lib/snapshot/snapshot_files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "lib/base/file_util.h"
#include "lib/snapshot/state_files.h"
#include "nlohmann/json.hpp"
#include "tests/testing/status_matchers.h"

namespace smolvm::snapshot {
namespace {

using ::nlohmann::json;
using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

class SnapshotFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = PathsIn(JoinPath(root_, std::string(kTempPrefix) + "snap-0badc0de"));
    final_dir_ = JoinPath(root_, "snap-0badc0de");
    ASSERT_THAT(MakeDirs(tmp_.dir), IsOk());
    ASSERT_THAT(WriteFileAtomic(tmp_.vmstate, std::string(1000, 's')), IsOk());
    ASSERT_THAT(WriteFileAtomic(tmp_.mem, std::string(4096, 'm')), IsOk());
    ASSERT_THAT(WriteFileAtomic(tmp_.disk, std::string(3333, 'd')), IsOk());
  }

  static Manifest SampleManifest() {
    Manifest m;
    m.snapshot_id = "snap-0badc0de";
    m.vm_id = "vm-3f2a9c01";
    m.vmm = "qemu";
    m.vmm_version = "QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)";
    m.accelerator = "tcg";
    m.memory_mib = 512;
    m.ram_in_vmstate = true;
    // Deliberately wrong: WriteManifest fills the sizes from the files.
    m.vmstate_bytes = 1;
    m.mem_bytes = 2;
    m.disk_bytes = 3;
    return m;
  }

  // Rewrites the manifest with `edit` applied to its JSON.
  template <typename Edit>
  void EditManifest(Edit edit) {
    auto text = ReadFileToString(tmp_.manifest);
    ASSERT_THAT(text, IsOk());
    json j = json::parse(*text);
    edit(j);
    ASSERT_THAT(WriteFileAtomic(tmp_.manifest, j.dump()), IsOk());
  }

  smolvm_testing::TempDir temp_{"smolvm-snapshot-test"};

  std::string root_ = temp_.path();
  SnapshotPaths tmp_;
  std::string final_dir_;
};

TEST(PathsInTest, NamesTheFourFiles) {
  SnapshotPaths p = PathsIn("/s/snap-1");
  EXPECT_EQ(p.dir, "/s/snap-1");
  EXPECT_EQ(p.vmstate, "/s/snap-1/vmstate.bin");
  EXPECT_EQ(p.mem, "/s/snap-1/mem.bin");
  EXPECT_EQ(p.disk, "/s/snap-1/disk.ext4");
  EXPECT_EQ(p.manifest, "/s/snap-1/manifest.json");
}

TEST_F(SnapshotFilesTest, WriteManifestThenReadAndVerifyRoundTrips) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  auto m = ReadAndVerify(tmp_);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->format_version, kFormatVersion);
  EXPECT_EQ(m->snapshot_id, "snap-0badc0de");
  EXPECT_EQ(m->vm_id, "vm-3f2a9c01");
  EXPECT_EQ(m->vmm, "qemu");
  EXPECT_EQ(m->vmm_version, "QEMU emulator version 7.2.0 (Debian 1:7.2+dfsg-7)");
  EXPECT_EQ(m->accelerator, "tcg");
  EXPECT_EQ(m->memory_mib, 512u);
  EXPECT_TRUE(m->ram_in_vmstate);
  EXPECT_EQ(m->vmstate_bytes, 1000u);
  EXPECT_EQ(m->mem_bytes, 4096u);
  EXPECT_EQ(m->disk_bytes, 3333u);
  // Written atomically: nothing but the four files in the directory.
  EXPECT_FALSE(PathExists(tmp_.manifest + ".tmp." + std::to_string(getpid())));
}

TEST_F(SnapshotFilesTest, ChecksumsRoundTripThroughTheManifest) {
  auto sums = ChecksumFiles(tmp_);
  ASSERT_THAT(sums, IsOk());
  Manifest written = SampleManifest();
  written.checksums = sums->checksums;
  ASSERT_THAT(WriteManifest(tmp_, written), IsOk());
  auto m = ReadAndVerify(tmp_);
  ASSERT_THAT(m, IsOk());
  ASSERT_TRUE(m->checksums.has_value());
  EXPECT_EQ(*m->checksums, sums->checksums);
  EXPECT_NE(m->checksums->vmstate, m->checksums->mem);
  EXPECT_EQ(sums->bytes_read, 1000u + 4096u + 3333u);
  auto stamps = StampFiles(tmp_);
  ASSERT_THAT(stamps, IsOk());
  EXPECT_EQ(*stamps, sums->stamps);
}

TEST_F(SnapshotFilesTest, ManifestWithoutChecksumsIsLegacy) {
  // SampleManifest has none, as manifests written before checksums existed.
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  auto text = ReadFileToString(tmp_.manifest);
  ASSERT_THAT(text, IsOk());
  EXPECT_FALSE(json::parse(*text).contains("checksums"));
  auto m = ReadAndVerify(tmp_);
  ASSERT_THAT(m, IsOk());
  EXPECT_FALSE(m->checksums.has_value());
}

TEST_F(SnapshotFilesTest, MalformedChecksumsAreDataLoss) {
  Manifest written = SampleManifest();
  written.checksums = SnapshotChecksums{"xxh3-128:00000000000000000000000000000000",
                                        "xxh3-128:00000000000000000000000000000000",
                                        "xxh3-128:00000000000000000000000000000000"};
  for (auto edit : std::vector<void (*)(json&)>{
           [](json& j) { j["checksums"].erase("mem"); },
           [](json& j) { j["checksums"]["disk"] = 7; },
           [](json& j) { j["checksums"]["disk"] = "md5:0123"; },
           [](json& j) { j["checksums"]["vmstate"] = "xxh3-128:0000000000000000000000000000000G"; },
           [](json& j) { j["checksums"] = "none"; }}) {
    ASSERT_THAT(WriteManifest(tmp_, written), IsOk());
    EditManifest(edit);
    EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.manifest));
  }
}

TEST_F(SnapshotFilesTest, VerifyFilesReportsEachFileAndNamesTheFirstBadOne) {
  auto sums = ChecksumFiles(tmp_);
  ASSERT_THAT(sums, IsOk());
  auto report = VerifyFiles(tmp_, sums->checksums);
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->ok);
  EXPECT_FALSE(report->legacy);
  EXPECT_TRUE(report->hashed);
  ASSERT_EQ(report->files.size(), 3u);
  EXPECT_EQ(report->files[0].name, "vmstate.bin");
  EXPECT_EQ(report->files[1].name, "mem.bin");
  EXPECT_EQ(report->files[2].name, "disk.ext4");
  EXPECT_EQ(report->files[1].path, tmp_.mem);
  EXPECT_EQ(report->files[1].expected, sums->checksums.mem);
  EXPECT_EQ(report->files[1].actual, sums->checksums.mem);
  EXPECT_THAT(CorruptionError(*report), IsOk());

  // Same size, one byte different: only the checksum notices.
  ASSERT_THAT(WriteFileAtomic(tmp_.mem, std::string(4095, 'm') + "M"), IsOk());
  ASSERT_THAT(WriteFileAtomic(tmp_.disk, std::string(3332, 'd') + "D"), IsOk());
  report = VerifyFiles(tmp_, sums->checksums);
  ASSERT_THAT(report, IsOk());
  EXPECT_FALSE(report->ok);
  EXPECT_TRUE(report->files[0].ok);
  EXPECT_FALSE(report->files[1].ok);
  EXPECT_FALSE(report->files[2].ok);
  EXPECT_NE(report->stamps, sums->stamps);
  absl::Status corrupt = CorruptionError(*report);
  EXPECT_THAT(corrupt, StatusIs(absl::StatusCode::kDataLoss,
                                "snapshot file " + tmp_.mem + " is corrupt: checksum " +
                                    report->files[1].actual + ", expected " +
                                    sums->checksums.mem));
  EXPECT_THAT(corrupt, StatusIs(absl::StatusCode::kDataLoss, "1 more"));
  EXPECT_THAT(corrupt, StatusIs(absl::StatusCode::kDataLoss, "restore it from a backup"));
}

TEST_F(SnapshotFilesTest, VerifyFilesOfALegacySnapshotHashesButComparesNothing) {
  auto report = VerifyFiles(tmp_, std::nullopt);
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->legacy);
  EXPECT_FALSE(report->ok);
  for (const FileCheck& f : report->files) {
    EXPECT_EQ(f.expected, "");
    EXPECT_NE(f.actual, "");
    EXPECT_FALSE(f.ok);
  }
  EXPECT_THAT(CorruptionError(*report), IsOk());
}

TEST_F(SnapshotFilesTest, VerifyFilesOfAMissingFileIsDataLoss) {
  auto sums = ChecksumFiles(tmp_);
  ASSERT_THAT(sums, IsOk());
  ASSERT_EQ(unlink(tmp_.disk.c_str()), 0);
  EXPECT_THAT(VerifyFiles(tmp_, sums->checksums),
              StatusIs(absl::StatusCode::kDataLoss, tmp_.disk));
  EXPECT_THAT(StampFiles(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.disk));
}

TEST_F(SnapshotFilesTest, WriteManifestNeedsAllFiles) {
  ASSERT_EQ(unlink(tmp_.disk.c_str()), 0);
  EXPECT_THAT(WriteManifest(tmp_, SampleManifest()),
              StatusIs(absl::StatusCode::kDataLoss, tmp_.disk));
  EXPECT_FALSE(PathExists(tmp_.manifest));
}

TEST_F(SnapshotFilesTest, TruncatedFileIsDataLossNamingIt) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_EQ(truncate(tmp_.mem.c_str(), 2048), 0);
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.mem));
  EXPECT_THAT(ReadAndVerify(tmp_),
              StatusIs(absl::StatusCode::kDataLoss, "has 2048 bytes, the manifest says 4096"));
}

TEST_F(SnapshotFilesTest, GrownFileIsDataLoss) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_EQ(truncate(tmp_.disk.c_str(), 1 << 20), 0);
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.disk));
}

TEST_F(SnapshotFilesTest, MissingFileIsDataLossNamingIt) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_EQ(unlink(tmp_.vmstate.c_str()), 0);
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.vmstate));
}

TEST_F(SnapshotFilesTest, MissingManifestIsDataLoss) {
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.manifest));
}

TEST_F(SnapshotFilesTest, CorruptJsonIsDataLoss) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  for (const std::string& garbage :
       std::vector<std::string>{"{\"format_version\": 1, \"snapshot_id\": ", "",
                                "[1, 2]", "\"manifest\"", std::string("\0\0\0\0", 4)}) {
    ASSERT_THAT(WriteFileAtomic(tmp_.manifest, garbage), IsOk());
    EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.manifest))
        << garbage;
  }
}

TEST_F(SnapshotFilesTest, ManifestWithMissingOrMistypedFieldsIsDataLoss) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  EditManifest([](json& j) { j.erase("mem_bytes"); });
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, "incomplete"));

  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  EditManifest([](json& j) { j["vm_id"] = 42; });
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, "incomplete"));
}

// Found by fuzz/manifest_fuzz.cc: json's get<T>() converted a float out of
// an integer field's range (undefined behaviour) and wrapped negative sizes.
TEST_F(SnapshotFilesTest, ManifestIntegersOfTheWrongKindOrRangeAreDataLoss) {
  for (auto edit : std::vector<void (*)(json&)>{
           [](json& j) { j["memory_mib"] = 1e300; },
           [](json& j) { j["format_version"] = -1e300; },
           [](json& j) { j["format_version"] = 1.0; },
           [](json& j) { j["memory_mib"] = int64_t{1} << 32; },
           [](json& j) { j["vmstate_bytes"] = -1; },
           [](json& j) { j["disk_bytes"] = "3333"; }}) {
    ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
    EditManifest(edit);
    EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, "has an invalid"));
  }
}

TEST(ParseManifestTest, ReadsTheTextAlone) {
  auto m = ParseManifest(
      R"({"format_version": 1, "snapshot_id": "s", "vm_id": "v", "vmm": "qemu",)"
      R"( "vmm_version": "7.2", "accelerator": "kvm", "memory_mib": 16384,)"
      R"( "ram_in_vmstate": false, "vmstate_bytes": 1, "mem_bytes": 18446744073709551615,)"
      R"( "disk_bytes": 0})",
      "/nowhere/manifest.json");
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->memory_mib, 16384u);
  EXPECT_EQ(m->mem_bytes, UINT64_MAX);
  EXPECT_FALSE(m->checksums.has_value());
  EXPECT_THAT(ParseManifest("{}", "/nowhere/manifest.json"),
              StatusIs(absl::StatusCode::kDataLoss, "/nowhere/manifest.json"));
}

TEST_F(SnapshotFilesTest, OversizedManifestIsDataLoss) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  // Valid JSON, just too large: the cap is applied before parsing.
  EditManifest([](json& j) { j["padding"] = std::string(kMaxManifestBytes, ' '); });
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, tmp_.manifest));
  EXPECT_THAT(ReadAndVerify(tmp_), StatusIs(absl::StatusCode::kDataLoss, "larger than"));
}

TEST_F(SnapshotFilesTest, UnknownExtraFieldsAreIgnored) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  EditManifest([](json& j) { j["written_by"] = "a later smolvmd"; });
  EXPECT_THAT(ReadAndVerify(tmp_), IsOk());
}

TEST_F(SnapshotFilesTest, NewerFormatVersionIsFailedPrecondition) {
  Manifest m = SampleManifest();
  m.format_version = kFormatVersion + 1;
  ASSERT_THAT(WriteManifest(tmp_, m), IsOk());
  EXPECT_THAT(ReadAndVerify(tmp_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "upgrade smolvmd"));
  EXPECT_THAT(ReadAndVerify(tmp_),
              StatusIs(absl::StatusCode::kFailedPrecondition, "snap-0badc0de"));
}

TEST_F(SnapshotFilesTest, PublishDirRenamesIntoPlace) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_THAT(PublishDir(tmp_, final_dir_), IsOk());
  EXPECT_FALSE(PathExists(tmp_.dir));
  auto m = ReadAndVerify(PathsIn(final_dir_));
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->mem_bytes, 4096u);
}

TEST_F(SnapshotFilesTest, PublishDirRefusesAnExistingFinalDirAndKeepsTheTmpDir) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_THAT(MakeDirs(final_dir_), IsOk());
  ASSERT_THAT(WriteFileAtomic(JoinPath(final_dir_, "marker"), "old"), IsOk());

  EXPECT_THAT(PublishDir(tmp_, final_dir_),
              StatusIs(absl::StatusCode::kAlreadyExists, final_dir_));
  // Neither directory was touched.
  EXPECT_THAT(ReadAndVerify(tmp_), IsOk());
  EXPECT_TRUE(PathExists(JoinPath(final_dir_, "marker")));
  EXPECT_FALSE(PathExists(JoinPath(final_dir_, "manifest.json")));
}

// rename(2) would silently replace an EMPTY directory; PublishDir must not.
// (Today the PathExists() check catches this; a concurrent mkdir between that
// check and the rename would not be caught -- see the report on
// RENAME_NOREPLACE.)
TEST_F(SnapshotFilesTest, PublishDirRefusesAnExistingEmptyFinalDir) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_THAT(MakeDirs(final_dir_), IsOk());
  EXPECT_THAT(PublishDir(tmp_, final_dir_), StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_TRUE(PathExists(tmp_.manifest));
}

TEST_F(SnapshotFilesTest, PublishDirFailsIfAFileIsMissing) {
  ASSERT_THAT(WriteManifest(tmp_, SampleManifest()), IsOk());
  ASSERT_EQ(unlink(tmp_.disk.c_str()), 0);
  EXPECT_THAT(PublishDir(tmp_, final_dir_), StatusIs(absl::StatusCode::kNotFound, tmp_.disk));
  EXPECT_FALSE(PathExists(final_dir_));
  EXPECT_TRUE(PathExists(tmp_.dir));
}

}  // namespace
// CaptureMemory and CaptureDisk hash their sources while copying; what Seal
// records must be exactly what hashing the finished copies gives, with
// their current stamps (sparse RAM with data far apart, holes between).
TEST_F(SnapshotFilesTest, CapturedCopiesAreSealedWithTheirOwnChecksums) {
  StateFiles files(JoinPath(root_, "state"), JoinPath(root_, "run"));
  const std::string vm_id = "vm-0c0ffee0";
  ASSERT_THAT(MakeDirs(files.VmDir(vm_id)), IsOk());
  ASSERT_THAT(WriteFileAtomic(files.VmDisk(vm_id), std::string(5 << 20, 'd')), IsOk());
  const std::string ram = JoinPath(root_, "ram");
  {
    int fd = open(ram.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 64 << 20), 0);
    const std::string page(4096, 'r');
    for (off_t at : {off_t{0}, off_t{7} << 20, (off_t{64} << 20) - 4096}) {
      ASSERT_EQ(pwrite(fd, page.data(), page.size(), at), static_cast<ssize_t>(page.size()));
    }
    close(fd);
  }
  auto draft = files.BeginSnapshot("snap-5ea1ed00", {ram, files.VmDisk(vm_id)});
  ASSERT_THAT(draft, IsOk());
  ASSERT_THAT(WriteFileAtomic((*draft)->paths().vmstate, std::string(1000, 's')), IsOk());
  ASSERT_THAT(files.CaptureMemory(**draft, ram, 64 << 20), IsOk());
  ASSERT_THAT(files.CaptureDisk(**draft, vm_id), IsOk());
  EXPECT_EQ((*draft)->checksums().size(), 2u);  // RAM and disk, hashed as copied.
  auto sealed = files.Seal(**draft, SampleManifest());
  ASSERT_THAT(sealed, IsOk());
  auto reread = ChecksumFiles((*draft)->paths());
  ASSERT_THAT(reread, IsOk());
  EXPECT_EQ(sealed->checksums, reread->checksums);
  EXPECT_EQ(sealed->stamps, reread->stamps);
  auto report = VerifyFiles((*draft)->paths(), sealed->checksums);
  ASSERT_THAT(report, IsOk());
  EXPECT_TRUE(report->ok);
}

}  // namespace smolvm::snapshot
