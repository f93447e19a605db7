// File: validation.h
//
// Input rules of the API, in one place: ids, resource ranges and image paths.
// Every error is INVALID_ARGUMENT (or NOT_FOUND for a missing file) with a
// message that states the rule, so the caller knows the fix.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "lib/model/vm.h"

namespace smolvm {

// 1-64 chars of [a-z0-9-], starting and ending with a letter or digit.
// `kind` ("vm_id", "snapshot_id") names the field in the message.
absl::Status ValidateId(const std::string& id, const char* kind);

// A fresh random id with the given prefix ("vm", "snap"): prefix-8 hex chars.
std::string GenerateId(const std::string& prefix);

// Fills defaults (vcpus, memory) and checks ranges and paths. Paths must be
// absolute and name existing regular files. Does not resolve the default
// image (empty paths stay empty).
absl::Status NormalizeVmConfig(VmConfig& config);

// Environment variables for the guest: names of [A-Za-z_][A-Za-z0-9_]*, at
// most 256 variables and 64 KiB in all, no NUL bytes. `field` names the
// request field in the message.
absl::Status ValidateEnv(const std::map<std::string, std::string>& env, const char* field);

// Egress policy: restricted needs at least one CIDR; CIDRs are IPv4
// "a.b.c.d/n" (or a bare address, meaning /32), only for restricted.
absl::Status ValidateEgress(const EgressPolicy& egress);

// A port forward: ports 1-65535, protocol tcp or udp, host_ip an IPv4
// address ("" becomes 127.0.0.1, "" protocol becomes tcp).
absl::Status NormalizePortForward(PortForward& forward);

// A path inside the guest: absolute, at most 4096 bytes, no NUL bytes.
absl::Status ValidateGuestPath(const std::string& path);

}  // namespace smolvm
