// The warm pool table of the store (schema 9). Members are VM rows with
// pool_id set (Store::PoolVms in store.cc); this file holds the pools.
#include <sqlite3.h>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "lib/base/status_macros.h"
#include "lib/store/sqlite_util.h"
#include "lib/store/store.h"

namespace smolvm::store {
namespace {

constexpr const char* kSelectPools =
    "SELECT pool_id, owner, snapshot_id, size, created_at FROM pools ";

absl::StatusOr<PoolRecord> ReadPoolRow(sqlite3_stmt* stmt) {
  PoolRecord pool;
  pool.pool_id = ColumnString(stmt, 0);
  pool.owner = ColumnString(stmt, 1);
  pool.snapshot_id = ColumnString(stmt, 2);
  const int64_t size = sqlite3_column_int64(stmt, 3);
  if (size < 1 || size > kMaxPoolSize) {
    return absl::DataLossError(absl::StrCat("pool \"", pool.pool_id, "\": column size holds ",
                                            size, ", outside 1..", kMaxPoolSize));
  }
  pool.size = static_cast<uint32_t>(size);
  pool.created_at = absl::FromUnixMicros(sqlite3_column_int64(stmt, 4));
  return pool;
}

}  // namespace

absl::Status Store::InsertPool(const PoolRecord& pool) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("InsertPool"));
  const std::string what = absl::StrCat("insert ", Quoted("pool", pool.pool_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              "INSERT INTO pools (pool_id, owner, snapshot_id, size, created_at) "
              "VALUES (?1, ?2, ?3, ?4, ?5)",
              what, pool.pool_id, pool.owner, pool.snapshot_id, int64_t{pool.size},
              absl::ToUnixMicros(pool.created_at)));
  return StepWrite(db_, stmt.get(), "pool", pool.pool_id, what);
}

absl::StatusOr<PoolRecord> Store::GetPool(const std::string& pool_id) {
  const std::string what = absl::StrCat("get ", Quoted("pool", pool_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, absl::StrCat(kSelectPools, "WHERE pool_id = ?1"), what, pool_id));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<PoolRecord> rows,
                          ReadRows(db_, stmt.get(), what, &ReadPoolRow));
  if (rows.empty()) return NotFound("pool", pool_id);
  return std::move(rows.front());
}

absl::StatusOr<std::vector<PoolRecord>> Store::ListPools(const std::string& owner) {
  constexpr absl::string_view what = "list pools";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_, absl::StrCat(kSelectPools, "WHERE ?1 = '' OR owner = ?1 ORDER BY pool_id"),
              what, owner));
  return ReadRows(db_, stmt.get(), what, &ReadPoolRow);
}

absl::Status Store::DeletePool(const std::string& pool_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("DeletePool"));
  const std::string what = absl::StrCat("delete ", Quoted("pool", pool_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, "DELETE FROM pools WHERE pool_id = ?1", what, pool_id));
  return StepWrite(db_, stmt.get(), "pool", pool_id, what);
}

}  // namespace smolvm::store
