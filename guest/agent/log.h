// File: log.h
//
// Logging of the guest agent: one line per call on stderr, which init points
// at the guest console (ttyS0). Thread-safe (a single fprintf per line).
#pragma once

namespace smolvm::guest {

// printf-style; prefixes "smolvm-agent: " and appends a newline.
void Log(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace smolvm::guest
