// File: client/connection.h
// -----------------------------------------------------------------------------
//
// The client side of smolvmd's API: one gRPC channel to the daemon (its Unix
// socket, or a TCP address with mutual TLS) plus the two service stubs
// (smolvm.v1.VmService and smolvm.v1.SnapshotService), and
// `Connection::Call()`, which makes one unary RPC with the configured deadline
// and returns an `absl::StatusOr`.
//
// `SmolVM` and `SmolVMManager` (client/smolvm.h) are built on this; smolvmctl
// uses it directly for the RPCs that have no SDK-style method. Streaming RPCs
// (Exec, UploadFile, DownloadFile) are made on `vm_stub()` with a context
// prepared by `PrepareContext()`, and their final status goes through
// `Convert()`.
//
// Endpoint resolution (see `ResolveEndpoint()`), first that is set wins:
// ClientOptions::endpoint, ClientOptions::socket_path, $SMOLVMD_ENDPOINT,
// $SMOLVMD_SOCKET, /run/smolvmd/smolvmd.sock. An endpoint is
// "unix:///abs/path", "unix:/abs/path", "unix:rel/path" or a bare "/abs/path"
// for a Unix socket, or "host:port" ("[v6addr]:port") for TCP, which always
// uses mutual TLS with the client certificate, key and CA of
// ClientOptions::tls_* or $SMOLVMD_TLS_CERT / $SMOLVMD_TLS_KEY /
// $SMOLVMD_TLS_CA. A Unix socket's permissions are its access control.
//
// Errors: every RPC failure is returned as an `absl::Status` with the gRPC code
// and message unchanged (client/status.h), except that
//  - when the daemon cannot be reached (UNAVAILABLE while the channel is not
//    connected) the message also says "is smolvmd running?" and names the
//    socket or endpoint;
//  - a Connection whose options are unusable (a malformed endpoint or tenant:
//    INVALID_ARGUMENT; a TCP endpoint without all three TLS files, or with one
//    that cannot be read: FAILED_PRECONDITION naming the option and its
//    environment variable) sends nothing and fails every call with that
//    error.

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
#include "smolvm/v1/event_service.grpc.pb.h"
#include "smolvm/v1/filesystem_service.grpc.pb.h"
#include "smolvm/v1/image_service.grpc.pb.h"
#include "smolvm/v1/operation_service.grpc.pb.h"
#include "smolvm/v1/pool_service.grpc.pb.h"
#include "smolvm/v1/process_service.grpc.pb.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace smolvm {

// kDefaultSocketPath is where smolvmd listens unless configured otherwise.
inline constexpr char kDefaultSocketPath[] = "/run/smolvmd/smolvmd.sock";

// kSocketEnvVar names the environment variable that overrides the default
// socket path for the daemon, the client library and smolvmctl alike.
inline constexpr char kSocketEnvVar[] = "SMOLVMD_SOCKET";
// kEndpointEnvVar names the environment variable with the client's default
// endpoint; it wins over kSocketEnvVar (but not over explicit options).
inline constexpr char kEndpointEnvVar[] = "SMOLVMD_ENDPOINT";
// The environment variables with the default TLS files of TCP endpoints.
inline constexpr char kTlsCertEnvVar[] = "SMOLVMD_TLS_CERT";
inline constexpr char kTlsKeyEnvVar[] = "SMOLVMD_TLS_KEY";
inline constexpr char kTlsCaEnvVar[] = "SMOLVMD_TLS_CA";
// kTenantMetadataKey is the gRPC metadata with which an admin acts for a
// tenant (ClientOptions::act_as_tenant).
inline constexpr char kTenantMetadataKey[] = "x-smolvm-tenant";

// ClientOptions says how to reach smolvmd. Empty strings mean "not set".
struct ClientOptions {
  // Path of the daemon's Unix socket. Used when `endpoint` is empty; ""
  // falls back to $SMOLVMD_ENDPOINT, $SMOLVMD_SOCKET, kDefaultSocketPath.
  std::string socket_path;
  // Deadline of each RPC, measured from when the call starts. Boots and
  // snapshots under TCG take seconds to minutes, hence the generous default.
  // absl::InfiniteDuration() (or any non-positive value) means no deadline.
  absl::Duration timeout = absl::Minutes(10);
  // Where smolvmd listens: "unix:///abs/path", "unix:/abs/path" or
  // "host:port". Wins over `socket_path`; see ResolveEndpoint().
  std::string endpoint;
  // PEM files of a TCP endpoint's mutual TLS: the client certificate (chain),
  // its private key, and the CA that signed the daemon's certificate. Each
  // "" = $SMOLVMD_TLS_CERT / $SMOLVMD_TLS_KEY / $SMOLVMD_TLS_CA. Read when
  // the Connection is made; not used for Unix sockets.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  // Tenant an admin acts for: sent as metadata kTenantMetadataKey with every
  // call ("" = none). The daemon refuses it (PERMISSION_DENIED) for callers
  // that are not admins. Printable ASCII only.
  std::string act_as_tenant;
};

// ResolveSocketPath returns `explicit_path` if non-empty, else $SMOLVMD_SOCKET
// if set and non-empty, else kDefaultSocketPath. (It ignores endpoints; a
// Connection resolves with ResolveEndpoint().)
std::string ResolveSocketPath(absl::string_view explicit_path);

// ResolveEndpoint returns the endpoint `options` lead to, the first set of:
// options.endpoint, options.socket_path, $SMOLVMD_ENDPOINT, $SMOLVMD_SOCKET,
// kDefaultSocketPath, with socket paths written "unix:///abs/path" (or
// "unix:rel/path"). The result is not checked (the Connection does that).
std::string ResolveEndpoint(const ClientOptions& options);

// ProbeUnixSocket connects to the Unix socket at `path` (and closes the
// connection at once) to tell why smolvmd cannot be reached there: OK if it
// accepts; PERMISSION_DENIED "permission denied on PATH: join group G (the
// socket's group) or use sudo" for EACCES/EPERM; UNAVAILABLE "is smolvmd
// running? socket PATH: no such socket" for ENOENT, or "...: nothing listens
// on it (a stale socket)" for ECONNREFUSED; UNAVAILABLE with the errno text
// otherwise.
absl::Status ProbeUnixSocket(const std::string& path);

// Connection owns a channel to smolvmd and the stubs of its services.
//
// Constructing one reads the TLS files of a TCP endpoint and does no other
// I/O: the channel connects on the first RPC, so a missing daemon shows up as
// an UNAVAILABLE status from `Call()`. RPCs fail fast (no wait-for-ready): if
// the socket is not there, the call returns at once instead of waiting for
// the deadline. Unusable options (see the top of this file) never throw or
// abort: they are the status of every call.
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
    if (absl::Status s = PrepareContext(&context); !s.ok()) return s;
    Response response;
    grpc::Status status = (stub<Stub>().*method)(&context, request, &response);
    if (!status.ok()) return Convert(status);
    return response;
  }

  // vm_stub is the VmService stub, for the streaming RPCs `Call()` does not
  // make; their context must come from `PrepareContext()`. Thread-safe like
  // the stub itself. (When the options are unusable, its calls fail without
  // sending anything.)
  v1::VmService::Stub& vm_stub() const { return *vm_stub_; }
  // image_stub is the ImageService stub, for the streaming BuildImage.
  v1::ImageService::Stub& image_stub() const { return *image_stub_; }
  // filesystem_stub is the FilesystemService stub, for the streaming
  // WatchDir.
  v1::FilesystemService::Stub& filesystem_stub() const { return *filesystem_stub_; }
  // process_stub is the ProcessService stub, for the streaming
  // ConnectProcess and WaitProcess (no per-RPC deadline).
  v1::ProcessService::Stub& process_stub() const { return *process_stub_; }
  // operation_stub is the OperationService stub, for the streaming
  // WatchOperation (client/operation_watch.h).
  v1::OperationService::Stub& operation_stub() const { return *operation_stub_; }
  // event_stub is the EventService stub, for the streaming WatchEvents.
  v1::EventService::Stub& event_stub() const { return *event_stub_; }

  // PrepareContext readies a new call's `context`: a deadline `timeout` from
  // now (none if infinite or non-positive) and the tenant metadata. Returns
  // the options' error, and then the call must not be made. Every call of
  // this class goes through here.
  absl::Status PrepareContext(grpc::ClientContext* context,
                              absl::Duration timeout) const;
  // PrepareContext with the configured per-RPC timeout.
  absl::Status PrepareContext(grpc::ClientContext* context) const {
    return PrepareContext(context, options_.timeout);
  }

  // Convert maps a failed call's status to absl::Status (client/status.h) and
  // adds the "is smolvmd running?" hint when the daemon could not be reached.
  absl::Status Convert(const grpc::Status& status) const;

  // endpoint is the resolved endpoint: "unix:///abs/path" ("unix:rel/path")
  // or "host:port" (as given, also when malformed).
  const std::string& endpoint() const { return options_.endpoint; }
  // socket_path is the resolved path of the daemon socket; "" for a TCP
  // endpoint.
  const std::string& socket_path() const { return options_.socket_path; }
  // timeout is the per-RPC deadline (see ClientOptions::timeout).
  absl::Duration timeout() const { return options_.timeout; }
  // options returns the options this connection was made with, resolved:
  // `endpoint` and `socket_path` as above, the TLS files after the
  // environment fallbacks (empty for Unix sockets).
  const ClientOptions& options() const { return options_; }

 private:
  template <typename Stub>
  Stub& stub() const {
    if constexpr (std::is_same_v<Stub, v1::VmService::Stub>) {
      return *vm_stub_;
    } else if constexpr (std::is_same_v<Stub, v1::ImageService::Stub>) {
      return *image_stub_;
    } else if constexpr (std::is_same_v<Stub, v1::PoolService::Stub>) {
      return *pool_stub_;
    } else if constexpr (std::is_same_v<Stub, v1::OperationService::Stub>) {
      return *operation_stub_;
    } else if constexpr (std::is_same_v<Stub, v1::FilesystemService::Stub>) {
      return *filesystem_stub_;
    } else if constexpr (std::is_same_v<Stub, v1::ProcessService::Stub>) {
      return *process_stub_;
    } else {
      static_assert(std::is_same_v<Stub, v1::SnapshotService::Stub>,
                    "Connection::Call takes a VmService, SnapshotService, "
                    "ImageService, PoolService, OperationService, FilesystemService or "
                    "ProcessService stub method");
      return *snapshot_stub_;
    }
  }

  ClientOptions options_;  // Resolved.
  // Why the options are unusable; OK if they are fine.
  absl::Status setup_error_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::VmService::Stub> vm_stub_;
  std::unique_ptr<v1::SnapshotService::Stub> snapshot_stub_;
  std::unique_ptr<v1::ImageService::Stub> image_stub_;
  std::unique_ptr<v1::PoolService::Stub> pool_stub_;
  std::unique_ptr<v1::OperationService::Stub> operation_stub_;
  std::unique_ptr<v1::FilesystemService::Stub> filesystem_stub_;
  std::unique_ptr<v1::ProcessService::Stub> process_stub_;
  std::unique_ptr<v1::EventService::Stub> event_stub_;
};

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_CONNECTION_H_
