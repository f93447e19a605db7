#include "lib/model/boot_args.h"

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace smolvm {
namespace {

// One allowed parameter: a bare flag, one of `values`, or an integer in
// [min, max]. Why each is harmless is in boot_args.h.
struct AllowedParam {
  absl::string_view name;
  enum Kind { kFlag, kOneOf, kInt } kind;
  std::vector<absl::string_view> values = {};
  int min = 0;
  int max = 0;
};

const std::vector<AllowedParam>& AllowedParams() {
  static const auto* params = new std::vector<AllowedParam>{
      {"quiet", AllowedParam::kFlag},
      {"loglevel", AllowedParam::kInt, {}, 0, 7},
      {"panic", AllowedParam::kInt, {}, -1, 3600},
      {"mitigations", AllowedParam::kOneOf, {"off", "auto"}},
      {"nokaslr", AllowedParam::kFlag},
      {"random.trust_cpu", AllowedParam::kOneOf, {"on", "off"}},
      {"transparent_hugepage", AllowedParam::kOneOf, {"always", "madvise", "never"}},
      {"tsc", AllowedParam::kOneOf, {"reliable"}},
      {"clocksource", AllowedParam::kOneOf, {"kvm-clock", "tsc", "hpet", "acpi_pm"}},
      {"printk.devkmsg", AllowedParam::kOneOf, {"on", "off", "ratelimit"}},
      {"ipv6.disable", AllowedParam::kOneOf, {"0", "1"}},
      {"init_on_alloc", AllowedParam::kOneOf, {"0", "1"}},
      {"init_on_free", AllowedParam::kOneOf, {"0", "1"}},
  };
  return *params;
}

std::string Describe(const AllowedParam& p) {
  switch (p.kind) {
    case AllowedParam::kFlag:
      return std::string(p.name);
    case AllowedParam::kOneOf:
      return absl::StrCat(p.name, "=", absl::StrJoin(p.values, "|"));
    case AllowedParam::kInt:
      return absl::StrCat(p.name, "=", p.min, "..", p.max);
  }
  return std::string(p.name);
}

bool IsValueChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ',' || c == ':' || c == '-';
}

absl::Status Refused(absl::string_view param, absl::string_view why) {
  std::string shown(param.substr(0, 80));
  if (param.size() > 80) shown += "...";
  return absl::PermissionDeniedError(absl::StrCat(
      "boot_args: \"", absl::CHexEscape(shown), "\" ", why,
      "; tenants may pass only: ", TenantBootArgsAllowList(), " (admins may pass any)"));
}

// Checks one whitespace-free parameter.
absl::Status CheckParam(absl::string_view param) {
  size_t eq = param.find('=');
  absl::string_view name = param.substr(0, eq);
  bool has_value = eq != absl::string_view::npos;
  absl::string_view value = has_value ? param.substr(eq + 1) : absl::string_view();
  for (char c : value) {
    if (!IsValueChar(c)) {
      return Refused(param, "has a value with characters other than [A-Za-z0-9._,:-]");
    }
  }
  const AllowedParam* allowed = nullptr;
  for (const auto& p : AllowedParams()) {
    if (p.name == name) allowed = &p;
  }
  if (allowed == nullptr) return Refused(param, "is not an allowed kernel parameter");
  switch (allowed->kind) {
    case AllowedParam::kFlag:
      if (has_value) return Refused(param, "takes no value");
      return absl::OkStatus();
    case AllowedParam::kOneOf:
      for (absl::string_view v : allowed->values) {
        if (has_value && value == v) return absl::OkStatus();
      }
      return Refused(param, absl::StrCat("must be ", Describe(*allowed)));
    case AllowedParam::kInt: {
      int n = 0;
      if (has_value && absl::SimpleAtoi(value, &n) && n >= allowed->min && n <= allowed->max) {
        return absl::OkStatus();
      }
      return Refused(param, absl::StrCat("must be ", Describe(*allowed)));
    }
  }
  return Refused(param, "is not an allowed kernel parameter");
}

}  // namespace

std::string TenantBootArgsAllowList() {
  std::vector<std::string> out;
  for (const auto& p : AllowedParams()) out.push_back(Describe(p));
  return absl::StrJoin(out, ", ");
}

absl::Status ValidateTenantBootArgs(const std::string& boot_args) {
  // Only space and tab separate parameters; any other byte outside the
  // parameter alphabet (quotes, newlines, NUL, non-ASCII) is refused with
  // the parameter it is in.
  for (absl::string_view param :
       absl::StrSplit(boot_args, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
    if (auto s = CheckParam(param); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace smolvm
