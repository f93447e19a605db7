#include "lib/model/tenant.h"

#include "absl/strings/str_cat.h"

namespace smolvm {

std::string LocalUidTenant(uint32_t uid) { return absl::StrCat("uid:", uid); }

QuotaLimits QuotaLimits::OverriddenBy(const QuotaLimits& override) const {
  QuotaLimits q = *this;
  for (auto field : {&QuotaLimits::running_vms, &QuotaLimits::vcpus, &QuotaLimits::memory_mib,
                     &QuotaLimits::snapshots, &QuotaLimits::snapshot_bytes,
                     &QuotaLimits::port_forwards}) {
    if ((override.*field).has_value()) q.*field = override.*field;
  }
  return q;
}

}  // namespace smolvm
