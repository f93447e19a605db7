#include "client/connection.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

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

namespace {

grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  // Streamed Exec output and DownloadFile chunks are sized by the daemon and
  // guest agent; do not let gRPC's 4 MiB default reject a large one.
  args.SetMaxReceiveMessageSize(64 << 20);
  // Exec stdin travels in one request (at most 16 MiB, plus the rest).
  args.SetMaxSendMessageSize(64 << 20);
  return args;
}

}  // namespace

Connection::Connection(ClientOptions options)
    : socket_path_(ResolveSocketPath(options.socket_path)),
      timeout_(options.timeout),
      channel_(grpc::CreateCustomChannel(absl::StrCat("unix:", socket_path_),
                                         grpc::InsecureChannelCredentials(),
                                         ChannelArgs())),
      vm_stub_(v1::VmService::NewStub(channel_)),
      snapshot_stub_(v1::SnapshotService::NewStub(channel_)) {}

Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;

void Connection::SetDeadline(grpc::ClientContext* context,
                             absl::Duration timeout) {
  // An infinite (or non-positive) timeout means "no deadline": gRPC's default.
  if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
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
