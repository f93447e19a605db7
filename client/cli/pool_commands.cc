// smolvmctl pool create|get|list|delete|claim: warm pools.

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"
#include "smolvm/v1/pool_service.grpc.pb.h"

namespace smolvm::cli {

void RegisterPoolCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* pool = app.add_subcommand(
      "pool", "warm pools: clones of a snapshot kept ready, claimed in milliseconds");
  pool->require_subcommand(1);
  auto& pool_id = ctx.Make<std::string>();
  auto& pool_snapshot = ctx.Make<std::string>();
  auto& pool_size = ctx.Make<std::uint32_t>();
  CLI::App* pool_create = pool->add_subcommand(
      "create", "keep SIZE clones of a snapshot restored and paused (fills in the background)");
  pool_create->add_option("ID", pool_id, "pool id (1-55 chars of a-z, 0-9, -)")->required();
  pool_create->add_option("--snapshot", pool_snapshot, "snapshot to clone")
      ->type_name("SNAP_ID")
      ->required();
  pool_create->add_option("--size", pool_size, "members kept ready, 1-64")
      ->type_name("N")
      ->required();
  auto& pool_wait = ctx.Make<bool>();
  pool_create->add_flag("--wait", pool_wait,
                        "return once every member is ready, showing the fill (at most --timeout)");
  ctx.OnRun(pool_create, [&]() -> absl::Status {
    SmolVMManager manager(ctx.globals.options());
    auto created = manager.create_pool(pool_id, pool_snapshot, pool_size);
    if (!created.ok()) return created.status();
    if (pool_wait) {
      created = manager.wait_for_pool(pool_id, absl::Seconds(ctx.globals.timeout_seconds),
                                      ctx.out.OperationProgress());
      if (!created.ok()) return created.status();
    }
    return ctx.out.Pool(*created);
  });
  CLI::App* pool_get = pool->add_subcommand("get", "show a pool and its ready members");
  pool_get->add_option("ID", pool_id, "pool id")->required();
  ctx.OnRun(pool_get, [&]() -> absl::Status {
    auto got = SmolVMManager(ctx.globals.options()).get_pool(pool_id);
    if (!got.ok()) return got.status();
    return ctx.out.Pool(*got);
  });
  auto& quiet = ctx.Make<bool>();
  CLI::App* pool_list = pool->add_subcommand("list", "list pools");
  pool_list->alias("ls");
  AddQuietFlag(pool_list, quiet);
  ctx.OnRun(pool_list, [&]() -> absl::Status {
    auto pools = SmolVMManager(ctx.globals.options()).list_pools();
    if (!pools.ok()) return pools.status();
    return quiet ? Printer::Ids(IdsOf(*pools, &v1::Pool::pool_id)) : ctx.out.Pools(*pools);
  });
  CLI::App* pool_delete =
      pool->add_subcommand("delete", "delete a pool and its unclaimed members");
  pool_delete->alias("rm");
  pool_delete->add_option("ID", pool_id, "pool id")->required();
  ctx.OnRun(pool_delete, [&]() -> absl::Status {
    if (absl::Status s = SmolVMManager(ctx.globals.options()).delete_pool(pool_id); !s.ok()) {
      return s;
    }
    return ctx.out.Deleted("pool", pool_id, v1::DeletePoolResponse());
  });
  auto& claim_vm = ctx.Make<std::string>();
  CLI::App* pool_claim = pool->add_subcommand(
      "claim", "take a ready VM from a pool, RUNNING (restored on demand if none is ready)");
  pool_claim->add_option("ID", pool_id, "pool id")->required();
  pool_claim->add_option("--vm", claim_vm, "claim this ready member")->type_name("VM_ID");
  ctx.OnRun(pool_claim, [&]() -> absl::Status {
    v1::ClaimVmRequest request;
    request.set_pool_id(pool_id);
    request.set_vm_id(claim_vm);
    absl::StatusOr<v1::ClaimVmResponse> claimed =
        Connection(ctx.globals.options()).Call(&v1::PoolService::Stub::ClaimVm, request);
    if (!claimed.ok()) return claimed.status();
    if (ctx.out.structured()) return ctx.out.Message(*claimed, "");
    if (!claimed->from_pool()) {
      std::cerr << "smolvmctl: pool " << EscapeForTerminal(pool_id)
                << " had no ready member; restored on demand\n";
    }
    return ctx.out.Vm(claimed->vm());
  });

}

}  // namespace smolvm::cli
