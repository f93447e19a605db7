#include "lib/model/lifetime.h"

#include "absl/strings/str_cat.h"

namespace smolvm {

const char* LifetimeActionName(LifetimeAction action) {
  switch (action) {
    case LifetimeAction::kDelete: return "delete";
    case LifetimeAction::kStop: return "stop";
    case LifetimeAction::kPause: return "pause";
    case LifetimeAction::kSnapshot: return "snapshot";
  }
  return "delete";
}

std::optional<LifetimeAction> ParseLifetimeAction(std::string_view name) {
  for (LifetimeAction a : {LifetimeAction::kDelete, LifetimeAction::kStop,
                           LifetimeAction::kPause, LifetimeAction::kSnapshot}) {
    if (name == LifetimeActionName(a)) return a;
  }
  return std::nullopt;
}

namespace {

absl::Status ValidateLimit(absl::Duration limit, const char* field) {
  if (limit == absl::ZeroDuration()) return absl::OkStatus();
  if (limit < kMinLifetimeLimit || limit > kMaxLifetimeLimit ||
      limit != absl::Trunc(limit, absl::Seconds(1))) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " ", absl::FormatDuration(limit),
        " must be 0 (no limit) or whole seconds from 1 s to 365 days"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLifetime(const Lifetime& lifetime) {
  if (absl::Status s = ValidateLimit(lifetime.max_lifetime, "lifetime.max_lifetime"); !s.ok()) {
    return s;
  }
  return ValidateLimit(lifetime.idle_timeout, "lifetime.idle_timeout");
}

Lifetime StartLifetime(const Lifetime& requested, absl::Time now) {
  Lifetime out;
  out.max_lifetime = requested.max_lifetime;
  out.max_lifetime_action = requested.max_lifetime_action;
  out.idle_timeout = requested.idle_timeout;
  out.idle_action = requested.idle_action;
  out.auto_resume = requested.auto_resume;
  if (out.max_lifetime != absl::ZeroDuration()) out.expires_at = now + out.max_lifetime;
  return out;
}

}  // namespace smolvm
