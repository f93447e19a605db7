// The TCP listener end to end: mutual TLS with certificates the test makes
// with openssl (test_certs.h), the listener inside the daemon's host
// namespace, smolvmctl (and grpc_probe, for calls smolvmctl will not make)
// run there. A client certificate's CN or URI SAN names the tenant; no
// certificate, another CA's, or an unmapped subject gets nothing. A listener
// without TLS files is refused at startup. One cold boot; the rest is
// snapshot and restore.
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "tests/e2e/e2e_util.h"
#include "tests/e2e/test_certs.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

using nlohmann::json;

constexpr char kEndpoint[] = "127.0.0.1:17443";

class RemoteTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    auto certs = TestCerts::Make(daemon_->dir() + "/tls");
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new TestCerts(*certs);
    // clang-format off
    const std::string config = absl::StrCat(
        "[listen]\n"
        "tcp = \"", kEndpoint, "\"\n"
        "\n"
        "[tls]\n"
        "cert = \"", certs_->server.cert, "\"\n"
        "key = \"", certs_->server.key, "\"\n"
        "client_ca = \"", certs_->ca, "\"\n"
        "\n"
        "[tenants.alice]\n"
        "tls_subjects = [\"alice\"]\n"
        "\n"
        "[tenants.bob]\n"
        "tls_subjects = [\"spiffe://test/bob\"]\n");
    // clang-format on
    auto s = daemon_->Start({}, config);
    ASSERT_TRUE(s.ok()) << s;
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete certs_;
  }
  void SetUp() override {
    if (!ready_) FAIL() << "suite set-up failed (see above)";
  }

  // smolvmctl over TCP with `pair` as the client certificate.
  static ProcResult Remote(const CertPair& pair, const std::vector<std::string>& args,
                           const std::string& ca = "") {
    std::vector<std::string> argv = {
        "--endpoint", kEndpoint, "--tls-cert", pair.cert,
        "--tls-key",  pair.key,  "--tls-ca",   ca.empty() ? certs_->ca : ca,
        "--json"};
    argv.insert(argv.end(), args.begin(), args.end());
    return daemon_->CtlInHostNetns(argv);
  }
  // One raw call over TCP; `pair` null = no client certificate.
  static std::string Probe(const CertPair* pair, const std::string& method) {
    std::vector<std::string> argv = {GRPC_PROBE_BINARY, kEndpoint, method, "--ca", certs_->ca};
    if (pair) argv.insert(argv.end(), {"--cert", pair->cert, "--key", pair->key});
    ProcResult r = daemon_->RunInHostNetns(argv);
    std::string out = std::string(absl::StripTrailingAsciiWhitespace(r.out));
    if (std::getenv("SMOLVM_TEST_VERBOSE")) std::cerr << "probe " << method << ": " << out << "\n";
    return r.exit_code == 0 ? out : "PROBE FAILED: " + r.Describe();
  }
  static std::string CodeOf(const std::string& out) { return out.substr(0, out.find(':')); }

  static TestDaemon* daemon_;
  static TestCerts* certs_;
  static bool ready_;
};
TestDaemon* RemoteTlsTest::daemon_ = nullptr;
TestCerts* RemoteTlsTest::certs_ = nullptr;
bool RemoteTlsTest::ready_ = false;

// The seed's flows, as tenant alice over TCP.
TEST_F(RemoteTlsTest, MappedClientRunsTheSeedFlows) {
  const CertPair& alice = certs_->alice;
  ProcResult created =
      Remote(alice, {"vm", "create", "--id", "r-vm", "--vcpus", "1", "--memory-mib", "192"});
  ASSERT_EQ(created.exit_code, 0) << created.Describe() << daemon_->DaemonLog();
  EXPECT_EQ(One(created.out).value("owner", ""), "alice") << created.out;
  ProcResult snap = Remote(alice, {"snapshot", "create", "r-vm", "--id", "r-snap"});
  ASSERT_EQ(snap.exit_code, 0) << snap.Describe();
  EXPECT_EQ(One(snap.out).value("owner", ""), "alice");
  EXPECT_EQ(Remote(alice, {"vm", "delete", "r-vm"}).exit_code, 0);
  ProcResult list = Remote(alice, {"snapshot", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  EXPECT_EQ(Column(list.out, "snapshot_id"), std::set<std::string>{"r-snap"}) << list.out;

  // Bob (URI SAN), through the environment instead of flags, sees none of it.
  const std::vector<std::string> bob_env = {
      absl::StrCat("SMOLVMD_ENDPOINT=", kEndpoint), "SMOLVMD_TLS_CERT=" + certs_->bob.cert,
      "SMOLVMD_TLS_KEY=" + certs_->bob.key, "SMOLVMD_TLS_CA=" + certs_->ca, "SMOLVMD_SOCKET="};
  ProcResult bob_list =
      daemon_->CtlInHostNetns({"--json", "snapshot", "list"}, std::nullopt, bob_env);
  ASSERT_EQ(bob_list.exit_code, 0) << bob_list.Describe() << daemon_->DaemonLog();
  EXPECT_TRUE(Column(bob_list.out, "snapshot_id").empty()) << bob_list.out;
  ProcResult bob_restore =
      daemon_->CtlInHostNetns({"snapshot", "restore", "r-snap"}, std::nullopt, bob_env);
  EXPECT_EQ(bob_restore.exit_code, kExitNotFound) << bob_restore.Describe();

  ProcResult restored = Remote(alice, {"snapshot", "restore", "r-snap"});
  ASSERT_EQ(restored.exit_code, 0) << restored.Describe() << daemon_->DaemonLog();
  json vm = One(restored.out);
  EXPECT_EQ(vm.value("vm_id", ""), "r-vm");
  EXPECT_EQ(vm.value("status", ""), "RUNNING");
  EXPECT_EQ(vm.value("owner", ""), "alice");
  ProcResult exec = Remote(alice, {"vm", "exec", "r-vm", "--", "echo", "remote"});
  EXPECT_EQ(exec.out, "remote\n") << exec.Describe();
  EXPECT_EQ(Remote(alice, {"vm", "delete", "r-vm"}).exit_code, 0);
  // Root, on the Unix socket, sees alice's snapshot with its owner.
  json info = One(daemon_->Ctl({"snapshot", "get", "r-snap"}).out);
  EXPECT_EQ(info.value("owner", ""), "alice") << info.dump();
  EXPECT_EQ(Remote(alice, {"snapshot", "delete", "r-snap"}).exit_code, 0);
  // The audit log names the certificate.
  bool named = false;
  for (const json& line : AuditLines(daemon_->DaemonLog())) {
    if (line.value("tenant", "") == "alice" && line.value("method", "") == "CreateVm") {
      named = absl::StrContains(line.value("caller", line.value("identity", "")), "alice");
    }
  }
  EXPECT_TRUE(named) << daemon_->DaemonLog();
  // Health and reflection answer authenticated callers.
  EXPECT_EQ(CodeOf(Probe(&alice, "Health")), "OK");
  std::string reflection = Probe(&alice, "Reflection");
  EXPECT_EQ(CodeOf(reflection), "OK") << reflection;
  EXPECT_TRUE(absl::StrContains(reflection, "lists VmService")) << reflection;
}

TEST_F(RemoteTlsTest, ClientsWithoutAMappedCertificateGetNothing) {
  // An unmapped subject signed by the right CA: UNAUTHENTICATED for every
  // call, health and reflection included.
  ProcResult mallory = Remote(certs_->mallory, {"vm", "list"});
  EXPECT_NE(mallory.exit_code, 0) << mallory.Describe();
  EXPECT_EQ(mallory.out, "");
  for (const char* method : {"ListVms", "ListSnapshots", "Health", "Reflection"}) {
    std::string out = Probe(&certs_->mallory, method);
    EXPECT_EQ(CodeOf(out), "UNAUTHENTICATED") << method << ": " << out;
  }
  // Only the CN and URI SANs name tenants: a DNS SAN "alice" does not.
  EXPECT_EQ(CodeOf(Probe(&certs_->dns_alice, "ListVms")), "UNAUTHENTICATED");
  // A mapped client that is no admin cannot act for another tenant.
  ProcResult as_bob = Remote(certs_->alice, {"--as-tenant", "bob", "vm", "list"});
  EXPECT_EQ(as_bob.exit_code, kExitOther) << as_bob.Describe();
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(as_bob.err), "admin")) << as_bob.Describe();
  // A certificate with a mapped CN from another CA, and no certificate at
  // all: refused (in the handshake, or UNAUTHENTICATED).
  ProcResult other = Remote(certs_->other_alice, {"vm", "list"});
  EXPECT_NE(other.exit_code, 0) << other.Describe();
  EXPECT_EQ(other.out, "");
  for (const CertPair* pair : std::vector<const CertPair*>{&certs_->other_alice, nullptr}) {
    for (const char* method : {"ListVms", "Health", "Reflection"}) {
      std::string out = Probe(pair, method);
      const std::string code = CodeOf(out);
      EXPECT_TRUE(code == "UNAVAILABLE" || code == "UNAUTHENTICATED")
          << (pair ? "other CA" : "no certificate") << ", " << method << ": " << out;
    }
  }
  // smolvmctl itself refuses TCP without the three files, naming them.
  ProcResult bare =
      daemon_->CtlInHostNetns({"--endpoint", kEndpoint, "vm", "list"}, std::nullopt,
                              {"SMOLVMD_TLS_CERT=", "SMOLVMD_TLS_KEY=", "SMOLVMD_TLS_CA="});
  EXPECT_NE(bare.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(bare.err, "--tls-cert")) << bare.Describe();
  // A client that trusts another CA does not accept the daemon.
  ProcResult distrust = Remote(certs_->alice, {"vm", "list"}, certs_->other_ca);
  EXPECT_NE(distrust.exit_code, 0) << distrust.Describe();
  // The daemon is still fine.
  EXPECT_EQ(Remote(certs_->alice, {"vm", "list"}).exit_code, 0);
}

TEST(RemoteTlsStartup, ListenerWithoutTlsFilesIsRefused) {
  TestDaemon d;
  auto s = d.Start({}, absl::StrCat("[listen]\ntcp = \"", kEndpoint, "\"\n"));
  ASSERT_FALSE(s.ok()) << "smolvmd served TCP without TLS";
  EXPECT_FALSE(d.running());
  const std::string log = d.DaemonLog();
  EXPECT_TRUE(absl::StrContains(log, "[tls] cert")) << log;
  EXPECT_TRUE(absl::StrContains(log, "[listen] tcp")) << log;
  // A server certificate alone is not enough either: the client CA is needed.
  TestDaemon half;
  auto certs = TestCerts::Make(half.dir() + "/tls");
  ASSERT_TRUE(certs.ok()) << certs.status();
  s = half.Start({}, absl::StrCat("[listen]\ntcp = \"", kEndpoint, "\"\n[tls]\ncert = \"",
                                  certs->server.cert, "\"\nkey = \"", certs->server.key, "\"\n"));
  ASSERT_FALSE(s.ok()) << "smolvmd served TCP without client certificates";
  EXPECT_TRUE(absl::StrContains(half.DaemonLog(), "client_ca")) << half.DaemonLog();
}

}  // namespace
}  // namespace smolvm::testing
