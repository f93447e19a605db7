// File: tls_credentials.h
//
// Credentials of the optional TCP listener: TLS that requires and verifies
// a client certificate signed by [tls] client_ca, plus an auth metadata
// processor that maps the certificate's subjects (CN, URI SANs) to a tenant
// for every call, before any handler runs (health and reflection
// included). An unmapped certificate fails every call with UNAUTHENTICATED.
// A mapped one leaves the Caller in the call's AuthContext, where the
// services read it with CallerFromAuthContext.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "daemon/config.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"
#include "lib/core/tenant_directory.h"
#include "lib/model/tenant.h"

namespace smolvm::daemon {

// AuthContext properties the processor adds for a mapped client.
inline constexpr char kTenantProperty[] = "smolvm_tenant";      // Caller::tenant
inline constexpr char kAdminProperty[] = "smolvm_admin";        // "1" or "0"
inline constexpr char kIdentityProperty[] = "smolvm_identity";  // "tls:<subject>"

// Reads the PEM files named by config.tls_cert / tls_key / tls_client_ca,
// checks that they parse and that the key belongs to the certificate
// (INVALID_ARGUMENT naming the setting otherwise), and builds the
// credentials. `directory` must outlive every server using them.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeMutualTlsServerCredentials(
    const DaemonConfig& config, const core::TenantDirectory* directory);

// The certificate subjects a peer presented, as ForTlsSubjects takes them:
// the common name(s), then the URI SANs.
std::vector<std::string> PeerSubjects(const grpc::AuthContext& context);

// The Caller the processor stored in `context`, or nullopt if it stored
// none (not a TLS connection).
std::optional<Caller> CallerFromAuthContext(const grpc::AuthContext& context);

// The processor itself (exposed for tests): maps PeerSubjects with
// `directory` and stores the result, or fails the call UNAUTHENTICATED.
// gRPC passes the connection's AuthContext, shared by all its calls, so the
// first call of a connection stores the Caller and later ones find it;
// a mutex keeps concurrent first calls from both writing.
class TenantAuthProcessor : public grpc::AuthMetadataProcessor {
 public:
  explicit TenantAuthProcessor(const core::TenantDirectory* directory) : directory_(directory) {}

  // Pure and fast: runs inline on the call's thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const core::TenantDirectory* directory_;
  absl::Mutex mu_;  // Held while checking for / adding the properties.
};

}  // namespace smolvm::daemon
