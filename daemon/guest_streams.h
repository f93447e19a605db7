// File: guest_streams.h
//
// Adapters between gRPC streams and the core library's exec and file
// interfaces, so the handlers in vm_service.cc stay one call each.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "lib/agent/agent_client.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm::daemon {

// Forwards an exec's events to the client until the exit. Returns CANCELLED
// if the client goes away (the handle then kills the command).
absl::Status StreamExec(agent::ExecHandle& handle, grpc::ServerContext* ctx,
                        grpc::ServerWriter<v1::ExecResponse>* writer);

// The data of an upload, message by message; "" at the end of the stream.
// A client that cancels mid-stream yields CANCELLED, never a silent end, so
// a partial upload is not committed in the guest.
std::function<absl::StatusOr<std::string>()> UploadChunks(
    grpc::ServerContext* ctx, grpc::ServerReader<v1::UploadFileRequest>* reader);

// Writes each downloaded piece as a message; fails if the client is gone.
std::function<absl::Status(const std::string&)> DownloadSink(
    grpc::ServerContext* ctx, grpc::ServerWriter<v1::DownloadFileResponse>* writer);

}  // namespace smolvm::daemon
