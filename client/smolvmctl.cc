// smolvmctl: command-line client of smolvmd.
//
//   smolvmctl [--endpoint unix:///PATH|HOST:PORT] [--socket PATH]
//       [--tls-cert PEM --tls-key PEM --tls-ca PEM] [--as-tenant TENANT]
//       [--json] [--timeout SECONDS] vm|snapshot|file|image|pool ...
//
// Each command is one RPC (lists follow every page) made through the client
// library (client/connection.h, client/smolvm.h), which also resolves where
// smolvmd is: --endpoint, else --socket, else $SMOLVMD_ENDPOINT, else
// $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock. A HOST:PORT endpoint uses
// mutual TLS with --tls-cert/--tls-key/--tls-ca ($SMOLVMD_TLS_CERT/_KEY/_CA).
// --as-tenant lets an admin act for a tenant (metadata x-smolvm-tenant).
//
// Results print as aligned tables, or as protobuf JSON with --json. Errors
// print "smolvmctl: <message>" on stderr and exit with ExitCodeFor(status)
// (client/status.h); command-line usage errors exit 2. Text that comes from
// the daemon or a guest (error messages with console tails, table cells) is
// escaped so that it cannot carry terminal control sequences
// (cli::EscapeForTerminal); exec output and downloaded files are data and
// pass through unchanged.
//
//   smolvmctl vm exec ID [--env K=V]... [--cwd DIR] [--timeout-ms N] [--stdin]
//       -- CMD [ARGS...]
// runs CMD in the guest (argv form, no shell: write `-- sh -c '...'` for
// one), copies its stdout and stderr to ours as they arrive and exits with its
// exit status; 128+N when it was killed by signal N; 124 (and a message on
// stderr) when --timeout-ms expired. Only an error of smolvmctl or smolvmd
// itself prints "smolvmctl: ..." (with the exit codes above, which a command
// may also use). `--stdin` sends our whole stdin (at most 16 MiB).
//
//   smolvmctl file put ID LOCAL GUEST_PATH [--mode 0755]
//   smolvmctl file get ID GUEST_PATH LOCAL [--dir]
// copy files (or, for a LOCAL directory / with --dir, directory trees through
// the host's tar) in and out of a RUNNING VM. As with cp, a GUEST_PATH ending
// in "/" (put) or an existing LOCAL directory (get) receives the file under
// its own name.
//
//   smolvmctl vm create ... [--egress open|off|restricted] [--allow CIDR]...
//       [--forward [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]]...
//   smolvmctl vm expose ID [HOST_IP:]HOST_PORT:GUEST_PORT[/udp]
//   smolvmctl vm unexpose ID [HOST_IP:]HOST_PORT[/udp]
// set a VM's egress policy and port forwards (HOST_IP defaults to 127.0.0.1,
// the protocol to tcp); --allow alone implies --egress restricted. A
// malformed spec is a usage error (exit 2) and sends nothing.
//
//   smolvmctl snapshot verify ID
// reads every file of a snapshot and prints its checksum beside the one
// recorded when it was taken; a corrupt file fails with DATA_LOSS naming
// it (exit 1), and so does a snapshot taken before checksums existed (after
// printing the table).
//
//   smolvmctl pool create ID --snapshot SNAP_ID --size N | get ID | list |
//                  delete ID | claim ID [--vm VM_ID]
// manage warm pools; `claim` prints the claimed VM (with --json the whole
// ClaimVmResponse, incl. from_pool and claim_ms).
//
//   smolvmctl snapshot fork SNAP_ID --count N [--prefix P] [--paused]
// restores N clones in one call and prints one row per clone (VM STATUS IP
// MAC TAP ERROR); it exits 1, after printing them all, if any clone failed.

#include <arpa/inet.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <unistd.h>

#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli_format.h"
#include "client/connection.h"
#include "client/smolvm.h"
#include "client/status.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm {
namespace {

using VmStub = v1::VmService::Stub;
using SnapshotStub = v1::SnapshotService::Stub;

// Printer writes results to stdout as tables or JSON.
class Printer {
 public:
  explicit Printer(const bool& json) : json_(json) {}

  absl::Status Vms(const std::vector<v1::Vm>& vms) const {
    if (!json_) return Write(cli::VmTable(vms));
    return WriteJsonArray(vms);
  }
  absl::Status Vm(const v1::Vm& vm) const { return Vms({vm}); }
  absl::Status VmDetails(const v1::Vm& vm) const {
    return json_ ? WriteJson(vm) : Write(cli::VmDetails(vm));
  }

  absl::Status Snapshots(const std::vector<v1::SnapshotInfo>& snaps) const {
    if (!json_) return Write(cli::SnapshotTable(snaps));
    return WriteJsonArray(snaps);
  }
  absl::Status Snapshot(const v1::SnapshotInfo& snap) const {
    return Snapshots({snap});
  }
  absl::Status SnapshotDetails(const v1::SnapshotInfo& snap) const {
    return json_ ? WriteJson(snap) : Write(cli::SnapshotDetails(snap));
  }
  absl::Status Verification(const v1::VerifySnapshotResponse& response) const {
    return json_ ? WriteJson(response) : Write(cli::VerifyTable(response));
  }
  absl::Status Forks(const std::vector<v1::ForkResult>& results) const {
    if (!json_) return Write(cli::ForkTable(results));
    return WriteJsonArray(results);
  }

  absl::Status Pools(const std::vector<v1::Pool>& pools) const {
    if (!json_) return Write(cli::PoolTable(pools));
    return WriteJsonArray(pools);
  }
  // Any message as JSON (for --json answers without a table of their own).
  absl::Status Json(const google::protobuf::Message& message) const {
    return WriteJson(message);
  }
  absl::Status Pool(const v1::Pool& pool) const {
    return json_ ? WriteJson(pool) : Write(cli::PoolTable({pool}));
  }

  absl::Status Images(const std::vector<v1::Image>& images) const {
    if (!json_) return Write(cli::ImageTable(images));
    return WriteJsonArray(images);
  }
  absl::Status ImageDetails(const v1::Image& image) const {
    return json_ ? WriteJson(image) : Write(cli::ImageDetails(image));
  }
  // A build's progress: with --json one BuildImageEvent per line on stdout
  // (JSON Lines; the last one is `done`), else one rewritten status line on
  // a terminal or plain lines elsewhere (stderr, so stdout holds only the
  // result).
  void BuildProgress(const v1::BuildProgress& progress) const {
    if (json_) {
      v1::BuildImageEvent event;
      *event.mutable_progress() = progress;
      (void)WriteJsonLine(event);
      return;
    }
    std::string line = absl::StrCat("[", progress.elapsed_ms() / 1000, "s] ",
                                     cli::EscapeForTerminal(progress.step()));
    if (progress.bytes() > 0) absl::StrAppend(&line, " (", cli::FormatBytes(progress.bytes()), ")");
    if (isatty(STDERR_FILENO)) {
      std::cerr << "\r\033[K" << line << std::flush;
    } else {
      std::cerr << line << "\n";
    }
  }
  absl::Status BuildDone(const SmolVMManager::BuiltImage& built) const {
    if (!json_) {
      std::string text = cli::ImageDetails(built.image);
      if (built.warm_snapshot) {
        absl::StrAppend(&text, "warm_snapshot: ", built.warm_snapshot->snapshot_id(), "\n");
      }
      return Write(text);
    }
    v1::BuildImageEvent event;
    *event.mutable_done() = built.image;
    if (built.warm_snapshot) *event.mutable_warm_snapshot() = *built.warm_snapshot;
    return WriteJsonLine(event);
  }
  void EndProgress() const {
    if (!json_ && isatty(STDERR_FILENO)) std::cerr << "\r\033[K" << std::flush;
  }

  // Deleted reports a successful delete: "deleted vm ID", or the (empty)
  // response message as JSON.
  absl::Status Deleted(const std::string& kind, const std::string& id,
                       const google::protobuf::Message& response) const {
    return json_ ? WriteJson(response)
                 : Write("deleted " + kind + " " + id + "\n");
  }

 private:
  static absl::Status Write(const std::string& text) {
    std::cout << text << std::flush;
    return absl::OkStatus();
  }
  static absl::Status WriteJson(const google::protobuf::Message& message) {
    absl::StatusOr<std::string> json = cli::ToJson(message);
    if (!json.ok()) return json.status();
    return Write(*json + "\n");
  }
  static absl::Status WriteJsonLine(const google::protobuf::Message& message) {
    absl::StatusOr<std::string> json = cli::ToJsonLine(message);
    if (!json.ok()) return json.status();
    return Write(*json + "\n");
  }
  template <typename T>
  static absl::Status WriteJsonArray(const std::vector<T>& items) {
    std::vector<const google::protobuf::Message*> messages;
    for (const T& item : items) messages.push_back(&item);
    absl::StatusOr<std::string> json = cli::ToJsonArray(messages);
    if (!json.ok()) return json.status();
    return Write(*json + "\n");
  }

  const bool& json_;  // Read at print time, after flags are parsed.
};

// Globals are the flags every command takes. Unset ones fall back to the
// environment inside the client library (ClientOptions).
struct Globals {
  std::string socket;
  std::string endpoint;
  std::string tls_cert, tls_key, tls_ca;
  std::string as_tenant;
  bool json = false;
  double timeout_seconds = 600;

  ClientOptions options() const {
    ClientOptions options;
    options.socket_path = socket;
    options.timeout = absl::Seconds(timeout_seconds);
    options.endpoint = endpoint;
    options.tls_cert = tls_cert;
    options.tls_key = tls_key;
    options.tls_ca = tls_ca;
    options.act_as_tenant = as_tenant;
    return options;
  }
};

// VmCall makes one VmService call that takes {vm_id} and returns a Vm, and
// prints the VM.
template <typename Request>
absl::Status VmCall(const Globals& globals, const Printer& out,
                    grpc::Status (VmStub::*method)(grpc::ClientContext*,
                                                   const Request&, v1::Vm*),
                    const std::string& vm_id) {
  Request request;
  request.set_vm_id(vm_id);
  absl::StatusOr<v1::Vm> vm =
      Connection(globals.options()).Call(method, request);
  if (!vm.ok()) return vm.status();
  return out.Vm(*vm);
}

// ParseEnv turns repeated K=V flags into a map (the value may contain '=' and
// be empty; a later K wins). Names are checked by the daemon.
absl::StatusOr<std::map<std::string, std::string>> ParseEnv(
    const std::vector<std::string>& flags) {
  std::map<std::string, std::string> env;
  for (const std::string& flag : flags) {
    const size_t eq = flag.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--env ", flag, ": want NAME=VALUE"));
    }
    env[flag.substr(0, eq)] = flag.substr(eq + 1);
  }
  return env;
}

// ParsePort parses a decimal port number, 1-65535.
absl::StatusOr<uint32_t> ParsePort(absl::string_view text) {
  uint32_t port = 0;
  const bool digits =
      !text.empty() && text.size() <= 5 &&
      text.find_first_not_of("0123456789") == absl::string_view::npos;
  if (!digits || !absl::SimpleAtoi(text, &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port \"", text, "\" is not a number in 1-65535"));
  }
  return port;
}

// HostSide is the host end of a port forward: [HOST_IP:]HOST_PORT[/udp]
// ("" = 127.0.0.1 for the daemon; protocol "tcp" unless "/udp").
struct HostSide {
  std::string host_ip;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;  // Only for forwards.
  std::string protocol = "tcp";
};

// ParsePortSpec parses "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]" when
// `with_guest_port`, else "[HOST_IP:]HOST_PORT[/udp]". `what` names the flag
// or command in the error ("--forward", "expose", ...). HOST_IP must look like
// an IPv4 address (the daemon has the last word on which ones it takes).
absl::StatusOr<HostSide> ParsePortSpec(absl::string_view what,
                                       absl::string_view spec,
                                       bool with_guest_port) {
  const absl::string_view want = with_guest_port
                                     ? "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]"
                                     : "[HOST_IP:]HOST_PORT[/udp]";
  auto error = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", spec, ": ", why, "; want ", want));
  };
  HostSide out;
  absl::string_view rest = spec;
  if (const size_t slash = rest.rfind('/'); slash != absl::string_view::npos) {
    out.protocol = std::string(rest.substr(slash + 1));
    rest = rest.substr(0, slash);
    if (out.protocol != "tcp" && out.protocol != "udp") {
      return error(
          absl::StrCat("protocol \"", out.protocol, "\" is not tcp or udp"));
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(rest, ':');
  const size_t ports = with_guest_port ? 2 : 1;
  if (parts.size() != ports && parts.size() != ports + 1) {
    return error("wrong number of fields");
  }
  if (parts.size() == ports + 1) {
    out.host_ip = std::string(parts[0]);
    in_addr ignored;
    if (inet_pton(AF_INET, out.host_ip.c_str(), &ignored) != 1) {
      return error(
          absl::StrCat("HOST_IP \"", out.host_ip, "\" is not an IPv4 address"));
    }
    parts.erase(parts.begin());
  }
  absl::StatusOr<uint32_t> host_port = ParsePort(parts[0]);
  if (!host_port.ok()) return error(host_port.status().message());
  out.host_port = *host_port;
  if (with_guest_port) {
    absl::StatusOr<uint32_t> guest_port = ParsePort(parts[1]);
    if (!guest_port.ok()) return error(guest_port.status().message());
    out.guest_port = *guest_port;
  }
  return out;
}

// ParseForward parses a --forward / expose spec into a PortForward.
absl::StatusOr<v1::PortForward> ParseForward(absl::string_view what,
                                             absl::string_view spec) {
  absl::StatusOr<HostSide> side = ParsePortSpec(what, spec, true);
  if (!side.ok()) return side.status();
  v1::PortForward forward;
  forward.set_host_ip(side->host_ip);
  forward.set_host_port(side->host_port);
  forward.set_guest_port(side->guest_port);
  forward.set_protocol(side->protocol);
  return forward;
}

// ParseEgress builds the policy of --egress MODE and --allow CIDR...; nullopt
// when neither is given (the daemon's default, open). --allow alone implies
// restricted. The CIDRs are checked by the daemon.
absl::StatusOr<std::optional<v1::EgressPolicy>> ParseEgress(
    const std::string& mode, const std::vector<std::string>& allow) {
  if (mode.empty() && allow.empty()) return std::nullopt;
  v1::EgressPolicy policy;
  if (mode == "open") {
    policy.set_mode(v1::EgressPolicy::EGRESS_OPEN);
  } else if (mode == "off") {
    policy.set_mode(v1::EgressPolicy::EGRESS_OFF);
  } else if (mode == "restricted" || mode.empty()) {
    policy.set_mode(v1::EgressPolicy::EGRESS_RESTRICTED);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--egress ", mode, ": want open, off or restricted"));
  }
  if (!allow.empty() && policy.mode() != v1::EgressPolicy::EGRESS_RESTRICTED) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--allow needs --egress restricted (not --egress ", mode, ")"));
  }
  for (const std::string& cidr : allow) policy.add_allow_cidrs(cidr);
  return policy;
}

// ParseMode parses an octal permission mode such as "0755" or "644".
absl::StatusOr<uint32_t> ParseMode(const std::string& text) {
  uint32_t mode = 0;
  bool ok = !text.empty() && text.size() <= 5;
  for (char c : text) {
    if (c < '0' || c > '7') ok = false;
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (!ok || mode > 07777) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mode ", text, ": want octal permission bits, e.g. 0755"));
  }
  return mode;
}

// kMaxStdin is the most an Exec's stdin may carry (ExecRequest.stdin).
constexpr size_t kMaxStdin = 16 << 20;

// ReadStdin reads all of our stdin, refusing more than kMaxStdin bytes.
absl::StatusOr<std::string> ReadStdin() {
  std::string data;
  char buffer[1 << 16];
  while (true) {
    size_t n = std::fread(buffer, 1, sizeof(buffer), stdin);
    data.append(buffer, n);
    if (data.size() > kMaxStdin) {
      return absl::InvalidArgumentError(
          "--stdin: more than 16 MiB on stdin; upload it as a file instead");
    }
    if (n < sizeof(buffer)) break;
  }
  if (std::ferror(stdin)) return absl::InternalError("--stdin: read error");
  return data;
}

// BaseName is the last component of `path` ("" for "/" or "").
std::string BaseName(const std::string& path) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const size_t slash = trimmed.rfind('/');
  std::string base =
      slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
  return base == "/" ? "" : base;
}

int Main(int argc, char** argv) {
  CLI::App app("Manage QEMU microVMs through the smolvmd daemon.", "smolvmctl");
  app.footer(
      "Exit codes: 0 ok, 1 other error, 2 invalid argument or usage, "
      "3 not found, 4 already exists, 5 failed precondition (wrong VM state), "
      "6 resource exhausted, 7 smolvmd unavailable.");
  // Global flags are accepted after the subcommands too.
  app.fallthrough();
  app.require_subcommand(1);

  Globals globals;
  app.add_option("--endpoint", globals.endpoint,
                 "where smolvmd listens: unix:///PATH or HOST:PORT (mutual "
                 "TLS; needs --tls-cert, --tls-key and --tls-ca). Default: "
                 "--socket, else $SMOLVMD_ENDPOINT, else $SMOLVMD_SOCKET, "
                 "else unix:///run/smolvmd/smolvmd.sock")
      ->type_name("ENDPOINT");
  app.add_option("--socket", globals.socket,
                 "smolvmd Unix socket, when --endpoint is not given "
                 "(default: $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock)")
      ->type_name("PATH");
  app.add_option("--tls-cert", globals.tls_cert,
                 "client certificate for a HOST:PORT endpoint (default: "
                 "$SMOLVMD_TLS_CERT)")
      ->type_name("PEM");
  app.add_option("--tls-key", globals.tls_key,
                 "private key of --tls-cert (default: $SMOLVMD_TLS_KEY)")
      ->type_name("PEM");
  app.add_option("--tls-ca", globals.tls_ca,
                 "CA certificate(s) that signed smolvmd's certificate "
                 "(default: $SMOLVMD_TLS_CA)")
      ->type_name("PEM");
  app.add_option("--as-tenant", globals.as_tenant,
                 "act for this tenant (admins only): its objects, its quota")
      ->type_name("TENANT");
  app.add_flag("--json", globals.json,
               "print protobuf JSON (proto field names) instead of tables");
  app.add_option("--timeout", globals.timeout_seconds, "deadline of each RPC")
      ->type_name("SECONDS")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  const Printer out(globals.json);
  std::function<absl::Status()> action;

  // --- vm ------------------------------------------------------------------
  CLI::App* vm = app.add_subcommand("vm", "create, control and inspect VMs");
  vm->require_subcommand(1);

  std::string vm_id_flag, kernel, initrd, rootfs, boot_args, create_image;
  std::uint32_t vcpus = 0, memory_mib = 0, disk_size_mib = 0;
  bool no_start = false;
  CLI::App* create = vm->add_subcommand(
      "create", "create a VM and boot it (returns once the guest is ready)");
  create->add_option("--id", vm_id_flag, "VM id (default: generated)");
  create->add_option("--vcpus", vcpus, "vCPUs, 1-32 (default 2)");
  create->add_option("--memory-mib", memory_mib,
                     "guest RAM in MiB, 128-16384 (default 512)");
  create->add_option("--image", create_image,
                     "image to boot: a name (debian-python, minimal, NAME:TAG) or digest "
                     "(default: the daemon's default image)");
  create->add_option("--disk-size-mib", disk_size_mib,
                     "root disk size in MiB (default: the image's; larger grows it)");
  create->add_option("--kernel", kernel, "kernel image on the daemon's host (admins)")
      ->type_name("PATH");
  create->add_option("--initrd", initrd, "initramfs on the daemon's host")
      ->type_name("PATH");
  create
      ->add_option("--rootfs", rootfs,
                   "ext4 root filesystem image on the daemon's host (copied)")
      ->type_name("PATH");
  create->add_option("--boot-args", boot_args, "extra kernel command line");
  create->add_flag("--no-start", no_start, "create without booting (CREATED)");
  std::vector<std::string> create_env;
  create
      ->add_option("--env", create_env,
                   "environment variable of every exec in this VM (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  std::string create_egress;
  std::vector<std::string> create_allow, create_forwards;
  create
      ->add_option("--egress", create_egress,
                   "what the guest may reach: open (default; anything beyond "
                   "the host, through NAT), off (nothing), restricted (only "
                   "the --allow CIDRs)")
      ->type_name("open|off|restricted");
  create
      ->add_option("--allow", create_allow,
                   "IPv4 CIDR the guest may reach with --egress restricted "
                   "(repeatable; implies restricted)")
      ->type_name("CIDR")
      ->allow_extra_args(false);
  create
      ->add_option("--forward", create_forwards,
                   "expose a guest port on the host (repeatable; HOST_IP "
                   "defaults to 127.0.0.1)")
      ->type_name("[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]")
      ->allow_extra_args(false);
  create->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<std::map<std::string, std::string>> env =
          ParseEnv(create_env);
      if (!env.ok()) return env.status();
      absl::StatusOr<std::optional<v1::EgressPolicy>> egress =
          ParseEgress(create_egress, create_allow);
      if (!egress.ok()) return egress.status();
      v1::CreateVmRequest request;
      v1::VMConfig* c = request.mutable_config();
      for (const std::string& spec : create_forwards) {
        absl::StatusOr<v1::PortForward> forward =
            ParseForward("--forward", spec);
        if (!forward.ok()) return forward.status();
        *c->add_port_forwards() = *std::move(forward);
      }
      if (egress->has_value()) *c->mutable_egress() = **egress;
      c->mutable_env()->insert(env->begin(), env->end());
      c->set_vm_id(vm_id_flag);
      c->set_vcpu_count(vcpus);
      c->set_memory_mib(memory_mib);
      c->set_kernel_path(kernel);
      c->set_initrd_path(initrd);
      c->set_rootfs_path(rootfs);
      c->set_image(create_image);
      c->set_disk_size_mib(disk_size_mib);
      c->set_boot_args(boot_args);
      request.set_start(!no_start);
      absl::StatusOr<v1::Vm> created =
          Connection(globals.options()).Call(&VmStub::CreateVm, request);
      if (!created.ok()) return created.status();
      return out.Vm(*created);
    };
  });

  std::string vm_id;  // The ID argument of the one vm command that runs.
  auto add_vm_command = [&](const char* name, const char* help,
                            std::function<absl::Status()> run) {
    CLI::App* cmd = vm->add_subcommand(name, help);
    cmd->add_option("ID", vm_id, "VM id")->required();
    cmd->callback([&action, run] { action = run; });
  };
  add_vm_command("start", "cold-boot a CREATED, STOPPED or ERROR VM",
                 [&] { return VmCall(globals, out, &VmStub::StartVm, vm_id); });
  add_vm_command("stop", "stop a VM's VMM process; the disk is kept",
                 [&] { return VmCall(globals, out, &VmStub::StopVm, vm_id); });
  add_vm_command("pause", "stop the vCPUs of a RUNNING VM",
                 [&] { return VmCall(globals, out, &VmStub::PauseVm, vm_id); });
  add_vm_command("resume", "continue a PAUSED VM", [&] {
    return VmCall(globals, out, &VmStub::ResumeVm, vm_id);
  });
  add_vm_command("delete", "stop if needed and remove a VM and its disk", [&] {
    v1::DeleteVmRequest request;
    request.set_vm_id(vm_id);
    absl::StatusOr<v1::DeleteVmResponse> response =
        Connection(globals.options()).Call(&VmStub::DeleteVm, request);
    if (!response.ok()) return response.status();
    return out.Deleted("vm", vm_id, *response);
  });
  add_vm_command("get", "show every field of a VM", [&] {
    absl::StatusOr<v1::Vm> got = SmolVMManager(globals.options()).get_vm(vm_id);
    if (!got.ok()) return got.status();
    return out.VmDetails(*got);
  });

  // vm expose / unexpose print the VM's details, which list its forwards.
  std::string port_spec;
  CLI::App* expose = vm->add_subcommand(
      "expose",
      "expose a guest port on the host (HOST_IP defaults to 127.0.0.1); kept "
      "across daemon restarts, removed with the VM");
  expose->add_option("ID", vm_id, "VM id")->required();
  expose
      ->add_option("FORWARD", port_spec,
                   "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80")
      ->required();
  expose->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<v1::PortForward> forward =
          ParseForward("expose", port_spec);
      if (!forward.ok()) return forward.status();
      absl::StatusOr<SmolVM> target = SmolVM::attach(vm_id, globals.options());
      if (!target.ok()) return target.status();
      if (absl::Status s =
              target->expose_port(forward->host_port(), forward->guest_port(),
                                  forward->host_ip(), forward->protocol());
          !s.ok()) {
        return s;
      }
      return out.VmDetails(target->info());
    };
  });
  CLI::App* unexpose = vm->add_subcommand(
      "unexpose", "remove a port forward by its host address and protocol");
  unexpose->add_option("ID", vm_id, "VM id")->required();
  unexpose
      ->add_option("HOST_PORT", port_spec,
                   "[HOST_IP:]HOST_PORT[/udp] as given to expose")
      ->required();
  unexpose->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<HostSide> side =
          ParsePortSpec("unexpose", port_spec, /*with_guest_port=*/false);
      if (!side.ok()) return side.status();
      absl::StatusOr<SmolVM> target = SmolVM::attach(vm_id, globals.options());
      if (!target.ok()) return target.status();
      if (absl::Status s = target->unexpose_port(side->host_port, side->host_ip,
                                                 side->protocol);
          !s.ok()) {
        return s;
      }
      return out.VmDetails(target->info());
    };
  });

  vm->add_subcommand("list", "list all VMs")->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<std::vector<v1::Vm>> vms =
          SmolVMManager(globals.options()).list_vms();
      if (!vms.ok()) return vms.status();
      return out.Vms(*vms);
    };
  });

  // vm exec: the exit code comes from the command, not from a status.
  std::optional<int> exit_code;
  std::string exec_vm, exec_cwd;
  std::vector<std::string> exec_env, exec_argv;
  std::uint32_t exec_timeout_ms = 0;
  bool exec_stdin = false;
  CLI::App* exec = vm->add_subcommand(
      "exec",
      "run a command in a RUNNING VM: vm exec ID [flags] -- CMD [ARGS...]; "
      "streams its output and exits with its exit status (128+N if killed by "
      "signal N, 124 on --timeout-ms)");
  exec->add_option("ID", exec_vm, "VM id")->required();
  exec->add_option("CMD", exec_argv,
                   "command and arguments (after --; argv form, no shell)")
      ->required();
  exec->add_option("--env", exec_env, "extra environment variable (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  exec->add_option("--cwd", exec_cwd, "working directory (default /root)")
      ->type_name("DIR");
  exec->add_option("--timeout-ms", exec_timeout_ms,
                   "kill the command after N ms (default: no limit)")
      ->type_name("N");
  exec->add_flag("--stdin", exec_stdin,
                 "send our stdin (read to its end, at most 16 MiB) to the "
                 "command; without it the command reads /dev/null");
  exec->callback([&] {
    action = [&]() -> absl::Status {
      RunOptions options;
      absl::StatusOr<std::map<std::string, std::string>> env =
          ParseEnv(exec_env);
      if (!env.ok()) return env.status();
      options.env = *std::move(env);
      options.cwd = exec_cwd;
      options.timeout = absl::Milliseconds(exec_timeout_ms);
      if (exec_stdin) {
        absl::StatusOr<std::string> data = ReadStdin();
        if (!data.ok()) return data.status();
        options.stdin_data = *std::move(data);
      }
      absl::StatusOr<SmolVM> target =
          SmolVM::attach(exec_vm, globals.options());
      if (!target.ok()) return target.status();
      absl::StatusOr<ExecExit> exit = target->exec(
          exec_argv, options, [](ExecStream stream, absl::string_view data) {
            FILE* out = stream == ExecStream::kStdout ? stdout : stderr;
            std::fwrite(data.data(), 1, data.size(), out);
            std::fflush(out);
          });
      if (!exit.ok()) return exit.status();
      if (exit->timed_out) {
        std::cerr << "smolvmctl: command timed out after " << exec_timeout_ms
                  << " ms and was killed\n";
        exit_code = 124;
      } else if (exit->signal != 0) {
        exit_code = 128 + exit->signal;
      } else {
        exit_code = exit->exit_code;
      }
      return absl::OkStatus();
    };
  });

  // --- file ----------------------------------------------------------------
  CLI::App* file =
      app.add_subcommand("file", "copy files in and out of a RUNNING VM");
  file->require_subcommand(1);

  std::string file_vm, file_src, file_dst, file_mode;
  bool file_dir = false;
  CLI::App* put = file->add_subcommand(
      "put",
      "copy LOCAL to GUEST_PATH (atomically replaced; parents created); a "
      "LOCAL directory is copied into the guest directory GUEST_PATH");
  put->add_option("ID", file_vm, "VM id")->required();
  put->add_option("LOCAL", file_src, "local file or directory")->required();
  put->add_option("GUEST_PATH", file_dst,
                  "absolute guest path; ending in / = keep LOCAL's name")
      ->required();
  put->add_option("--mode", file_mode,
                  "permission bits of the guest file, octal (default 0644)")
      ->type_name("MODE");
  put->callback([&] {
    action = [&]() -> absl::Status {
      uint32_t mode = 0;
      if (!file_mode.empty()) {
        absl::StatusOr<uint32_t> parsed = ParseMode(file_mode);
        if (!parsed.ok()) return parsed.status();
        mode = *parsed;
      }
      std::error_code ec;
      const bool is_dir = std::filesystem::is_directory(file_src, ec);
      if (is_dir && !file_mode.empty()) {
        return absl::InvalidArgumentError(
            "--mode applies to files; a directory keeps the modes tar records");
      }
      std::string guest_path = file_dst;
      if (!is_dir && !guest_path.empty() && guest_path.back() == '/') {
        guest_path += BaseName(file_src);
      }
      absl::StatusOr<SmolVM> target =
          SmolVM::attach(file_vm, globals.options());
      if (!target.ok()) return target.status();
      return is_dir ? target->upload_dir(file_src, guest_path)
                    : target->upload_file(file_src, guest_path, mode);
    };
  });

  CLI::App* get = file->add_subcommand(
      "get",
      "copy the guest file GUEST_PATH to LOCAL (written to a temporary file, "
      "then renamed); with --dir, the guest directory into LOCAL");
  get->add_option("ID", file_vm, "VM id")->required();
  get->add_option("GUEST_PATH", file_src, "absolute guest path")->required();
  get->add_option("LOCAL", file_dst,
                  "local file; an existing directory = keep the guest name")
      ->required();
  get->add_flag("--dir,-r", file_dir,
                "GUEST_PATH is a directory: copy its contents into LOCAL "
                "(created if missing) through tar");
  get->callback([&] {
    action = [&]() -> absl::Status {
      std::string local = file_dst;
      std::error_code ec;
      if (!file_dir && std::filesystem::is_directory(local, ec)) {
        local = (std::filesystem::path(local) / BaseName(file_src)).string();
      }
      absl::StatusOr<SmolVM> target =
          SmolVM::attach(file_vm, globals.options());
      if (!target.ok()) return target.status();
      if (!file_dir) return target->download_file(file_src, local);
      absl::StatusOr<DirDownload> got = target->download_dir(file_src, local);
      if (!got.ok()) return got.status();
      // Entries the guest sent that were not extracted: a warning each (the
      // copy itself succeeded). Their names are the guest's bytes.
      for (const std::string& refused : got->refused) {
        std::cerr << "smolvmctl: refused " << cli::EscapeForTerminal(refused)
                  << "\n";
      }
      if (got->refused_count > got->refused.size()) {
        std::cerr << "smolvmctl: refused "
                  << got->refused_count - got->refused.size()
                  << " more entries\n";
      }
      return absl::OkStatus();
    };
  });

  // --- snapshot ------------------------------------------------------------
  CLI::App* snapshot =
      app.add_subcommand("snapshot", "create, inspect and restore snapshots");
  snapshot->require_subcommand(1);

  std::string source_vm, snapshot_id_flag;
  bool resume_source = false;
  CLI::App* snap_create = snapshot->add_subcommand(
      "create", "snapshot a VM (left PAUSED unless --resume)");
  snap_create->add_option("VM_ID", source_vm, "VM to snapshot")->required();
  snap_create->add_option("--id", snapshot_id_flag,
                          "snapshot id (default: generated)");
  snap_create->add_flag("--resume", resume_source,
                        "resume the VM after the snapshot");
  snap_create->callback([&] {
    action = [&]() -> absl::Status {
      v1::CreateSnapshotRequest request;
      request.set_vm_id(source_vm);
      request.set_snapshot_id(snapshot_id_flag);
      request.set_resume_source(resume_source);
      absl::StatusOr<v1::SnapshotInfo> info =
          Connection(globals.options())
              .Call(&SnapshotStub::CreateSnapshot, request);
      if (!info.ok()) return info.status();
      return out.Snapshot(*info);
    };
  });

  std::string snapshot_id;  // The ID argument of get / delete / restore.
  CLI::App* snap_get =
      snapshot->add_subcommand("get", "show every field of a snapshot");
  snap_get->add_option("ID", snapshot_id, "snapshot id")->required();
  snap_get->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<v1::SnapshotInfo> info =
          SmolVMManager(globals.options()).get_snapshot(snapshot_id);
      if (!info.ok()) return info.status();
      return out.SnapshotDetails(*info);
    };
  });

  CLI::App* snap_delete =
      snapshot->add_subcommand("delete", "delete a snapshot and its files");
  snap_delete->add_option("ID", snapshot_id, "snapshot id")->required();
  snap_delete->callback([&] {
    action = [&]() -> absl::Status {
      v1::DeleteSnapshotRequest request;
      request.set_snapshot_id(snapshot_id);
      absl::StatusOr<v1::DeleteSnapshotResponse> response =
          Connection(globals.options())
              .Call(&SnapshotStub::DeleteSnapshot, request);
      if (!response.ok()) return response.status();
      return out.Deleted("snapshot", snapshot_id, *response);
    };
  });

  CLI::App* snap_verify = snapshot->add_subcommand(
      "verify",
      "read every file of a snapshot and compare it with the checksum recorded "
      "when it was taken; exits 1 if the snapshot predates checksums");
  snap_verify->add_option("ID", snapshot_id, "snapshot id")->required();
  snap_verify->callback([&] {
    action = [&]() -> absl::Status {
      // A corrupt file is an error (DATA_LOSS, naming it), not a table.
      absl::StatusOr<v1::VerifySnapshotResponse> verified =
          SmolVMManager(globals.options()).verify_snapshot(snapshot_id);
      if (!verified.ok()) return verified.status();
      if (absl::Status s = out.Verification(*verified); !s.ok()) return s;
      if (verified->legacy()) {
        std::cerr << "smolvmctl: snapshot " << cli::EscapeForTerminal(snapshot_id)
                  << " was taken before checksums were recorded: it cannot be "
                     "verified\n";
        exit_code = 1;
      }
      return absl::OkStatus();
    };
  });

  std::string list_vm;
  CLI::App* snap_list = snapshot->add_subcommand("list", "list snapshots");
  snap_list->add_option("--vm", list_vm, "only snapshots of this VM")
      ->type_name("VM_ID");
  snap_list->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<std::vector<v1::SnapshotInfo>> snaps =
          SmolVMManager(globals.options()).list_snapshots(list_vm);
      if (!snaps.ok()) return snaps.status();
      return out.Snapshots(*snaps);
    };
  });

  std::string new_vm_id;
  bool paused = false;
  CLI::App* restore = snapshot->add_subcommand(
      "restore",
      "start a VM from a snapshot (RUNNING unless --paused); without --vm-id "
      "it takes the snapshot's own VM identity");
  restore->add_option("SNAP_ID", snapshot_id, "snapshot id")->required();
  restore->add_option("--vm-id", new_vm_id,
                      "restore as a new, independent VM with this id");
  restore->add_flag("--paused", paused, "leave the restored VM PAUSED");
  restore->callback([&] {
    action = [&]() -> absl::Status {
      v1::RestoreSnapshotRequest request;
      request.set_snapshot_id(snapshot_id);
      request.set_resume_vm(!paused);
      request.set_vm_id(new_vm_id);
      absl::StatusOr<v1::Vm> restored =
          Connection(globals.options())
              .Call(&SnapshotStub::RestoreSnapshot, request);
      if (!restored.ok()) return restored.status();
      return out.Vm(*restored);
    };
  });

  std::uint32_t fork_count = 0;
  std::string fork_prefix;
  bool fork_paused = false;
  CLI::App* snap_fork = snapshot->add_subcommand(
      "fork",
      "restore N independent clones of a snapshot in one call, each with a "
      "fresh identity (vm_id, TAP, IP, MAC); exits 1 if any clone failed");
  snap_fork->add_option("SNAP_ID", snapshot_id, "snapshot id")->required();
  snap_fork->add_option("--count", fork_count, "number of clones, 1-128")
      ->type_name("N")
      ->required();
  snap_fork
      ->add_option("--prefix", fork_prefix,
                   "clones are named PREFIX-1 ... PREFIX-N (default: "
                   "SNAP_ID-fork)")
      ->type_name("PREFIX");
  snap_fork->add_flag("--paused", fork_paused, "leave the clones PAUSED");
  snap_fork->callback([&] {
    action = [&]() -> absl::Status {
      absl::StatusOr<std::vector<ForkOutcome>> outcomes =
          SmolVMManager(globals.options())
              .fork_snapshot(snapshot_id, fork_count, !fork_paused,
                             fork_prefix);
      if (!outcomes.ok()) return outcomes.status();
      std::vector<v1::ForkResult> results;
      size_t failed = 0;
      for (const ForkOutcome& outcome : *outcomes) {
        v1::ForkResult& result = results.emplace_back();
        result.set_vm_id(outcome.vm_id);
        if (outcome.vm.ok()) {
          *result.mutable_vm() = *outcome.vm;
        } else {
          ++failed;
          result.set_error_code(static_cast<int>(outcome.vm.status().code()));
          result.set_error_message(std::string(outcome.vm.status().message()));
        }
      }
      if (absl::Status s = out.Forks(results); !s.ok()) return s;
      if (failed > 0) {
        std::cerr << "smolvmctl: fork snapshot "
                  << cli::EscapeForTerminal(snapshot_id) << ": " << failed
                  << " of " << results.size() << " clones failed\n";
        exit_code = 1;
      }
      return absl::OkStatus();
    };
  });

  // --- pool ----------------------------------------------------------------
  CLI::App* pool = app.add_subcommand(
      "pool", "warm pools: clones of a snapshot kept ready, claimed in milliseconds");
  pool->require_subcommand(1);
  std::string pool_id;
  std::string pool_snapshot;
  std::uint32_t pool_size = 0;
  CLI::App* pool_create = pool->add_subcommand(
      "create", "keep SIZE clones of a snapshot restored and paused (fills in the background)");
  pool_create->add_option("ID", pool_id, "pool id (1-55 chars of a-z, 0-9, -)")->required();
  pool_create->add_option("--snapshot", pool_snapshot, "snapshot to clone")
      ->type_name("SNAP_ID")
      ->required();
  pool_create->add_option("--size", pool_size, "members kept ready, 1-64")
      ->type_name("N")
      ->required();
  pool_create->callback([&] {
    action = [&]() -> absl::Status {
      auto created = SmolVMManager(globals.options()).create_pool(pool_id, pool_snapshot,
                                                                  pool_size);
      if (!created.ok()) return created.status();
      return out.Pool(*created);
    };
  });
  CLI::App* pool_get = pool->add_subcommand("get", "show a pool and its ready members");
  pool_get->add_option("ID", pool_id, "pool id")->required();
  pool_get->callback([&] {
    action = [&]() -> absl::Status {
      auto got = SmolVMManager(globals.options()).get_pool(pool_id);
      if (!got.ok()) return got.status();
      return out.Pool(*got);
    };
  });
  pool->add_subcommand("list", "list pools")->callback([&] {
    action = [&]() -> absl::Status {
      auto pools = SmolVMManager(globals.options()).list_pools();
      if (!pools.ok()) return pools.status();
      return out.Pools(*pools);
    };
  });
  CLI::App* pool_delete =
      pool->add_subcommand("delete", "delete a pool and its unclaimed members");
  pool_delete->add_option("ID", pool_id, "pool id")->required();
  pool_delete->callback([&] {
    action = [&]() -> absl::Status {
      if (absl::Status s = SmolVMManager(globals.options()).delete_pool(pool_id); !s.ok()) {
        return s;
      }
      return out.Deleted("pool", pool_id, v1::DeletePoolResponse());
    };
  });
  std::string claim_vm;
  CLI::App* pool_claim = pool->add_subcommand(
      "claim", "take a ready VM from a pool, RUNNING (restored on demand if none is ready)");
  pool_claim->add_option("ID", pool_id, "pool id")->required();
  pool_claim->add_option("--vm", claim_vm, "claim this ready member")->type_name("VM_ID");
  pool_claim->callback([&] {
    action = [&]() -> absl::Status {
      v1::ClaimVmRequest request;
      request.set_pool_id(pool_id);
      request.set_vm_id(claim_vm);
      absl::StatusOr<v1::ClaimVmResponse> claimed =
          Connection(globals.options()).Call(&v1::PoolService::Stub::ClaimVm, request);
      if (!claimed.ok()) return claimed.status();
      if (globals.json) return out.Json(*claimed);
      if (!claimed->from_pool()) {
        std::cerr << "smolvmctl: pool " << cli::EscapeForTerminal(pool_id)
                  << " had no ready member; restored on demand\n";
      }
      return out.Vm(claimed->vm());
    };
  });

  // --- image ---------------------------------------------------------------
  CLI::App* image = app.add_subcommand("image", "build, list and delete images");
  image->require_subcommand(1);

  std::string image_ref, build_name, build_suite, build_variant, build_oci, build_dir,
      build_tarball, build_oci_ref;
  std::vector<std::string> build_packages;
  bool build_minimal = false;
  std::uint32_t build_min_disk = 0;
  std::string build_kernel_deb, warm_start, warm_ready, warm_snapshot;
  std::uint32_t warm_timeout = 0, warm_memory = 0;
  CLI::App* build = image->add_subcommand(
      "build", "build an image from Debian packages, an OCI archive, a directory or a tarball");
  build->add_option("NAME", build_name, "NAME or NAME:TAG of the new image")->required();
  build->add_option("--debian", build_suite, "Debian suite to bootstrap (e.g. bookworm)")
      ->type_name("SUITE");
  build->add_option("--package", build_packages, "Debian package to include (repeatable)")
      ->type_name("PKG")
      ->allow_extra_args(false);
  build->add_option("--variant", build_variant, "mmdebstrap variant (default minbase)");
  build->add_option("--oci", build_oci,
                    "OCI layout dir, OCI archive or docker-save tarball on the daemon's host")
      ->type_name("PATH");
  build->add_option("--oci-ref", build_oci_ref, "tag inside the OCI archive (default: the only one)");
  build->add_option("--dir", build_dir, "root filesystem directory on the daemon's host")
      ->type_name("PATH");
  build->add_option("--tarball", build_tarball, "root filesystem tarball on the daemon's host")
      ->type_name("PATH");
  build->add_flag("--minimal", build_minimal, "the busybox userland");
  build->add_option("--min-disk-mib", build_min_disk, "smallest root disk in MiB");
  build->add_option("--kernel-deb", build_kernel_deb,
                    "admins: boot this linux-image-*.deb's kernel (on the daemon's host)")
      ->type_name("PATH");
  build->add_option("--warm-start", warm_start,
                    "warm template: shell line to start in a booted VM of the image and keep "
                    "running into a snapshot")
      ->type_name("CMD");
  build->add_option("--warm-ready", warm_ready,
                    "warm template: shell line run until it succeeds before the snapshot")
      ->type_name("CMD");
  build->add_option("--warm-timeout", warm_timeout, "seconds --warm-ready may take (default 120)");
  build->add_option("--warm-memory-mib", warm_memory, "the warm build VM's memory");
  build->add_option("--warm-snapshot", warm_snapshot,
                    "the warm snapshot's id (default NAME-warm)")
      ->type_name("ID");
  build->callback([&] {
    action = [&]() -> absl::Status {
      v1::BuildImageRequest request;
      request.set_name(build_name);
      request.set_min_disk_mib(build_min_disk);
      int sources = (!build_suite.empty() || !build_packages.empty()) + !build_oci.empty() +
                    !build_dir.empty() + !build_tarball.empty() + build_minimal;
      if (sources != 1) {
        return absl::InvalidArgumentError(
            "image build needs exactly one source: --debian SUITE [--package PKG...], --oci "
            "PATH, --dir PATH, --tarball PATH or --minimal");
      }
      if (!build_suite.empty() || !build_packages.empty()) {
        auto* debian = request.mutable_debian();
        debian->set_suite(build_suite);
        debian->set_variant(build_variant);
        for (const auto& p : build_packages) debian->add_packages(p);
      } else if (!build_oci.empty()) {
        request.mutable_oci()->set_path(build_oci);
        request.mutable_oci()->set_reference(build_oci_ref);
      } else if (!build_dir.empty()) {
        request.set_directory(build_dir);
      } else if (!build_tarball.empty()) {
        request.set_tarball(build_tarball);
      } else {
        request.set_minimal(true);
      }
      request.set_kernel_deb(build_kernel_deb);
      if (!warm_start.empty() || !warm_ready.empty()) {
        v1::WarmStart* warm = request.mutable_warm();
        warm->set_start_command(warm_start);
        warm->set_ready_command(warm_ready);
        warm->set_ready_timeout_s(warm_timeout);
        warm->set_memory_mib(warm_memory);
        warm->set_snapshot_id(warm_snapshot);
      } else if (warm_timeout != 0 || warm_memory != 0 || !warm_snapshot.empty()) {
        return absl::InvalidArgumentError(
            "--warm-timeout, --warm-memory-mib and --warm-snapshot need --warm-start or "
            "--warm-ready");
      }
      auto built = SmolVMManager(globals.options())
                       .build_image(request, [&](const v1::BuildProgress& p) {
                         out.BuildProgress(p);
                       });
      out.EndProgress();
      if (!built.ok()) return built.status();
      return out.BuildDone(*built);
    };
  });

  image->add_subcommand("list", "list the images you can use")->callback([&] {
    action = [&]() -> absl::Status {
      auto images = SmolVMManager(globals.options()).list_images();
      if (!images.ok()) return images.status();
      return out.Images(*images);
    };
  });
  CLI::App* image_get = image->add_subcommand("get", "show every field of an image");
  image_get->add_option("IMAGE", image_ref, "name or digest")->required();
  image_get->callback([&] {
    action = [&]() -> absl::Status {
      auto got = SmolVMManager(globals.options()).get_image(image_ref);
      if (!got.ok()) return got.status();
      return out.ImageDetails(*got);
    };
  });
  CLI::App* image_rm = image->add_subcommand(
      "rm", "remove a name (and the image with its last name), or by digest the image");
  image_rm->add_option("IMAGE", image_ref, "name or digest")->required();
  image_rm->callback([&] {
    action = [&]() -> absl::Status {
      v1::DeleteImageRequest request;
      request.set_image(image_ref);
      auto response = Connection(globals.options()).Call(&v1::ImageService::Stub::DeleteImage,
                                                        request);
      if (!response.ok()) return response.status();
      return out.Deleted(response->image_deleted() ? "image" : "image name", image_ref,
                         *response);
    };
  });
  std::string tag_name;
  CLI::App* image_tag = image->add_subcommand("tag", "add a name to an image");
  image_tag->add_option("IMAGE", image_ref, "name or digest")->required();
  image_tag->add_option("NAME", tag_name, "new NAME or NAME:TAG")->required();
  image_tag->callback([&] {
    action = [&]() -> absl::Status {
      auto tagged = SmolVMManager(globals.options()).tag_image(image_ref, tag_name);
      if (!tagged.ok()) return tagged.status();
      return out.ImageDetails(*tagged);
    };
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and friends exit 0; real usage errors are invalid arguments.
    return app.exit(e) == 0 ? 0 : ExitCodeFor(absl::InvalidArgumentError(""));
  }

  absl::Status status = action ? action() : absl::InternalError("no command");
  if (!status.ok()) {
    // The message may carry a guest's console tail or other text of the
    // daemon's: show it, but not as terminal control sequences.
    std::cerr << "smolvmctl: " << cli::EscapeForTerminal(status.message())
              << "\n";
    return ExitCodeFor(status);
  }
  return exit_code.value_or(0);
}

}  // namespace
}  // namespace smolvm

int main(int argc, char** argv) { return smolvm::Main(argc, argv); }
