// File: status_macros.h
//
// SMOLVM_RETURN_IF_ERROR / SMOLVM_ASSIGN_OR_RETURN with the semantics of
// Abseil's later ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN (not in the
// Abseil 20220623 that Debian 12 ships), so an upgrade is a rename.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SMOLVM_STATUS_CONCAT_INNER_(a, b) a##b
#define SMOLVM_STATUS_CONCAT_(a, b) SMOLVM_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the current function if it is not OK.
#define SMOLVM_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    if (absl::Status smolvm_status_ = (expr);         \
        !smolvm_status_.ok()) {                       \
      return smolvm_status_;                          \
    }                                                 \
  } while (0)

// `lhs = *std::move(statusor)` or returns its error.
#define SMOLVM_ASSIGN_OR_RETURN(lhs, rexpr)                                   \
  SMOLVM_ASSIGN_OR_RETURN_IMPL_(                                             \
      SMOLVM_STATUS_CONCAT_(smolvm_statusor_, __LINE__), lhs, rexpr)

#define SMOLVM_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                  \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = *std::move(statusor)
