// File: validation.h
//
// Input rules of the API, in one place: ids, resource ranges and the shape
// of image paths (which file a path names is the daemon's host-path
// policy's business, where it is opened). Every error is INVALID_ARGUMENT
// with a message that states the rule, so the caller knows the fix.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "lib/model/vm.h"

namespace smolvm {

// 1-64 chars of [a-z0-9-], starting and ending with a letter or digit.
// `kind` ("vm_id", "snapshot_id") names the field in the message.
absl::Status ValidateId(const std::string& id, const char* kind);

// An operation id (OperationService) chosen by a client: 1-64 chars of
// [A-Za-z0-9._-], so a UUID or a tool's own job id fits.
absl::Status ValidateOperationId(const std::string& id);

// A fresh random id with the given prefix ("vm", "snap"): prefix-8 hex chars.
std::string GenerateId(const std::string& prefix);

// Fills defaults (vcpus, memory) and checks ranges and the syntax of the
// image paths (ValidateImagePath). Touches no file; does not resolve the
// default image (empty paths stay empty).
absl::Status NormalizeVmConfig(VmConfig& config);

// A host path a VMConfig names (`field`: "kernel_path", ...), syntax only:
// "" (the default image), or absolute, at most 4096 bytes, no NUL byte and
// no "." or ".." component. Never looks at the file system.
absl::Status ValidateImagePath(const std::string& path, const char* field);

// Environment variables for the guest: names of [A-Za-z_][A-Za-z0-9_]*, at
// most 256 variables and 64 KiB in all, no NUL bytes. `field` names the
// request field in the message.
absl::Status ValidateEnv(const std::map<std::string, std::string>& env, const char* field);

// Egress policy: restricted needs at least one allow CIDR or domain; CIDRs
// are IPv4 "a.b.c.d/n" (or a bare address, meaning /32) as net::ParseCidr
// reads them, domains are domain_rules.h's patterns, at most 256 of each
// list; the allow lists only for restricted, the deny lists for open and
// restricted.
absl::Status ValidateEgress(const EgressPolicy& egress);

// A port forward: ports 1-65535, protocol tcp or udp, host_ip an IPv4
// address as net::ParseIpv4 reads it ("" becomes 127.0.0.1, "" protocol
// becomes tcp). Not whether the host allows it (that is PortPolicy's).
absl::Status NormalizePortForward(PortForward& forward);

// A path inside the guest: absolute, at most 4096 bytes, no NUL bytes.
absl::Status ValidateGuestPath(const std::string& path);
// A path of a filesystem call: absolute, or relative to the guest user's
// home ("" = the home itself); at most 4096 bytes, no NUL.
absl::Status ValidateGuestFsPath(const std::string& path);

// A guest user as a request names it: "" (root), a name of 1-32
// characters of [A-Za-z0-9._-] not starting with '-' (what useradd and
// busybox adduser accept, and no ':' that could break an /etc/passwd
// line), or a decimal uid below 2^31. Returns "" for root ("", "root",
// "0"), so any agent can run it, else the user as given.
absl::StatusOr<std::string> NormalizeGuestUser(const std::string& user);

// Labels (VMConfig.labels, SnapshotInfo.labels, list filters): at most 32;
// keys of 1-63 characters of [A-Za-z0-9._-] starting and ending with a
// letter or digit, optionally after a prefix of up to 253 such characters
// and a '/'; values of 0-63 such characters, starting and ending with a
// letter or digit when not empty. `field` names the request field.
absl::Status ValidateLabels(const std::map<std::string, std::string>& labels,
                            const char* field);

}  // namespace smolvm
