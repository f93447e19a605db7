#include "client/connection.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/status.h"
#include "lib/base/unique_fd.h"

namespace smolvm {

namespace {

// Env returns the environment variable `name`, "" when unset.
std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

// FirstSet returns `value` if non-empty, else $`env_var`.
std::string FirstSet(const std::string& value, const char* env_var) {
  return value.empty() ? Env(env_var) : value;
}

constexpr char kUnixScheme[] = "unix:";

// UnixEndpoint is the endpoint of the socket at `path`: "unix:///abs/path"
// (so that a path starting with "//" survives a round trip), or
// "unix:rel/path".
std::string UnixEndpoint(absl::string_view path) {
  return absl::StartsWith(path, "/") ? absl::StrCat(kUnixScheme, "//", path)
                                     : absl::StrCat(kUnixScheme, path);
}

// Endpoint is a parsed endpoint: exactly one of the two is set.
struct Endpoint {
  std::string unix_path;
  std::string tcp_address;  // host:port, as gRPC takes it.
};

absl::Status BadEndpoint(absl::string_view endpoint, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("endpoint \"", endpoint, "\": ", why,
                   "; want unix:///abs/path or host:port"));
}

// ParseEndpoint accepts "unix:///abs/path", "unix:path", a bare absolute
// path, "host:port" and "[ipv6]:port".
absl::StatusOr<Endpoint> ParseEndpoint(absl::string_view endpoint) {
  Endpoint out;
  if (absl::StartsWith(endpoint, "/")) {
    out.unix_path = std::string(endpoint);
    return out;
  }
  if (absl::StartsWith(endpoint, kUnixScheme)) {
    absl::string_view path = endpoint.substr(sizeof(kUnixScheme) - 1);
    // unix://HOST/path has an authority, which Unix sockets do not have.
    if (absl::ConsumePrefix(&path, "//") && !absl::StartsWith(path, "/")) {
      return BadEndpoint(endpoint,
                         "unix:// must be followed by an absolute "
                         "path");
    }
    if (path.empty()) return BadEndpoint(endpoint, "no socket path");
    out.unix_path = std::string(path);
    return out;
  }
  absl::string_view host, port;
  if (absl::StartsWith(endpoint, "[")) {
    const size_t close = endpoint.find(']');
    if (close == absl::string_view::npos ||
        endpoint.substr(close + 1, 1) != ":") {
      return BadEndpoint(endpoint, "an IPv6 address needs ]:port");
    }
    host = endpoint.substr(1, close - 1);
    port = endpoint.substr(close + 2);
  } else {
    const size_t colon = endpoint.rfind(':');
    if (colon == absl::string_view::npos) {
      return BadEndpoint(endpoint, "no port");
    }
    host = endpoint.substr(0, colon);
    port = endpoint.substr(colon + 1);
    if (absl::StrContains(host, ':')) {
      return BadEndpoint(endpoint,
                         "unknown scheme, or an IPv6 address "
                         "without [brackets]");
    }
  }
  uint32_t port_number = 0;
  if (port.empty() ||
      port.find_first_not_of("0123456789") != absl::string_view::npos ||
      !absl::SimpleAtoi(port, &port_number) || port_number == 0 ||
      port_number > 65535) {
    return BadEndpoint(endpoint, "the port is not a number in 1-65535");
  }
  if (host.empty()) return BadEndpoint(endpoint, "no host");
  for (char c : host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '/' || c == 0x7f) {
      return BadEndpoint(endpoint,
                         "the host has a blank, control character "
                         "or '/'");
    }
  }
  out.tcp_address = std::string(endpoint);
  return out;
}

// TlsFile names one of the three files of a TCP endpoint for error messages.
struct TlsFile {
  const char* option;  // ClientOptions field.
  const char* flag;    // smolvmctl flag.
  const char* env_var;
  std::string path;
  std::string pem;  // Its content, once read.
};

// kMaxPemBytes bounds what we read for one PEM file (certificate chains are
// a few KiB); a larger file is surely not one.
constexpr size_t kMaxPemBytes = 1 << 20;

absl::Status ReadPem(TlsFile& file) {
  auto fail = [&](absl::string_view why) {
    return absl::FailedPreconditionError(
        absl::StrCat("read ", file.option, " (", file.flag, ", $", file.env_var,
                     ") ", file.path, ": ", why));
  };
  const int fd = open(file.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(std::generic_category().message(errno));
  std::string data;
  char buffer[16 << 10];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) != 0) {
    if (n < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      close(fd);
      return fail(std::generic_category().message(error));
    }
    data.append(buffer, static_cast<size_t>(n));
    if (data.size() > kMaxPemBytes) {
      close(fd);
      return fail("larger than 1 MiB; not a PEM file");
    }
  }
  close(fd);
  if (!absl::StrContains(data, "-----BEGIN ")) {
    return fail("no PEM block (-----BEGIN ...) in it");
  }
  file.pem = std::move(data);
  return absl::OkStatus();
}

// TlsCredentials builds the mutual-TLS credentials of a TCP endpoint from the
// three files, or says which are missing or unreadable.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(
    const std::string& address, const ClientOptions& options) {
  TlsFile cert{"tls_cert", "--tls-cert", kTlsCertEnvVar, options.tls_cert};
  TlsFile key{"tls_key", "--tls-key", kTlsKeyEnvVar, options.tls_key};
  TlsFile ca{"tls_ca", "--tls-ca", kTlsCaEnvVar, options.tls_ca};
  std::vector<std::string> missing;
  for (const TlsFile* file : {&cert, &key, &ca}) {
    if (file->path.empty()) {
      missing.push_back(absl::StrCat(file->option, " (", file->flag, " or $",
                                     file->env_var, ")"));
    }
  }
  if (!missing.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "connect to smolvmd at ", address,
        ": a TCP endpoint needs mutual TLS, but no ",
        absl::StrJoin(missing, ", "),
        " is set; give the client certificate, its key and the CA"));
  }
  for (TlsFile* file : {&cert, &key, &ca}) {
    if (absl::Status s = ReadPem(*file); !s.ok()) return s;
  }
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = std::move(ca.pem);
  ssl.pem_private_key = std::move(key.pem);
  ssl.pem_cert_chain = std::move(cert.pem);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(ssl);
  if (creds == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "connect to smolvmd at ", address, ": gRPC rejected the TLS files ",
        options.tls_cert, ", ", options.tls_key, ", ", options.tls_ca));
  }
  return creds;
}

// CheckTenant refuses what cannot travel as a metadata value: gRPC aborts
// the process on a call whose metadata is not printable ASCII.
absl::Status CheckTenant(absl::string_view tenant) {
  for (char c : tenant) {
    if (c < 0x20 || c > 0x7e) {
      return absl::InvalidArgumentError(
          "act_as_tenant (--as-tenant): a tenant name is printable ASCII");
    }
  }
  return absl::OkStatus();
}

grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  // Streamed Exec output and DownloadFile chunks are sized by the daemon and
  // guest agent; do not let gRPC's 4 MiB default reject a large one.
  args.SetMaxReceiveMessageSize(64 << 20);
  // Exec stdin travels in one request (at most 16 MiB, plus the rest).
  args.SetMaxSendMessageSize(64 << 20);
  return args;
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  // An infinite (or non-positive) timeout means "no deadline": gRPC's default.
  if (timeout > absl::ZeroDuration() && timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace

absl::Status ProbeUnixSocket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path ", path, " is too long"));
  }
  path.copy(addr.sun_path, path.size());
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "socket");
  int error = 0;
  while (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EINTR) continue;
    error = errno;
    break;
  }
  const std::string running = absl::StrCat("connect to smolvmd: is smolvmd running? socket ", path);
  switch (error) {
    case 0:
      return absl::OkStatus();
    case EACCES:
    case EPERM: {
      // The daemon's --socket-group may reach it; name the group when we can.
      std::string group_name = "smolvm";
      struct stat st;
      if (stat(path.c_str(), &st) == 0) {
        if (const struct group* g = getgrgid(st.st_gid); g != nullptr) group_name = g->gr_name;
      }
      return absl::PermissionDeniedError(absl::StrCat(
          "permission denied on ", path, ": join group ", group_name, " or use sudo"));
    }
    case ENOENT:
      return absl::UnavailableError(absl::StrCat(running, ": no such socket"));
    case ECONNREFUSED:
      return absl::UnavailableError(
          absl::StrCat(running, ": nothing listens on it (a stale socket)"));
    default:
      return absl::UnavailableError(absl::StrCat(running, ": ", std::strerror(error)));
  }
}

std::string ResolveSocketPath(absl::string_view explicit_path) {
  if (!explicit_path.empty()) return std::string(explicit_path);
  if (std::string env = Env(kSocketEnvVar); !env.empty()) return env;
  return kDefaultSocketPath;
}

std::string ResolveEndpoint(const ClientOptions& options) {
  if (!options.endpoint.empty()) return options.endpoint;
  if (!options.socket_path.empty()) return UnixEndpoint(options.socket_path);
  if (std::string env = Env(kEndpointEnvVar); !env.empty()) return env;
  return UnixEndpoint(ResolveSocketPath(""));
}

Connection::Connection(ClientOptions options) : options_(std::move(options)) {
  options_.endpoint = ResolveEndpoint(options_);
  options_.socket_path.clear();
  std::shared_ptr<grpc::ChannelCredentials> creds;
  std::string target;
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(options_.endpoint);
  if (!endpoint.ok()) {
    setup_error_ = endpoint.status();
  } else if (!endpoint->unix_path.empty()) {
    // The socket's permissions are the access control; no TLS files apply.
    options_.socket_path = endpoint->unix_path;
    options_.endpoint = UnixEndpoint(endpoint->unix_path);
    options_.tls_cert.clear();
    options_.tls_key.clear();
    options_.tls_ca.clear();
    target = options_.endpoint;
    creds = grpc::InsecureChannelCredentials();
  } else {
    options_.tls_cert = FirstSet(options_.tls_cert, kTlsCertEnvVar);
    options_.tls_key = FirstSet(options_.tls_key, kTlsKeyEnvVar);
    options_.tls_ca = FirstSet(options_.tls_ca, kTlsCaEnvVar);
    target = endpoint->tcp_address;
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> tls =
        TlsCredentials(target, options_);
    if (tls.ok()) {
      creds = *std::move(tls);
    } else {
      setup_error_ = tls.status();
    }
  }
  if (setup_error_.ok()) setup_error_ = CheckTenant(options_.act_as_tenant);
  // With unusable options the stubs still exist, on a channel made without
  // credentials: gRPC makes that a "lame" channel, whose calls fail at once
  // and never touch the network.
  if (!setup_error_.ok()) creds = nullptr;
  channel_ = grpc::CreateCustomChannel(target, creds, ChannelArgs());
  vm_stub_ = v1::VmService::NewStub(channel_);
  snapshot_stub_ = v1::SnapshotService::NewStub(channel_);
  image_stub_ = v1::ImageService::NewStub(channel_);
  pool_stub_ = v1::PoolService::NewStub(channel_);
  operation_stub_ = v1::OperationService::NewStub(channel_);
  filesystem_stub_ = v1::FilesystemService::NewStub(channel_);
  process_stub_ = v1::ProcessService::NewStub(channel_);
  event_stub_ = v1::EventService::NewStub(channel_);
}

Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;
Connection::~Connection() = default;

absl::Status Connection::PrepareContext(grpc::ClientContext* context,
                                        absl::Duration timeout) const {
  if (!setup_error_.ok()) return setup_error_;
  SetDeadline(context, timeout);
  if (!options_.act_as_tenant.empty()) {
    context->AddMetadata(kTenantMetadataKey, options_.act_as_tenant);
  }
  return absl::OkStatus();
}

absl::Status Connection::Convert(const grpc::Status& status) const {
  absl::Status converted = FromGrpcStatus(status);
  // UNAVAILABLE comes both from the transport (no daemon on the socket, or it
  // went away mid-call) and from the daemon itself (e.g. a VM's QMP not up
  // yet). Only the first is worth the hint, and only then is the channel not
  // READY after the call.
  if (converted.code() == absl::StatusCode::kUnavailable &&
      channel_->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_READY) {
    // A Unix socket we may not open reads as no daemon to gRPC: say which.
    if (!options_.socket_path.empty()) {
      absl::Status probed = ProbeUnixSocket(options_.socket_path);
      if (probed.code() == absl::StatusCode::kPermissionDenied) {
        return absl::PermissionDeniedError(
            absl::StrCat("connect to smolvmd: ", probed.message()));
      }
    }
    // Over TCP a refused certificate looks the same as no daemon.
    const std::string where =
        options_.socket_path.empty()
            ? absl::StrCat("(and do the TLS files match it?) endpoint ",
                           options_.endpoint)
            : absl::StrCat("socket ", options_.socket_path);
    return absl::UnavailableError(
        absl::StrCat("connect to smolvmd: is smolvmd running? ", where, ": ",
                     converted.message()));
  }
  return converted;
}

}  // namespace smolvm
