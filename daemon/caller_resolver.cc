#include "daemon/caller_resolver.h"

#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "daemon/tls_credentials.h"

namespace smolvm::daemon {

absl::StatusOr<Caller> CallerResolver::FromUnixPeer(int fd) const {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return absl::UnauthenticatedError("the connection is not a local socket");
  }
  struct ucred cred {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("cannot read the caller's credentials: ", strerror(errno)));
  }
  // Supplementary groups as they were when the peer connected.
  std::vector<gid_t> groups(64);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
    if (errno != ERANGE) {
      return absl::UnauthenticatedError(
          absl::StrCat("cannot read the caller's groups: ", strerror(errno)));
    }
    groups.resize(len / sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) != 0) {
      return absl::UnauthenticatedError(
          absl::StrCat("cannot read the caller's groups: ", strerror(errno)));
    }
  }
  groups.resize(len / sizeof(gid_t));
  return directory_->ForLocalPeer(cred.uid, cred.gid, groups, cred.pid);
}

absl::StatusOr<Caller> CallerResolver::Resolve(const grpc::ServerContext& ctx) const {
  absl::StatusOr<Caller> caller = absl::UnauthenticatedError(
      "the caller's identity is unknown: connect through the daemon's Unix socket, or over "
      "TCP with a client certificate that [tenants.NAME] tls_subjects maps");
  const std::string peer = ctx.peer();
  int fd = -1;
  if (absl::StartsWith(peer, "fd:") && absl::SimpleAtoi(peer.substr(3), &fd) && fd >= 0) {
    caller = FromUnixPeer(fd);
  } else if (auto auth = ctx.auth_context(); auth && auth->IsPeerAuthenticated()) {
    if (auto mapped = CallerFromAuthContext(*auth)) caller = *std::move(mapped);
  }
  if (!caller.ok()) return caller;
  auto act_as = ctx.client_metadata().find(kActAsTenantMetadata);
  if (act_as == ctx.client_metadata().end()) return caller;
  return directory_->ActAs(*caller, std::string(act_as->second.data(), act_as->second.size()));
}

}  // namespace smolvm::daemon
