// File: e2e_util.h
//
// Small helpers shared by the access-control end-to-end tests: reading
// smolvmctl's --json output, a picture of everything a VM operation can
// leave on the host (to prove that a refused call left nothing), and the
// daemon's audit lines.
#pragma once

#include <sys/types.h>

#include <set>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "tests/e2e/process.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {

// Parses JSON; a discarded value (is_discarded()) if `text` is not JSON.
nlohmann::json Json(const std::string& text);

// The string `key` of every object in the JSON array `text` (smolvmctl
// --json list output); empty if it is not an array.
std::set<std::string> Column(const std::string& text, const std::string& key);

// The one object printed by a smolvmctl --json command that prints one VM
// or snapshot (as an array of one, or as an object).
nlohmann::json One(const std::string& text);

// What a refused call must not leave behind: rows (as root lists them),
// directories under <state>/vms, <state>/snapshots and <run>/vms, links
// (TAPs) and the nftables ruleset (without counters) in the host
// namespace, and QEMU processes.
struct HostPicture {
  std::set<std::string> vm_ids, snapshot_ids;
  std::set<std::string> vm_dirs, snapshot_dirs, run_dirs;
  std::set<std::string> links;
  std::string ruleset;
  std::set<pid_t> qemu_pids;
};
HostPicture Picture(const TestDaemon& daemon);
// "" if equal, else what changed.
std::string Diff(const HostPicture& before, const HostPicture& after);

// The daemon log's audit lines ({"audit":"smolvmd",...}), parsed, with the
// raw line in "_raw".
std::vector<nlohmann::json> AuditLines(const std::string& log);

// True if `r` failed with smolvmctl's exit code `exit_code` and its stderr
// contains `needle` (case-insensitive).
bool FailedWith(const ProcResult& r, int exit_code, const std::string& needle = "");

// smolvmctl's exit codes (client/status.h).
inline constexpr int kExitOther = 1;  // PERMISSION_DENIED, UNAUTHENTICATED, ...
inline constexpr int kExitInvalid = 2;
inline constexpr int kExitNotFound = 3;
inline constexpr int kExitExists = 4;
inline constexpr int kExitPrecondition = 5;
inline constexpr int kExitExhausted = 6;
inline constexpr int kExitUnavailable = 7;

}  // namespace smolvm::testing
