// File: client/connection.h
// -----------------------------------------------------------------------------
//
// The client side of the smolvmd socket: one gRPC channel to the daemon's Unix
// socket plus the two service stubs (smolvm.v1.VmService and
// smolvm.v1.SnapshotService), and `Connection::Call()`, which makes one unary
// RPC with the configured deadline and returns an `absl::StatusOr`.
//
// `SmolVM` and `SmolVMManager` (client/smolvm.h) are built on this; smolvmctl
// uses it directly for the RPCs that have no SDK-style method. Streaming RPCs
// (Exec, UploadFile, DownloadFile) are made on `vm_stub()` with a context
// prepared by `SetDeadline()`, and their final status goes through
// `Convert()`.
//
// Socket path resolution (see `ResolveSocketPath()`): the explicit option, else
// the environment variable SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.
//
// Errors: every RPC failure is returned as an `absl::Status` with the gRPC code
// and message unchanged (client/status.h), except that when the daemon cannot
// be reached (UNAVAILABLE while the channel is not connected) the message also
// says "is smolvmd running? socket <path>".

#ifndef SMOLVM_CLIENT_CONNECTION_H_
#define SMOLVM_CLIENT_CONNECTION_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm {

// kDefaultSocketPath is where smolvmd listens unless configured otherwise.
inline constexpr char kDefaultSocketPath[] = "/run/smolvmd/smolvmd.sock";

// kSocketEnvVar names the environment variable that overrides the default
// socket path for the daemon, the client library and smolvmctl alike.
inline constexpr char kSocketEnvVar[] = "SMOLVMD_SOCKET";

// ClientOptions says how to reach smolvmd.
struct ClientOptions {
  // Path of the daemon's Unix socket. "" = $SMOLVMD_SOCKET if set and
  // non-empty, else kDefaultSocketPath.
  std::string socket_path;
  // Deadline of each RPC, measured from when the call starts. Boots and
  // snapshots under TCG take seconds to minutes, hence the generous default.
  // absl::InfiniteDuration() (or any non-positive value) means no deadline.
  absl::Duration timeout = absl::Minutes(10);
};

// ResolveSocketPath returns `explicit_path` if non-empty, else $SMOLVMD_SOCKET
// if set and non-empty, else kDefaultSocketPath.
std::string ResolveSocketPath(absl::string_view explicit_path);

// Connection owns a channel to smolvmd and the stubs of both services.
//
// Constructing one does no I/O: the channel connects on the first RPC, so a
// missing daemon shows up as an UNAVAILABLE status from `Call()`. RPCs fail
// fast (no wait-for-ready): if the socket is not there, the call returns at
// once instead of waiting for the deadline.
//
// Thread-safety: `Call()` may be used from several threads at once (gRPC stubs
// and channels are thread-safe). Movable, not copyable; a moved-from
// Connection may only be destroyed or assigned to.
class Connection {
 public:
  explicit Connection(ClientOptions options = {});

  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Call makes one unary RPC, named by its stub method, e.g.
  //
  //   absl::StatusOr<v1::Vm> vm =
  //       conn.Call(&v1::VmService::Stub::GetVm, request);
  //
  // with the configured deadline, and converts the result (client/status.h).
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request) const {
    grpc::ClientContext context;
    PrepareContext(&context);
    Response response;
    grpc::Status status = (stub<Stub>().*method)(&context, request, &response);
    if (!status.ok()) return Convert(status);
    return response;
  }

  // vm_stub is the VmService stub, for the streaming RPCs `Call()` does not
  // make. Thread-safe like the stub itself.
  v1::VmService::Stub& vm_stub() const { return *vm_stub_; }

  // SetDeadline sets a deadline `timeout` from now on `context`; an infinite
  // or non-positive `timeout` sets none.
  static void SetDeadline(grpc::ClientContext* context, absl::Duration timeout);

  // Convert maps a failed call's status to absl::Status (client/status.h) and
  // adds the "is smolvmd running?" hint when the daemon could not be reached.
  absl::Status Convert(const grpc::Status& status) const;

  // socket_path is the resolved path of the daemon socket.
  const std::string& socket_path() const { return socket_path_; }
  // timeout is the per-RPC deadline (see ClientOptions::timeout).
  absl::Duration timeout() const { return timeout_; }
  // options returns the options this connection was made with, resolved.
  ClientOptions options() const { return {socket_path_, timeout_}; }

 private:
  template <typename Stub>
  Stub& stub() const {
    if constexpr (std::is_same_v<Stub, v1::VmService::Stub>) {
      return *vm_stub_;
    } else {
      static_assert(std::is_same_v<Stub, v1::SnapshotService::Stub>,
                    "Connection::Call takes a VmService or SnapshotService "
                    "stub method");
      return *snapshot_stub_;
    }
  }

  // PrepareContext sets the configured deadline on a new call's context.
  void PrepareContext(grpc::ClientContext* context) const {
    SetDeadline(context, timeout_);
  }

  std::string socket_path_;
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::VmService::Stub> vm_stub_;
  std::unique_ptr<v1::SnapshotService::Stub> snapshot_stub_;
};

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_CONNECTION_H_
