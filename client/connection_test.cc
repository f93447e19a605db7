// Tests of Connection over TCP with mutual TLS: an in-process gRPC server
// that requires client certificates from its CA, and certificates made by
// the `openssl` command in a temporary directory. (Endpoint resolution and
// the Unix socket paths are covered in smolvm_test.cc.)

#include "client/connection.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "client/test_env.h"
#include "tests/testing/temp_dir.h"

namespace smolvm {
namespace {

// WhoAmI answers GetVm with what the server learnt about the caller: the
// client certificate's CN as `owner` and the tenant metadata as `error`.
class WhoAmI final : public v1::VmService::Service {
 public:
  grpc::Status GetVm(grpc::ServerContext* ctx, const v1::GetVmRequest* req,
                     v1::Vm* resp) override {
    resp->set_vm_id(req->vm_id());
    for (const grpc::string_ref& cn :
         ctx->auth_context()->FindPropertyValues("x509_common_name")) {
      resp->set_owner(std::string(cn.data(), cn.size()));
    }
    const auto& metadata = ctx->client_metadata();
    if (auto it = metadata.find(kTenantMetadataKey); it != metadata.end()) {
      resp->set_error(std::string(it->second.data(), it->second.size()));
    }
    return grpc::Status::OK;
  }
};

// kMakeCertificates makes, in the current directory, two CAs (ca, other)
// and with them a server certificate for localhost / 127.0.0.1 and client
// certificates alice (from ca) and mallory (from other).
constexpr char kMakeCertificates[] = R"(set -e
key='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes'
for ca in ca other; do
  openssl req -x509 $key -days 2 -subj /CN=smolvm-test-$ca \
    -keyout $ca.key -out $ca.pem
done
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
issue() {  # NAME CN CA [EXTFILE]
  openssl req $key -subj /CN=$2 -keyout $1.key -out $1.csr
  openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial \
    -days 2 ${4:+-extfile $4} -out $1.pem
}
issue server localhost ca server.ext
issue alice alice ca
issue mallory mallory other
)";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream data;
  data << in.rdbuf();
  return data.str();
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
      GTEST_SKIP() << "no openssl command to make test certificates";
    }
    const std::string script = temp_.Join("make-certs.sh");
    std::ofstream(script) << kMakeCertificates;
    const int rc = std::system(absl::StrCat("cd ", temp_.path(), " && sh ",
                                            script, " >openssl.log 2>&1")
                                   .c_str());
    ASSERT_EQ(rc, 0) << ReadFile(temp_.Join("openssl.log"));

    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = ReadFile(Pem("ca"));
    ssl.pem_key_cert_pairs.push_back(
        {ReadFile(temp_.Join("server.key")), ReadFile(Pem("server"))});
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(ssl),
                             &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    endpoint_ = absl::StrCat("127.0.0.1:", port);
  }
  void TearDown() override {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() +
                        std::chrono::seconds(5));
    }
  }

  std::string Pem(const std::string& name) const {
    return temp_.Join(name + ".pem");
  }

  // Options of a client with certificate `client` that trusts `ca`.
  ClientOptions Options(const std::string& client,
                        const std::string& ca = "ca") const {
    ClientOptions options;
    options.endpoint = endpoint_;
    options.tls_cert = Pem(client);
    options.tls_key = temp_.Join(client + ".key");
    options.tls_ca = Pem(ca);
    options.timeout = absl::Seconds(20);
    return options;
  }

  smolvm_testing::TempDir temp_{"smolvm-tls-test"};
  WhoAmI service_;
  std::unique_ptr<grpc::Server> server_;
  std::string endpoint_;
};

TEST_F(TlsTest, ClientCertificateFromTheServersCaIsAccepted) {
  ClientOptions options = Options("alice");
  options.act_as_tenant = "bob";
  absl::StatusOr<v1::Vm> vm = SmolVMManager(options).get_vm("x");
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(vm->owner(), "alice");  // The server saw our certificate.
  EXPECT_EQ(vm->error(), "bob");    // And the tenant metadata.
}

TEST_F(TlsTest, EnvironmentSuppliesEndpointAndFiles) {
  const ClientOptions files = Options("alice");
  client_testing::ScopedEnv endpoint(kEndpointEnvVar, endpoint_.c_str());
  client_testing::ScopedEnv cert(kTlsCertEnvVar, files.tls_cert.c_str());
  client_testing::ScopedEnv key(kTlsKeyEnvVar, files.tls_key.c_str());
  client_testing::ScopedEnv ca(kTlsCaEnvVar, files.tls_ca.c_str());
  client_testing::ScopedEnv socket(kSocketEnvVar, "/nonexistent/loses.sock");

  absl::StatusOr<v1::Vm> vm = SmolVMManager().get_vm("x");
  ASSERT_TRUE(vm.ok()) << vm.status();
  EXPECT_EQ(vm->owner(), "alice");

  // smolvmctl reads the same environment, and its flags override it.
  const std::string out = temp_.Join("ctl.out");
  const int rc = std::system(
      absl::StrCat(SMOLVMCTL_PATH, " vm get x >", out, " 2>&1").c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << ReadFile(out);
  EXPECT_NE(ReadFile(out).find("owner:"), std::string::npos) << ReadFile(out);
  EXPECT_NE(ReadFile(out).find("alice"), std::string::npos) << ReadFile(out);
  const int bad =
      std::system(absl::StrCat(SMOLVMCTL_PATH, " --tls-cert ", Pem("mallory"),
                               " --tls-key ", temp_.Join("mallory.key"),
                               " vm get x >", out, " 2>&1")
                      .c_str());
  EXPECT_TRUE(WIFEXITED(bad) && WEXITSTATUS(bad) == 7) << ReadFile(out);
}

TEST_F(TlsTest, ClientCertificateFromAnotherCaIsRejected) {
  absl::StatusOr<v1::Vm> vm = SmolVMManager(Options("mallory")).get_vm("x");
  ASSERT_EQ(vm.status().code(), absl::StatusCode::kUnavailable) << vm.status();
  EXPECT_NE(vm.status().message().find(
                absl::StrCat("is smolvmd running? (and do the TLS files "
                             "match it?) endpoint ",
                             endpoint_)),
            absl::string_view::npos)
      << vm.status();
}

TEST_F(TlsTest, ServerFromAnotherCaIsRejected) {
  absl::StatusOr<v1::Vm> vm =
      SmolVMManager(Options("alice", /*ca=*/"other")).get_vm("x");
  EXPECT_EQ(vm.status().code(), absl::StatusCode::kUnavailable) << vm.status();
}

TEST_F(TlsTest, ANonPemFileIsAPreconditionError) {
  ClientOptions options = Options("alice");
  options.tls_key = temp_.Join("server.ext");
  absl::Status status = SmolVMManager(options).get_vm("x").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("tls_key (--tls-key, $SMOLVMD_TLS_KEY) " +
                                  temp_.Join("server.ext")),
            absl::string_view::npos)
      << status;
}

}  // namespace
}  // namespace smolvm
