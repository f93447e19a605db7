// smolvmctl snapshot create|get|delete|verify|list|restore|fork.

#include <cstdint>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {

using SnapshotStub = v1::SnapshotService::Stub;

void RegisterSnapshotCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* snapshot =
      app.add_subcommand("snapshot", "create, inspect and restore snapshots");
  snapshot->require_subcommand(1);

  auto& source_vm = ctx.Make<std::string>();
  auto& snapshot_id_flag = ctx.Make<std::string>();
  auto& resume_source = ctx.Make<bool>();
  auto& create_labels = ctx.Make<std::vector<std::string>>();
  CLI::App* snap_create = snapshot->add_subcommand(
      "create", "snapshot a VM (left PAUSED unless --resume)");
  snap_create->add_option("VM_ID", source_vm, "VM to snapshot")->required();
  snap_create->add_option("--id", snapshot_id_flag,
                          "snapshot id (default: generated)");
  snap_create->add_flag("--resume", resume_source,
                        "resume the VM after the snapshot");
  AddLabelOption(snap_create, create_labels,
                 "tag the snapshot (repeatable; snapshot list --label filters by it)");
  ctx.OnRun(snap_create, [&]() -> absl::Status {
    absl::StatusOr<std::map<std::string, std::string>> labels =
        ParseKeyValues(create_labels, "--label");
    if (!labels.ok()) return labels.status();
    v1::CreateSnapshotRequest request;
    request.mutable_labels()->insert(labels->begin(), labels->end());
    request.set_vm_id(source_vm);
    request.set_snapshot_id(snapshot_id_flag);
    request.set_resume_source(resume_source);
    Connection connection(ctx.globals.options());
    absl::StatusOr<v1::SnapshotInfo> info =
        CallWithProgress(connection, request, ctx.out.OperationProgress(), [&] {
          return connection.Call(&SnapshotStub::CreateSnapshot, request);
        });
    if (!info.ok()) return info.status();
    if (!resume_source) {
      // On stderr, so that stdout stays the snapshot (a table or --output).
      std::cerr << "smolvmctl: vm " << EscapeForTerminal(source_vm)
                << " is left PAUSED; resume it with `smolvmctl vm resume "
                << EscapeForTerminal(source_vm)
                << "` (or snapshot with --resume next time)\n";
    }
    return ctx.out.Snapshot(*info);
  });

  // The ID argument of get / delete / restore.
  auto& snapshot_id = ctx.Make<std::string>();
  CLI::App* snap_get =
      snapshot->add_subcommand("get", "show every field of a snapshot");
  snap_get->add_option("ID", snapshot_id, "snapshot id")->required();
  ctx.OnRun(snap_get, [&]() -> absl::Status {
    absl::StatusOr<v1::SnapshotInfo> info =
        SmolVMManager(ctx.globals.options()).get_snapshot(snapshot_id);
    if (!info.ok()) return info.status();
    return ctx.out.SnapshotDetails(*info);
  });

  CLI::App* snap_delete =
      snapshot->add_subcommand("delete", "delete a snapshot and its files");
  snap_delete->alias("rm");
  snap_delete->add_option("ID", snapshot_id, "snapshot id")->required();
  ctx.OnRun(snap_delete, [&]() -> absl::Status {
    v1::DeleteSnapshotRequest request;
    request.set_snapshot_id(snapshot_id);
    absl::StatusOr<v1::DeleteSnapshotResponse> response =
        Connection(ctx.globals.options())
            .Call(&SnapshotStub::DeleteSnapshot, request);
    if (!response.ok()) return response.status();
    return ctx.out.Deleted("snapshot", snapshot_id, *response);
  });

  CLI::App* snap_verify = snapshot->add_subcommand(
      "verify",
      "read every file of a snapshot and compare it with the checksum recorded "
      "when it was taken; exits 1 if the snapshot predates checksums");
  snap_verify->add_option("ID", snapshot_id, "snapshot id")->required();
  ctx.OnRun(snap_verify, [&]() -> absl::Status {
    // A corrupt file is an error (DATA_LOSS, naming it), not a table.
    absl::StatusOr<v1::VerifySnapshotResponse> verified =
        SmolVMManager(ctx.globals.options()).verify_snapshot(snapshot_id);
    if (!verified.ok()) return verified.status();
    if (absl::Status s = ctx.out.Verification(*verified); !s.ok()) return s;
    if (verified->legacy()) {
      std::cerr << "smolvmctl: snapshot " << EscapeForTerminal(snapshot_id)
                << " was taken before checksums were recorded: it cannot be "
                   "verified\n";
      ctx.exit_code = 1;
    }
    return absl::OkStatus();
  });

  auto& list_vm = ctx.Make<std::string>();
  auto& quiet = ctx.Make<bool>();
  CLI::App* snap_list = snapshot->add_subcommand("list", "list snapshots");
  snap_list->alias("ls");
  AddQuietFlag(snap_list, quiet);
  snap_list->add_option("--vm", list_vm, "only snapshots of this VM")
      ->type_name("VM_ID");
  auto& list_labels = ctx.Make<std::vector<std::string>>();
  auto& list_image = ctx.Make<std::string>();
  AddLabelOption(snap_list, list_labels,
                 "only snapshots with this label (repeatable: all must match)");
  snap_list->add_option("--image", list_image,
                        "only snapshots of VMs made from this image (name or digest)");
  ctx.OnRun(snap_list, [&]() -> absl::Status {
    absl::StatusOr<std::map<std::string, std::string>> labels =
        ParseKeyValues(list_labels, "--label");
    if (!labels.ok()) return labels.status();
    ListFilter filter;
    filter.labels = *labels;
    filter.image = list_image;
    absl::StatusOr<std::vector<v1::SnapshotInfo>> snaps =
        SmolVMManager(ctx.globals.options()).list_snapshots(list_vm, filter);
    if (!snaps.ok()) return snaps.status();
    return quiet ? Printer::Ids(IdsOf(*snaps, &v1::SnapshotInfo::snapshot_id))
                 : ctx.out.Snapshots(*snaps);
  });

  auto& new_vm_id = ctx.Make<std::string>();
  auto& paused = ctx.Make<bool>();
  CLI::App* restore = snapshot->add_subcommand(
      "restore",
      "start a VM from a snapshot (RUNNING unless --paused); without --vm-id "
      "it takes the snapshot's own VM identity");
  restore->add_option("SNAP_ID", snapshot_id, "snapshot id")->required();
  restore->add_option("--vm-id", new_vm_id,
                      "restore as a new, independent VM with this id");
  restore->add_flag("--paused", paused, "leave the restored VM PAUSED");
  ctx.OnRun(restore, [&]() -> absl::Status {
    v1::RestoreSnapshotRequest request;
    request.set_snapshot_id(snapshot_id);
    request.set_resume_vm(!paused);
    request.set_vm_id(new_vm_id);
    Connection connection(ctx.globals.options());
    absl::StatusOr<v1::Vm> restored =
        CallWithProgress(connection, request, ctx.out.OperationProgress(), [&] {
          return connection.Call(&SnapshotStub::RestoreSnapshot, request);
        });
    if (!restored.ok()) return restored.status();
    return ctx.out.Vm(*restored);
  });

  auto& fork_count = ctx.Make<std::uint32_t>();
  auto& fork_prefix = ctx.Make<std::string>();
  auto& fork_paused = ctx.Make<bool>();
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
  ctx.OnRun(snap_fork, [&]() -> absl::Status {
    absl::StatusOr<std::vector<ForkOutcome>> outcomes =
        SmolVMManager(ctx.globals.options())
            .fork_snapshot(snapshot_id, fork_count, !fork_paused,
                           fork_prefix, ctx.out.OperationProgress());
    if (!outcomes.ok()) return outcomes.status();
    std::vector<v1::ForkResult> results;
    for (const ForkOutcome& outcome : *outcomes) {
      v1::ForkResult& result = results.emplace_back();
      result.set_vm_id(outcome.vm_id);
      if (outcome.vm.ok()) {
        *result.mutable_vm() = *outcome.vm;
      } else {
        result.set_error_code(static_cast<int>(outcome.vm.status().code()));
        result.set_error_message(std::string(outcome.vm.status().message()));
      }
    }
    if (absl::Status s = ctx.out.Forks(results); !s.ok()) return s;
    NoteForkFailures(ctx, "fork snapshot " + snapshot_id, results);
    return absl::OkStatus();
  });

}

}  // namespace smolvm::cli
