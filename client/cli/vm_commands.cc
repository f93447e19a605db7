// smolvmctl vm create|start|stop|pause|resume|delete|get|list|expose|unexpose|egress|lifetime
// (vm exec and vm shell are in exec_command.cc).

#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm::cli {
namespace {

using VmStub = v1::VmService::Stub;

struct CreateFlags {
  std::string vm_id, kernel, initrd, rootfs, boot_args, image;
  std::uint32_t vcpus = 0, memory_mib = 0, disk_size_mib = 0;
  bool no_start = false;
  EgressOptions egress;
  LifetimeOptions lifetime;
  std::vector<std::string> env, forwards, labels, mounts;
};

// --allow, --deny, --allow-domain and --deny-domain, for vm create and vm
// egress.
void AddEgressOptions(CLI::App* cmd, EgressOptions& f) {
  cmd->add_option("--allow", f.allow,
                  "IPv4 CIDR the guest may reach with restricted egress (repeatable; implies "
                  "restricted)")
      ->type_name("CIDR")
      ->allow_extra_args(false);
  cmd->add_option("--deny", f.deny,
                  "IPv4 CIDR the guest may not reach, with open or restricted egress "
                  "(repeatable; checked before any allow)")
      ->type_name("CIDR")
      ->allow_extra_args(false);
  cmd->add_option("--allow-domain", f.allow_domains,
                  "name (or *.name) whose DNS answers the guest may reach, with restricted "
                  "egress (repeatable; implies restricted)")
      ->type_name("NAME")
      ->allow_extra_args(false);
  cmd->add_option("--deny-domain", f.deny_domains,
                  "name (or *.name) the guest cannot resolve, with open or restricted egress "
                  "(repeatable)")
      ->type_name("NAME")
      ->allow_extra_args(false);
}

// The lifetime options of vm create and vm lifetime.
void AddLifetimeOptions(CLI::App* cmd, LifetimeOptions& f) {
  cmd->add_option("--max-lifetime", f.max_lifetime,
                  "act on the VM this long after it was created (or the limit set): 300, 5m, 2h")
      ->type_name("DURATION");
  cmd->add_option("--max-lifetime-action", f.max_lifetime_action,
                  "what --max-lifetime does (default delete)")
      ->type_name("delete|stop|pause|snapshot");
  cmd->add_option("--idle-timeout", f.idle_timeout,
                  "act on the running VM after this long without guest calls, execs, "
                  "processes or forwarded connections")
      ->type_name("DURATION");
  cmd->add_option("--idle-action", f.idle_action,
                  "what --idle-timeout does (default pause; a paused VM resumes on the next "
                  "guest call or forwarded connection)")
      ->type_name("delete|stop|pause|snapshot");
  cmd->add_flag("--no-auto-resume", f.no_auto_resume,
                "a VM the idle policy paused stays paused until resumed");
}

absl::Status RunCreate(const CliContext& ctx, const CreateFlags& f) {
  absl::StatusOr<std::map<std::string, std::string>> env = ParseEnv(f.env);
  if (!env.ok()) return env.status();
  absl::StatusOr<std::optional<v1::EgressPolicy>> egress = ParseEgress(f.egress);
  if (!egress.ok()) return egress.status();
  absl::StatusOr<std::map<std::string, std::string>> labels = ParseKeyValues(f.labels, "--label");
  if (!labels.ok()) return labels.status();
  v1::CreateVmRequest request;
  v1::VMConfig* c = request.mutable_config();
  c->mutable_labels()->insert(labels->begin(), labels->end());
  for (const std::string& spec : f.forwards) {
    absl::StatusOr<v1::PortForward> forward = ParseForward("--forward", spec);
    if (!forward.ok()) return forward.status();
    *c->add_port_forwards() = *std::move(forward);
  }
  for (const std::string& spec : f.mounts) {
    absl::StatusOr<v1::Mount> mount = ParseMount(spec);
    if (!mount.ok()) return mount.status();
    *c->add_mounts() = *std::move(mount);
  }
  if (egress->has_value()) *c->mutable_egress() = **egress;
  absl::StatusOr<std::optional<v1::Lifetime>> lifetime = ParseLifetime(f.lifetime);
  if (!lifetime.ok()) return lifetime.status();
  if (lifetime->has_value()) *c->mutable_lifetime() = **lifetime;
  c->mutable_env()->insert(env->begin(), env->end());
  c->set_vm_id(f.vm_id);
  c->set_vcpu_count(f.vcpus);
  c->set_memory_mib(f.memory_mib);
  c->set_kernel_path(f.kernel);
  c->set_initrd_path(f.initrd);
  c->set_rootfs_path(f.rootfs);
  c->set_image(f.image);
  c->set_disk_size_mib(f.disk_size_mib);
  c->set_boot_args(f.boot_args);
  request.set_start(!f.no_start);
  Connection connection(ctx.globals.options());
  absl::StatusOr<v1::Vm> created =
      CallWithProgress(connection, request, ctx.out.OperationProgress(),
                       [&] { return connection.Call(&VmStub::CreateVm, request); });
  if (!created.ok()) return created.status();
  return ctx.out.Vm(*created);
}

void RegisterCreate(CLI::App* vm, CliContext& ctx) {
  CreateFlags& f = ctx.Make<CreateFlags>();
  CLI::App* create =
      vm->add_subcommand("create", "create a VM and boot it (returns once the guest is ready)");
  create->add_option("--id", f.vm_id, "VM id (default: generated)");
  // 0 would mean "the daemon's default" on the wire: refuse it here.
  create->add_option("--vcpus", f.vcpus, "vCPUs, 1-32 (default 2)")->check(CLI::Range(1u, 32u));
  create->add_option("--memory-mib", f.memory_mib, "guest RAM in MiB, 128-16384 (default 512)")
      ->check(CLI::Range(128u, 16384u));
  create->add_option("--image", f.image,
                     "image to boot: a name (debian-python, minimal, NAME:TAG) or digest "
                     "(default: the daemon's default image)");
  create->add_option("--disk-size-mib", f.disk_size_mib,
                     "root disk size in MiB (default: the image's; larger grows it)");
  create->add_option("--kernel", f.kernel, "kernel image on the daemon's host (admins)")
      ->type_name("PATH");
  create->add_option("--initrd", f.initrd, "initramfs on the daemon's host")->type_name("PATH");
  create->add_option("--rootfs", f.rootfs, "ext4 root filesystem image on the daemon's host (copied)")
      ->type_name("PATH");
  create->add_option("--boot-args", f.boot_args, "extra kernel command line");
  create->add_flag("--no-start", f.no_start, "create without booting (CREATED)");
  create->add_option("--env", f.env, "environment variable of every exec in this VM (repeatable)")
      ->type_name("NAME=VALUE")
      ->allow_extra_args(false);
  create
      ->add_option("--egress", f.egress.mode,
                   "what the guest may reach: open (default; anything beyond the host, through "
                   "NAT), off (nothing), restricted (only the --allow CIDRs and --allow-domain "
                   "names)")
      ->type_name("open|off|restricted");
  AddEgressOptions(create, f.egress);
  create
      ->add_option("--forward", f.forwards,
                   "expose a guest port on the host (repeatable; HOST_IP defaults to 127.0.0.1)")
      ->type_name("[HOST_IP:]HOST_PORT:GUEST_PORT[/udp]")
      ->allow_extra_args(false);
  AddLifetimeOptions(create, f.lifetime);
  create
      ->add_option("--mount", f.mounts,
                   "show a host directory (beneath the operator's [mounts] allowed_dirs) in the "
                   "guest over virtio-9p; ro = read-only, detach = unmounted for snapshots "
                   "(repeatable)")
      ->type_name("HOST_DIR:GUEST_DIR[:ro|rw][,detach]")
      ->allow_extra_args(false);
  AddLabelOption(create, f.labels, "tag the VM (repeatable; vm list --label filters by it)");
  ctx.OnRun(create, [&ctx, &f] { return RunCreate(ctx, f); });
}

struct ForkFlags {
  std::string vm_id, snapshot_id, prefix;
  std::uint32_t count = 1;
  bool paused = false;
  std::vector<std::string> labels;
};

// vm fork ID: ForkVm (snapshot + children in one call, the source runs on).
void RegisterFork(CLI::App* vm, CliContext& ctx) {
  ForkFlags& f = ctx.Make<ForkFlags>();
  CLI::App* fork = vm->add_subcommand(
      "fork", "snapshot a running VM and start copies of it (the VM keeps running)");
  fork->add_option("ID", f.vm_id, "VM id")->required();
  fork->add_option("--count,-n", f.count, "children, 1-128 (default 1)")->check(CLI::Range(1u, 128u));
  fork->add_option("--snapshot-id", f.snapshot_id,
                   "id of the kept snapshot (default: <ID>-fork-<unix ms>)");
  fork->add_option("--prefix", f.prefix, "children are PREFIX-1..N (default: the snapshot id)");
  fork->add_flag("--paused", f.paused, "leave the children PAUSED");
  AddLabelOption(fork, f.labels, "tag the snapshot (repeatable)");
  ctx.OnRun(fork, [&ctx, &f]() -> absl::Status {
    absl::StatusOr<std::map<std::string, std::string>> labels = ParseKeyValues(f.labels, "--label");
    if (!labels.ok()) return labels.status();
    v1::ForkVmRequest request;
    request.set_vm_id(f.vm_id);
    request.set_count(f.count);
    request.set_snapshot_id(f.snapshot_id);
    request.set_vm_id_prefix(f.prefix);
    request.set_paused(f.paused);
    request.mutable_labels()->insert(labels->begin(), labels->end());
    Connection connection(ctx.globals.options());
    absl::StatusOr<v1::ForkVmResponse> response =
        CallWithProgress(connection, request, ctx.out.OperationProgress(),
                         [&] { return connection.Call(&VmStub::ForkVm, request); });
    if (!response.ok()) return response.status();
    std::vector<v1::ForkResult> results(response->results().begin(), response->results().end());
    // JSON/YAML: the whole reply (snapshot_id and results).
    absl::Status printed = ctx.out.Message(
        *response, absl::StrCat("snapshot ", EscapeForTerminal(response->snapshot_id()), "\n",
                                ForkTable(results)));
    if (!printed.ok()) return printed;
    NoteForkFailures(ctx, "fork vm " + f.vm_id, results);
    return absl::OkStatus();
  });
}

// VmCall makes one VmService call that takes {vm_id} and returns a Vm, and
// prints the VM.
template <typename Request>
absl::Status VmCall(const CliContext& ctx,
                    grpc::Status (VmStub::*method)(grpc::ClientContext*, const Request&, v1::Vm*),
                    const std::string& vm_id) {
  Request request;
  request.set_vm_id(vm_id);
  Connection connection(ctx.globals.options());
  absl::StatusOr<v1::Vm> vm;
  if constexpr (std::is_same_v<Request, v1::StartVmRequest>) {
    // A cold boot takes seconds: its progress is shown.
    vm = CallWithProgress(connection, request, ctx.out.OperationProgress(),
                          [&] { return connection.Call(method, request); });
  } else {
    vm = connection.Call(method, request);
  }
  if (!vm.ok()) return vm.status();
  return ctx.out.Vm(*vm);
}

struct DeleteFlags {
  std::vector<std::string> ids;
  bool all = false;
  bool yes = false;
};

// ConfirmAll asks on a terminal whether to delete `ids`; elsewhere --all
// needs --yes, so that a script never deletes everything by accident.
absl::Status ConfirmAll(const std::vector<std::string>& ids) {
  if (!isatty(STDIN_FILENO)) {
    return absl::InvalidArgumentError(
        "vm delete --all deletes every VM you can see: add --yes to confirm");
  }
  std::cerr << "delete " << ids.size() << " VMs (" << EscapeForTerminal(absl::StrJoin(ids, ", "))
            << ")? [y/N] " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  if (answer == "y" || answer == "Y" || answer == "yes") return absl::OkStatus();
  return absl::CancelledError("vm delete --all: not confirmed; nothing deleted");
}

// RunDelete deletes every VM named (or all with --all), going on after a
// failure like rm does: each failure is printed, and the last one's exit
// code is the command's.
absl::Status RunDelete(CliContext& ctx, const DeleteFlags& f) {
  std::vector<std::string> ids = f.ids;
  if (f.all == !ids.empty()) {
    return absl::InvalidArgumentError("vm delete: give VM ids or --all (not both)");
  }
  if (f.all) {
    absl::StatusOr<std::vector<v1::Vm>> vms = SmolVMManager(ctx.globals.options()).list_vms();
    if (!vms.ok()) return vms.status();
    for (const v1::Vm& vm : *vms) ids.push_back(vm.vm_id());
    if (ids.empty()) return absl::OkStatus();
    if (!f.yes) {
      if (absl::Status s = ConfirmAll(ids); !s.ok()) return s;
    }
  }
  const Connection connection(ctx.globals.options());
  for (const std::string& id : ids) {
    v1::DeleteVmRequest request;
    request.set_vm_id(id);
    absl::StatusOr<v1::DeleteVmResponse> response = connection.Call(&VmStub::DeleteVm, request);
    absl::Status s = response.ok() ? ctx.out.Deleted("vm", id, *response) : response.status();
    if (!s.ok()) {
      if (ids.size() == 1) return s;
      std::cerr << "smolvmctl: " << EscapeForTerminal(s.message()) << "\n";
      ctx.exit_code = ExitCodeFor(s);
    }
  }
  return absl::OkStatus();
}

void RegisterDelete(CLI::App* vm, CliContext& ctx) {
  DeleteFlags& f = ctx.Make<DeleteFlags>();
  CLI::App* del = vm->add_subcommand(
      "delete", "stop if needed and remove VMs and their disks (each ID, or --all)");
  del->alias("rm");
  del->add_option("ID", f.ids, "VM ids");
  del->add_flag("--all", f.all, "every VM you can see (asks first; --yes when not a terminal)");
  del->add_flag("--yes,-y", f.yes, "do not ask before --all");
  ctx.OnRun(del, [&ctx, &f] { return RunDelete(ctx, f); });
}

// FindForward finds the forward `wanted` in the VM the daemon returned (with the
// daemon's defaults filled in), else returns `wanted` itself.
v1::PortForward FindForward(const v1::Vm& vm, const v1::PortForward& wanted) {
  for (const v1::PortForward& forward : vm.network().port_forwards()) {
    if (forward.host_port() == wanted.host_port() &&
        (forward.protocol().empty() ? "tcp" : forward.protocol()) == wanted.protocol() &&
        (wanted.host_ip().empty() || forward.host_ip() == wanted.host_ip())) {
      return forward;
    }
  }
  return wanted;
}

struct PortFlags {
  std::string vm_id, spec;
};

struct EgressFlags {
  std::string vm_id;
  EgressOptions egress;
};

// vm egress ID MODE [--allow CIDR]... [--deny CIDR]...: UpdateNetworkPolicy.
void RegisterEgress(CLI::App* vm, CliContext& ctx) {
  EgressFlags& f = ctx.Make<EgressFlags>();
  CLI::App* egress = vm->add_subcommand(
      "egress",
      "replace a VM's egress policy, in force at once for a running VM (also for what it "
      "sends on open connections) and kept in its snapshots; prints the VM");
  egress->add_option("ID", f.vm_id, "VM id")->required();
  egress->add_option("MODE", f.egress.mode, "open, off or restricted")
      ->type_name("open|off|restricted")
      ->required();
  AddEgressOptions(egress, f.egress);
  ctx.OnRun(egress, [&ctx, &f]() -> absl::Status {
    absl::StatusOr<std::optional<v1::EgressPolicy>> policy =
        ParseEgress(f.egress);
    if (!policy.ok()) return policy.status();
    absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
    if (!target.ok()) return target.status();
    if (absl::Status s = target->update_network_policy(policy->value_or(v1::EgressPolicy()));
        !s.ok()) {
      return s;
    }
    return ctx.out.VmDetails(target->info());
  });
}

struct LifetimeFlags {
  std::string vm_id;
  LifetimeOptions lifetime;
  bool clear = false;
};

// vm lifetime ID [--max-lifetime D] [--idle-timeout D] ... | --clear: SetLifetime.
void RegisterLifetime(CLI::App* vm, CliContext& ctx) {
  LifetimeFlags& f = ctx.Make<LifetimeFlags>();
  CLI::App* cmd = vm->add_subcommand(
      "lifetime",
      "replace a VM's lifetime policy (max lifetime counted from now; extends, shortens or "
      "with --clear removes it); prints the VM");
  cmd->add_option("ID", f.vm_id, "VM id")->required();
  AddLifetimeOptions(cmd, f.lifetime);
  cmd->add_flag("--clear", f.clear, "remove every limit");
  ctx.OnRun(cmd, [&ctx, &f]() -> absl::Status {
    absl::StatusOr<std::optional<v1::Lifetime>> lifetime = ParseLifetime(f.lifetime);
    if (!lifetime.ok()) return lifetime.status();
    if (lifetime->has_value() == f.clear) {
      return absl::InvalidArgumentError(
          "vm lifetime: give --max-lifetime and/or --idle-timeout, or --clear");
    }
    absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
    if (!target.ok()) return target.status();
    if (absl::Status s = target->set_lifetime(lifetime->value_or(v1::Lifetime())); !s.ok()) {
      return s;
    }
    return ctx.out.VmDetails(target->info());
  });
}

void RegisterExpose(CLI::App* vm, CliContext& ctx) {
  PortFlags& f = ctx.Make<PortFlags>();
  CLI::App* expose = vm->add_subcommand(
      "expose",
      "expose a guest port on the host (HOST_IP defaults to 127.0.0.1); kept across daemon "
      "restarts, removed with the VM; prints HOST_IP:HOST_PORT -> GUEST_PORT/PROTO");
  expose->add_option("ID", f.vm_id, "VM id")->required();
  expose->add_option("FORWARD", f.spec, "[HOST_IP:]HOST_PORT:GUEST_PORT[/udp], e.g. 8080:80")
      ->required();
  ctx.OnRun(expose, [&ctx, &f]() -> absl::Status {
    absl::StatusOr<v1::PortForward> forward = ParseForward("expose", f.spec);
    if (!forward.ok()) return forward.status();
    absl::StatusOr<SmolVM> target = SmolVM::attach(f.vm_id, ctx.globals.options());
    if (!target.ok()) return target.status();
    if (absl::Status s = target->expose_port(forward->host_port(), forward->guest_port(),
                                             forward->host_ip(), forward->protocol());
        !s.ok()) {
      return s;
    }
    return ctx.out.Forward(FindForward(target->info(), *forward));
  });

  PortFlags& u = ctx.Make<PortFlags>();
  CLI::App* unexpose =
      vm->add_subcommand("unexpose", "remove a port forward by its host address and protocol");
  unexpose->add_option("ID", u.vm_id, "VM id")->required();
  unexpose->add_option("HOST_PORT", u.spec, "[HOST_IP:]HOST_PORT[/udp] as given to expose")
      ->required();
  ctx.OnRun(unexpose, [&ctx, &u]() -> absl::Status {
    absl::StatusOr<HostSide> side = ParsePortSpec("unexpose", u.spec, /*with_guest_port=*/false);
    if (!side.ok()) return side.status();
    absl::StatusOr<SmolVM> target = SmolVM::attach(u.vm_id, ctx.globals.options());
    if (!target.ok()) return target.status();
    if (absl::Status s = target->unexpose_port(side->host_port, side->host_ip, side->protocol);
        !s.ok()) {
      return s;
    }
    return ctx.out.VmDetails(target->info());
  });
}

}  // namespace

void RegisterVmCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* vm = app.add_subcommand("vm", "create, control and inspect VMs");
  vm->require_subcommand(1);
  RegisterCreate(vm, ctx);

  std::string& vm_id = ctx.Make<std::string>();  // The ID of the one command that runs.
  auto add_vm_command = [&](const char* name, const char* help, auto method) {
    CLI::App* cmd = vm->add_subcommand(name, help);
    cmd->add_option("ID", vm_id, "VM id")->required();
    ctx.OnRun(cmd, [&ctx, &vm_id, method] { return VmCall(ctx, method, vm_id); });
  };
  add_vm_command("start", "cold-boot a CREATED, STOPPED or ERROR VM", &VmStub::StartVm);
  add_vm_command("stop", "stop a VM's VMM process; the disk is kept", &VmStub::StopVm);
  add_vm_command("pause", "stop the vCPUs of a RUNNING VM", &VmStub::PauseVm);
  add_vm_command("resume", "continue a PAUSED VM", &VmStub::ResumeVm);
  RegisterDelete(vm, ctx);

  CLI::App* get = vm->add_subcommand("get", "show every field of a VM");
  get->add_option("ID", vm_id, "VM id")->required();
  ctx.OnRun(get, [&ctx, &vm_id]() -> absl::Status {
    absl::StatusOr<v1::Vm> got = SmolVMManager(ctx.globals.options()).get_vm(vm_id);
    if (!got.ok()) return got.status();
    return ctx.out.VmDetails(*got);
  });
  RegisterExpose(vm, ctx);
  RegisterEgress(vm, ctx);
  RegisterLifetime(vm, ctx);

  struct ListFlags {
    bool quiet = false;
    std::vector<std::string> labels, statuses;
    std::string image;
  };
  ListFlags& lf = ctx.Make<ListFlags>();
  CLI::App* list = vm->add_subcommand("list", "list all VMs (or those matching every filter)");
  list->alias("ls");
  AddQuietFlag(list, lf.quiet);
  AddLabelOption(list, lf.labels, "only VMs with this label (repeatable: all must match)");
  list->add_option("--status", lf.statuses, "only VMs in this status (repeatable: any)")
      ->type_name("created|running|paused|stopped|error")
      ->allow_extra_args(false);
  list->add_option("--image", lf.image, "only VMs made from this image (name or digest)");
  ctx.OnRun(list, [&ctx, &lf]() -> absl::Status {
    ListFilter filter;
    absl::StatusOr<std::map<std::string, std::string>> labels =
        ParseKeyValues(lf.labels, "--label");
    if (!labels.ok()) return labels.status();
    absl::StatusOr<std::vector<v1::VmStatus>> statuses = ParseStatuses(lf.statuses);
    if (!statuses.ok()) return statuses.status();
    filter.labels = *labels;
    filter.statuses = *statuses;
    filter.image = lf.image;
    absl::StatusOr<std::vector<v1::Vm>> vms =
        SmolVMManager(ctx.globals.options()).list_vms(filter);
    if (!vms.ok()) return vms.status();
    return lf.quiet ? Printer::Ids(IdsOf(*vms, &v1::Vm::vm_id)) : ctx.out.Vms(*vms);
  });
  RegisterFork(vm, ctx);

  RegisterExecCommand(*vm, ctx);
  RegisterShellCommand(*vm, ctx);
  RegisterLogsCommand(*vm, ctx);
  RegisterStatsCommands(*vm, ctx);
}

}  // namespace smolvm::cli
