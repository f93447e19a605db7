#include "daemon/config_file.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::daemon {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kSpecExample[] = R"(
[daemon]
socket = "/run/s/smolvmd.sock"
state_dir = "/var/lib/s"
run_dir = "/run/s"
accelerator = "tcg"
socket_group = "grp"
admin_group = "admins"
log_level = "debug"
boot_timeout_seconds = 60

[network]
enabled = false
bridge = "br9"
subnet = "10.9.0.0/24"
uplink = "none"
dns = "1.1.1.1"
egress_deny = ["169.254.0.0/16", "100.64.0.0/10"]
egress_allow_lan = true

[ports]
host_ips = ["127.0.0.1", "0.0.0.0"]
min = 20000
max = 20100

[images]
allowed_dirs = ["/srv/smolvm/images"]

[listen]
tcp = "0.0.0.0:7443"

[metrics]
listen = "127.0.0.1:9464"

[tls]
cert = "/etc/smolvmd/server.pem"
key = "/etc/smolvmd/server.key"
client_ca = "/etc/smolvmd/clients-ca.pem"

[quotas]
running_vms = 10
vcpus = 32
memory_mib = 32768
snapshots = 100
snapshot_bytes = 107374182400
port_forwards = 20

[tenants.alice]
uids = [1001]
tls_subjects = ["alice", "spiffe://example.org/alice"]
admin = false
[tenants.alice.quotas]
running_vms = 2

[tenants."ops@example"]
admin = true
)";

absl::Status Apply(const std::string& text, DaemonConfig& c) {
  return ApplyConfigText(text, "smolvmd.toml", c);
}

TEST(ConfigFileTest, EveryKeyOfTheSpecExample) {
  DaemonConfig c;
  ASSERT_THAT(Apply(kSpecExample, c), IsOk());
  EXPECT_EQ(c.socket_path, "/run/s/smolvmd.sock");
  EXPECT_EQ(c.state_dir, "/var/lib/s");
  EXPECT_EQ(c.run_dir, "/run/s");
  EXPECT_EQ(c.accelerator, "tcg");
  EXPECT_EQ(c.socket_group, "grp");
  EXPECT_EQ(c.admin_group, "admins");
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.boot_timeout_seconds, 60);
  EXPECT_FALSE(c.network);
  EXPECT_EQ(c.bridge, "br9");
  EXPECT_EQ(c.subnet, "10.9.0.0/24");
  EXPECT_EQ(c.uplink, "none");
  EXPECT_EQ(c.dns, "1.1.1.1");
  EXPECT_THAT(c.egress.deny_cidrs, ElementsAre("169.254.0.0/16", "100.64.0.0/10"));
  EXPECT_TRUE(c.egress.allow_lan);
  EXPECT_THAT(c.ports.host_ips, ElementsAre("127.0.0.1", "0.0.0.0"));
  EXPECT_EQ(c.ports.min_port, 20000u);
  EXPECT_EQ(c.ports.max_port, 20100u);
  EXPECT_THAT(c.host_paths.allowed_dirs, ElementsAre("/srv/smolvm/images"));
  EXPECT_EQ(c.listen_tcp, "0.0.0.0:7443");
  EXPECT_EQ(c.metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(c.tls_cert, "/etc/smolvmd/server.pem");
  EXPECT_EQ(c.tls_key, "/etc/smolvmd/server.key");
  EXPECT_EQ(c.tls_client_ca, "/etc/smolvmd/clients-ca.pem");
  EXPECT_EQ(c.default_quota.running_vms, 10);
  EXPECT_EQ(c.default_quota.vcpus, 32);
  EXPECT_EQ(c.default_quota.memory_mib, 32768);
  EXPECT_EQ(c.default_quota.snapshots, 100);
  EXPECT_EQ(c.default_quota.snapshot_bytes, 107374182400);
  EXPECT_EQ(c.default_quota.port_forwards, 20);
  ASSERT_EQ(c.tenants.size(), 2u);
  const TenantConfig& alice = c.tenants[0];
  EXPECT_EQ(alice.name, "alice");
  EXPECT_THAT(alice.uids, ElementsAre(1001u));
  EXPECT_THAT(alice.tls_subjects, ElementsAre("alice", "spiffe://example.org/alice"));
  EXPECT_FALSE(alice.admin);
  EXPECT_EQ(alice.quota.running_vms, 2);
  EXPECT_FALSE(alice.quota.vcpus.has_value());
  const TenantConfig& ops = c.tenants[1];
  EXPECT_EQ(ops.name, "ops@example");
  EXPECT_TRUE(ops.admin);
  EXPECT_TRUE(ops.uids.empty());
}

TEST(ConfigFileTest, AbsentKeysKeepTheirValues) {
  DaemonConfig c;
  c.socket_path = "/from/before.sock";
  ASSERT_THAT(Apply("[daemon]\nstate_dir = \"/x\"\n", c), IsOk());
  EXPECT_EQ(c.socket_path, "/from/before.sock");
  EXPECT_EQ(c.state_dir, "/x");
  EXPECT_EQ(c.ports.min_port, 10000u);
  EXPECT_THAT(c.egress.deny_cidrs, ElementsAre("169.254.0.0/16"));
  EXPECT_FALSE(c.default_quota.running_vms.has_value());
  EXPECT_THAT(Apply("", c), IsOk());
  EXPECT_THAT(Apply("# only a comment\n", c), IsOk());
}

TEST(ConfigFileTest, DottedAndInlineTablesAreTheSame) {
  DaemonConfig c;
  ASSERT_THAT(Apply("ports = { min = 2000, max = 3000 }\ndaemon.log_level = \"warn\"\n", c),
              IsOk());
  EXPECT_EQ(c.ports.min_port, 2000u);
  EXPECT_EQ(c.ports.max_port, 3000u);
  EXPECT_EQ(c.log_level, "warn");
}

struct BadCase {
  const char* text;
  const char* message;  // Substring of the error.
};

class ConfigFileErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigFileErrorTest, NamesFileTableKeyAndFix) {
  DaemonConfig c;
  c.socket_path = "/unchanged.sock";
  std::string text = std::string("[daemon]\nsocket = \"/new.sock\"\n") + GetParam().text;
  absl::Status s = Apply(text, c);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, GetParam().message));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "smolvmd.toml:"));
  // A bad file changes nothing, not even the keys before the error.
  EXPECT_EQ(c.socket_path, "/unchanged.sock");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigFileErrorTest,
    ::testing::Values(
        BadCase{"[ports]\nmin = 0\n", "smolvmd.toml:4: [ports] min: must be an integer 1-65535"},
        BadCase{"[ports]\nmax = 70000\n", "[ports] max: must be an integer 1-65535 (got the integer 70000)"},
        BadCase{"[ports]\nmin = \"10\"\n", "[ports] min: must be an integer 1-65535 (got the string \"10\")"},
        BadCase{"[ports]\nmin = 1.5\n", "[ports] min: must be an integer"},
        BadCase{"[ports]\nmni = 1\n", "[ports] mni: unknown key; [ports] takes host_ips, min, max"},
        BadCase{"[ports]\nhost_ips = \"127.0.0.1\"\n", "[ports] host_ips: must be an array of strings"},
        BadCase{"[ports]\nhost_ips = [1]\n", "[ports] host_ips: must be an array of strings"},
        BadCase{"[daemon]\n", "not valid TOML"},  // Table defined twice.
        BadCase{"[deamon]\nx = 1\n", "[deamon]: unknown table; the tables are [daemon]"},
        BadCase{"[\"we\\nird\"]\n", "[\"we\\nird\"]: unknown table"},
        BadCase{"[network]\nenabled = \"yes\"\n", "[network] enabled: must be true or false"},
        BadCase{"[network]\negress_deny = \"169.254.0.0/16\"\n", "[network] egress_deny: must be an array"},
        BadCase{"[quotas]\nvcpus = -1\n", "[quotas] vcpus: must be an integer >= 0"},
        BadCase{"[quotas]\ncpus = 1\n", "[quotas] cpus: unknown key"},
        BadCase{"[tenants.bob]\nuids = [-1]\n", "[tenants.bob] uids: must be an array of uids"},
        BadCase{"[tenants.bob]\nuids = [4294967295]\n", "[tenants.bob] uids: must be an array of uids (integers 0-4294967294)"},
        BadCase{"[tenants.bob]\nuid = [1]\n", "[tenants.bob] uid: unknown key; [tenants.bob] takes uids, tls_subjects, admin, quotas"},
        BadCase{"[tenants.bob]\nadmin = 1\n", "[tenants.bob] admin: must be true or false"},
        BadCase{"[tenants.bob]\nquotas = 3\n", "[tenants.bob] quotas: must be a table ([tenants.bob.quotas])"},
        BadCase{"[tenants.bob.quotas]\nram = 3\n", "[tenants.bob.quotas] ram: unknown key"},
        BadCase{"[tenants.bob.quotas]\nvcpus = -3\n", "[tenants.bob.quotas] vcpus: must be an integer >= 0"},
        BadCase{"[tenants]\nbob = 1\n", "[tenants] bob: must be a table ([tenants.bob]"},
        BadCase{"[daemon.extra]\n", "[daemon] extra: unknown key"},
        BadCase{"[tls]\ncert = 5\n", "[tls] cert: must be a string (got the integer 5)"},
        BadCase{"[images]\nallowed_dirs = [\"/a\", 2]\n", "[images] allowed_dirs: must be an array of strings"},
        BadCase{"x = = 1\n", "not valid TOML"}));

TEST(ConfigFileTest, TopLevelKeysAndEnumsAreChecked) {
  DaemonConfig c;
  EXPECT_THAT(Apply("socket = \"/x\"\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "smolvmd.toml:1: socket: unknown top-level key; settings go in a table "
                       "such as [daemon]"));
  EXPECT_THAT(Apply("listen = \"0.0.0.0:1\"\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "smolvmd.toml:1: listen: must be a table ([listen]), not the string"));
  EXPECT_THAT(Apply("[daemon]\naccelerator = \"xen\"\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "[daemon] accelerator: must be one of auto, kvm, tcg (got the string "
                       "\"xen\")"));
  EXPECT_THAT(Apply("[daemon]\nlog_level = \"loud\"\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument, "[daemon] log_level: must be one of"));
  EXPECT_THAT(Apply("[daemon]\nboot_timeout_seconds = 0\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "[daemon] boot_timeout_seconds: must be an integer 1-3600"));
}

TEST(ConfigFileTest, HostileBytesInErrorsAreEscaped) {
  DaemonConfig c;
  absl::Status s = Apply("[tls]\ncert = 5\n[\"\\u001b[31m\"]\n", c);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument));  // First error wins.
  s = Apply("[daemon]\naccelerator = \"\\u001b[2J\"\n", c);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "\\x1b[2J"));
  EXPECT_EQ(std::string(s.message()).find('\x1b'), std::string::npos);
  s = Apply("[\"\\u001b[31m\"]\nx = 1\n", c);
  EXPECT_EQ(std::string(s.message()).find('\x1b'), std::string::npos) << s;
}

TEST(ConfigFileTest, FromFile) {
  smolvm_testing::TempDir dir;
  std::string path = dir.Join("smolvmd.toml");
  ASSERT_THAT(WriteFileAtomic(path, "[ports]\nmin = 30000\n"), IsOk());
  DaemonConfig c;
  ASSERT_THAT(ApplyConfigFile(path, c), IsOk());
  EXPECT_EQ(c.ports.min_port, 30000u);

  ASSERT_THAT(WriteFileAtomic(path, "[ports]\nmin = 0\n"), IsOk());
  EXPECT_THAT(ApplyConfigFile(path, c),
              StatusIs(absl::StatusCode::kInvalidArgument, path + ":2: [ports] min:"));
  EXPECT_THAT(ApplyConfigFile(dir.Join("missing.toml"), c),
              StatusIs(absl::StatusCode::kNotFound, "missing.toml"));
}


TEST(ConfigFileTest, VmmTableSetsConfinement) {
  DaemonConfig c;
  ASSERT_THAT(Apply(R"(
[vmm]
confinement = "off"
uid_base = 2000000000
uid_count = 10
cgroup_parent = "smolvm-ci"
memory_overhead_mib = 32
pids_max = 64
)", c), IsOk());
  EXPECT_EQ(c.vmm_confinement, "off");
  EXPECT_EQ(c.vmm_uid_base, 2000000000);
  EXPECT_EQ(c.vmm_uid_count, 10);
  EXPECT_EQ(c.cgroup_parent, "smolvm-ci");
  EXPECT_EQ(c.vmm_memory_overhead_mib, 32);
  EXPECT_EQ(c.vmm_pids_max, 64);
  DaemonConfig d;
  EXPECT_EQ(d.cgroup_parent, "smolvm");
  EXPECT_THAT(Apply("[vmm]\nconfinement = \"maybe\"\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument, "confinement"));
  EXPECT_THAT(Apply("[vmm]\nuid_base = 0\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument, "uid_base"));
}

// The example shipped beside the systemd unit always parses.
TEST(ConfigFileTest, ShippedExampleParses) {
  DaemonConfig config;
  ASSERT_THAT(ApplyConfigFile(SMOLVM_SOURCE_DIR "/systemd/smolvmd.toml.example", config), IsOk());
  EXPECT_EQ(config.socket_group, "smolvm");
  EXPECT_EQ(config.default_quota.running_vms, 8);
  EXPECT_EQ(config.ports.min_port, 10000u);
}

}  // namespace
}  // namespace smolvm::daemon
