#include "daemon/guest_streams.h"

#include "daemon/proto_convert.h"

namespace smolvm::daemon {

absl::Status StreamExec(agent::ExecHandle& handle, grpc::ServerContext* ctx,
                        grpc::ServerWriter<v1::ExecResponse>* writer) {
  while (true) {
    // Wake up now and then to notice a client that went away.
    auto event = handle.Next(absl::Now() + absl::Seconds(1));
    if (absl::IsDeadlineExceeded(event.status())) {
      if (ctx->IsCancelled()) return absl::CancelledError("exec: the client went away");
      continue;
    }
    if (!event.ok()) return event.status();
    v1::ExecResponse msg;
    ToProto(*event, &msg);
    if (!writer->Write(msg)) return absl::CancelledError("exec: the client went away");
    if (event->kind == agent::ExecEvent::Kind::kExit) return absl::OkStatus();
  }
}

std::function<absl::StatusOr<std::string>()> UploadChunks(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadFileRequest>* reader) {
  return [ctx, reader]() -> absl::StatusOr<std::string> {
    v1::UploadFileRequest msg;
    while (reader->Read(&msg)) {
      if (msg.has_header()) {
        return absl::InvalidArgumentError("upload: only the first message may carry a header");
      }
      if (!msg.data().empty()) return std::move(*msg.mutable_data());
    }
    if (ctx->IsCancelled()) return absl::CancelledError("upload: the client went away");
    return std::string();
  };
}

std::function<absl::Status(const std::string&)> DownloadSink(
    grpc::ServerContext* ctx, grpc::ServerWriter<v1::DownloadFileResponse>* writer) {
  return [ctx, writer](const std::string& data) -> absl::Status {
    v1::DownloadFileResponse msg;
    msg.set_data(data);
    if (ctx->IsCancelled() || !writer->Write(msg)) {
      return absl::CancelledError("download: the client went away");
    }
    return absl::OkStatus();
  };
}

}  // namespace smolvm::daemon
