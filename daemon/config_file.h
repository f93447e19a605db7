// File: config_file.h
//
// The configuration file, /etc/smolvmd/smolvmd.toml (TOML). Every setting
// the file has overrides the DaemonConfig default; environment and flags
// then override the file (ParseConfig in config.h). The schema is strict:
// an unknown table or key, or a value of the wrong type or range, is an
// error naming the file, line, table and key, and saying what is expected.
// Cross-field rules (TLS completeness, overlapping dirs, duplicate uids)
// are CheckConfig's.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "daemon/config.h"

namespace smolvm::daemon {

// The default location, used when it exists and neither --config nor
// SMOLVMD_CONFIG names a file.
inline constexpr char kDefaultConfigFile[] = "/etc/smolvmd/smolvmd.toml";

// Reads `path` and applies it to `config`. INVALID_ARGUMENT
// ("<path>:<line>: [ports] min: must be an integer 1-65535") on schema
// errors, the read error (NOT_FOUND, PERMISSION_DENIED) if it cannot be
// read. On error `config` is unchanged.
absl::Status ApplyConfigFile(const std::string& path, DaemonConfig& config);

// The same for TOML text; `source` names it in error messages.
absl::Status ApplyConfigText(const std::string& text, const std::string& source,
                             DaemonConfig& config);

}  // namespace smolvm::daemon
