// File: client/cli/doctor.h
// -----------------------------------------------------------------------------
//
// `smolvmctl doctor`: checks the host for what smolvmd needs and says what to
// fix. Each check is a function of the paths it looks at (DoctorPaths), so
// that tests can point them at a temporary tree.

#ifndef SMOLVM_CLIENT_CLI_DOCTOR_H_
#define SMOLVM_CLIENT_CLI_DOCTOR_H_

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace smolvm::cli {

struct DoctorPaths {
  std::string dev_kvm = "/dev/kvm";
  std::string sys_module = "/sys/module";
  std::string cgroup_root = "/sys/fs/cgroup";
  std::string state_dir = "/var/lib/smolvmd";
  std::string socket;  // "" when smolvmd is reached over TCP.
};

enum class CheckLevel { kOk, kWarn, kFail };

struct CheckResult {
  std::string name;    // "kvm", "socket", ...
  CheckLevel level = CheckLevel::kOk;
  std::string detail;  // What was found.
  std::string fix;     // What to do ("" when OK).
};

// RunDoctorChecks runs every check; `ping` asks smolvmd for something cheap
// (OK when it answers).
std::vector<CheckResult> RunDoctorChecks(const DoctorPaths& paths,
                                         const std::function<absl::Status()>& ping);

// RenderChecks: one "OK   name  detail" line each (WARN, FAIL likewise),
// with an indented "fix: ..." line under those that have one.
std::string RenderChecks(const std::vector<CheckResult>& checks);

// ChecksToJson: [{"check", "status" ("ok"|"warn"|"fail"), "detail", "fix"}].
nlohmann::ordered_json ChecksToJson(const std::vector<CheckResult>& checks);

}  // namespace smolvm::cli

#endif  // SMOLVM_CLIENT_CLI_DOCTOR_H_
