#include "daemon/tls_credentials.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc/grpc_security_constants.h"
#include "lib/base/file_util.h"

namespace smolvm::daemon {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using UniqueBio = std::unique_ptr<BIO, BioFree>;
using UniqueX509 = std::unique_ptr<X509, X509Free>;
using UniqueKey = std::unique_ptr<EVP_PKEY, KeyFree>;

UniqueBio MemBio(const std::string& pem) {
  return UniqueBio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The first certificate of a PEM bundle, or null.
UniqueX509 FirstCertificate(const std::string& pem) {
  UniqueBio bio = MemBio(pem);
  if (!bio) return nullptr;
  UniqueX509 cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();  // OpenSSL's error queue is per thread; leave it clean.
  return cert;
}

absl::StatusOr<std::string> ReadPem(const std::string& setting, const std::string& path) {
  auto text = ReadFileToString(path, kMaxPemBytes);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(setting, ": cannot read it: ", text.status().message()));
  }
  return text;
}

absl::Status BadPem(const std::string& setting, const std::string& path,
                    const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(setting, " \"", path, "\": ", what));
}

std::string Str(const grpc::string_ref& s) { return std::string(s.data(), s.size()); }

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeMutualTlsServerCredentials(
    const DaemonConfig& config, const core::TenantDirectory* directory) {
  const std::string kCert = "[tls] cert / --tls-cert";
  const std::string kKey = "[tls] key / --tls-key";
  const std::string kCa = "[tls] client_ca / --tls-client-ca";
  auto cert_pem = ReadPem(kCert, config.tls_cert);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadPem(kKey, config.tls_key);
  if (!key_pem.ok()) return key_pem.status();
  auto ca_pem = ReadPem(kCa, config.tls_client_ca);
  if (!ca_pem.ok()) return ca_pem.status();

  // gRPC would only fail at the first handshake, with a vague log line;
  // say which file is wrong at startup instead.
  UniqueX509 cert = FirstCertificate(*cert_pem);
  if (!cert) return BadPem(kCert, config.tls_cert, "no PEM certificate in it");
  UniqueBio key_bio = MemBio(*key_pem);
  UniqueKey key(key_bio ? PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr)
                        : nullptr);
  ERR_clear_error();
  if (!key) {
    return BadPem(kKey, config.tls_key, "no unencrypted PEM private key in it");
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return BadPem(kKey, config.tls_key,
                  absl::StrCat("is not the key of the certificate ", config.tls_cert));
  }
  if (!FirstCertificate(*ca_pem)) {
    return BadPem(kCa, config.tls_client_ca, "no PEM CA certificate in it");
  }

  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = *std::move(ca_pem);
  options.pem_key_cert_pairs.push_back({*std::move(key_pem), *std::move(cert_pem)});
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::SslServerCredentials(options);
  if (!credentials) {
    return absl::InternalError("gRPC refused the TLS server credentials");
  }
  credentials->SetAuthMetadataProcessor(std::make_shared<TenantAuthProcessor>(directory));
  return credentials;
}

std::vector<std::string> PeerSubjects(const grpc::AuthContext& context) {
  std::vector<std::string> subjects;
  for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_PEER_URI_PROPERTY_NAME}) {
    for (const grpc::string_ref& value : context.FindPropertyValues(property)) {
      subjects.push_back(Str(value));
    }
  }
  return subjects;
}

std::optional<Caller> CallerFromAuthContext(const grpc::AuthContext& context) {
  auto tenant = context.FindPropertyValues(kTenantProperty);
  auto admin = context.FindPropertyValues(kAdminProperty);
  auto identity = context.FindPropertyValues(kIdentityProperty);
  if (tenant.size() != 1 || admin.size() != 1 || identity.size() != 1) return std::nullopt;
  return Caller{Str(tenant[0]), Str(admin[0]) == "1", Str(identity[0])};
}

grpc::Status TenantAuthProcessor::Process(const InputMetadata& /*auth_metadata*/,
                                          grpc::AuthContext* context,
                                          OutputMetadata* /*consumed_auth_metadata*/,
                                          OutputMetadata* /*response_metadata*/) {
  // The properties come only from the verified certificate, never from
  // metadata. The context is the connection's: once filled, it stays
  // filled, and no later call writes to it (handlers may be reading it).
  absl::MutexLock lock(&mu_);
  if (!context->FindPropertyValues(kTenantProperty).empty()) return grpc::Status::OK;
  auto caller = directory_->ForTlsSubjects(PeerSubjects(*context));
  if (!caller.ok()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        std::string(caller.status().message()));
  }
  context->AddProperty(kTenantProperty, caller->tenant);
  context->AddProperty(kAdminProperty, caller->admin ? "1" : "0");
  context->AddProperty(kIdentityProperty, caller->identity);
  return grpc::Status::OK;
}

}  // namespace smolvm::daemon
