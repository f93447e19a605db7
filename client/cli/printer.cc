#include "client/cli/printer.h"

#include <unistd.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cli/context.h"
#include "client/cli/yaml.h"
#include "client/cli_format.h"

namespace smolvm::cli {

OutputFormat Printer::format() const { return globals_.format(); }

absl::Status Printer::Write(const std::string& text) {
  std::cout << text << std::flush;
  return absl::OkStatus();
}

absl::Status Printer::Structured(const std::vector<const google::protobuf::Message*>& messages,
                                 bool as_list) const {
  absl::StatusOr<std::string> json =
      as_list ? ToJsonArray(messages) : ToJson(*messages.front());
  if (!json.ok()) return json.status();
  if (format() == OutputFormat::kJson) return Write(*json + "\n");
  // ToJson replaced invalid UTF-8 already, so this parse cannot fail.
  return Write(ToYaml(nlohmann::ordered_json::parse(*json)));
}

absl::Status Printer::Vms(const std::vector<v1::Vm>& vms) const {
  return List(vms, [&] { return VmTable(vms); });
}
absl::Status Printer::VmDetails(const v1::Vm& vm) const {
  return One(vm, [&] { return cli::VmDetails(vm); });
}
absl::Status Printer::Snapshots(const std::vector<v1::SnapshotInfo>& snaps) const {
  return List(snaps, [&] { return SnapshotTable(snaps); });
}
absl::Status Printer::SnapshotDetails(const v1::SnapshotInfo& snap) const {
  return One(snap, [&] { return cli::SnapshotDetails(snap); });
}
absl::Status Printer::Verification(const v1::VerifySnapshotResponse& response) const {
  return One(response, [&] { return VerifyTable(response); });
}
absl::Status Printer::Forks(const std::vector<v1::ForkResult>& results) const {
  return List(results, [&] { return ForkTable(results); });
}
absl::Status Printer::Pools(const std::vector<v1::Pool>& pools) const {
  return List(pools, [&] { return PoolTable(pools); });
}
absl::Status Printer::Pool(const v1::Pool& pool) const {
  return One(pool, [&] { return PoolTable({pool}); });
}
absl::Status Printer::Images(const std::vector<v1::Image>& images) const {
  return List(images, [&] { return ImageTable(images); });
}
absl::Status Printer::ImageDetails(const v1::Image& image) const {
  return One(image, [&] { return cli::ImageDetails(image); });
}
absl::Status Printer::Forward(const v1::PortForward& forward) const {
  return One(forward, [&] {
    return absl::StrCat(EscapeForTerminal(forward.host_ip().empty() ? "127.0.0.1" : forward.host_ip()),
                        ":", forward.host_port(), " -> ", forward.guest_port(), "/",
                        EscapeForTerminal(forward.protocol().empty() ? "tcp" : forward.protocol()),
                        "\n");
  });
}
absl::Status Printer::Message(const google::protobuf::Message& message,
                              const std::string& text) const {
  return One(message, [&] { return text; });
}

absl::Status Printer::Ids(const std::vector<std::string>& ids) {
  std::string text;
  for (const std::string& id : ids) absl::StrAppend(&text, EscapeForTerminal(id), "\n");
  return Write(text);
}

void Printer::BuildProgress(const v1::BuildProgress& progress) const {
  if (format() == OutputFormat::kJson) {
    v1::BuildImageEvent event;
    *event.mutable_progress() = progress;
    if (absl::StatusOr<std::string> line = ToJsonLine(event); line.ok()) Write(*line + "\n").IgnoreError();
    return;
  }
  std::string line = absl::StrCat("[", progress.elapsed_ms() / 1000, "s] ",
                                  EscapeForTerminal(progress.step()));
  if (progress.bytes() > 0) absl::StrAppend(&line, " (", FormatBytes(progress.bytes()), ")");
  if (isatty(STDERR_FILENO)) {
    std::cerr << "\r\033[K" << line << std::flush;
  } else {
    std::cerr << line << "\n";
  }
}

absl::Status Printer::BuildDone(const SmolVMManager::BuiltImage& built) const {
  v1::BuildImageEvent event;
  *event.mutable_done() = built.image;
  if (built.warm_snapshot) *event.mutable_warm_snapshot() = *built.warm_snapshot;
  if (format() == OutputFormat::kJson) {
    absl::StatusOr<std::string> line = ToJsonLine(event);
    if (!line.ok()) return line.status();
    return Write(*line + "\n");
  }
  std::string text = cli::ImageDetails(built.image);
  if (built.warm_snapshot) {
    absl::StrAppend(&text, "warm_snapshot: ", built.warm_snapshot->snapshot_id(), "\n");
  }
  return One(event, [&] { return text; });
}

void Printer::EndProgress() const {
  if (format() != OutputFormat::kJson && isatty(STDERR_FILENO)) {
    std::cerr << "\r\033[K" << std::flush;
  }
}

absl::Status Printer::Deleted(const std::string& kind, const std::string& id,
                              const google::protobuf::Message& response) const {
  return One(response, [&] { return "deleted " + kind + " " + EscapeForTerminal(id) + "\n"; });
}

}  // namespace smolvm::cli
