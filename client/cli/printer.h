// File: client/cli/printer.h
// -----------------------------------------------------------------------------
//
// Printer writes smolvmctl's results to stdout in the format of --output:
// aligned tables and detail views (client/cli_format.h), protobuf JSON, or
// the same JSON values as YAML (client/cli/yaml.h). Lists can also be just
// their ids, one per line (-q).

#ifndef SMOLVM_CLIENT_CLI_PRINTER_H_
#define SMOLVM_CLIENT_CLI_PRINTER_H_

#include <google/protobuf/message.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/smolvm.h"
#include "smolvm/v1/image_service.pb.h"
#include "smolvm/v1/pool_service.pb.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/types.pb.h"

namespace smolvm::cli {

enum class OutputFormat { kTable, kJson, kYaml };

struct Globals;

class Printer {
 public:
  // `globals` is read at print time, after the flags are parsed.
  explicit Printer(const Globals& globals) : globals_(globals) {}

  OutputFormat format() const;
  bool structured() const { return format() != OutputFormat::kTable; }

  absl::Status Vms(const std::vector<v1::Vm>& vms) const;
  absl::Status Vm(const v1::Vm& vm) const { return Vms({vm}); }
  absl::Status VmDetails(const v1::Vm& vm) const;
  absl::Status Snapshots(const std::vector<v1::SnapshotInfo>& snaps) const;
  absl::Status Snapshot(const v1::SnapshotInfo& snap) const { return Snapshots({snap}); }
  absl::Status SnapshotDetails(const v1::SnapshotInfo& snap) const;
  absl::Status Verification(const v1::VerifySnapshotResponse& response) const;
  absl::Status Forks(const std::vector<v1::ForkResult>& results) const;
  absl::Status Pools(const std::vector<v1::Pool>& pools) const;
  absl::Status Pool(const v1::Pool& pool) const;
  absl::Status Images(const std::vector<v1::Image>& images) const;
  absl::Status ImageDetails(const v1::Image& image) const;
  // A port forward: "HOST_IP:HOST_PORT -> GUEST_PORT/PROTO", or the message.
  absl::Status Forward(const v1::PortForward& forward) const;
  // Any message in the structured formats; `text` for tables.
  absl::Status Message(const google::protobuf::Message& message, const std::string& text) const;

  // StreamEvent prints one message of a stream in a structured format, as
  // it arrives (flushed): a JSON line (--output json) or a YAML document
  // (yaml). For tables the caller prints its own text.
  absl::Status StreamEvent(const google::protobuf::Message& message) const;

  // Ids prints one id per line (lists with -q), whatever the format.
  static absl::Status Ids(const std::vector<std::string>& ids);

  // A build's progress: with --output json one BuildImageEvent per line on
  // stdout (JSON Lines; the last one is `done`), else one rewritten status
  // line on a terminal or plain lines elsewhere (stderr, so stdout holds
  // only the result).
  void BuildProgress(const v1::BuildProgress& progress) const;
  absl::Status BuildDone(const SmolVMManager::BuiltImage& built) const;
  void EndProgress() const;

  // The progress of a long call (OperationService), on stderr so that
  // stdout holds only the result: a bar rewritten in place on a terminal,
  // a plain line per stage (and per tenth of a measured stage) elsewhere,
  // one Operation per line as JSON with --output json|yaml; nothing with
  // --no-progress (then the callback is empty and no watch is made). The
  // callback keeps its own state; make one per call.
  ProgressCallback OperationProgress() const;

  // Deleted reports a successful delete: "deleted vm ID", or the (empty)
  // response message.
  absl::Status Deleted(const std::string& kind, const std::string& id,
                       const google::protobuf::Message& response) const;

 private:
  // One message or a list of them, formatted; `table` renders the text form.
  absl::Status Structured(const std::vector<const google::protobuf::Message*>& messages,
                          bool as_list) const;
  template <typename T>
  absl::Status List(const std::vector<T>& items, const std::function<std::string()>& table) const {
    if (!structured()) return Write(table());
    std::vector<const google::protobuf::Message*> messages;
    for (const T& item : items) messages.push_back(&item);
    return Structured(messages, /*as_list=*/true);
  }
  absl::Status One(const google::protobuf::Message& message,
                   const std::function<std::string()>& table) const {
    if (!structured()) return Write(table());
    return Structured({&message}, /*as_list=*/false);
  }
  static absl::Status Write(const std::string& text);

  const Globals& globals_;
};

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_PRINTER_H_
