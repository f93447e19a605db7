// smolvmctl file put|get: copies in and out of a RUNNING VM.

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>
#include <filesystem>
#include "client/cli/args.h"

#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {

void RegisterFileCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* file =
      app.add_subcommand("file", "copy files in and out of a RUNNING VM");
  file->require_subcommand(1);

  auto& file_vm = ctx.Make<std::string>();
  auto& file_src = ctx.Make<std::string>();
  auto& file_dst = ctx.Make<std::string>();
  auto& file_mode = ctx.Make<std::string>();
  auto& file_dir = ctx.Make<bool>();
  auto& file_user = ctx.Make<std::string>();
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
  put->add_option("--user,-u", file_user,
                  "write as this guest user, name or uid: its permissions apply and it owns the "
                  "file (default root)");
  ctx.OnRun(put, [&]() -> absl::Status {
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
        SmolVM::attach(file_vm, ctx.globals.options());
    if (!target.ok()) return target.status();
    return is_dir ? target->upload_dir(file_src, guest_path, file_user)
                  : target->upload_file(file_src, guest_path, mode, file_user);
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
  get->add_option("--user,-u", file_user, "read as this guest user, name or uid (default root)");
  ctx.OnRun(get, [&]() -> absl::Status {
    std::string local = file_dst;
    std::error_code ec;
    if (!file_dir && std::filesystem::is_directory(local, ec)) {
      local = (std::filesystem::path(local) / BaseName(file_src)).string();
    }
    absl::StatusOr<SmolVM> target =
        SmolVM::attach(file_vm, ctx.globals.options());
    if (!target.ok()) return target.status();
    if (!file_dir) return target->download_file(file_src, local, file_user);
    absl::StatusOr<DirDownload> got = target->download_dir(file_src, local, file_user);
    if (!got.ok()) return got.status();
    // Entries the guest sent that were not extracted: a warning each (the
    // copy itself succeeded). Their names are the guest's bytes.
    for (const std::string& refused : got->refused) {
      std::cerr << "smolvmctl: refused " << EscapeForTerminal(refused)
                << "\n";
    }
    if (got->refused_count > got->refused.size()) {
      std::cerr << "smolvmctl: refused "
                << got->refused_count - got->refused.size()
                << " more entries\n";
    }
    return absl::OkStatus();
  });

}

}  // namespace smolvm::cli
