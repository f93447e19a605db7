#include "lib/model/validation.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <set>
#include <string>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/temp_dir.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"

namespace smolvm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

constexpr char kIdRule[] =
    "must be 1-64 characters of lowercase letters, digits and hyphens, starting "
    "and ending with a letter or digit";

struct IdCase {
  const char* label;
  std::string id;
};

class ValidIdTest : public ::testing::TestWithParam<IdCase> {};

TEST_P(ValidIdTest, IsAccepted) {
  EXPECT_THAT(ValidateId(GetParam().id, "vm_id"), IsOk()) << GetParam().label;
}

INSTANTIATE_TEST_SUITE_P(
    Ids, ValidIdTest,
    ::testing::Values(IdCase{"one_letter", "a"}, IdCase{"one_digit", "0"},
                      IdCase{"hyphen_inside", "a-b"},
                      IdCase{"generated_shape", "vm-3f2a9c01"},
                      IdCase{"double_hyphen", "a--b"},
                      IdCase{"max_length", std::string(64, 'a')},
                      IdCase{"max_length_mixed", "0" + std::string(62, '-') + "z"}),
    [](const auto& info) { return std::string(info.param.label); });

class InvalidIdTest : public ::testing::TestWithParam<IdCase> {};

TEST_P(InvalidIdTest, IsRejectedWithTheRule) {
  EXPECT_THAT(ValidateId(GetParam().id, "snapshot_id"),
              StatusIs(absl::StatusCode::kInvalidArgument, kIdRule))
      << GetParam().label;
  EXPECT_THAT(ValidateId(GetParam().id, "snapshot_id"),
              StatusIs(absl::StatusCode::kInvalidArgument, "invalid snapshot_id \""))
      << GetParam().label;
}

INSTANTIATE_TEST_SUITE_P(
    Ids, InvalidIdTest,
    ::testing::Values(IdCase{"empty", ""}, IdCase{"too_long", std::string(65, 'a')},
                      IdCase{"leading_hyphen", "-a"}, IdCase{"trailing_hyphen", "a-"},
                      IdCase{"only_hyphen", "-"}, IdCase{"uppercase", "A"},
                      IdCase{"uppercase_inside", "aBc"}, IdCase{"underscore", "a_b"},
                      IdCase{"dot_dot_slash", "../x"}, IdCase{"slash", "a/b"},
                      IdCase{"dot", "a.b"}, IdCase{"dot_dot", ".."},
                      IdCase{"space", "a b"}, IdCase{"newline", "a\nb"},
                      IdCase{"unicode", "caf\xc3\xa9"},
                      IdCase{"unicode_dash", "a\xe2\x80\x90" "b"},
                      IdCase{"embedded_nul", std::string("a\0b", 3)},
                      IdCase{"trailing_nul", std::string("ab\0", 3)}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(ValidateIdTest, MessageEscapesTheIdAndNamesTheField) {
  auto s = ValidateId(std::string("a\0\nb", 4), "vm_id");
  ASSERT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "invalid vm_id"));
  // Control bytes are escaped, not copied into logs raw.
  EXPECT_THAT(std::string(s.message()), HasSubstr(R"(a\x00\nb)"));
  EXPECT_EQ(std::string(s.message()).find('\n'), std::string::npos);
}

TEST(ValidateIdTest, HugeIdIsShortenedInTheMessage) {
  auto s = ValidateId(std::string(100000, 'x'), "vm_id");
  ASSERT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_LT(s.message().size(), 400u);
}

TEST(GenerateIdTest, ProducesValidDistinctIds) {
  std::set<std::string> seen;
  for (const char* prefix : {"vm", "snap"}) {
    for (int i = 0; i < 100; ++i) {
      std::string id = GenerateId(prefix);
      EXPECT_THAT(ValidateId(id, "vm_id"), IsOk()) << id;
      EXPECT_THAT(id, MatchesRegex(std::string(prefix) + "-[0-9a-f]{8}"));
      seen.insert(id);
    }
  }
  // 200 draws of 32 random bits: a collision would mean a broken generator.
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_NE(GenerateId("vm"), GenerateId("vm"));
}

class NormalizeVmConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_ = JoinPath(dir_, "vmlinux");
    initrd_ = JoinPath(dir_, "initrd.img");
    rootfs_ = JoinPath(dir_, "rootfs.ext4");
    for (const auto& f : {kernel_, initrd_, rootfs_}) {
      ASSERT_THAT(WriteFileAtomic(f, "image"), IsOk());
    }
  }

  static VmConfig WithResources(uint32_t vcpus, uint32_t memory_mib) {
    VmConfig c;
    c.vcpu_count = vcpus;
    c.memory_mib = memory_mib;
    return c;
  }

  smolvm_testing::TempDir temp_{"smolvm-validation-test"};
  std::string dir_ = temp_.path();
  std::string kernel_, initrd_, rootfs_;
};

TEST_F(NormalizeVmConfigTest, ZeroMeansTheDefaults) {
  VmConfig c = WithResources(0, 0);
  ASSERT_THAT(NormalizeVmConfig(c), IsOk());
  EXPECT_EQ(c.vcpu_count, 2u);
  EXPECT_EQ(c.memory_mib, 512u);
  EXPECT_EQ(c.vcpu_count, kDefaultVcpus);
  EXPECT_EQ(c.memory_mib, kDefaultMemoryMib);
  // Empty paths stay empty (the default image is resolved elsewhere).
  EXPECT_EQ(c.kernel_path, "");
  EXPECT_EQ(c.rootfs_path, "");
}

TEST_F(NormalizeVmConfigTest, ExplicitValuesAreKept) {
  VmConfig c = WithResources(3, 1000);
  c.kernel_path = kernel_;
  c.initrd_path = initrd_;
  c.rootfs_path = rootfs_;
  c.boot_args = "console=ttyS0 quiet";
  VmConfig before = c;
  ASSERT_THAT(NormalizeVmConfig(c), IsOk());
  EXPECT_EQ(c, before);
}

struct RangeCase {
  uint32_t vcpus;
  uint32_t memory_mib;
  bool ok;
  const char* message;  // Substring of the error, when !ok.
};

class NormalizeRangeTest : public ::testing::TestWithParam<RangeCase> {};

TEST_P(NormalizeRangeTest, EnforcesTheRange) {
  const RangeCase& rc = GetParam();
  VmConfig c;
  c.vcpu_count = rc.vcpus;
  c.memory_mib = rc.memory_mib;
  if (rc.ok) {
    EXPECT_THAT(NormalizeVmConfig(c), IsOk());
    EXPECT_EQ(c.vcpu_count, rc.vcpus);
    EXPECT_EQ(c.memory_mib, rc.memory_mib);
  } else {
    EXPECT_THAT(NormalizeVmConfig(c),
                StatusIs(absl::StatusCode::kInvalidArgument, rc.message));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Resources, NormalizeRangeTest,
    ::testing::Values(
        RangeCase{1, 512, true, ""}, RangeCase{32, 512, true, ""},
        RangeCase{33, 512, false, "vcpu_count 33 is out of range: use 1-32"},
        RangeCase{1000000, 512, false, "vcpu_count 1000000 is out of range: use 1-32"},
        RangeCase{2, 128, true, ""}, RangeCase{2, 16384, true, ""},
        RangeCase{2, 127, false, "memory_mib 127 is out of range: use 128-16384"},
        RangeCase{2, 16385, false, "memory_mib 16385 is out of range: use 128-16384"},
        RangeCase{2, 1, false, "memory_mib 1 is out of range: use 128-16384"}));

TEST_F(NormalizeVmConfigTest, RelativePathIsInvalid) {
  for (auto field : {&VmConfig::kernel_path, &VmConfig::initrd_path, &VmConfig::rootfs_path}) {
    VmConfig c;
    c.kernel_path = kernel_;  // So that an initrd is allowed.
    c.*field = "images/vmlinux";
    EXPECT_THAT(NormalizeVmConfig(c),
                StatusIs(absl::StatusCode::kInvalidArgument, "must be an absolute path"));
    EXPECT_THAT(NormalizeVmConfig(c),
                StatusIs(absl::StatusCode::kInvalidArgument, "\"images/vmlinux\""));
  }
}

TEST_F(NormalizeVmConfigTest, MissingFileIsNotFoundAndNamesThePath) {
  std::string missing = JoinPath(dir_, "no-such-kernel");
  VmConfig c;
  c.kernel_path = missing;
  EXPECT_THAT(NormalizeVmConfig(c), StatusIs(absl::StatusCode::kNotFound, missing));
  EXPECT_THAT(NormalizeVmConfig(c), StatusIs(absl::StatusCode::kNotFound, "kernel_path"));

  VmConfig r;
  r.rootfs_path = JoinPath(dir_, "no-such-rootfs");
  EXPECT_THAT(NormalizeVmConfig(r),
              StatusIs(absl::StatusCode::kNotFound, "rootfs_path \"" + r.rootfs_path));
}

TEST_F(NormalizeVmConfigTest, DirectoryIsInvalid) {
  VmConfig c;
  c.rootfs_path = dir_;
  EXPECT_THAT(NormalizeVmConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not a regular file"));
  EXPECT_THAT(NormalizeVmConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, dir_));
}

TEST_F(NormalizeVmConfigTest, InitrdWithoutKernelIsInvalid) {
  VmConfig c;
  c.initrd_path = initrd_;
  EXPECT_THAT(NormalizeVmConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "initrd_path needs kernel_path"));
}

TEST_F(NormalizeVmConfigTest, BootArgsMustBeOneLine) {
  for (std::string args : {std::string("console=ttyS0\ninit=/bin/sh"),
                           std::string("console=ttyS0\r"),
                           std::string("a\0b", 3), std::string(2049, 'x')}) {
    VmConfig c;
    c.boot_args = args;
    EXPECT_THAT(NormalizeVmConfig(c),
                StatusIs(absl::StatusCode::kInvalidArgument, "boot_args must be a single line"))
        << absl::CHexEscape(args.substr(0, 40));
  }
  VmConfig ok;
  ok.boot_args = std::string(2048, 'x');
  EXPECT_THAT(NormalizeVmConfig(ok), IsOk());
}

}  // namespace
}  // namespace smolvm
