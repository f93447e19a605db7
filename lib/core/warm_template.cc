#include "lib/core/warm_template.h"

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "lib/base/status_macros.h"
#include "lib/model/validation.h"
#include "spdlog/spdlog.h"

namespace smolvm::core {
namespace {

// In the guest: the start command's output and, once it ends, its status.
// /.smolvm exists (and is root's) in every image: the payload lives there.
constexpr char kStartLog[] = "/.smolvm/warm-start.log";
constexpr char kStartExit[] = "/.smolvm/warm-start.exit";
constexpr absl::Duration kDefaultReadyTimeout = absl::Seconds(120);
constexpr absl::Duration kMaxReadyTimeout = absl::Hours(1);
constexpr absl::Duration kDefaultSettle = absl::Seconds(1);
constexpr absl::Duration kProbeInterval = absl::Milliseconds(250);
constexpr size_t kMaxCommandBytes = 64 * 1024;
constexpr size_t kOutputTail = 2048;

std::string SingleQuoted(const std::string& s) {
  return absl::StrCat("'", absl::StrReplaceAll(s, {{"'", "'\\''"}}), "'");
}

struct ShellResult {
  int exit_code = -1;
  std::string output;  // The last kOutputTail bytes of stdout and stderr.
};

// Runs `line` with the guest's sh (the image's, or the payload's) to its end.
absl::StatusOr<ShellResult> RunShell(VmManager& vms, const Caller& caller,
                                     const std::string& vm_id, const std::string& line,
                                     absl::Duration timeout) {
  agent::ExecSpec spec;
  spec.argv = {"sh", "-c", line};
  spec.timeout = timeout;
  SMOLVM_ASSIGN_OR_RETURN(std::unique_ptr<agent::ExecHandle> exec,
                          vms.StartExec(caller, vm_id, std::move(spec)));
  // The agent enforces `timeout`; this deadline only guards a lost channel.
  const absl::Time deadline = absl::Now() + timeout + absl::Seconds(30);
  ShellResult result;
  for (;;) {
    SMOLVM_ASSIGN_OR_RETURN(agent::ExecEvent event, exec->Next(deadline));
    if (event.kind == agent::ExecEvent::Kind::kExit) {
      result.exit_code = event.signal != 0 ? 128 + event.signal : event.exit_code;
      if (event.timed_out) result.output += "\n(timed out)";
      return result;
    }
    result.output += event.data;
    if (result.output.size() > kOutputTail) {
      result.output.erase(0, result.output.size() - kOutputTail);
    }
  }
}

// FAILED_PRECONDITION if the start command already ended with a failure.
absl::Status CheckStartCommand(VmManager& vms, const Caller& caller, const std::string& vm_id) {
  SMOLVM_ASSIGN_OR_RETURN(
      ShellResult status,
      RunShell(vms, caller, vm_id,
               absl::StrCat("s=$(cat ", kStartExit, " 2>/dev/null) || exit 0; [ \"$s\" = 0 ] && "
                            "exit 0; echo \"$s\"; tail -c 1500 ",
                            kStartLog, "; exit 1"),
               absl::Seconds(30)));
  if (status.exit_code == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "warm start: the start command exited with status ",
      absl::StripAsciiWhitespace(status.output),
      " before the snapshot; fix warm.start_command (it must keep running or end with 0)"));
}

// Boots a VM of `digest`, runs the spec and snapshots the VM; the VM is
// deleted on every path.
absl::StatusOr<SnapshotRecord> MakeWarmSnapshot(VmManager& vms, const Caller& caller,
                                                const std::string& digest,
                                                const WarmStartSpec& spec,
                                                const image::BuildContext& ctx) {
  VmConfig config;
  config.vm_id = GenerateId("warm");
  config.image = digest;
  if (spec.memory_mib != 0) config.memory_mib = spec.memory_mib;
  if (spec.vcpu_count != 0) config.vcpu_count = spec.vcpu_count;
  ctx.Report("warm: booting VM " + config.vm_id);
  auto created = vms.CreateVm(caller, config, /*start=*/true);
  absl::Cleanup remove_vm = [&] {
    if (absl::Status s = vms.DeleteVm(caller, config.vm_id); !s.ok() && !absl::IsNotFound(s)) {
      spdlog::warn("warm build VM {}: delete: {}", config.vm_id, std::string(s.message()));
    }
  };
  if (!created.ok()) {
    return absl::Status(created.status().code(),
                        absl::StrCat("warm start: boot a VM of the new image: ",
                                     created.status().message()));
  }
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled while warming");

  if (!spec.start_command.empty()) {
    ctx.Report("warm: starting the start command");
    // Detached, with the output in a file (a pipe held open would keep the
    // exec from ending); the subshell records the command's status.
    SMOLVM_ASSIGN_OR_RETURN(
        ShellResult started,
        RunShell(vms, caller, config.vm_id,
                 absl::StrCat("rm -f ", kStartExit, "; (sh -c ", SingleQuoted(spec.start_command),
                              "; echo $? >", kStartExit, ") </dev/null >", kStartLog,
                              " 2>&1 &"),
                 absl::Seconds(30)));
    if (started.exit_code != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("warm start: could not start the start command: ", started.output));
    }
  }

  if (spec.ready_command.empty()) {
    absl::SleepFor(spec.settle);
  } else {
    ctx.Report("warm: waiting for the ready command");
    const absl::Time deadline = absl::Now() + spec.ready_timeout;
    for (int probe = 1;; ++probe) {
      if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled while warming");
      const absl::Duration left = deadline - absl::Now();
      SMOLVM_ASSIGN_OR_RETURN(
          ShellResult ready,
          RunShell(vms, caller, config.vm_id, spec.ready_command,
                   std::clamp(left, absl::Seconds(1), absl::Seconds(60))));
      if (ready.exit_code == 0) break;
      if (!spec.start_command.empty()) {
        SMOLVM_RETURN_IF_ERROR(CheckStartCommand(vms, caller, config.vm_id));
      }
      if (absl::Now() + kProbeInterval >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            "warm start: the ready command did not succeed within ",
            absl::FormatDuration(spec.ready_timeout), " (", probe,
            " tries; last exit status ", ready.exit_code, ", output: ",
            absl::StripAsciiWhitespace(ready.output),
            "); fix warm.ready_command or raise warm.ready_timeout_s"));
      }
      absl::SleepFor(kProbeInterval);
    }
  }
  if (!spec.start_command.empty()) {
    SMOLVM_RETURN_IF_ERROR(CheckStartCommand(vms, caller, config.vm_id));
  }
  if (ctx.IsCancelled()) return absl::CancelledError("image build cancelled while warming");

  ctx.Report("warm: snapshotting " + spec.snapshot_id);
  return vms.CreateSnapshot(caller, config.vm_id, spec.snapshot_id, /*resume_source=*/false);
}

}  // namespace

absl::Status NormalizeWarmStart(const std::string& image_name, WarmStartSpec& spec) {
  if (spec.start_command.empty() && spec.ready_command.empty()) {
    return absl::InvalidArgumentError(
        "warm needs a start_command (a process to keep running) or a ready_command (run "
        "until it succeeds), or both");
  }
  for (const std::string* line : {&spec.start_command, &spec.ready_command}) {
    if (line->size() > kMaxCommandBytes || line->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError(
          "warm.start_command and warm.ready_command are shell lines of at most 64 KiB "
          "without NUL bytes");
    }
  }
  if (spec.ready_timeout == absl::ZeroDuration()) spec.ready_timeout = kDefaultReadyTimeout;
  if (spec.ready_timeout > kMaxReadyTimeout) {
    return absl::InvalidArgumentError("warm.ready_timeout_s is at most 3600");
  }
  if (spec.settle == absl::ZeroDuration()) spec.settle = kDefaultSettle;
  if (spec.settle > absl::Minutes(10)) {
    return absl::InvalidArgumentError("warm.settle_ms is at most 600000");
  }
  if (spec.snapshot_id.empty()) {
    SMOLVM_ASSIGN_OR_RETURN(std::string name, image::NormalizeImageName(image_name));
    std::string tag = name.substr(name.rfind(':') + 1);
    name.resize(name.rfind(':'));
    std::string id = tag == "latest" ? name : absl::StrCat(name, "-", tag);
    id = absl::AsciiStrToLower(absl::StrReplaceAll(id, {{".", "-"}, {"_", "-"}})) + "-warm";
    if (!ValidateId(id, "snapshot_id").ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the warm snapshot's id derived from the image name, \"", id,
          "\", is not a valid snapshot id (1-64 of a-z, 0-9 and '-', starting and ending "
          "with a letter or digit): set warm.snapshot_id"));
    }
    spec.snapshot_id = id;
  }
  return ValidateId(spec.snapshot_id, "warm.snapshot_id");
}

absl::StatusOr<BuiltImage> BuildImage(image::ImageStore& images, VmManager& vms,
                                      const Caller& caller, const image::BuildRequest& request,
                                      std::optional<WarmStartSpec> warm,
                                      const image::BuildContext& ctx) {
  if (warm) {
    SMOLVM_RETURN_IF_ERROR(NormalizeWarmStart(request.name, *warm));
    if (vms.GetSnapshot(caller, warm->snapshot_id).ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "snapshot \"", warm->snapshot_id,
          "\" already exists: delete it, or choose another warm.snapshot_id"));
    }
  }
  BuiltImage out;
  SMOLVM_ASSIGN_OR_RETURN(out.image, images.Build(caller, request, ctx));
  if (!warm) return out;

  auto snapshot = MakeWarmSnapshot(vms, caller, out.image.digest, *warm, ctx);
  if (!snapshot.ok()) {
    // All or nothing: the name this build added goes again (and the image
    // with it, unless other names or users keep it).
    if (auto name = image::NormalizeImageName(request.name); name.ok()) {
      if (auto removed = images.Delete(caller, *name); !removed.ok()) {
        spdlog::warn("image {}: remove after the failed warm start: {}", *name,
                     std::string(removed.status().message()));
      }
    }
    return snapshot.status();
  }
  out.warm_snapshot = *std::move(snapshot);
  return out;
}

}  // namespace smolvm::core
