// File: audit.h
//
// The audit log: one structured line per mutating call, saying who (the
// caller's identity and tenant) did what (method, object) with what result.
// Client- and guest-supplied text ends up in these lines (VM names, error
// messages quoting them), so everything is JSON-escaped: control characters
// and ESC become \u escapes, invalid UTF-8 is replaced, and a line never
// contains a raw newline or terminal escape.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lib/model/tenant.h"

namespace smolvm::daemon {

// {"audit":"smolvmd","method":...,"identity":...,"tenant":...,"object":...,
//  "code":"PERMISSION_DENIED","message":...} on one line, pure ASCII.
std::string AuditLine(const Caller& caller, absl::string_view method, absl::string_view object,
                      const absl::Status& status);

// Logs AuditLine(...) at info level.
void Audit(const Caller& caller, absl::string_view method, absl::string_view object,
           const absl::Status& status);

}  // namespace smolvm::daemon
