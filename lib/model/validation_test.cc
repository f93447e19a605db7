#include "lib/model/validation.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <set>
#include <string>
#include <vector>

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

TEST_F(NormalizeVmConfigTest, PathsAreCheckedForShapeOnly) {
  // Which file a path names is decided where the daemon opens it (beneath
  // an allowed directory); validation never looks at the file system.
  VmConfig c;
  c.kernel_path = JoinPath(dir_, "no-such-kernel");
  c.rootfs_path = dir_;  // A directory: also for the opener to refuse.
  EXPECT_THAT(NormalizeVmConfig(c), IsOk());
}

TEST(ValidateImagePathTest, AcceptsAbsolutePathsWithoutDotComponents) {
  for (const std::string& path :
       {std::string(""), std::string("/srv/images/vmlinux"), std::string("/a"),
        std::string("/srv//images/rootfs.ext4"), std::string("/srv/images/.hidden"),
        std::string("/srv/images/..x"), std::string("/srv/images/x..")}) {
    EXPECT_THAT(ValidateImagePath(path, "kernel_path"), IsOk()) << path;
  }
  EXPECT_THAT(ValidateImagePath("/" + std::string(4095, 'x'), "kernel_path"), IsOk());
}

TEST(ValidateImagePathTest, RefusesMalformedPaths) {
  struct Case {
    std::string path;
    const char* rule;
  };
  for (const Case& c : std::vector<Case>{
           {"vmlinux", "must be an absolute path"},
           {"./vmlinux", "must be an absolute path"},
           {"/srv/images/../../etc/shadow", "\"..\" components"},
           {"/srv/images/..", "\"..\" components"},
           {"/..", "\"..\" components"},
           {"/srv/./images/vmlinux", "\".\" or"},
           {"/srv/images/.", "\".\" or"},
           {std::string("/srv/images/a\0b", 15), "NUL byte"},
           {"/" + std::string(4096, 'x'), "longer than 4096 bytes"},
       }) {
    EXPECT_THAT(ValidateImagePath(c.path, "rootfs_path"),
                StatusIs(absl::StatusCode::kInvalidArgument, c.rule))
        << absl::CHexEscape(c.path.substr(0, 60));
    EXPECT_THAT(ValidateImagePath(c.path, "rootfs_path"),
                StatusIs(absl::StatusCode::kInvalidArgument, "rootfs_path \""));
  }
  // Shown escaped and shortened.
  absl::Status s = ValidateImagePath(std::string("/a\0\n", 4), "kernel_path");
  EXPECT_THAT(std::string(s.message()), HasSubstr(R"(/a\x00\n)"));
  s = ValidateImagePath("/" + std::string(10000, 'x'), "kernel_path");
  EXPECT_LT(s.message().size(), 400u);
}

TEST_F(NormalizeVmConfigTest, MalformedPathIsInvalid) {
  VmConfig c;
  c.kernel_path = kernel_;
  c.initrd_path = "/srv/../etc/initrd";
  EXPECT_THAT(NormalizeVmConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "initrd_path \"/srv/../etc/initrd\""));
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

namespace smolvm {
namespace {

TEST(ValidateEgressTest, AcceptsWhatTheFirewallRenders) {
  for (const char* cidr : {"198.51.100.0/24", "203.0.113.7", "10.1.2.3/8", "0.0.0.0/0",
                                  "1.2.3.4/32"}) {
    EgressPolicy egress{EgressMode::kRestricted, {cidr}};
    EXPECT_THAT(ValidateEgress(egress), IsOk()) << cidr;
  }
}

TEST(ValidateEgressTest, RefusesWhatTheFirewallCannotRender) {
  for (const char* cidr :
       {"010.0.0.1", "/+8", "1.2.3.4/33", " 1.2.3.4", "1.2.3.4 ", "1.2.3.4/ 8", "1.2.3.4/+8",
        "1.2.3.4/08", "1.2.3.4/", "1.2.3.4/-1", "01.2.3.4/8", "example.com", "1.2.3.4 } accept",
        "::/0", ""}) {
    EgressPolicy egress{EgressMode::kRestricted, {cidr}};
    EXPECT_THAT(ValidateEgress(egress),
                StatusIs(absl::StatusCode::kInvalidArgument, "is not an IPv4 CIDR"))
        << cidr;
  }
}

TEST(ValidateEgressTest, ModesAndCidrsGoTogether) {
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}}), IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kOff, {}}), IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {"1.2.3.4"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "only meaningful"));
  EXPECT_THAT(ValidateEgress({EgressMode::kRestricted, {}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "at least one entry"));
  EXPECT_THAT(ValidateEgress({EgressMode::kRestricted, std::vector<std::string>(257, "1.2.3.4")}),
              StatusIs(absl::StatusCode::kInvalidArgument, "more than 256"));
}

TEST(ValidateEgressTest, DenyListsBesideOpenAndRestricted) {
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, {"10.0.0.0/8", "1.2.3.4"}}), IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kRestricted, {"10.0.0.0/8"}, {"10.1.0.0/16"}}), IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kOff, {}, {"10.0.0.0/8"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "meaningless with mode EGRESS_OFF"));
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, {"10.0.0.0/33"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "egress.deny_cidrs entry"));
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, std::vector<std::string>(257, "1.2.3.4")}),
              StatusIs(absl::StatusCode::kInvalidArgument, "deny_cidrs has more than 256"));
}

TEST(ValidateEgressTest, DomainRules) {
  EgressPolicy names{EgressMode::kRestricted, {}, {}, {"pypi.org", "*.pythonhosted.org"}};
  EXPECT_THAT(ValidateEgress(names), IsOk()) << "allow_domains alone make a restricted policy";
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, {}, {}, {"evil.example"}}), IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kRestricted, {"1.2.3.4"}, {}, {}, {"a.example"}}),
              IsOk());
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, {}, {"pypi.org"}}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "allow_domains is only meaningful with mode EGRESS_RESTRICTED"));
  EXPECT_THAT(ValidateEgress({EgressMode::kOff, {}, {}, {}, {"a.example"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "deny_domains is meaningless"));
  EXPECT_THAT(ValidateEgress({EgressMode::kRestricted, {}, {}, {"a..example"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "egress.allow_domains"));
  EXPECT_THAT(ValidateEgress({EgressMode::kOpen, {}, {}, {}, {"*"}}),
              StatusIs(absl::StatusCode::kInvalidArgument, "egress.deny_domains"));
  EXPECT_THAT(
      ValidateEgress({EgressMode::kRestricted, {}, {}, std::vector<std::string>(257, "a.example")}),
      StatusIs(absl::StatusCode::kInvalidArgument, "allow_domains has more than 256"));
}

TEST(NormalizePortForwardTest, FillsDefaults) {
  PortForward f;
  f.host_ip = "";
  f.protocol = "";
  f.host_port = 10022;
  f.guest_port = 22;
  ASSERT_THAT(NormalizePortForward(f), IsOk());
  EXPECT_EQ(f.host_ip, "127.0.0.1");
  EXPECT_EQ(f.protocol, "tcp");
}

TEST(NormalizePortForwardTest, HostIpIsWhatTheFirewallRenders) {
  for (const char* ip : {"127.0.0.1", "0.0.0.0", "192.0.2.10"}) {
    PortForward f{ip, 10022, 22, "udp"};
    EXPECT_THAT(NormalizePortForward(f), IsOk()) << ip;
  }
  for (const char* ip : {"010.0.0.1", " 127.0.0.1", "127.0.0.1 ", "127.1", "localhost",
                                "127.0.0.1/32", "::1", "0x7f.0.0.1"}) {
    PortForward f{ip, 10022, 22, "tcp"};
    EXPECT_THAT(NormalizePortForward(f),
                StatusIs(absl::StatusCode::kInvalidArgument, "must be an IPv4 address"))
        << ip;
  }
}

TEST(NormalizePortForwardTest, PortsAndProtocol) {
  PortForward f{"127.0.0.1", 0, 22, "tcp"};
  EXPECT_THAT(NormalizePortForward(f), StatusIs(absl::StatusCode::kInvalidArgument, "1-65535"));
  f = {"127.0.0.1", 10022, 65536, "tcp"};
  EXPECT_THAT(NormalizePortForward(f), StatusIs(absl::StatusCode::kInvalidArgument, "1-65535"));
  f = {"127.0.0.1", 10022, 22, "TCP"};
  EXPECT_THAT(NormalizePortForward(f),
              StatusIs(absl::StatusCode::kInvalidArgument, "must be tcp or udp"));
}

TEST(NormalizeGuestUserTest, RootIsEmptyOthersAsGiven) {
  for (const char* root : {"", "root", "0"}) {
    EXPECT_EQ(NormalizeGuestUser(root).value_or("error"), "") << root;
  }
  for (const char* user : {"alice", "www-data", "svc_1.x", "1000", "2147483647"}) {
    EXPECT_EQ(NormalizeGuestUser(user).value_or("error"), user) << user;
  }
  for (const char* bad : {"a:b", "-rf", "al ice", "bob\n", "2147483648", "99999999999",
                          "averyveryveryveryveryverylongusername"}) {
    EXPECT_THAT(NormalizeGuestUser(bad).status(),
                StatusIs(absl::StatusCode::kInvalidArgument, "user \""))
        << bad;
  }
}

TEST(ValidateLabelsTest, KeysAndValues) {
  EXPECT_THAT(ValidateLabels({{"team", "ml"},
                              {"example.com/task-id", "t-42"},
                              {"empty", ""},
                              {"A_b.C", "x.Y_z"}},
                             "labels"),
              IsOk());
  for (const char* key : {"", "-x", "x-", "a/b/c", "/x", "x/", "sp ace", "k=v",
                          "a234567890123456789012345678901234567890123456789012345678901234"}) {
    EXPECT_THAT(ValidateLabels({{key, "v"}}, "labels"),
                StatusIs(absl::StatusCode::kInvalidArgument, "labels: label key"))
        << key;
  }
  for (const char* value : {"-x", "x ", "a,b", "a=b",
                            "a234567890123456789012345678901234567890123456789012345678901234"}) {
    EXPECT_THAT(ValidateLabels({{"k", value}}, "labels"),
                StatusIs(absl::StatusCode::kInvalidArgument, "the value of label \"k\""))
        << value;
  }
  std::map<std::string, std::string> many;
  for (int i = 0; i < 33; ++i) many["k" + std::to_string(i)] = "v";
  EXPECT_THAT(ValidateLabels(many, "labels"),
              StatusIs(absl::StatusCode::kInvalidArgument, "at most 32 labels"));
}

}  // namespace
}  // namespace smolvm
