// The event journal of the store (schema 14). The triggers that write most
// events are in the migration (store.cc); this file appends the others,
// reads them back and wakes readers that wait for more.
#include <sqlite3.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "lib/base/status_macros.h"
#include "lib/store/sqlite_util.h"
#include "lib/store/store.h"
#include "nlohmann/json.hpp"

namespace smolvm::store {
namespace {

constexpr int kMaxEventsPerList = 1000;

constexpr const char* kSelectEvents =
    "SELECT event_id, at, owner, kind, vm_id, snapshot_id, state, detail FROM events ";

// sqlite_sequence keeps the highest id ever given, also once pruned.
constexpr const char* kNewestEventId =
    "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)";

absl::StatusOr<EventRecord> ReadEventRow(sqlite3_stmt* stmt) {
  EventRecord event;
  event.event_id = sqlite3_column_int64(stmt, 0);
  event.at = absl::FromUnixMillis(sqlite3_column_int64(stmt, 1));
  event.owner = ColumnString(stmt, 2);
  event.kind = ColumnString(stmt, 3);
  event.vm_id = ColumnString(stmt, 4);
  event.snapshot_id = ColumnString(stmt, 5);
  event.state = ColumnString(stmt, 6);
  event.detail = ColumnString(stmt, 7);
  return event;
}

// One integer from a query returning one row.
absl::StatusOr<int64_t> QueryInt(sqlite3* db, const char* sql, absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db, sql, what));
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(db, what);
  return sqlite3_column_int64(stmt.get(), 0);
}

}  // namespace

absl::StatusOr<int64_t> Store::AppendEvent(const EventRecord& event) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("AppendEvent"));
  const std::string what = absl::StrCat("record event ", event.kind, " of ",
                                        event.vm_id.empty() ? event.snapshot_id : event.vm_id);
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              "INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
              what, event.owner, event.kind, event.vm_id, event.snapshot_id, event.state,
              event.detail));
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(db_, what);
  // The view's trigger made the row (sqlite3_last_insert_rowid does not
  // see a trigger's inserts); nothing else writes under this lock.
  return QueryInt(db_, kNewestEventId, what);
}

absl::StatusOr<Store::EventPage> Store::ListEvents(int64_t after_event_id,
                                                  const std::string& owner,
                                                  const EventFilter& filter, int limit) {
  constexpr absl::string_view what = "list events";
  if (after_event_id < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("after_event_id ", after_event_id, " must be >= 0"));
  }
  limit = std::clamp(limit, 1, kMaxEventsPerList);
  std::string kinds;
  try {
    kinds = nlohmann::json(filter.kinds).dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  }
  absl::MutexLock lock(&mu_);
  if (after_event_id > 0) {
    SMOLVM_ASSIGN_OR_RETURN(
        int64_t pruned, QueryInt(db_, "SELECT pruned_through FROM event_settings", what));
    if (after_event_id < pruned) {
      SMOLVM_ASSIGN_OR_RETURN(
          int64_t oldest, QueryInt(db_, "SELECT coalesce(min(event_id), 0) FROM events", what));
      return absl::OutOfRangeError(absl::StrCat(
          "events after ", after_event_id, " up to ", pruned,
          " were dropped by the journal's retention (the oldest kept is ", oldest,
          "): watch from 0 and list the VMs and snapshots again to catch up"));
    }
  }
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              absl::StrCat(kSelectEvents,
                           "WHERE event_id > ?1 AND (?2 = '' OR owner = ?2) "
                           "AND (?3 = '' OR vm_id = ?3) AND (?4 = '' OR snapshot_id = ?4) "
                           "AND (?5 = '[]' OR kind IN (SELECT value FROM json_each(?5))) "
                           "ORDER BY event_id LIMIT ?6"),
              what, after_event_id, owner, filter.vm_id, filter.snapshot_id, kinds,
              int64_t{limit}));
  EventPage page;
  SMOLVM_ASSIGN_OR_RETURN(page.events, ReadRows(db_, stmt.get(), what, &ReadEventRow));
  if (page.events.size() == static_cast<size_t>(limit)) {
    page.read_through = page.events.back().event_id;
  } else {
    SMOLVM_ASSIGN_OR_RETURN(page.read_through, QueryInt(db_, kNewestEventId, what));
    page.read_through = std::max(page.read_through, after_event_id);
  }
  return page;
}

absl::StatusOr<int64_t> Store::NewestEventId() {
  absl::MutexLock lock(&mu_);
  return QueryInt(db_, kNewestEventId, "read the newest event id");
}

absl::StatusOr<int64_t> Store::OldestEventId() {
  absl::MutexLock lock(&mu_);
  return QueryInt(db_, "SELECT coalesce(min(event_id), 0) FROM events",
                  "read the oldest event id");
}

absl::Status Store::SetMaxEvents(int64_t max_events) {
  if (max_events < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_events ", max_events, " must be >= 1"));
  }
  SMOLVM_RETURN_IF_ERROR(WriteFault("SetMaxEvents"));
  const std::string what = absl::StrCat("set the event journal's retention to ", max_events);
  absl::MutexLock lock(&mu_);
  return InTransaction(db_, what, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    for (const char* sql :
         {"UPDATE event_settings SET max_events = ?1, pruned_through = max(pruned_through, "
          "coalesce((SELECT max(event_id) FROM events), 0) - ?1)",
          "DELETE FROM events WHERE event_id <= (SELECT pruned_through FROM event_settings) "
          "AND ?1 > 0"}) {
      SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db_, sql, what, max_events));
      if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(db_, what);
    }
    return absl::OkStatus();
  });
}

uint64_t Store::CommitCount() {
  absl::MutexLock lock(&commit_mu_);
  return commits_;
}

uint64_t Store::WaitForCommit(uint64_t seen, absl::Time deadline) {
  absl::MutexLock lock(&commit_mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
    return commits_ != seen;
  };
  commit_mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
  return commits_;
}

}  // namespace smolvm::store
