// File: tenant.h
//
// Who is calling, and what a tenant may use. The daemon learns the caller
// from the transport (SO_PEERCRED on the Unix socket, the client
// certificate on TCP), never from anything the client sends, and hands a
// Caller to every core operation. Objects (VMs, snapshots and with them
// their port forwards) carry the tenant that created them as `owner`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace smolvm {

// The tenant of local callers that no [tenants.*] entry names: "uid:<n>".
// Root's is "uid:0"; rows that predate tenants belong to it.
inline constexpr char kRootTenant[] = "uid:0";
std::string LocalUidTenant(uint32_t uid);

struct Caller {
  // The tenant whose objects this call sees and whose quota it uses.
  std::string tenant;
  // Sees and acts on every tenant's objects, without quotas. An admin that
  // acts for a tenant is a plain caller of that tenant (admin = false).
  bool admin = false;
  // For the audit log: "uid:1001 gid:1001 pid:42", "tls:CN=alice", with
  // " as <tenant>" when an admin acts for one.
  std::string identity;

  // Whether this caller may see/touch an object owned by `owner`.
  bool CanAccess(const std::string& owner) const { return admin || owner == tenant; }

  // The caller of in-process work (startup reconciliation, tests).
  static Caller System() { return Caller{kRootTenant, true, "system"}; }
};

// Per-tenant limits; nullopt = unlimited.
struct QuotaLimits {
  std::optional<int64_t> running_vms;     // RUNNING or PAUSED VMs (they hold RAM).
  std::optional<int64_t> vcpus;           // Sum over running VMs.
  std::optional<int64_t> memory_mib;      // Sum over running VMs.
  std::optional<int64_t> snapshots;       // Count.
  std::optional<int64_t> snapshot_bytes;  // Allocated bytes on disk, summed.
  std::optional<int64_t> port_forwards;   // Over all of the tenant's VMs.

  // Each field of `override` that is set replaces this one's.
  QuotaLimits OverriddenBy(const QuotaLimits& override) const;
  bool operator==(const QuotaLimits&) const = default;
};

// A configured tenant ([tenants.NAME] in smolvmd.toml).
struct TenantConfig {
  std::string name;                       // 1-64 of [A-Za-z0-9_.@-]; not "uid:*".
  std::vector<uint32_t> uids;             // Local users that are this tenant.
  std::vector<std::string> tls_subjects;  // Client cert CN or URI SAN values.
  bool admin = false;                     // Sees and acts on everything.
  QuotaLimits quota;                      // Overrides of the default quota.
};

}  // namespace smolvm
