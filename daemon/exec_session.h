// File: exec_session.h
//
// ExecStream's two directions over one running interactive exec: the
// client's requests (stdin, close_stdin, signals, resizes) are forwarded to
// the guest on a thread of their own while the handler's thread streams the
// command's output back, so neither waits for the other.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "lib/agent/guest_agent.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm::daemon {

using ExecSessionStream = grpc::ServerReaderWriter<v1::ExecResponse, v1::ExecStreamRequest>;

// How long a client may keep its request stream open after the exit before
// the call is ended (the contract says: end it after the exit).
inline constexpr absl::Duration kExecSessionLinger = absl::Seconds(10);

// The ExecSpec of ExecStreamStart: Exec's rules plus interactive, the tty
// (sizes 0-1000) and TERM. INVALID_ARGUMENT naming the fix.
absl::StatusOr<agent::ExecSpec> ExecSessionSpecFromProto(const v1::ExecStreamStart& start);

// Runs the session until the exit (OK), the client's cancel (CANCELLED), a
// bad request (INVALID_ARGUMENT; the command is then killed when the caller
// drops `handle`) or the guest's failure.
absl::Status RunExecSession(agent::ExecHandle& handle, bool tty, grpc::ServerContext* ctx,
                            ExecSessionStream* stream);

}  // namespace smolvm::daemon
