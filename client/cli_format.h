// File: client/cli_format.h
// -----------------------------------------------------------------------------
//
// Output formatting for smolvmctl: aligned tables and detail views for
// humans, protobuf JSON (proto field names, every field present) for scripts.
// Pure functions of their arguments; no I/O.
//
// Text from the daemon or a guest (VM errors with console tails, ids, owner
// names) must not be able to drive the user's terminal: tables and detail
// views escape it (EscapeForTerminal), JSON escapes control characters and
// replaces invalid UTF-8, and smolvmctl escapes the error messages it prints.

#ifndef SMOLVM_CLIENT_CLI_FORMAT_H_
#define SMOLVM_CLIENT_CLI_FORMAT_H_

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "smolvm/v1/event_service.pb.h"
#include "smolvm/v1/filesystem_service.pb.h"
#include "smolvm/v1/image_service.pb.h"
#include "smolvm/v1/pool_service.pb.h"
#include "smolvm/v1/process_service.pb.h"
#include "smolvm/v1/snapshot_service.pb.h"
#include "smolvm/v1/types.pb.h"
#include "smolvm/v1/vm_service.pb.h"

namespace smolvm::cli {

// EscapeForTerminal returns `text` with everything that could move the
// cursor, change colors or confuse the terminal's decoder shown as "\xNN"
// (lower-case hex) per byte: C0 control bytes other than \n and \t (ESC,
// \r, \b, ...), DEL, C1 controls (U+0080-U+009F, whose UTF-8 bytes are
// each escaped) and every byte that is not part of valid UTF-8 (overlong
// forms, surrogates, stray continuation bytes, truncated sequences). Other
// printable UTF-8 (accents, CJK, emoji) and backslashes are kept as they are.
std::string EscapeForTerminal(absl::string_view text);

// RenderTable lays out `rows` (the first is the header) in left-aligned
// columns separated by three spaces, one line per row, without trailing
// blanks. Short rows are padded with empty cells. Cells are escaped like
// EscapeForTerminal and, so that a row stays one line, their \n and \t as
// well; widths count UTF-8 characters.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);

// VmTable renders VMs with the columns
// ID STATUS VCPUS MEM_MIB IP PID CREATED OWNER.
std::string VmTable(absl::Span<const v1::Vm> vms);

// SnapshotTable renders snapshots with the columns
// ID VM SIZE CREATED RESTORED RESTORED_VM OWNER.
std::string SnapshotTable(absl::Span<const v1::SnapshotInfo> snapshots);

// ForkTable renders the clones of a ForkSnapshot with the columns
// VM STATUS IP MAC TAP ERROR: a clone that failed has STATUS "FAILED" and
// ERROR "<CODE>: <message>" (e.g. "RESOURCE_EXHAUSTED: no free address").
std::string ForkTable(absl::Span<const v1::ForkResult> results);

// PoolTable renders warm pools with the columns
// ID SNAPSHOT SIZE READY STARTING CREATED OWNER LAST_ERROR.
std::string PoolTable(absl::Span<const v1::Pool> pools);

// ImageTable renders images with the columns
// NAMES DIGEST SOURCE DISK SIZE CREATED OWNER USED_BY (the digest shortened
// to "sha256:" and 12 hex digits; an unnamed image shows "-").
std::string ImageTable(absl::Span<const v1::Image> images);

// ImageDetails renders every field of `image` as "name: value" lines.
std::string ImageDetails(const v1::Image& image);

// FileEntryTable renders guest file entries (FilesystemService) with the
// columns TYPE MODE SIZE OWNER MTIME PATH: TYPE is file, dir, link or other;
// MODE the permission bits in octal ("0755"); SIZE in bytes; OWNER
// "uid:gid"; MTIME as FormatTimestamp; PATH the entry's path without
// `strip_prefix` (when it starts with it; "" = the absolute path), and
// " -> TARGET" for a symlink.
std::string FileEntryTable(absl::Span<const v1::FileEntry> entries,
                           absl::string_view strip_prefix = "");

// FileEntryNames renders the paths of `entries`, `strip_prefix` removed as
// in FileEntryTable, one per line; each is escaped like a table cell, so
// that a name with a newline stays one line.
std::string FileEntryNames(absl::Span<const v1::FileEntry> entries,
                           absl::string_view strip_prefix);

// ListedDirPrefix is the `strip_prefix` that makes the paths of a ListDir
// answer relative to the listed directory: the parent of the first entry
// (breadth-first, so one level down) with its trailing "/", e.g. "/root/"
// or "/". "" when there are no entries.
std::string ListedDirPrefix(absl::Span<const v1::FileEntry> entries);

// WatchEventLine renders a WatchDir event as one line, without the newline:
// the type without its prefix, then the path ("CREATE /root/x"); a rename
// as "RENAME /a -> /b"; a directory's paths end in "/". Escaped like a
// table cell.
std::string WatchEventLine(const v1::WatchDirEvent& event);

// EventLine renders an EventService event as one line, without the newline:
// "ID TIME KIND VM SNAPSHOT STATE DETAIL", two spaces apart; TIME as
// FormatTimestamp, KIND as EventKindName, "-" for what is empty. Escaped
// like a table cell.
std::string EventLine(const v1::Event& event);
// EventKindName is the kind in lower case ("vm_created"); ParseEventKind
// reads it back (any case). The inverse of each other.
std::string EventKindName(v1::EventKind kind);
absl::StatusOr<v1::EventKind> ParseEventKind(absl::string_view name);

// ProcessTable renders a VM's background processes (ProcessService) with
// the columns PID STATUS STARTED OUTPUT USER COMMAND: STATUS as
// ProcessStatus; STARTED as FormatTimestamp; OUTPUT the bytes written to
// stdout and stderr so far (FormatBytes); USER as requested ("-" = the
// default, root); COMMAND the argv, each word that a shell would not take
// as it is in single quotes ("sh -c 'sleep 1; echo hi'").
std::string ProcessTable(absl::Span<const v1::ProcessInfo> processes);

// VM, CPU, VMM_RSS, GUEST_MEM (used/total), DISK, NET_TX, NET_RX, UPTIME of
// each report; CPU is the share of one host core over the interval since
// `previous`'s report of the same VM ("-" without one).
std::string StatsTable(absl::Span<const v1::VmStats> stats,
                       absl::Span<const v1::VmStats> previous = {});

// ProcessStatus renders a process's state: "running", "exited N" or
// "signal NAME" (SignalName; e.g. "signal TERM").
std::string ProcessStatus(const v1::ProcessInfo& process);

// SignalName is the name of Linux signal `sig` without its "SIG" prefix
// ("TERM", "KILL", "USR1"), or its number in decimal when it has none (the
// real-time signals, 32-64, and anything out of range).
std::string SignalName(int sig);

// VerifyTable renders a VerifySnapshot answer with the columns
// FILE STATUS CHECKSUM EXPECTED PATH, then one summary line. STATUS is "ok",
// "MISMATCH", or "unverifiable" for a legacy snapshot; EXPECTED is "-" when
// it equals CHECKSUM or nothing was recorded.
std::string VerifyTable(const v1::VerifySnapshotResponse& response);

// VmDetails renders every field of `vm` as "name: value" lines, named as in
// the proto (and the JSON output). Port forwards and egress policies are one
// line each (FormatPortForwards, FormatEgress). Values are escaped as table
// cells are, so each field is one line.
std::string VmDetails(const v1::Vm& vm);
// "max 300s then delete, idle 60s then pause (no auto-resume)".
std::string FormatLifetime(const v1::Lifetime& lifetime);

// SnapshotDetails renders every field of `snapshot` as "name: value" lines.
std::string SnapshotDetails(const v1::SnapshotInfo& snapshot);

// FormatPortForward renders `forward` the way smolvmctl takes it:
// "[HOST_IP:]HOST_PORT:GUEST_PORT/PROTOCOL", e.g. "127.0.0.1:8080:80/tcp"
// (no HOST_IP when it is empty; "tcp" when the protocol is empty).
std::string FormatPortForward(const v1::PortForward& forward);

// FormatPortForwards joins FormatPortForward of each with ", " ("" if none).
std::string FormatPortForwards(
    const google::protobuf::RepeatedPtrField<v1::PortForward>& forwards);

// FormatEgress renders a policy as "open", "off" or
// "restricted: CIDR, CIDR" (the mode names without "EGRESS_", lower case).
std::string FormatEgress(const v1::EgressPolicy& egress);

// FormatTimestamp renders `ts` as RFC 3339 UTC to the second
// ("2024-05-01T12:00:00Z"), or "-" when it is unset (zero).
std::string FormatTimestamp(const google::protobuf::Timestamp& ts);

// FormatBytes renders a size with a binary unit: "512 B", "1.5 KiB",
// "256.0 MiB", "2.0 GiB".
std::string FormatBytes(std::uint64_t bytes);

// ToJson renders `message` as protobuf JSON with the proto field names,
// primitive fields printed even when zero, indented by two spaces. Control
// characters are \u escapes; invalid UTF-8 becomes U+FFFD (never an error).
absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message);
// ToJsonLine renders `message` like ToJson but on one line (JSON Lines, for
// streams of events).
absl::StatusOr<std::string> ToJsonLine(const google::protobuf::Message& message);

// ToJsonArray renders `messages` as a JSON array of ToJson objects.
absl::StatusOr<std::string> ToJsonArray(
    absl::Span<const google::protobuf::Message* const> messages);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_FORMAT_H_
