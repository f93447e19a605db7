// File: sqlite_util.h
//
// Small RAII and error helpers over the SQLite C API, shared by the store's
// translation units (store.cc: VMs, snapshots, addresses, operations;
// store_images.cc: images). Internal to lib/store.
#pragma once

#include <sqlite3.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "lib/base/status_macros.h"

namespace smolvm::store {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using UniqueDb = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

inline absl::Status SqliteError(sqlite3* db, absl::string_view what) {
  // Conditions of the host an operator can fix get their own code and the
  // fix, so a client can tell them from a bug and retry once fixed.
  switch (sqlite3_errcode(db)) {
    case SQLITE_READONLY:
      return absl::UnavailableError(absl::StrCat(
          what, ": ", sqlite3_errmsg(db),
          " (the state dir's filesystem is read-only: remount it read-write; nothing was "
          "changed)"));
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(absl::StrCat(
          what, ": ", sqlite3_errmsg(db), " (the state dir's filesystem is full)"));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(absl::StrCat(
          what, ": ", sqlite3_errmsg(db), " (the database stayed locked by another writer)"));
    default:
      return absl::InternalError(absl::StrCat(what, ": ", sqlite3_errmsg(db)));
  }
}

inline std::string Quoted(const char* kind, const std::string& id) {
  return absl::StrCat(kind, " \"", id, "\"");
}

inline absl::Status NotFound(const char* kind, const std::string& id) {
  return absl::NotFoundError(absl::StrCat(Quoted(kind, id), " not found"));
}

// Runs SQL that has no parameters and returns no rows (pragmas, DDL,
// transaction control).
inline absl::Status Exec(sqlite3* db, const std::string& sql, absl::string_view what) {
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return SqliteError(db, what);
  }
  return absl::OkStatus();
}

inline int BindValue(sqlite3_stmt* stmt, int index, const std::string& value) {
  return sqlite3_bind_text(stmt, index, value.data(),
                           static_cast<int>(value.size()), SQLITE_TRANSIENT);
}
inline int BindValue(sqlite3_stmt* stmt, int index, int64_t value) {
  return sqlite3_bind_int64(stmt, index, value);
}
inline int BindValue(sqlite3_stmt* stmt, int index,
              const std::optional<std::string>& value) {
  return value ? BindValue(stmt, index, *value) : sqlite3_bind_null(stmt, index);
}

// Prepares `sql` and binds `values` to ?1, ?2, ... in order.
template <typename... Values>
inline absl::StatusOr<Stmt> Prepare(sqlite3* db, const std::string& sql,
                             absl::string_view what, const Values&... values) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
    return SqliteError(db, what);
  }
  Stmt stmt(raw);
  int index = 0;
  int rc = SQLITE_OK;
  ((rc = rc == SQLITE_OK ? BindValue(raw, ++index, values) : rc), ...);
  if (rc != SQLITE_OK) return SqliteError(db, what);
  return stmt;
}

// Runs `body() -> absl::Status` in one IMMEDIATE transaction: committed when
// it returns OK, rolled back otherwise.
template <typename Body>
inline absl::Status InTransaction(sqlite3* db, absl::string_view what, Body&& body) {
  SMOLVM_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE", what));
  absl::Status status = std::forward<Body>(body)();
  if (status.ok()) status = Exec(db, "COMMIT", what);
  if (!status.ok()) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  return status;
}

// Steps an INSERT, UPDATE or DELETE of the row `id`. A duplicate primary key
// is ALREADY_EXISTS; touching no row is NOT_FOUND.
inline absl::Status StepWrite(sqlite3* db, sqlite3_stmt* stmt, const char* kind,
                       const std::string& id, absl::string_view what) {
  int rc = sqlite3_step(stmt);
  if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
    return absl::AlreadyExistsError(
        absl::StrCat(Quoted(kind, id), " already exists"));
  }
  if (rc != SQLITE_DONE) return SqliteError(db, what);
  if (sqlite3_changes(db) == 0) return NotFound(kind, id);
  return absl::OkStatus();
}

// Steps `stmt` to the end, decoding each row with `read`.
template <typename Record>
inline absl::StatusOr<std::vector<Record>> ReadRows(
    sqlite3* db, sqlite3_stmt* stmt, absl::string_view what,
    absl::StatusOr<Record> (*read)(sqlite3_stmt*)) {
  std::vector<Record> rows;
  for (;;) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE) return rows;
    if (rc != SQLITE_ROW) return SqliteError(db, what);
    SMOLVM_ASSIGN_OR_RETURN(Record row, read(stmt));
    rows.push_back(std::move(row));
  }
}

inline std::string ColumnString(sqlite3_stmt* stmt, int column) {
  const char* text =
      reinterpret_cast<const char*>(sqlite3_column_text(stmt, column));
  if (text == nullptr) return "";
  return std::string(text, sqlite3_column_bytes(stmt, column));
}

}  // namespace smolvm::store
