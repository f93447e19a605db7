#include "lib/core/tenant_directory.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace smolvm::core {

TenantDirectory::TenantDirectory(std::vector<TenantConfig> tenants, QuotaLimits default_quota,
                                 std::optional<gid_t> admin_gid)
    : tenants_(std::move(tenants)),
      default_quota_(std::move(default_quota)),
      admin_gid_(admin_gid) {
  for (size_t i = 0; i < tenants_.size(); ++i) {
    const TenantConfig& t = tenants_[i];
    by_name_.emplace(t.name, i);
    for (uint32_t uid : t.uids) by_uid_.emplace(uid, i);
    for (const std::string& subject : t.tls_subjects) {
      if (!subject.empty()) by_subject_.emplace(subject, i);
    }
  }
}

Caller TenantDirectory::ForLocalPeer(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                                     pid_t pid) const {
  Caller caller;
  caller.identity = absl::StrCat("uid:", uid, " gid:", gid, " pid:", pid);
  if (auto it = by_uid_.find(uid); it != by_uid_.end()) {
    const TenantConfig& t = tenants_[it->second];
    caller.tenant = t.name;
    caller.admin = t.admin;
  } else {
    caller.tenant = LocalUidTenant(uid);
  }
  if (uid == 0) caller.admin = true;
  if (admin_gid_.has_value() &&
      (gid == *admin_gid_ || std::find(groups.begin(), groups.end(), *admin_gid_) != groups.end())) {
    caller.admin = true;
  }
  return caller;
}

absl::StatusOr<Caller> TenantDirectory::ForTlsSubjects(
    const std::vector<std::string>& subjects) const {
  const TenantConfig* match = nullptr;
  std::string matched_subject;
  for (const std::string& subject : subjects) {
    auto it = by_subject_.find(subject);
    if (it == by_subject_.end()) continue;
    const TenantConfig* t = &tenants_[it->second];
    if (match != nullptr && match != t) {
      // One certificate, two tenants: refuse rather than pick one.
      return absl::UnauthenticatedError(absl::StrCat(
          "client certificate subjects ", matched_subject, " and ", subject,
          " are mapped to different tenants (", match->name, ", ", t->name,
          "); issue the client a certificate that names one tenant"));
    }
    if (match == nullptr) {
      match = t;
      matched_subject = subject;
    }
  }
  if (match == nullptr) {
    if (subjects.empty()) {
      return absl::UnauthenticatedError(
          "client certificate has neither a common name nor a URI SAN; issue one whose CN "
          "or URI SAN is listed in tls_subjects of a [tenants.NAME] entry");
    }
    return absl::UnauthenticatedError(absl::StrCat(
        "client certificate subject ", absl::StrJoin(subjects, ", "),
        " is not mapped to a tenant; add it to tls_subjects of a [tenants.NAME] entry"));
  }
  return Caller{match->name, match->admin, absl::StrCat("tls:", matched_subject)};
}

absl::StatusOr<Caller> TenantDirectory::ActAs(const Caller& caller,
                                              const std::string& tenant) const {
  if (!caller.admin) {
    return absl::PermissionDeniedError(absl::StrCat(
        "only admins may act for another tenant (x-smolvm-tenant: ", tenant,
        "); ", caller.identity, " is not an admin"));
  }
  if (by_name_.count(tenant) == 0 && !IsLocalUidTenant(tenant)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "x-smolvm-tenant: no tenant \"", tenant,
        "\"; use a [tenants.NAME] name from the configuration or uid:<n>"));
  }
  return Caller{tenant, false, absl::StrCat(caller.identity, " as ", tenant)};
}

QuotaLimits TenantDirectory::QuotaFor(const std::string& tenant) const {
  const TenantConfig* t = Find(tenant);
  return t == nullptr ? default_quota_ : default_quota_.OverriddenBy(t->quota);
}

const TenantConfig* TenantDirectory::Find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tenants_[it->second];
}

bool IsLocalUidTenant(const std::string& tenant) {
  if (!absl::StartsWith(tenant, "uid:")) return false;
  absl::string_view digits = absl::string_view(tenant).substr(4);
  if (digits.empty() || digits.size() > 10) return false;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  if (digits.size() > 1 && digits[0] == '0') return false;
  uint64_t n = 0;
  return absl::SimpleAtoi(digits, &n) && n <= 0xffffffffu;
}

}  // namespace smolvm::core
