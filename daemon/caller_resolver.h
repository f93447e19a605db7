// File: caller_resolver.h
//
// Who is calling, from the transport alone. On the Unix socket the daemon
// accepted the connection itself (unix_listener.h) and gRPC names the peer
// "fd:<n>": the kernel's SO_PEERCRED / SO_PEERGROUPS of that socket give the
// uid, gid and groups. The fd stays open, and refers to the same
// connection, for as long as a call on it is being served (gRPC's
// transport, which owns it, lives until its last stream ends). On TCP the
// mutual-TLS processor (tls_credentials.h) has already mapped the client
// certificate to a tenant and left it in the call's auth context. Nothing
// the client sends decides its identity; an admin may then act for a
// tenant with the `x-smolvm-tenant` metadata.
#pragma once

#include "absl/status/statusor.h"
#include "daemon/stream_limiter.h"
#include "grpcpp/server_context.h"
#include "lib/core/tenant_directory.h"
#include "lib/model/tenant.h"

namespace smolvm::daemon {

// Metadata an admin sends to act for a tenant.
inline constexpr char kActAsTenantMetadata[] = "x-smolvm-tenant";

class CallerResolver {
 public:
  explicit CallerResolver(const core::TenantDirectory* directory) : directory_(directory) {}

  // UNAUTHENTICATED if the transport vouches for nobody; PERMISSION_DENIED
  // for a non-admin that asks to act for a tenant.
  absl::StatusOr<Caller> Resolve(const grpc::ServerContext& ctx) const;

  // The bound on long calls Serve applies (unset: none).
  void set_stream_limiter(StreamLimiter* limiter) { streams_ = limiter; }
  StreamLimiter* stream_limiter() const { return streams_; }

 private:
  absl::StatusOr<Caller> FromUnixPeer(int fd) const;
  const core::TenantDirectory* const directory_;
  StreamLimiter* streams_ = nullptr;
};

}  // namespace smolvm::daemon
