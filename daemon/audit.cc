#include "daemon/audit.h"

#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {

std::string AuditLine(const Caller& caller, absl::string_view method, absl::string_view object,
                      const absl::Status& status) {
  nlohmann::ordered_json line;
  line["audit"] = "smolvmd";
  line["method"] = std::string(method);
  line["identity"] = caller.identity;
  line["tenant"] = caller.tenant;
  line["object"] = std::string(object);
  line["code"] = absl::StatusCodeToString(status.code());
  line["message"] = std::string(status.message());
  // ensure_ascii: C1 controls (U+0080-U+009F, e.g. the 8-bit CSI) become
  // \u escapes too; `replace`: invalid UTF-8 becomes U+FFFD instead of
  // throwing.
  std::string text = line.dump(-1, ' ', /*ensure_ascii=*/true,
                               nlohmann::json::error_handler_t::replace);
  // The one control character JSON leaves raw is DEL; it can only occur
  // inside a string here, where \u007f means the same.
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\x7f') {
      out += "\\u007f";
    } else {
      out += c;
    }
  }
  return out;
}

void Audit(const Caller& caller, absl::string_view method, absl::string_view object,
           const absl::Status& status) {
  spdlog::info("{}", AuditLine(caller, method, object, status));
}

}  // namespace smolvm::daemon
