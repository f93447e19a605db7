// File: tenant_directory.h
//
// Maps what the transport proves about a caller (SO_PEERCRED of a local
// peer, the subjects of a verified client certificate) to a Caller: its
// tenant, whether it is an admin, and the identity the audit log names.
// Built once from the configuration; immutable, so every method is
// thread-safe. No I/O: the daemon resolves group names to gids.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lib/model/tenant.h"

namespace smolvm::core {

class TenantDirectory {
 public:
  // `tenants` should have passed CheckConfig (unique names, uids and
  // subjects); if a uid or subject is listed twice anyway, the first tenant
  // wins. `admin_gid` is the gid of --admin-group, nullopt if it does not
  // exist on this host.
  TenantDirectory(std::vector<TenantConfig> tenants, QuotaLimits default_quota,
                  std::optional<gid_t> admin_gid);

  // A caller on the Unix socket (SO_PEERCRED / SO_PEERGROUPS). Its tenant
  // is the configured one listing `uid`, else "uid:<uid>". Admin: uid 0, a
  // member of the admin group (primary or supplementary), or an admin
  // tenant. Identity "uid:1001 gid:1001 pid:42".
  Caller ForLocalPeer(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, pid_t pid) const;

  // A caller on TCP whose verified client certificate carries `subjects`
  // (CN first, then URI SANs). UNAUTHENTICATED naming the subjects when
  // none is a configured tls_subject, or when they name different tenants.
  // Identity "tls:<matching subject>".
  absl::StatusOr<Caller> ForTlsSubjects(const std::vector<std::string>& subjects) const;

  // `caller` acting for `tenant` (x-smolvm-tenant): a plain caller of that
  // tenant with identity "<identity> as <tenant>". PERMISSION_DENIED for a
  // non-admin; INVALID_ARGUMENT unless `tenant` is configured or "uid:<n>".
  absl::StatusOr<Caller> ActAs(const Caller& caller, const std::string& tenant) const;

  // The default quota overridden by the tenant's own [tenants.NAME.quotas].
  QuotaLimits QuotaFor(const std::string& tenant) const;

  // The configured tenant called `name`, or nullptr.
  const TenantConfig* Find(const std::string& name) const;

 private:
  std::vector<TenantConfig> tenants_;
  QuotaLimits default_quota_;
  std::optional<gid_t> admin_gid_;
  std::map<std::string, size_t> by_name_;
  std::map<uint32_t, size_t> by_uid_;
  std::map<std::string, size_t> by_subject_;
};

// Whether `tenant` has the form "uid:<n>" with n a decimal uint32 without
// leading zeros (what LocalUidTenant produces).
bool IsLocalUidTenant(const std::string& tenant);

}  // namespace smolvm::core
