#include "daemon/config.h"

#include <stdlib.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::daemon {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::HasSubstr;

// Sets (or, with nullopt, unsets) an environment variable for a scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

absl::StatusOr<DaemonConfig> Parse(std::vector<std::string> args, int* exit_code = nullptr) {
  args.insert(args.begin(), "smolvmd");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  int code = -1;
  auto c = ParseConfig(static_cast<int>(argv.size()), argv.data(), &code);
  if (exit_code != nullptr) *exit_code = code;
  return c;
}

class ParseConfigTest : public ::testing::Test {
 protected:
  ParseConfigTest()
      : config_env_("SMOLVMD_CONFIG", std::nullopt),
        socket_env_("SMOLVMD_SOCKET", std::nullopt),
        state_env_("SMOLVMD_STATE_DIR", std::nullopt) {}

  std::string WriteFile(const std::string& text) {
    std::string path = dir_.Join("smolvmd.toml");
    EXPECT_THAT(WriteFileAtomic(path, text), IsOk());
    return path;
  }

  smolvm_testing::TempDir dir_;
  ScopedEnv config_env_;
  ScopedEnv socket_env_;
  ScopedEnv state_env_;
};

TEST_F(ParseConfigTest, DefaultsWithoutFile) {
  auto c = Parse({"--config", ""});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->socket_path, "/run/smolvmd/smolvmd.sock");
  EXPECT_EQ(c->socket_group, "smolvm");
  EXPECT_EQ(c->admin_group, "smolvm-admin");
  EXPECT_EQ(c->config_file, "");
  EXPECT_EQ(c->guest_kernel_dir, "/var/lib/smolvmd/kernel");
  EXPECT_FALSE(c->egress.allow_lan);
  EXPECT_TRUE(c->tenants.empty());
}

TEST_F(ParseConfigTest, FlagBeatsEnvironmentBeatsFileBeatsDefault) {
  std::string path = WriteFile(
      "[daemon]\nsocket = \"/file.sock\"\nstate_dir = \"/file-state\"\nrun_dir = \"/file-run\"\n");
  {
    auto c = Parse({"--config", path});
    ASSERT_THAT(c, IsOk());
    EXPECT_EQ(c->config_file, path);
    EXPECT_EQ(c->socket_path, "/file.sock");
    EXPECT_EQ(c->state_dir, "/file-state");
    EXPECT_EQ(c->guest_kernel_dir, "/file-state/kernel");
    EXPECT_EQ(c->accelerator, "auto");  // Default: neither file nor flag.
  }
  ScopedEnv socket("SMOLVMD_SOCKET", "/env.sock");
  ScopedEnv state("SMOLVMD_STATE_DIR", "/env-state");
  {
    auto c = Parse({"--config", path});
    ASSERT_THAT(c, IsOk());
    EXPECT_EQ(c->socket_path, "/env.sock");
    EXPECT_EQ(c->state_dir, "/env-state");
    EXPECT_EQ(c->run_dir, "/file-run");
  }
  {
    auto c = Parse({"--config=" + path, "--socket", "/flag.sock", "--run-dir=/flag-run"});
    ASSERT_THAT(c, IsOk());
    EXPECT_EQ(c->socket_path, "/flag.sock");
    EXPECT_EQ(c->state_dir, "/env-state");
    EXPECT_EQ(c->run_dir, "/flag-run");
  }
}

TEST_F(ParseConfigTest, FlagEqualToTheDefaultStillWins) {
  std::string path = WriteFile("[daemon]\naccelerator = \"tcg\"\n[network]\nenabled = false\n");
  auto c = Parse({"--config", path, "--accelerator", "auto", "--network", "true"});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->accelerator, "auto");
  EXPECT_TRUE(c->network);
}

TEST_F(ParseConfigTest, ConfigFileFromEnvironmentUnlessFlag) {
  std::string path = WriteFile("[daemon]\nsocket = \"/env-file.sock\"\n");
  ScopedEnv env("SMOLVMD_CONFIG", path);
  auto c = Parse({});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->config_file, path);
  EXPECT_EQ(c->socket_path, "/env-file.sock");
  auto none = Parse({"--config", ""});
  ASSERT_THAT(none, IsOk());
  EXPECT_EQ(none->socket_path, "/run/smolvmd/smolvmd.sock");
}

TEST_F(ParseConfigTest, AnInstanceGetsItsOwnBridgeAndCgroupUnlessSet) {
  auto c = Parse({"--config", "", "--instance", "b"});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->bridge, "smolvm-b");
  EXPECT_EQ(c->cgroup_parent, "smolvm-b");
  EXPECT_THAT(CheckConfig(*c), IsOk());
  c = Parse({"--config", "", "--instance", "b", "--bridge", "br7", "--cgroup-parent", "x"});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->bridge, "br7");
  EXPECT_EQ(c->cgroup_parent, "x");
  c = Parse({"--config", ""});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->bridge, "smolvm0");
  EXPECT_EQ(c->cgroup_parent, "smolvm");
  for (const std::string bad : {"B", "a-b", "toolongname", "a b"}) {
    c = Parse({"--config", "", "--instance", bad});
    ASSERT_THAT(c, IsOk());
    EXPECT_THAT(CheckConfig(*c), StatusIs(absl::StatusCode::kInvalidArgument, "--instance"))
        << bad;
  }
}

TEST_F(ParseConfigTest, AccessFlags) {
  std::string path = WriteFile(
      "[network]\negress_allow_lan = true\n[listen]\ntcp = \"0.0.0.0:1\"\n"
      "[tls]\ncert = \"/file/cert\"\n");
  auto c = Parse({"--config", path, "--socket-group", "sg", "--admin-group", "ag",
                  "--listen-tcp", "127.0.0.1:7443", "--tls-key", "/k", "--tls-client-ca", "/ca",
                  "--egress-allow-lan=false"});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(c->socket_group, "sg");
  EXPECT_EQ(c->admin_group, "ag");
  EXPECT_EQ(c->listen_tcp, "127.0.0.1:7443");
  EXPECT_EQ(c->tls_cert, "/file/cert");
  EXPECT_EQ(c->tls_key, "/k");
  EXPECT_EQ(c->tls_client_ca, "/ca");
  EXPECT_FALSE(c->egress.allow_lan);

  auto lan = Parse({"--config", "", "--egress-allow-lan"});
  ASSERT_THAT(lan, IsOk());
  EXPECT_TRUE(lan->egress.allow_lan);
}

TEST_F(ParseConfigTest, BadFileEndsTheProgram) {
  std::string path = WriteFile("[ports]\nmin = 0\n");
  int code = -1;
  EXPECT_THAT(Parse({"--config", path}, &code),
              StatusIs(absl::StatusCode::kInvalidArgument, "[ports] min: must be an integer"));
  EXPECT_EQ(code, 1);
  EXPECT_THAT(Parse({"--config", dir_.Join("missing.toml")}, &code),
              StatusIs(absl::StatusCode::kNotFound, "missing.toml"));
  EXPECT_EQ(code, 1);
  // --help works whatever the file says.
  auto help = Parse({"--config", path, "--help"}, &code);
  EXPECT_EQ(code, 0);
  EXPECT_THAT(help, StatusIs(absl::StatusCode::kInvalidArgument, "--tls-client-ca"));
}

TEST_F(ParseConfigTest, BadFlag) {
  int code = -1;
  EXPECT_THAT(Parse({"--config", "", "--no-such-flag"}, &code),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(code, 0);
}

// --- CheckConfig ---

class CheckConfigTest : public ::testing::Test {
 protected:
  CheckConfigTest() {
    c_.state_dir = dir_.Join("state");
    c_.run_dir = dir_.Join("run");
    EXPECT_THAT(MakeDirs(c_.state_dir), IsOk());
    EXPECT_THAT(MakeDirs(c_.run_dir), IsOk());
    EXPECT_THAT(MakeDirs(dir_.Join("images")), IsOk());
  }

  absl::Status CheckWithAllowedDir(const std::string& dir) {
    DaemonConfig c = c_;
    c.host_paths.allowed_dirs = {dir};
    return CheckConfig(c);
  }

  // Short: the run dir must leave room for agent socket paths.
  smolvm_testing::TempDir dir_{"cfg"};
  DaemonConfig c_;
};

TEST_F(CheckConfigTest, DefaultsPass) { EXPECT_THAT(CheckConfig(c_), IsOk()); }

TEST_F(CheckConfigTest, ListenNeedsAllThreeReadableTlsFiles) {
  DaemonConfig c = c_;
  c.listen_tcp = "0.0.0.0:7443";
  EXPECT_THAT(CheckConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "set [tls] cert / --tls-cert"));
  c.tls_cert = dir_.Join("cert.pem");
  EXPECT_THAT(CheckConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "set [tls] key / --tls-key"));
  c.tls_key = dir_.Join("key.pem");
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "set [tls] client_ca / --tls-client-ca"));
  c.tls_client_ca = dir_.Join("ca.pem");
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "[tls] cert / --tls-cert: cannot read it"));
  for (const auto* f : {&c.tls_cert, &c.tls_key, &c.tls_client_ca}) {
    ASSERT_THAT(WriteFileAtomic(*f, "pem"), IsOk());
  }
  EXPECT_THAT(CheckConfig(c), IsOk());
  // TLS files without a listener are not used, so not checked.
  DaemonConfig unused = c_;
  unused.tls_cert = "/no/such/file";
  EXPECT_THAT(CheckConfig(unused), IsOk());
}

TEST_F(CheckConfigTest, ListenAddressForm) {
  for (const char* bad : {"7443", ":7443", "0.0.0.0:", "0.0.0.0:0", "0.0.0.0:65536", "h:x"}) {
    DaemonConfig c = c_;
    c.listen_tcp = bad;
    EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                         "[listen] tcp / --listen-tcp"))
        << bad;
  }
}

// The metrics endpoint has no authentication: loopback only.
TEST_F(CheckConfigTest, MetricsListenIsLoopbackOnly) {
  for (const char* good : {"127.0.0.1:9464", "127.1.2.3:1", "[::1]:65535"}) {
    DaemonConfig c = c_;
    c.metrics_listen = good;
    EXPECT_THAT(CheckConfig(c), IsOk()) << good;
  }
  for (const char* bad : {"0.0.0.0:9464", "10.0.0.1:9464", "[::]:9464", "localhost:9464",
                          "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9464"}) {
    DaemonConfig c = c_;
    c.metrics_listen = bad;
    EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                         "[metrics] listen / --metrics-listen"))
        << bad;
  }
  auto flag = Parse({"--config", "", "--metrics-listen", "127.0.0.1:9464"});
  ASSERT_THAT(flag, IsOk());
  EXPECT_EQ(flag->metrics_listen, "127.0.0.1:9464");
}

TEST_F(CheckConfigTest, AllowedDirs) {
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("images")), IsOk());
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("images") + "/"), IsOk());
  EXPECT_THAT(CheckWithAllowedDir("images"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "[images] allowed_dirs: \"images\" must be an absolute path"));
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("missing")),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not an existing directory"));
  ASSERT_THAT(WriteFileAtomic(dir_.Join("file"), "x"), IsOk());
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("file")),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not an existing directory"));
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("images/../state")),
              StatusIs(absl::StatusCode::kInvalidArgument, "must not contain \"..\""));
}

TEST_F(CheckConfigTest, AllowedDirsMustNotOverlapStateOrRun) {
  ASSERT_THAT(MakeDirs(dir_.Join("state/images")), IsOk());
  for (const std::string& bad :
       {dir_.Join("state"), dir_.Join("state/"), dir_.Join("state/images"),
        dir_.Join("./state//images"), dir_.path(), std::string("/")}) {
    EXPECT_THAT(CheckWithAllowedDir(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, "overlaps the daemon's"))
        << bad;
  }
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("run")),
              StatusIs(absl::StatusCode::kInvalidArgument, "overlaps the daemon's run dir"));
  // A symlink does not hide the overlap.
  ASSERT_EQ(symlink(c_.state_dir.c_str(), dir_.Join("link").c_str()), 0);
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("link")),
              StatusIs(absl::StatusCode::kInvalidArgument, "overlaps the daemon's state dir"));
  // A sibling with a common name prefix is fine.
  ASSERT_THAT(MakeDirs(dir_.Join("state-images")), IsOk());
  EXPECT_THAT(CheckWithAllowedDir(dir_.Join("state-images")), IsOk());
}

TEST_F(CheckConfigTest, Ports) {
  DaemonConfig c = c_;
  c.ports.min_port = 2000;
  c.ports.max_port = 1000;
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "[ports] min 2000 / max 1000: need 1 <= min <= max"));
  c.ports.min_port = 0;
  c.ports.max_port = 10;
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "[ports]"));
  c.ports.min_port = 10;
  c.ports.max_port = 65536;
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "[ports]"));
  c.ports.max_port = 10;
  EXPECT_THAT(CheckConfig(c), IsOk());
  for (const char* bad : {"localhost", "1.2.3", "010.0.0.1", "::1", ""}) {
    c.ports.host_ips = {"127.0.0.1", bad};
    EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                         "[ports] host_ips: \"" + std::string(bad)))
        << bad;
  }
}

TEST_F(CheckConfigTest, EgressDeny) {
  DaemonConfig c = c_;
  c.egress.deny_cidrs = {"169.254.0.0/16", "10.0.0.0/33"};
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "[network] egress_deny: \"10.0.0.0/33\""));
  c.egress.deny_cidrs = {"192.168.1.1", "100.64.0.0/10"};
  EXPECT_THAT(CheckConfig(c), IsOk());
}

TEST_F(CheckConfigTest, TenantNames) {
  for (const std::string& good : {std::string("alice"), std::string("bob@example.org"),
                                   std::string("a.b-c_D9"), std::string(64, 'x')}) {
    EXPECT_THAT(ValidateTenantName(good), IsOk()) << good;
  }
  for (const std::string& bad :
       {std::string(""), std::string(65, 'x'), std::string("uid:5"), std::string("a b"),
        std::string("a/b"), std::string("ä"), std::string("x\n")}) {
    DaemonConfig c = c_;
    c.tenants.push_back(TenantConfig{bad});
    EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "tenant name"))
        << bad;
  }
}

TEST_F(CheckConfigTest, UidOrSubjectInTwoTenants) {
  DaemonConfig c = c_;
  TenantConfig a{"a"};
  a.uids = {1001};
  a.tls_subjects = {"a"};
  TenantConfig b{"b"};
  b.uids = {1002};
  b.tls_subjects = {"b"};
  c.tenants = {a, b};
  EXPECT_THAT(CheckConfig(c), IsOk());
  c.tenants[1].uids.push_back(1001);
  EXPECT_THAT(CheckConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "uid 1001 is in the uids of both [tenants.a] and [tenants.b]"));
  c.tenants = {a, b};
  c.tenants[1].tls_subjects.push_back("a");
  EXPECT_THAT(CheckConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "TLS subject \"a\" is in the tls_subjects of both [tenants.a] and "
                       "[tenants.b]"));
  c.tenants = {a, b};
  c.tenants[0].tls_subjects.push_back("");
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "tls_subjects"));
  c.tenants = {a, a};
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "twice"));
}

TEST_F(CheckConfigTest, QuotasNonNegative) {
  DaemonConfig c = c_;
  c.default_quota.memory_mib = -1;
  EXPECT_THAT(CheckConfig(c),
              StatusIs(absl::StatusCode::kInvalidArgument, "[quotas] memory_mib: must be >= 0"));
  c.default_quota.memory_mib = 0;
  TenantConfig t{"t"};
  t.quota.port_forwards = -5;
  c.tenants = {t};
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument,
                                       "[tenants.t.quotas] port_forwards: must be >= 0"));
  c.tenants[0].quota.port_forwards = 0;
  EXPECT_THAT(CheckConfig(c), IsOk());
}

TEST_F(CheckConfigTest, StateAndRunDirs) {
  DaemonConfig c = c_;
  c.state_dir = "relative";
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "absolute"));
  c = c_;
  c.run_dir = "/" + std::string(60, 'r');
  EXPECT_THAT(CheckConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, "too long"));
}

}  // namespace
}  // namespace smolvm::daemon
