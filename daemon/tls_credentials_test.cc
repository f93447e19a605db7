#include "daemon/tls_credentials.h"

#include <future>
#include <map>

#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/subprocess.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::daemon {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

core::TenantDirectory MakeDirectory() {
  TenantConfig alice{"alice"};
  alice.tls_subjects = {"alice", "spiffe://example.org/alice"};
  TenantConfig ops{"ops"};
  ops.tls_subjects = {"ops"};
  ops.admin = true;
  return core::TenantDirectory({alice, ops}, QuotaLimits{}, std::nullopt);
}

// --- The processor against an in-memory AuthContext ---

class FakeAuthContext : public grpc::AuthContext {
 public:
  bool IsPeerAuthenticated() const override { return true; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override { return {}; }
  std::string GetPeerIdentityPropertyName() const override { return ""; }
  std::vector<grpc::string_ref> FindPropertyValues(const std::string& name) const override {
    std::vector<grpc::string_ref> out;
    auto [begin, end] = properties_.equal_range(name);
    for (auto it = begin; it != end; ++it) out.emplace_back(it->second);
    return out;
  }
  grpc::AuthPropertyIterator begin() const override { return EmptyIterator(); }
  grpc::AuthPropertyIterator end() const override { return EmptyIterator(); }
  void AddProperty(const std::string& key, const grpc::string_ref& value) override {
    properties_.emplace(key, std::string(value.data(), value.size()));
  }
  bool SetPeerIdentityPropertyName(const std::string&) override { return false; }

  size_t Count(const std::string& name) const { return properties_.count(name); }

 private:
  struct EmptyIterator : grpc::AuthPropertyIterator {};
  std::multimap<std::string, std::string> properties_;
};

grpc::Status RunProcessor(TenantAuthProcessor& processor, FakeAuthContext& ctx) {
  grpc::AuthMetadataProcessor::InputMetadata in;
  grpc::AuthMetadataProcessor::OutputMetadata consumed, response;
  return processor.Process(in, &ctx, &consumed, &response);
}

TEST(PeerSubjectsTest, CommonNameThenUriSans) {
  FakeAuthContext ctx;
  ctx.AddProperty(GRPC_PEER_URI_PROPERTY_NAME, "spiffe://example.org/a");
  ctx.AddProperty(GRPC_X509_SAN_PROPERTY_NAME, "dns.example.org");  // Not a subject.
  ctx.AddProperty(GRPC_X509_CN_PROPERTY_NAME, "a");
  ctx.AddProperty(GRPC_PEER_DNS_PROPERTY_NAME, "dns.example.org");
  EXPECT_THAT(PeerSubjects(ctx), ElementsAre("a", "spiffe://example.org/a"));
  EXPECT_THAT(PeerSubjects(FakeAuthContext()), IsEmpty());
}

TEST(TenantAuthProcessorTest, MapsOnceAndStoresTheCaller) {
  core::TenantDirectory dir = MakeDirectory();
  TenantAuthProcessor processor(&dir);
  EXPECT_FALSE(processor.IsBlocking());
  FakeAuthContext ctx;
  ctx.AddProperty(GRPC_X509_CN_PROPERTY_NAME, "ops");
  EXPECT_FALSE(CallerFromAuthContext(ctx).has_value());
  ASSERT_TRUE(RunProcessor(processor, ctx).ok());
  ASSERT_TRUE(RunProcessor(processor, ctx).ok());  // Second call, same connection.
  EXPECT_EQ(ctx.Count(kTenantProperty), 1u);
  auto caller = CallerFromAuthContext(ctx);
  ASSERT_TRUE(caller.has_value());
  EXPECT_EQ(caller->tenant, "ops");
  EXPECT_TRUE(caller->admin);
  EXPECT_EQ(caller->identity, "tls:ops");
}

TEST(TenantAuthProcessorTest, UriSan) {
  core::TenantDirectory dir = MakeDirectory();
  TenantAuthProcessor processor(&dir);
  FakeAuthContext ctx;
  ctx.AddProperty(GRPC_X509_CN_PROPERTY_NAME, "whatever");
  ctx.AddProperty(GRPC_PEER_URI_PROPERTY_NAME, "spiffe://example.org/alice");
  ASSERT_TRUE(RunProcessor(processor, ctx).ok());
  auto caller = CallerFromAuthContext(ctx);
  ASSERT_TRUE(caller.has_value());
  EXPECT_EQ(caller->tenant, "alice");
  EXPECT_FALSE(caller->admin);
  EXPECT_EQ(ctx.FindPropertyValues(kAdminProperty)[0], "0");
}

TEST(TenantAuthProcessorTest, UnmappedIsUnauthenticated) {
  core::TenantDirectory dir = MakeDirectory();
  TenantAuthProcessor processor(&dir);
  FakeAuthContext ctx;
  ctx.AddProperty(GRPC_X509_CN_PROPERTY_NAME, "mallory");
  ctx.AddProperty(GRPC_X509_SAN_PROPERTY_NAME, "alice");  // DNS SAN: not a subject.
  grpc::Status s = RunProcessor(processor, ctx);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("mallory is not mapped to a tenant"));
  EXPECT_EQ(ctx.Count(kTenantProperty), 0u);
}

// --- Real certificates, a real server on 127.0.0.1 ---

class Pki {
 public:
  Pki() {
    MakeCa("ca");
    MakeCa("other-ca");
    Issue("ca", "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1", true);
    Issue("ca", "alice", "/CN=alice", "", false);
    Issue("ca", "alice-uri", "/CN=not-mapped",
          "subjectAltName=URI:spiffe://example.org/alice", false);
    Issue("ca", "ops", "/CN=ops", "", false);
    Issue("ca", "mallory", "/CN=mallory", "", false);
    Issue("other-ca", "alice-elsewhere", "/CN=alice", "", false);
  }
  std::string Path(const std::string& name) const { return dir_.Join(name); }
  std::string Pem(const std::string& name) const {
    auto text = ReadFileToString(Path(name));
    EXPECT_THAT(text, IsOk());
    return text.ok() ? *text : "";
  }

 private:
  void Run(const std::vector<std::string>& argv) {
    auto r = RunChecked(argv, SubprocessOptions{absl::Seconds(60)});
    ASSERT_THAT(r, IsOk());
  }
  void MakeCa(const std::string& name) {
    Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", Path(name + ".key"), "-out", Path(name + ".pem"), "-days", "2",
         "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"});
  }
  void Issue(const std::string& ca, const std::string& name, const std::string& subject,
             const std::string& san, bool server) {
    Run({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", Path(name + ".key"), "-out", Path(name + ".csr"), "-subj",
         subject});
    std::string ext = absl::StrCat("basicConstraints=CA:FALSE\nextendedKeyUsage=",
                                   server ? "serverAuth" : "clientAuth", "\n",
                                   san.empty() ? "" : san + "\n");
    ASSERT_THAT(WriteFileAtomic(Path(name + ".ext"), ext), IsOk());
    Run({"openssl", "x509", "-req", "-in", Path(name + ".csr"), "-CA", Path(ca + ".pem"),
         "-CAkey", Path(ca + ".key"), "-CAcreateserial", "-days", "2", "-out",
         Path(name + ".pem"), "-extfile", Path(name + ".ext")});
  }

  smolvm_testing::TempDir dir_{"tls"};
};

// Answers every method not otherwise served with "<tenant>|<admin>|<identity>"
// of the caller the processor stored.
class WhoAmIService : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* ctx) override {
    class Reactor : public grpc::ServerGenericBidiReactor {
     public:
      explicit Reactor(grpc::GenericCallbackServerContext* ctx) {
        auto caller = CallerFromAuthContext(*ctx->auth_context());
        std::string text = caller ? absl::StrCat(caller->tenant, "|", caller->admin ? "1" : "0",
                                                 "|", caller->identity)
                                  : "none";
        grpc::Slice slice(text);
        response_ = grpc::ByteBuffer(&slice, 1);
        StartRead(&request_);
      }
      void OnReadDone(bool ok) override {
        if (!ok) {
          Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
          return;
        }
        StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
      }
      void OnDone() override { delete this; }

     private:
      grpc::ByteBuffer request_;
      grpc::ByteBuffer response_;
    };
    return new Reactor(ctx);
  }
};

class MutualTlsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override {
    config_.tls_cert = pki_->Path("server.pem");
    config_.tls_key = pki_->Path("server.key");
    config_.tls_client_ca = pki_->Path("ca.pem");
    auto creds = MakeMutualTlsServerCredentials(config_, &directory_);
    ASSERT_THAT(creds, IsOk());
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", *creds, &port_);
    builder.RegisterCallbackGenericService(&who_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  // A unary call of `method` with an empty request as the client `name`
  // ("" = no client certificate); the response text on success.
  grpc::Status Call(const std::string& name, const std::string& method,
                    std::string* response = nullptr) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = pki_->Pem("ca.pem");
    if (!name.empty()) {
      options.pem_private_key = pki_->Pem(name + ".key");
      options.pem_cert_chain = pki_->Pem(name + ".pem");
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                             grpc::SslCredentials(options), args);
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    // An empty HealthCheckRequest (all services); the ByteBuffer must
    // hold a slice, even an empty one, to be a message.
    grpc::Slice empty("");
    grpc::ByteBuffer request(&empty, 1);
    grpc::ByteBuffer reply;
    std::promise<grpc::Status> done;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &reply,
                   [&done](grpc::Status s) { done.set_value(std::move(s)); });
    grpc::Status status = done.get_future().get();
    if (status.ok() && response != nullptr) {
      std::vector<grpc::Slice> slices;
      (void)reply.Dump(&slices);
      response->clear();
      for (const grpc::Slice& s : slices) {
        response->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
    return status;
  }

  static constexpr char kHealth[] = "/grpc.health.v1.Health/Check";
  static constexpr char kWho[] = "/smolvm.test.Who/AmI";
  static Pki* pki_;
  DaemonConfig config_;
  core::TenantDirectory directory_ = MakeDirectory();
  WhoAmIService who_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

Pki* MutualTlsServerTest::pki_ = nullptr;

TEST_F(MutualTlsServerTest, MappedClientCertificate) {
  grpc::Status s = Call("alice", kHealth);
  EXPECT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  std::string who;
  s = Call("alice", kWho, &who);
  ASSERT_TRUE(s.ok()) << s.error_code() << ": " << s.error_message();
  EXPECT_EQ(who, "alice|0|tls:alice");
  ASSERT_TRUE(Call("ops", kWho, &who).ok());
  EXPECT_EQ(who, "ops|1|tls:ops");
  ASSERT_TRUE(Call("alice-uri", kWho, &who).ok());
  EXPECT_EQ(who, "alice|0|tls:spiffe://example.org/alice");
}

TEST_F(MutualTlsServerTest, UnmappedSubjectIsUnauthenticatedEvenForHealth) {
  for (const char* method : {kHealth, kWho}) {
    grpc::Status s = Call("mallory", method);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
    EXPECT_THAT(s.error_message(), HasSubstr("mallory is not mapped to a tenant"));
  }
}

TEST_F(MutualTlsServerTest, NoClientCertificateOrAnotherCaFails) {
  for (const char* name : {"", "alice-elsewhere"}) {
    grpc::Status s = Call(name, kHealth);
    EXPECT_FALSE(s.ok()) << name;
    EXPECT_NE(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
}

TEST_F(MutualTlsServerTest, BadFilesAreNamedAtStartup) {
  DaemonConfig c = config_;
  c.tls_cert = pki_->Path("missing.pem");
  EXPECT_THAT(MakeMutualTlsServerCredentials(c, &directory_),
              StatusIs(absl::StatusCode::kInvalidArgument, "[tls] cert / --tls-cert"));
  c = config_;
  c.tls_cert = pki_->Path("server.ext");  // Not PEM.
  EXPECT_THAT(MakeMutualTlsServerCredentials(c, &directory_),
              StatusIs(absl::StatusCode::kInvalidArgument, "no PEM certificate"));
  c = config_;
  c.tls_key = pki_->Path("alice.key");
  EXPECT_THAT(MakeMutualTlsServerCredentials(c, &directory_),
              StatusIs(absl::StatusCode::kInvalidArgument, "is not the key of the certificate"));
  c = config_;
  c.tls_key = pki_->Path("server.pem");
  EXPECT_THAT(MakeMutualTlsServerCredentials(c, &directory_),
              StatusIs(absl::StatusCode::kInvalidArgument, "[tls] key / --tls-key"));
  c = config_;
  c.tls_client_ca = pki_->Path("server.key");
  EXPECT_THAT(MakeMutualTlsServerCredentials(c, &directory_),
              StatusIs(absl::StatusCode::kInvalidArgument, "[tls] client_ca / --tls-client-ca"));
}

}  // namespace
}  // namespace smolvm::daemon
