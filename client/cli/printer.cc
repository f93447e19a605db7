#include "client/cli/printer.h"

#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

absl::Status Printer::StreamEvent(const google::protobuf::Message& message) const {
  absl::StatusOr<std::string> json = ToJsonLine(message);
  if (!json.ok()) return json.status();
  if (format() == OutputFormat::kJson) {
    std::cout << *json << "\n" << std::flush;
  } else {
    // ToJsonLine replaced invalid UTF-8 already, so this parse cannot fail.
    std::cout << "---\n" << ToYaml(nlohmann::ordered_json::parse(*json)) << std::flush;
  }
  return absl::OkStatus();
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

namespace {

// Renders one call's updates; shared by the callback's copies.
class OperationRenderer {
 public:
  OperationRenderer(bool json, bool tty) : json_(json), tty_(tty) {}

  void Show(const v1::Operation& op) {
    if (json_) {
      if (absl::StatusOr<std::string> line = ToJsonLine(op); line.ok()) {
        std::cerr << *line << "\n" << std::flush;
      }
      return;
    }
    const double seconds =
        static_cast<double>(op.updated_at().seconds() - op.started_at().seconds()) +
        (op.updated_at().nanos() - op.started_at().nanos()) / 1e9;
    // The end names the last stage too: updates carry the latest state, so
    // a quick last stage may never have been shown on its own.
    std::string line =
        absl::StrFormat("[%.1fs] %s%s", seconds, op.finished() ? (op.code() == 0 ? "done: " : "failed: ") : "",
                        EscapeForTerminal(op.stage()));
    const int percent =
        op.total() == 0 ? -1 : static_cast<int>(100 * std::min(op.done(), op.total()) / op.total());
    if (op.total() > 0) {
      const bool bytes = op.unit() == "bytes";
      const std::string done = bytes ? FormatBytes(op.done()) : absl::StrCat(op.done());
      const std::string total =
          bytes ? FormatBytes(op.total()) : absl::StrCat(op.total(), " ", op.unit());
      if (tty_) {
        constexpr int kWidth = 24;
        const int filled = percent * kWidth / 100;
        absl::StrAppend(&line, " [", std::string(filled, '#'), std::string(kWidth - filled, '.'),
                        "]");
      }
      absl::StrAppend(&line, absl::StrFormat(" %d%% (%s of %s)", percent, done, EscapeForTerminal(total)));
    } else if (op.done() > 0 && op.unit() == "bytes") {
      absl::StrAppend(&line, " (", FormatBytes(op.done()), ")");
    }
    if (tty_) {
      std::cerr << "\r\033[K" << line << (op.finished() ? "\r\033[K" : "") << std::flush;
      return;
    }
    // Plain lines: each stage once, then each tenth of it, then the end.
    const bool new_stage = op.stage_number() != stage_;
    const bool new_tenth = percent >= 0 && percent / 10 != tenth_;
    if (op.finished() || new_stage || new_tenth) std::cerr << line << "\n" << std::flush;
    stage_ = op.stage_number();
    tenth_ = percent < 0 ? -1 : percent / 10;
  }

 private:
  const bool json_;
  const bool tty_;
  uint32_t stage_ = 0;
  int tenth_ = -1;
};

}  // namespace

ProgressCallback Printer::OperationProgress() const {
  if (globals_.no_progress) return {};
  auto renderer =
      std::make_shared<OperationRenderer>(structured(), isatty(STDERR_FILENO) == 1);
  return [renderer](const v1::Operation& op) { renderer->Show(op); };
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
