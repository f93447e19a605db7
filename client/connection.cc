#include "client/connection.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/status.h"

namespace smolvm {

std::string ResolveSocketPath(absl::string_view explicit_path) {
  if (!explicit_path.empty()) return std::string(explicit_path);
  if (const char* env = std::getenv(kSocketEnvVar); env != nullptr && *env) {
    return env;
  }
  return kDefaultSocketPath;
}

Connection::Connection(ClientOptions options)
    : socket_path_(ResolveSocketPath(options.socket_path)),
      timeout_(options.timeout),
      channel_(grpc::CreateChannel(absl::StrCat("unix:", socket_path_),
                                   grpc::InsecureChannelCredentials())),
      vm_stub_(v1::VmService::NewStub(channel_)),
      snapshot_stub_(v1::SnapshotService::NewStub(channel_)) {}

Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;

void Connection::PrepareContext(grpc::ClientContext* context) const {
  // An infinite (or non-positive) timeout means "no deadline": gRPC's default.
  if (timeout_ > absl::ZeroDuration() && timeout_ != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  }
}

absl::Status Connection::Convert(const grpc::Status& status) const {
  absl::Status converted = FromGrpcStatus(status);
  // UNAVAILABLE comes both from the transport (no daemon on the socket, or it
  // went away mid-call) and from the daemon itself (e.g. a VM's QMP not up
  // yet). Only the first is worth the hint, and only then is the channel not
  // READY after the call.
  if (converted.code() == absl::StatusCode::kUnavailable &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
    return absl::UnavailableError(
        absl::StrCat("connect to smolvmd: is smolvmd running? socket ",
                     socket_path_, ": ", converted.message()));
  }
  return converted;
}

}  // namespace smolvm
