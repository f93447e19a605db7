// File: client/cli_format.h
// -----------------------------------------------------------------------------
//
// Output formatting for smolvmctl: aligned tables and detail views for
// humans, protobuf JSON (proto field names, every field present) for scripts.
// Pure functions of their arguments; no I/O.

#ifndef SMOLVM_CLIENT_CLI_FORMAT_H_
#define SMOLVM_CLIENT_CLI_FORMAT_H_

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "smolvm/v1/types.pb.h"

namespace smolvm::cli {

// RenderTable lays out `rows` (the first is the header) in left-aligned
// columns separated by three spaces, one line per row, without trailing
// blanks. Short rows are padded with empty cells.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);

// VmTable renders VMs with the columns ID STATUS VCPUS MEM_MIB IP PID CREATED.
std::string VmTable(absl::Span<const v1::Vm> vms);

// SnapshotTable renders snapshots with the columns
// ID VM SIZE CREATED RESTORED RESTORED_VM.
std::string SnapshotTable(absl::Span<const v1::SnapshotInfo> snapshots);

// VmDetails renders every field of `vm` as "name: value" lines, named as in
// the proto (and the JSON output).
std::string VmDetails(const v1::Vm& vm);

// SnapshotDetails renders every field of `snapshot` as "name: value" lines.
std::string SnapshotDetails(const v1::SnapshotInfo& snapshot);

// FormatTimestamp renders `ts` as RFC 3339 UTC to the second
// ("2024-05-01T12:00:00Z"), or "-" when it is unset (zero).
std::string FormatTimestamp(const google::protobuf::Timestamp& ts);

// FormatBytes renders a size with a binary unit: "512 B", "1.5 KiB",
// "256.0 MiB", "2.0 GiB".
std::string FormatBytes(std::uint64_t bytes);

// ToJson renders `message` as protobuf JSON with the proto field names,
// primitive fields printed even when zero, indented by two spaces.
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);

// ToJsonArray renders `messages` as a JSON array of ToJson objects.
absl::StatusOr<std::string> ToJsonArray(
    absl::Span<const google::protobuf::Message* const> messages);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_FORMAT_H_
