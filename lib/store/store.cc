#include "lib/store/store.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "lib/base/status_macros.h"
#include "lib/store/sqlite_util.h"
#include "lib/model/validation.h"
#include "nlohmann/json.hpp"

namespace smolvm::store {
namespace {

using Json = nlohmann::json;

constexpr int kBusyTimeoutMs = 5000;
constexpr int kDefaultPageSize = 100;
constexpr int kMaxPageSize = 1000;

// kMigrations[i] takes the schema from version i to version i + 1, in its own
// transaction. Append only: databases in the field have run every released
// entry, so an edit to one would never reach them.
constexpr const char* kMigrations[] = {
    // 1: VMs and snapshots. Times are unix microseconds; configs are JSON
    // objects keyed by field name. snapshots.vm_id is deliberately not a
    // foreign key: a snapshot outlives the VM it was taken from.
    R"sql(
CREATE TABLE vms (
  vm_id TEXT NOT NULL PRIMARY KEY,
  state TEXT NOT NULL,
  config TEXT NOT NULL,
  network TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  error TEXT NOT NULL,
  vmm_pid INTEGER NOT NULL,
  restored_from TEXT NOT NULL
);
CREATE TABLE snapshots (
  snapshot_id TEXT NOT NULL PRIMARY KEY,
  vm_id TEXT NOT NULL,
  snapshot_path TEXT NOT NULL,
  mem_file_path TEXT NOT NULL,
  disk_path TEXT NOT NULL,
  vm_config TEXT NOT NULL,
  network_config TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  restored INTEGER NOT NULL CHECK (restored IN (0, 1)),
  restored_vm_id TEXT,
  size_bytes INTEGER NOT NULL,
  accelerator TEXT NOT NULL
);
CREATE INDEX snapshots_vm_id ON snapshots (vm_id);
)sql",
    // 2: guest addresses. The primary key makes double allocation
    // impossible, also across daemon restarts and concurrent creates; a VM
    // holds at most one address.
    R"sql(
CREATE TABLE ip_allocations (
  ip TEXT NOT NULL PRIMARY KEY,
  vm_id TEXT NOT NULL UNIQUE
);
)sql",
    // 3: tenants. Every VM and snapshot has an owner; rows from before
    // tenants existed belong to root's tenant (an admin).
    R"sql(
ALTER TABLE vms ADD COLUMN owner TEXT NOT NULL DEFAULT 'uid:0';
ALTER TABLE snapshots ADD COLUMN owner TEXT NOT NULL DEFAULT 'uid:0';
CREATE INDEX vms_owner ON vms (owner);
CREATE INDEX snapshots_owner ON snapshots (owner);
)sql",
    // 4: snapshot integrity. A JSON object with the content checksums taken
    // at creation ("checksums") and the file stamps of the last successful
    // verification ("verified"); rows from before have neither: legacy
    // snapshots, restored unverified.
    R"sql(
ALTER TABLE snapshots ADD COLUMN integrity TEXT NOT NULL DEFAULT '{}';
)sql",
    // 5: the unprivileged uid each VM's VMM runs as (0: none yet, or a VM
    // from before confinement). Unique, so two VMs never share one; freed
    // with the row.
    R"sql(
ALTER TABLE vms ADD COLUMN vmm_uid INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX vms_vmm_uid ON vms (vmm_uid) WHERE vmm_uid != 0;
)sql",
    // 6: what a VM restored PAUSED still needs when it is resumed (its
    // clock and entropy fixed, and a clone re-addressed), so that a daemon
    // restart in between cannot skip it.
    R"sql(
ALTER TABLE vms ADD COLUMN pending_fixup TEXT NOT NULL DEFAULT '';
)sql",
    // 7: the operations journal. A multi-step operation on a VM records its
    // intent (kind) before its first side effect and clears it when done;
    // a restore into an existing VM also keeps that VM's row as it was
    // (operation_previous_vms: the columns of vms, in order — a migration
    // that adds a column to vms must add it there too), so the next start
    // can roll the operation back exactly.
    R"sql(
CREATE TABLE operations (
  vm_id TEXT NOT NULL PRIMARY KEY,
  kind TEXT NOT NULL,
  started_at INTEGER NOT NULL
);
CREATE TABLE operation_previous_vms AS SELECT * FROM vms WHERE 0;
)sql",
    // 8: images (lib/image/image_store.h). An image is its content digest;
    // names ("name:tag") point at digests, one digest per name. Who uses an
    // image is not stored here but read from the VMs' and snapshots'
    // configs (image_digest), so it can never drift from them.
    R"sql(
CREATE TABLE images (
  digest TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL,
  source TEXT NOT NULL,
  manifest TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE image_names (
  name TEXT NOT NULL PRIMARY KEY,
  digest TEXT NOT NULL REFERENCES images (digest) ON DELETE CASCADE
);
CREATE INDEX image_names_digest ON image_names (digest);
)sql",
    // 9: warm pools (lib/core/vm_manager_pools.cc). A pool keeps `size`
    // paused clones of a snapshot; its members are ordinary VM rows with
    // pool_id set until claimed ("" for every other VM). The operations
    // journal's copy of vms gets the column too (see 7).
    R"sql(
CREATE TABLE pools (
  pool_id TEXT NOT NULL PRIMARY KEY,
  owner TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX pools_snapshot_id ON pools (snapshot_id);
ALTER TABLE vms ADD COLUMN pool_id TEXT NOT NULL DEFAULT '';
ALTER TABLE operation_previous_vms ADD COLUMN pool_id TEXT NOT NULL DEFAULT '';
CREATE INDEX vms_pool_id ON vms (pool_id) WHERE pool_id != '';
)sql",
    // 10: a snapshot's own labels (a JSON object; VM labels live in config).
    R"sql(
ALTER TABLE snapshots ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
)sql",
    // 11: no new column, but egress policies may hold deny_cidrs, which a
    // daemon from before them would drop without a word (opening those
    // VMs): the version makes it refuse this database instead.
    R"sql(
SELECT 1;
)sql",
    // 12: the same for the domain rules of egress policies (allow_domains,
    // deny_domains).
    R"sql(
SELECT 1;
)sql",
    // 13: the same for lifetime policies (VmConfig.lifetime): a daemon from
    // before them would keep such VMs forever. The index finds the VMs the
    // lifetime worker watches without reading every config.
    R"sql(
CREATE INDEX vms_lifetime ON vms (vm_id) WHERE json_extract(config, '$.lifetime') IS NOT NULL;
)sql",
    // 14: the event journal (store_events.cc, issue 14 item 3). Triggers
    // write the events of row changes in the statement that makes the
    // change, so no change is ever kept without its event (nor the other
    // way round) and no call site can forget one. Times are unix
    // milliseconds. Warm-pool members (pool_id != '') are the pool's, not
    // yet a tenant's: they have no events until a claim clears pool_id,
    // which is their one 'restored' event. AUTOINCREMENT: ids are never
    // reused after pruning. event_settings holds the retention (one row;
    // Store::SetMaxEvents) and the highest id pruning dropped, below which
    // a reader resuming would miss events (OUT_OF_RANGE). Pruning is a
    // trigger too: every 1000th event drops all but the newest max_events.
    R"sql(
CREATE TABLE events (
  event_id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  owner TEXT NOT NULL,
  kind TEXT NOT NULL,
  vm_id TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  state TEXT NOT NULL,
  detail TEXT NOT NULL
);
CREATE INDEX events_owner ON events (owner, event_id);
CREATE TABLE event_settings (
  max_events INTEGER NOT NULL,
  pruned_through INTEGER NOT NULL
);
INSERT INTO event_settings (max_events, pruned_through) VALUES (100000, 0);
-- Every writer of events inserts here: the time is taken in one place.
CREATE VIEW new_events AS SELECT owner, kind, vm_id, snapshot_id, state, detail FROM events;
CREATE TRIGGER new_events_insert INSTEAD OF INSERT ON new_events
BEGIN
  INSERT INTO events (at, owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER), NEW.owner,
          NEW.kind, NEW.vm_id, NEW.snapshot_id, NEW.state, NEW.detail);
END;
CREATE TRIGGER events_vm_insert AFTER INSERT ON vms WHEN NEW.pool_id = ''
BEGIN
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (NEW.owner,
          CASE WHEN NEW.restored_from != '' THEN 'restored' ELSE 'created' END,
          NEW.vm_id, NEW.restored_from, NEW.state,
          CASE WHEN NEW.state = 'error' THEN NEW.error ELSE '' END);
END;
CREATE TRIGGER events_vm_update AFTER UPDATE ON vms WHEN NEW.pool_id = ''
BEGIN
  -- A claim out of a warm pool: the member becomes the tenant's VM.
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  SELECT NEW.owner,
         'restored', NEW.vm_id, NEW.restored_from, NEW.state,
         'claimed from pool ' || OLD.pool_id
  WHERE OLD.pool_id != '';
  -- A restore into an existing VM (its journal entry kept the previous
  -- row; a restore into a new VM had its event at the insert): it goes
  -- live from the snapshot.
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  SELECT NEW.owner,
         'restored', NEW.vm_id, NEW.restored_from, NEW.state, ''
  WHERE OLD.pool_id = '' AND NEW.restored_from != ''
    AND OLD.state NOT IN ('running', 'paused') AND NEW.state IN ('running', 'paused')
    AND EXISTS (SELECT 1 FROM operations o JOIN operation_previous_vms p ON p.vm_id = o.vm_id
                WHERE o.vm_id = NEW.vm_id AND o.kind = 'restore');
  -- A state change: the kind is the new state.
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  SELECT NEW.owner,
         NEW.state, NEW.vm_id, '', NEW.state,
         CASE WHEN NEW.state = 'error' THEN NEW.error ELSE '' END
  WHERE OLD.pool_id = '' AND OLD.state != NEW.state;
END;
CREATE TRIGGER events_vm_delete AFTER DELETE ON vms WHEN OLD.pool_id = ''
BEGIN
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (OLD.owner,
          'deleted', OLD.vm_id, '', '', '');
END;
CREATE TRIGGER events_snapshot_insert AFTER INSERT ON snapshots
BEGIN
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (NEW.owner,
          'snapshot_created', NEW.vm_id, NEW.snapshot_id, '', '');
END;
CREATE TRIGGER events_snapshot_delete AFTER DELETE ON snapshots
BEGIN
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (OLD.owner,
          'snapshot_deleted', OLD.vm_id, OLD.snapshot_id, '', '');
END;
CREATE TRIGGER events_image_insert AFTER INSERT ON images
BEGIN
  INSERT INTO new_events (owner, kind, vm_id, snapshot_id, state, detail)
  VALUES (NEW.owner,
          'image_built', '', '', '', NEW.digest);
END;
CREATE TRIGGER events_prune AFTER INSERT ON events WHEN NEW.event_id % 1000 = 0
BEGIN
  UPDATE event_settings
  SET pruned_through = max(pruned_through, NEW.event_id - max_events);
  DELETE FROM events WHERE event_id <= (SELECT pruned_through FROM event_settings);
END;
)sql",
    // 15: the same for host mounts (VmConfig.mounts), which a daemon from
    // before them would drop, booting the VM without its mounts.
    R"sql(
SELECT 1;
)sql",
};
static_assert(std::size(kMigrations) == kSchemaVersion,
              "one migration per schema version");

// Column lists shared by the statements below; the Read*Row and Bind*Row
// functions depend on their order.
constexpr absl::string_view kSelectVms =
    "SELECT vm_id, state, config, network, created_at, updated_at, error, "
    "vmm_pid, restored_from, owner, vmm_uid, pending_fixup, pool_id FROM vms ";
constexpr const char* kInsertVm =
    "INSERT INTO vms (vm_id, state, config, network, created_at, updated_at, "
    "error, vmm_pid, restored_from, owner, pending_fixup, pool_id) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
constexpr const char* kUpdateVm =
    "UPDATE vms SET state = ?2, config = ?3, network = ?4, created_at = ?5, "
    "updated_at = ?6, error = ?7, vmm_pid = ?8, restored_from = ?9, owner = ?10, "
    "pending_fixup = ?11, pool_id = ?12 "
    "WHERE vm_id = ?1";

constexpr absl::string_view kSelectSnapshots =
    "SELECT snapshot_id, vm_id, snapshot_path, mem_file_path, disk_path, "
    "vm_config, network_config, created_at, restored, restored_vm_id, "
    "size_bytes, accelerator, owner, integrity, labels FROM snapshots ";
constexpr const char* kInsertSnapshot =
    "INSERT INTO snapshots (snapshot_id, vm_id, snapshot_path, mem_file_path, "
    "disk_path, vm_config, network_config, created_at, restored, "
    "restored_vm_id, size_bytes, accelerator, owner, integrity, labels) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";
constexpr const char* kUpdateSnapshot =
    "UPDATE snapshots SET vm_id = ?2, snapshot_path = ?3, mem_file_path = ?4, "
    "disk_path = ?5, vm_config = ?6, network_config = ?7, created_at = ?8, "
    "restored = ?9, restored_vm_id = ?10, size_bytes = ?11, accelerator = ?12, "
    "owner = ?13, integrity = ?14, labels = ?15 WHERE snapshot_id = ?1";

absl::StatusOr<int> ReadUserVersion(sqlite3* db, absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db, "PRAGMA user_version", what));
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(db, what);
  return sqlite3_column_int(stmt.get(), 0);
}

absl::Status CheckNotNewer(int version) {
  if (version <= kSchemaVersion) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "state database schema version ", version,
      " is newer than this smolvmd supports (", kSchemaVersion,
      "): upgrade smolvmd"));
}

absl::Status Migrate(sqlite3* db, const std::string& path) {
  SMOLVM_ASSIGN_OR_RETURN(
      int current,
      ReadUserVersion(db, absl::StrCat("read schema version of ", path)));
  for (int version = current + 1; version <= kSchemaVersion; ++version) {
    const std::string what = absl::StrCat("migrate state database ", path,
                                          " to schema version ", version);
    SMOLVM_RETURN_IF_ERROR(Exec(db, "BEGIN IMMEDIATE", what));
    absl::Cleanup rollback = [db] {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    };
    // Another smolvmd may have migrated since the read above; look again
    // now that this transaction holds the write lock.
    SMOLVM_ASSIGN_OR_RETURN(current, ReadUserVersion(db, what));
    SMOLVM_RETURN_IF_ERROR(CheckNotNewer(current));
    if (current >= version) continue;
    SMOLVM_RETURN_IF_ERROR(Exec(db, kMigrations[version - 1], what));
    // PRAGMA takes no bound parameters; `version` is our own constant.
    SMOLVM_RETURN_IF_ERROR(
        Exec(db, absl::StrCat("PRAGMA user_version = ", version), what));
    SMOLVM_RETURN_IF_ERROR(Exec(db, "COMMIT", what));
    std::move(rollback).Cancel();
  }
  return absl::OkStatus();
}

absl::Status Configure(sqlite3* db, const std::string& path) {
  const std::string what = absl::StrCat("open state database ", path);
  sqlite3_extended_result_codes(db, 1);  // SQLITE_CONSTRAINT_PRIMARYKEY.
  if (sqlite3_busy_timeout(db, kBusyTimeoutMs) != SQLITE_OK) {
    return SqliteError(db, what);
  }
  // Refuse a newer database before changing anything in it.
  SMOLVM_ASSIGN_OR_RETURN(int version, ReadUserVersion(db, what));
  SMOLVM_RETURN_IF_ERROR(CheckNotNewer(version));

  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db, "PRAGMA journal_mode=WAL", what));
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(db, what);
  const char* mode =
      reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), 0));
  std::string journal_mode = mode == nullptr ? "" : mode;
  if (journal_mode != "wal" && path != ":memory:") {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": cannot enable the WAL journal (journal_mode is \"",
        journal_mode, "\"); put the state directory on a local filesystem"));
  }
  // FULL also syncs the WAL on every commit: a recorded snapshot or running
  // VM must survive a power loss, not only a daemon crash.
  SMOLVM_RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous=FULL", what));
  return Exec(db, "PRAGMA foreign_keys=ON", what);
}


absl::Time ColumnTime(sqlite3_stmt* stmt, int column) {
  return absl::FromUnixMicros(sqlite3_column_int64(stmt, column));
}

// JSON encoding of the config structs: one key per field, named as the field.

const char* EgressModeName(EgressMode mode) {
  switch (mode) {
    case EgressMode::kOpen: return "open";
    case EgressMode::kOff: return "off";
    case EgressMode::kRestricted: return "restricted";
  }
  return "open";
}

Json ToJson(const EgressPolicy& egress) {
  Json out{{"mode", EgressModeName(egress.mode)}, {"allow_cidrs", egress.allow_cidrs}};
  // Only when set (schema 11 keeps daemons from before deny_cidrs away).
  if (!egress.deny_cidrs.empty()) out["deny_cidrs"] = egress.deny_cidrs;
  // The same (schema 12).
  if (!egress.allow_domains.empty()) out["allow_domains"] = egress.allow_domains;
  if (!egress.deny_domains.empty()) out["deny_domains"] = egress.deny_domains;
  return out;
}

Json ToJson(const std::vector<PortForward>& forwards) {
  Json list = Json::array();
  for (const auto& f : forwards) {
    list.push_back(Json{{"host_ip", f.host_ip}, {"host_port", f.host_port},
                        {"guest_port", f.guest_port}, {"protocol", f.protocol}});
  }
  return list;
}

Json ToJson(const Lifetime& lifetime) {
  Json out{{"max_lifetime_s", absl::ToInt64Seconds(lifetime.max_lifetime)},
           {"max_lifetime_action", LifetimeActionName(lifetime.max_lifetime_action)},
           {"idle_timeout_s", absl::ToInt64Seconds(lifetime.idle_timeout)},
           {"idle_action", LifetimeActionName(lifetime.idle_action)},
           {"auto_resume", lifetime.auto_resume},
           {"idle_paused", lifetime.idle_paused},
           {"snapshot_id", lifetime.snapshot_id}};
  if (lifetime.expires_at != absl::InfinitePast()) {
    out["expires_at_ms"] = absl::ToUnixMillis(lifetime.expires_at);
  }
  return out;
}

Json ToJson(const std::vector<Mount>& mounts) {
  Json list = Json::array();
  for (const auto& m : mounts) {
    list.push_back(Json{{"host_path", m.host_path}, {"guest_path", m.guest_path},
                        {"read_only", m.read_only},
                        {"detach_on_snapshot", m.detach_on_snapshot}});
  }
  return list;
}

Json ToJson(const VmConfig& config) {
  Json out{{"vm_id", config.vm_id},
              {"vcpu_count", config.vcpu_count},
              {"memory_mib", config.memory_mib},
              {"kernel_path", config.kernel_path},
              {"initrd_path", config.initrd_path},
              {"rootfs_path", config.rootfs_path},
              {"image", config.image},
              {"image_digest", config.image_digest},
              {"disk_size_mib", config.disk_size_mib},
              {"working_dir", config.working_dir},
              {"boot_args", config.boot_args},
              {"env", config.env},
              {"egress", ToJson(config.egress)},
              {"port_forwards", ToJson(config.port_forwards)},
              {"labels", config.labels}};
  // Only when there is one (schema 13 keeps daemons from before away; the
  // index vms_lifetime holds exactly these VMs).
  if (!config.lifetime.empty()) out["lifetime"] = ToJson(config.lifetime);
  // Only when set (schema 15 keeps daemons from before mounts away).
  if (!config.mounts.empty()) out["mounts"] = ToJson(config.mounts);
  return out;
}

Json ToJson(const NetworkConfig& network) {
  return Json{{"guest_ip", network.guest_ip},
              {"gateway_ip", network.gateway_ip},
              {"netmask", network.netmask},
              {"tap_device", network.tap_device},
              {"guest_mac", network.guest_mac},
              {"dns_server", network.dns_server},
              {"port_forwards", ToJson(network.port_forwards)},
              {"egress", ToJson(network.egress)}};
}

// Serializes `json`; nlohmann throws on strings that are not UTF-8, which
// must not escape this module.
absl::StatusOr<std::string> Dump(const Json& json, absl::string_view what) {
  try {
    return json.dump();
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", e.what()));
  }
}

// Reads `key` into `*out`. A missing key keeps the default, so rows written
// before a field existed still decode; a key of the wrong type fails.
bool ReadField(const Json& object, const char* key, std::string* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_string()) return false;
  *out = it->get<std::string>();
  return true;
}

bool ReadField(const Json& object, const char* key,
               std::map<std::string, std::string>* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_object()) return false;
  for (const auto& [k, v] : it->items()) {
    if (!v.is_string()) return false;
    (*out)[k] = v.get<std::string>();
  }
  return true;
}

bool ReadField(const Json& object, const char* key, uint32_t* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_number_unsigned() ||
      it->get<uint64_t>() > std::numeric_limits<uint32_t>::max()) {
    return false;
  }
  *out = static_cast<uint32_t>(it->get<uint64_t>());
  return true;
}

bool ReadField(const Json& object, const char* key, EgressPolicy* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_object()) return false;
  std::string mode = "open";
  if (!ReadField(*it, "mode", &mode)) return false;
  if (mode == "open") {
    out->mode = EgressMode::kOpen;
  } else if (mode == "off") {
    out->mode = EgressMode::kOff;
  } else if (mode == "restricted") {
    out->mode = EgressMode::kRestricted;
  } else {
    return false;
  }
  for (const auto& [key, list] : {std::pair{"allow_cidrs", &out->allow_cidrs},
                                  std::pair{"deny_cidrs", &out->deny_cidrs},
                                  std::pair{"allow_domains", &out->allow_domains},
                                  std::pair{"deny_domains", &out->deny_domains}}) {
    auto cidrs = it->find(key);
    if (cidrs == it->end()) continue;
    if (!cidrs->is_array()) return false;
    for (const auto& c : *cidrs) {
      if (!c.is_string()) return false;
      list->push_back(c.get<std::string>());
    }
  }
  return true;
}

bool ReadField(const Json& object, const char* key, bool* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_boolean()) return false;
  *out = it->get<bool>();
  return true;
}

bool ReadField(const Json& object, const char* key, int64_t* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_number_integer()) return false;
  *out = it->get<int64_t>();
  return true;
}

bool ReadField(const Json& object, const char* key, LifetimeAction* out) {
  std::string name = LifetimeActionName(*out);
  if (!ReadField(object, key, &name)) return false;
  auto action = ParseLifetimeAction(name);
  if (!action) return false;
  *out = *action;
  return true;
}

bool ReadField(const Json& object, const char* key, Lifetime* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_object()) return false;
  int64_t max_s = 0, idle_s = 0, expires_ms = 0;
  bool has_expiry = it->contains("expires_at_ms");
  if (!ReadField(*it, "max_lifetime_s", &max_s) ||
      !ReadField(*it, "max_lifetime_action", &out->max_lifetime_action) ||
      !ReadField(*it, "idle_timeout_s", &idle_s) ||
      !ReadField(*it, "idle_action", &out->idle_action) ||
      !ReadField(*it, "auto_resume", &out->auto_resume) ||
      !ReadField(*it, "idle_paused", &out->idle_paused) ||
      !ReadField(*it, "snapshot_id", &out->snapshot_id) ||
      !ReadField(*it, "expires_at_ms", &expires_ms)) {
    return false;
  }
  out->max_lifetime = absl::Seconds(max_s);
  out->idle_timeout = absl::Seconds(idle_s);
  if (has_expiry) out->expires_at = absl::FromUnixMillis(expires_ms);
  return true;
}

bool ReadField(const Json& object, const char* key, std::vector<Mount>* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_array()) return false;
  for (const auto& j : *it) {
    Mount m;
    if (!j.is_object() || !ReadField(j, "host_path", &m.host_path) ||
        !ReadField(j, "guest_path", &m.guest_path) || !ReadField(j, "read_only", &m.read_only) ||
        !ReadField(j, "detach_on_snapshot", &m.detach_on_snapshot)) {
      return false;
    }
    out->push_back(std::move(m));
  }
  return true;
}

bool ReadField(const Json& object, const char* key, std::vector<PortForward>* out) {
  auto it = object.find(key);
  if (it == object.end()) return true;
  if (!it->is_array()) return false;
  for (const auto& f : *it) {
    PortForward pf;
    if (!f.is_object() || !ReadField(f, "host_ip", &pf.host_ip) ||
        !ReadField(f, "host_port", &pf.host_port) ||
        !ReadField(f, "guest_port", &pf.guest_port) ||
        !ReadField(f, "protocol", &pf.protocol)) {
      return false;
    }
    out->push_back(pf);
  }
  return true;
}

absl::Status BadColumn(const char* kind, const std::string& id,
                       const char* column, absl::string_view problem) {
  return absl::DataLossError(absl::StrCat("decode ", Quoted(kind, id), ": ",
                                          column, " ", problem));
}

absl::StatusOr<VmConfig> DecodeVmConfig(const std::string& text,
                                        const char* kind, const std::string& id,
                                        const char* column) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  VmConfig config;
  if (json.is_object() && ReadField(json, "vm_id", &config.vm_id) &&
      ReadField(json, "vcpu_count", &config.vcpu_count) &&
      ReadField(json, "memory_mib", &config.memory_mib) &&
      ReadField(json, "kernel_path", &config.kernel_path) &&
      ReadField(json, "initrd_path", &config.initrd_path) &&
      ReadField(json, "rootfs_path", &config.rootfs_path) &&
      ReadField(json, "image", &config.image) &&
      ReadField(json, "image_digest", &config.image_digest) &&
      ReadField(json, "disk_size_mib", &config.disk_size_mib) &&
      ReadField(json, "working_dir", &config.working_dir) &&
      ReadField(json, "boot_args", &config.boot_args) &&
      ReadField(json, "env", &config.env) &&
      ReadField(json, "egress", &config.egress) &&
      ReadField(json, "port_forwards", &config.port_forwards) &&
      ReadField(json, "labels", &config.labels) &&
      ReadField(json, "lifetime", &config.lifetime) && ReadField(json, "mounts", &config.mounts)) {
    return config;
  }
  return BadColumn(kind, id, column, "is not a VmConfig JSON object");
}

absl::StatusOr<NetworkConfig> DecodeNetworkConfig(const std::string& text,
                                                  const char* kind,
                                                  const std::string& id,
                                                  const char* column) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  NetworkConfig network;
  if (json.is_object() && ReadField(json, "guest_ip", &network.guest_ip) &&
      ReadField(json, "gateway_ip", &network.gateway_ip) &&
      ReadField(json, "netmask", &network.netmask) &&
      ReadField(json, "tap_device", &network.tap_device) &&
      ReadField(json, "guest_mac", &network.guest_mac) &&
      ReadField(json, "dns_server", &network.dns_server) &&
      ReadField(json, "port_forwards", &network.port_forwards) &&
      ReadField(json, "egress", &network.egress)) {
    return network;
  }
  return BadColumn(kind, id, column, "is not a NetworkConfig JSON object");
}

// The integrity column: {"checksums": {"vmstate", "mem", "disk"},
// "verified": {"vmstate": stamp, "mem": stamp, "disk": stamp}}, each key
// present only when known; a stamp is {"ino", "size", "mtime_ns",
// "ctime_ns"}.

Json ToJson(const FileStamp& stamp) {
  return Json{{"ino", stamp.ino},
              {"size", stamp.size},
              {"mtime_ns", stamp.mtime_ns},
              {"ctime_ns", stamp.ctime_ns}};
}

Json IntegrityJson(const SnapshotRecord& snapshot) {
  Json json = Json::object();
  if (snapshot.checksums) {
    json["checksums"] = Json{{"vmstate", snapshot.checksums->vmstate},
                             {"mem", snapshot.checksums->mem},
                             {"disk", snapshot.checksums->disk}};
  }
  if (snapshot.verified_stamps) {
    json["verified"] = Json{{"vmstate", ToJson(snapshot.verified_stamps->vmstate)},
                            {"mem", ToJson(snapshot.verified_stamps->mem)},
                            {"disk", ToJson(snapshot.verified_stamps->disk)}};
  }
  return json;
}

bool ReadStamp(const Json& object, const char* key, FileStamp* out) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_object()) return false;
  for (const char* field : {"ino", "size", "mtime_ns", "ctime_ns"}) {
    auto f = it->find(field);
    if (f == it->end() || !f->is_number_integer()) return false;
  }
  if (!it->at("ino").is_number_unsigned() || !it->at("size").is_number_unsigned()) {
    return false;
  }
  out->ino = it->at("ino").get<uint64_t>();
  out->size = it->at("size").get<uint64_t>();
  out->mtime_ns = it->at("mtime_ns").get<int64_t>();
  out->ctime_ns = it->at("ctime_ns").get<int64_t>();
  return true;
}

absl::Status DecodeIntegrity(const std::string& text, const std::string& id,
                             SnapshotRecord* out) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) {
    return BadColumn("snapshot", id, "integrity", "is not a JSON object");
  }
  if (auto it = json.find("checksums"); it != json.end()) {
    SnapshotChecksums c;
    if (!it->is_object() || !it->contains("vmstate") || !it->contains("mem") ||
        !it->contains("disk") || !ReadField(*it, "vmstate", &c.vmstate) ||
        !ReadField(*it, "mem", &c.mem) || !ReadField(*it, "disk", &c.disk)) {
      return BadColumn("snapshot", id, "integrity", "has malformed checksums");
    }
    out->checksums = std::move(c);
  }
  if (auto it = json.find("verified"); it != json.end()) {
    SnapshotStamps s;
    if (!it->is_object() || !ReadStamp(*it, "vmstate", &s.vmstate) ||
        !ReadStamp(*it, "mem", &s.mem) || !ReadStamp(*it, "disk", &s.disk)) {
      return BadColumn("snapshot", id, "integrity", "has malformed file stamps");
    }
    out->verified_stamps = s;
  }
  return absl::OkStatus();
}

// Row codecs; the column order is that of kSelect*, kInsert* and kUpdate*.

absl::StatusOr<VmRecord> ReadVmRow(sqlite3_stmt* stmt) {
  VmRecord vm;
  vm.vm_id = ColumnString(stmt, 0);
  std::string state = ColumnString(stmt, 1);
  std::optional<VmState> parsed = ParseVmState(state);
  if (!parsed) {
    return BadColumn("vm", vm.vm_id, "state",
                     absl::StrCat("\"", state, "\" is not a known state"));
  }
  vm.state = *parsed;
  SMOLVM_ASSIGN_OR_RETURN(
      vm.config,
      DecodeVmConfig(ColumnString(stmt, 2), "vm", vm.vm_id, "config"));
  SMOLVM_ASSIGN_OR_RETURN(
      vm.network,
      DecodeNetworkConfig(ColumnString(stmt, 3), "vm", vm.vm_id, "network"));
  vm.created_at = ColumnTime(stmt, 4);
  vm.updated_at = ColumnTime(stmt, 5);
  vm.error = ColumnString(stmt, 6);
  vm.vmm_pid = sqlite3_column_int64(stmt, 7);
  vm.restored_from = ColumnString(stmt, 8);
  vm.owner = ColumnString(stmt, 9);
  vm.vmm_uid = static_cast<uint32_t>(sqlite3_column_int64(stmt, 10));
  vm.pending_fixup = ColumnString(stmt, 11);
  vm.pool_id = ColumnString(stmt, 12);
  return vm;
}

absl::StatusOr<Stmt> PrepareVmWrite(sqlite3* db, const char* sql,
                                    const VmRecord& vm, absl::Time updated_at,
                                    absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(std::string config, Dump(ToJson(vm.config), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string network, Dump(ToJson(vm.network), what));
  return Prepare(db, sql, what, vm.vm_id, std::string(VmStateName(vm.state)),
                 config, network, absl::ToUnixMicros(vm.created_at),
                 absl::ToUnixMicros(updated_at), vm.error, vm.vmm_pid,
                 vm.restored_from, vm.owner, vm.pending_fixup, vm.pool_id);
}

absl::StatusOr<SnapshotRecord> ReadSnapshotRow(sqlite3_stmt* stmt) {
  SnapshotRecord snapshot;
  snapshot.snapshot_id = ColumnString(stmt, 0);
  const std::string& id = snapshot.snapshot_id;
  snapshot.vm_id = ColumnString(stmt, 1);
  snapshot.snapshot_path = ColumnString(stmt, 2);
  snapshot.mem_file_path = ColumnString(stmt, 3);
  snapshot.disk_path = ColumnString(stmt, 4);
  SMOLVM_ASSIGN_OR_RETURN(
      snapshot.vm_config,
      DecodeVmConfig(ColumnString(stmt, 5), "snapshot", id, "vm_config"));
  SMOLVM_ASSIGN_OR_RETURN(snapshot.network_config,
                          DecodeNetworkConfig(ColumnString(stmt, 6), "snapshot",
                                              id, "network_config"));
  snapshot.created_at = ColumnTime(stmt, 7);
  snapshot.restored = sqlite3_column_int64(stmt, 8) != 0;
  if (sqlite3_column_type(stmt, 9) != SQLITE_NULL) {
    snapshot.restored_vm_id = ColumnString(stmt, 9);
  }
  // SQLite integers are signed; the cast round-trips every uint64_t.
  snapshot.size_bytes = static_cast<uint64_t>(sqlite3_column_int64(stmt, 10));
  snapshot.accelerator = ColumnString(stmt, 11);
  snapshot.owner = ColumnString(stmt, 12);
  SMOLVM_RETURN_IF_ERROR(DecodeIntegrity(ColumnString(stmt, 13), id, &snapshot));
  Json labels = Json::parse(ColumnString(stmt, 14), nullptr, /*allow_exceptions=*/false);
  if (!labels.is_object() || !ReadField(Json{{"labels", labels}}, "labels", &snapshot.labels)) {
    return BadColumn("snapshot", id, "labels", "is not a JSON object of strings");
  }
  return snapshot;
}

absl::StatusOr<Stmt> PrepareSnapshotWrite(sqlite3* db, const char* sql,
                                          const SnapshotRecord& snapshot,
                                          absl::string_view what) {
  SMOLVM_ASSIGN_OR_RETURN(std::string vm_config,
                          Dump(ToJson(snapshot.vm_config), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string network_config,
                          Dump(ToJson(snapshot.network_config), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string integrity, Dump(IntegrityJson(snapshot), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string labels, Dump(Json(snapshot.labels), what));
  return Prepare(db, sql, what, snapshot.snapshot_id, snapshot.vm_id,
                 snapshot.snapshot_path, snapshot.mem_file_path,
                 snapshot.disk_path, vm_config, network_config,
                 absl::ToUnixMicros(snapshot.created_at),
                 int64_t{snapshot.restored ? 1 : 0}, snapshot.restored_vm_id,
                 static_cast<int64_t>(snapshot.size_bytes),
                 snapshot.accelerator, snapshot.owner, integrity, labels);
}

// Looks up one row by primary key (bound as ?1).
template <typename Record>
absl::StatusOr<Record> GetRow(sqlite3* db, const std::string& sql,
                              const char* kind, const std::string& id,
                              absl::StatusOr<Record> (*read)(sqlite3_stmt*)) {
  const std::string what = absl::StrCat("get ", Quoted(kind, id));
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db, sql, what, id));
  int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE) return NotFound(kind, id);
  if (rc != SQLITE_ROW) return SqliteError(db, what);
  return read(stmt.get());
}

// SQL: every key=value of the JSON object bound as `param` is in the JSON
// object at `path` of `column` ("{}" matches every row). Keys go into the
// path double-quoted; ValidateLabels keeps '"' out of them.
std::string LabelsMatch(absl::string_view column, absl::string_view path,
                        absl::string_view param) {
  return absl::StrCat("NOT EXISTS (SELECT 1 FROM json_each(", param, ") AS f WHERE json_extract(",
                      column, ", '", path, ".\"' || f.key || '\"') IS NOT f.value)");
}

// SQL: the VmConfig JSON in `column` was made from one of the images in the
// JSON array bound as `param`, by reference or digest ("[]" matches all).
std::string ImageMatches(absl::string_view column, absl::string_view param) {
  return absl::StrCat("(", param, " = '[]' OR json_extract(", column,
                      ", '$.image') IN (SELECT value FROM json_each(", param,
                      ")) OR json_extract(", column,
                      ", '$.image_digest') IN (SELECT value FROM json_each(", param, ")))");
}

// The number of rows a list call returns: page_size with its default and cap
// applied. Also checks `page_token`, which is the last id of the previous page.
absl::StatusOr<int> PageLimit(int page_size, const std::string& page_token) {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid page_size ", page_size, ": must be >= 0"));
  }
  if (!page_token.empty() && !ValidateId(page_token, "page_token").ok()) {
    return absl::InvalidArgumentError(
        "invalid page_token: pass the next_page_token of a previous call");
  }
  if (page_size == 0) return kDefaultPageSize;
  return std::min(page_size, kMaxPageSize);
}

// Turns up to limit + 1 rows into a page: a row past `limit` means there is
// another page, which starts after the last id of this one.
template <typename Record>
Page<Record> MakePage(std::vector<Record> rows, int limit,
                      std::string Record::*id) {
  Page<Record> page;
  if (rows.size() > static_cast<size_t>(limit)) {
    rows.resize(limit);
    page.next_page_token = rows.back().*id;
  }
  page.items = std::move(rows);
  return page;
}

}  // namespace

Store::Store(sqlite3* db) : db_(db) {
  sqlite3_commit_hook(db, &Store::OnCommit, this);
}

int Store::OnCommit(void* self) {
  auto* store = static_cast<Store*>(self);
  absl::MutexLock lock(&store->commit_mu_);
  ++store->commits_;
  return 0;  // Let the commit go on.
}

Store::~Store() { sqlite3_close_v2(db_); }

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
      nullptr);
  // sqlite3_open_v2 returns a handle even on most failures; it must be closed.
  UniqueDb db(raw);
  if (rc != SQLITE_OK) {
    return absl::InternalError(
        absl::StrCat("open state database ", path, ": ",
                     raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  }
  SMOLVM_RETURN_IF_ERROR(Configure(db.get(), path));
  SMOLVM_RETURN_IF_ERROR(Migrate(db.get(), path));
  return std::unique_ptr<Store>(new Store(db.release()));
}

absl::Status Store::InsertVm(const VmRecord& vm) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("InsertVm"));
  const std::string what = absl::StrCat("insert ", Quoted("vm", vm.vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, PrepareVmWrite(db_, kInsertVm, vm, vm.updated_at, what));
  return StepWrite(db_, stmt.get(), "vm", vm.vm_id, what);
}

absl::Status Store::UpdateVm(const VmRecord& vm) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("UpdateVm"));
  const std::string what = absl::StrCat("update ", Quoted("vm", vm.vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, PrepareVmWrite(db_, kUpdateVm, vm, absl::Now(), what));
  return StepWrite(db_, stmt.get(), "vm", vm.vm_id, what);
}

absl::StatusOr<VmRecord> Store::GetVm(const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  return GetRow(db_, absl::StrCat(kSelectVms, "WHERE vm_id = ?1"), "vm", vm_id,
                &ReadVmRow);
}

absl::Status Store::DeleteVm(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("DeleteVm"));
  const std::string what = absl::StrCat("delete ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, "DELETE FROM vms WHERE vm_id = ?1", what, vm_id));
  return StepWrite(db_, stmt.get(), "vm", vm_id, what);
}

absl::StatusOr<Page<VmRecord>> Store::ListVms(int page_size,
                                              const std::string& page_token,
                                              const std::string& owner,
                                              const ListFilter& filter) {
  SMOLVM_ASSIGN_OR_RETURN(int limit, PageLimit(page_size, page_token));
  constexpr absl::string_view what = "list vms";
  Json states = Json::array();
  for (VmState state : filter.states) states.push_back(VmStateName(state));
  SMOLVM_ASSIGN_OR_RETURN(std::string labels_json, Dump(Json(filter.labels), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string states_json, Dump(states, what));
  SMOLVM_ASSIGN_OR_RETURN(std::string images_json, Dump(Json(filter.images), what));
  absl::MutexLock lock(&mu_);
  // Ids are non-empty, so the first page's token "" sorts before all of them;
  // owner "" matches every row. The filters are JSON ("{}"/"[]" = any),
  // matched in SQL so that a page is a page of matches.
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              absl::StrCat(kSelectVms,
                           "WHERE vm_id > ?1 AND (?2 = '' OR owner = ?2) AND pool_id = '' AND ",
                           LabelsMatch("config", "$.labels", "?4"),
                           " AND (?5 = '[]' OR state IN (SELECT value FROM json_each(?5)))"
                           " AND ", ImageMatches("config", "?6"),
                           " ORDER BY vm_id LIMIT ?3"),
              what, page_token, owner, int64_t{limit} + 1, labels_json, states_json,
              images_json));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<VmRecord> rows,
                          ReadRows(db_, stmt.get(), what, &ReadVmRow));
  return MakePage(std::move(rows), limit, &VmRecord::vm_id);
}

absl::StatusOr<std::vector<VmRecord>> Store::AllVms() {
  constexpr absl::string_view what = "list vms";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, absl::StrCat(kSelectVms, "ORDER BY vm_id"), what));
  return ReadRows(db_, stmt.get(), what, &ReadVmRow);
}

absl::StatusOr<std::vector<VmRecord>> Store::LifetimeVms() {
  constexpr absl::string_view what = "list vms with a lifetime";
  absl::MutexLock lock(&mu_);
  // The same expression as the partial index vms_lifetime, so it is used.
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              absl::StrCat(kSelectVms,
                           "WHERE json_extract(config, '$.lifetime') IS NOT NULL ORDER BY vm_id"),
              what));
  return ReadRows(db_, stmt.get(), what, &ReadVmRow);
}

absl::StatusOr<std::vector<VmRecord>> Store::PoolVms(const std::string& pool_id) {
  constexpr absl::string_view what = "list pool members";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      pool_id.empty()
          // The partial index vms_pool_id holds exactly these rows.
          ? Prepare(db_, absl::StrCat(kSelectVms, "WHERE pool_id != '' ORDER BY vm_id"), what)
          : Prepare(db_, absl::StrCat(kSelectVms, "WHERE pool_id = ?1 ORDER BY vm_id"), what,
                    pool_id));
  return ReadRows(db_, stmt.get(), what, &ReadVmRow);
}

absl::Status Store::InsertSnapshot(const SnapshotRecord& snapshot) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("InsertSnapshot"));
  const std::string what =
      absl::StrCat("insert ", Quoted("snapshot", snapshot.snapshot_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, PrepareSnapshotWrite(db_, kInsertSnapshot, snapshot, what));
  return StepWrite(db_, stmt.get(), "snapshot", snapshot.snapshot_id, what);
}

absl::Status Store::UpdateSnapshot(const SnapshotRecord& snapshot) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("UpdateSnapshot"));
  const std::string what =
      absl::StrCat("update ", Quoted("snapshot", snapshot.snapshot_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, PrepareSnapshotWrite(db_, kUpdateSnapshot, snapshot, what));
  return StepWrite(db_, stmt.get(), "snapshot", snapshot.snapshot_id, what);
}

absl::Status Store::SetSnapshotVerified(const std::string& snapshot_id,
                                        const SnapshotStamps& stamps) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("SetSnapshotVerified"));
  const std::string what =
      absl::StrCat("record the verification of ", Quoted("snapshot", snapshot_id));
  absl::MutexLock lock(&mu_);
  // Read, change, write under one lock: no other write of this store lands
  // in between, so only the stamps change.
  SMOLVM_ASSIGN_OR_RETURN(
      SnapshotRecord snapshot,
      GetRow(db_, absl::StrCat(kSelectSnapshots, "WHERE snapshot_id = ?1"),
             "snapshot", snapshot_id, &ReadSnapshotRow));
  snapshot.verified_stamps = stamps;
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, PrepareSnapshotWrite(db_, kUpdateSnapshot, snapshot, what));
  return StepWrite(db_, stmt.get(), "snapshot", snapshot_id, what);
}

absl::StatusOr<SnapshotRecord> Store::GetSnapshot(
    const std::string& snapshot_id) {
  absl::MutexLock lock(&mu_);
  return GetRow(db_, absl::StrCat(kSelectSnapshots, "WHERE snapshot_id = ?1"),
                "snapshot", snapshot_id, &ReadSnapshotRow);
}

absl::Status Store::DeleteSnapshot(const std::string& snapshot_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("DeleteSnapshot"));
  const std::string what =
      absl::StrCat("delete ", Quoted("snapshot", snapshot_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, "DELETE FROM snapshots WHERE snapshot_id = ?1",
                         what, snapshot_id));
  return StepWrite(db_, stmt.get(), "snapshot", snapshot_id, what);
}

absl::StatusOr<Page<SnapshotRecord>> Store::ListSnapshots(
    int page_size, const std::string& page_token, const std::string& vm_id,
    const std::string& owner, const ListFilter& filter) {
  SMOLVM_ASSIGN_OR_RETURN(int limit, PageLimit(page_size, page_token));
  constexpr absl::string_view what = "list snapshots";
  SMOLVM_ASSIGN_OR_RETURN(std::string labels_json, Dump(Json(filter.labels), what));
  SMOLVM_ASSIGN_OR_RETURN(std::string images_json, Dump(Json(filter.images), what));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              absl::StrCat(kSelectSnapshots,
                           "WHERE snapshot_id > ?1 AND (?2 = '' OR vm_id = ?2) "
                           "AND (?3 = '' OR owner = ?3) AND ",
                           LabelsMatch("labels", "$", "?5"), " AND ",
                           ImageMatches("vm_config", "?6"),
                           " ORDER BY snapshot_id LIMIT ?4"),
              what, page_token, vm_id, owner, int64_t{limit} + 1, labels_json, images_json));
  SMOLVM_ASSIGN_OR_RETURN(std::vector<SnapshotRecord> rows,
                          ReadRows(db_, stmt.get(), what, &ReadSnapshotRow));
  return MakePage(std::move(rows), limit, &SnapshotRecord::snapshot_id);
}

absl::StatusOr<std::vector<SnapshotRecord>> Store::AllSnapshots() {
  constexpr absl::string_view what = "list snapshots";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_, absl::StrCat(kSelectSnapshots, "ORDER BY snapshot_id"), what));
  return ReadRows(db_, stmt.get(), what, &ReadSnapshotRow);
}

absl::StatusOr<std::string> Store::AllocateAddress(
    const std::string& vm_id, const std::vector<std::string>& candidates) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("AllocateAddress"));
  const std::string what = absl::StrCat("allocate an address for ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt held, Prepare(db_, "SELECT ip FROM ip_allocations WHERE vm_id = ?1",
                                             what, vm_id));
  int rc = sqlite3_step(held.get());
  if (rc == SQLITE_ROW) return ColumnString(held.get(), 0);
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  SMOLVM_ASSIGN_OR_RETURN(Stmt all, Prepare(db_, "SELECT ip FROM ip_allocations", what));
  std::set<std::string> taken;
  while ((rc = sqlite3_step(all.get())) == SQLITE_ROW) taken.insert(ColumnString(all.get(), 0));
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  for (const auto& ip : candidates) {
    if (taken.count(ip)) continue;
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt insert,
        Prepare(db_, "INSERT INTO ip_allocations (ip, vm_id) VALUES (?1, ?2)", what, ip, vm_id));
    if (sqlite3_step(insert.get()) != SQLITE_DONE) return SqliteError(db_, what);
    return ip;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      what, ": all ", candidates.size(),
      " addresses of the pool are in use; delete VMs or configure a larger --subnet"));
}

absl::StatusOr<uint32_t> Store::AllocateVmmUid(const std::string& vm_id, uint32_t base,
                                              uint32_t count) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("AllocateVmmUid"));
  const std::string what = absl::StrCat("allocate a vmm uid for ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt held,
                          Prepare(db_, "SELECT vmm_uid FROM vms WHERE vm_id = ?1", what, vm_id));
  int rc = sqlite3_step(held.get());
  if (rc == SQLITE_DONE) return absl::NotFoundError(absl::StrCat(what, ": no such vm"));
  if (rc != SQLITE_ROW) return SqliteError(db_, what);
  int64_t current = sqlite3_column_int64(held.get(), 0);
  const int64_t first = base, last = int64_t{base} + count - 1;
  if (current >= first && current <= last) return static_cast<uint32_t>(current);
  // The lowest free uid of the range: the rows are ordered, so the first gap.
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt taken, Prepare(db_,
                          "SELECT vmm_uid FROM vms WHERE vmm_uid BETWEEN ?1 AND ?2 "
                          "ORDER BY vmm_uid",
                          what, first, last));
  int64_t candidate = first;
  while ((rc = sqlite3_step(taken.get())) == SQLITE_ROW) {
    if (sqlite3_column_int64(taken.get(), 0) != candidate) break;
    ++candidate;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SqliteError(db_, what);
  if (candidate > last) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": all ", count, " uids of the range ", first, "-", last,
        " are in use; delete VMs or widen [vmm] uid_count"));
  }
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt update,
      Prepare(db_, "UPDATE vms SET vmm_uid = ?2 WHERE vm_id = ?1", what, vm_id, candidate));
  if (sqlite3_step(update.get()) != SQLITE_DONE) return SqliteError(db_, what);
  return static_cast<uint32_t>(candidate);
}

absl::Status Store::ReserveAddress(const std::string& vm_id, const std::string& ip) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("ReserveAddress"));
  const std::string what = absl::StrCat("reserve address ", ip, " for ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt holder,
                          Prepare(db_, "SELECT vm_id FROM ip_allocations WHERE ip = ?1", what, ip));
  int rc = sqlite3_step(holder.get());
  if (rc == SQLITE_ROW) {
    std::string owner = ColumnString(holder.get(), 0);
    if (owner == vm_id) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": it is in use by ", Quoted("vm", owner)));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt insert,
      Prepare(db_, "INSERT INTO ip_allocations (ip, vm_id) VALUES (?1, ?2)", what, ip, vm_id));
  rc = sqlite3_step(insert.get());
  if (rc == SQLITE_CONSTRAINT_UNIQUE) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": the vm already holds another address"));
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  return absl::OkStatus();
}

absl::Status Store::ReleaseAddress(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("ReleaseAddress"));
  const std::string what = absl::StrCat("release the address of ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_, "DELETE FROM ip_allocations WHERE vm_id = ?1", what, vm_id));
  if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(db_, what);
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::string>> Store::AddressAllocations() {
  constexpr absl::string_view what = "list address allocations";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db_, "SELECT ip, vm_id FROM ip_allocations", what));
  std::map<std::string, std::string> out;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    out[ColumnString(stmt.get(), 0)] = ColumnString(stmt.get(), 1);
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  return out;
}

absl::StatusOr<int> Store::SchemaVersion() {
  absl::MutexLock lock(&mu_);
  return ReadUserVersion(db_, "read schema version");
}

absl::StatusOr<Store::Census> Store::TakeCensus() {
  constexpr absl::string_view what = "count the store's rows";
  Census census;
  absl::MutexLock lock(&mu_);
  {
    SMOLVM_ASSIGN_OR_RETURN(Stmt stmt,
                            Prepare(db_, "SELECT state, count(*) FROM vms GROUP BY state", what));
    int rc;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      census.vms_by_state[ColumnString(stmt.get(), 0)] =
          static_cast<uint64_t>(sqlite3_column_int64(stmt.get(), 1));
    }
    if (rc != SQLITE_DONE) return SqliteError(db_, what);
  }
  // One row of single counts.
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt,
      Prepare(db_,
              "SELECT (SELECT count(*) FROM vms WHERE pool_id != ''), "
              "(SELECT count(*) FROM snapshots), "
              "(SELECT coalesce(sum(size_bytes), 0) FROM snapshots), "
              "(SELECT count(*) FROM pools)",
              what));
  if (sqlite3_step(stmt.get()) != SQLITE_ROW) return SqliteError(db_, what);
  uint64_t* fields[] = {&census.pool_members, &census.snapshots, &census.snapshot_bytes,
                        &census.pools};
  for (int i = 0; i < 4; ++i) {
    *fields[i] = static_cast<uint64_t>(std::max<int64_t>(0, sqlite3_column_int64(stmt.get(), i)));
  }
  return census;
}

void Store::SetWriteFaultForTesting(
    std::function<absl::Status(std::string_view write)> fault) {
  write_fault_ = std::move(fault);
}

absl::Status Store::WriteFault(std::string_view write) {
  return write_fault_ ? write_fault_(write) : absl::OkStatus();
}

absl::Status Store::BeginOperation(const std::string& vm_id, const std::string& kind) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("BeginOperation"));
  const std::string what = absl::StrCat("record the ", kind, " of ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", what));
  auto rollback = absl::MakeCleanup([&] { (void)Exec(db_, "ROLLBACK", what); });
  {
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt stmt, Prepare(db_, "INSERT INTO operations (vm_id, kind, started_at) VALUES (?1, ?2, ?3)",
                           what, vm_id, kind, absl::ToUnixMicros(absl::Now())));
    int rc = sqlite3_step(stmt.get());
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return absl::AlreadyExistsError(
          absl::StrCat("another operation on ", Quoted("vm", vm_id), " is unfinished"));
    }
    if (rc != SQLITE_DONE) return SqliteError(db_, what);
  }
  {
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt stmt, Prepare(db_,
                           "INSERT INTO operation_previous_vms SELECT * FROM vms WHERE vm_id = ?1",
                           what, vm_id));
    if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(db_, what);
  }
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "COMMIT", what));
  std::move(rollback).Cancel();
  return absl::OkStatus();
}

absl::Status Store::EndOperation(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("EndOperation"));
  const std::string what = absl::StrCat("clear the operation of ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "BEGIN IMMEDIATE", what));
  auto rollback = absl::MakeCleanup([&] { (void)Exec(db_, "ROLLBACK", what); });
  for (const char* sql : {"DELETE FROM operations WHERE vm_id = ?1",
                          "DELETE FROM operation_previous_vms WHERE vm_id = ?1"}) {
    SMOLVM_ASSIGN_OR_RETURN(Stmt stmt, Prepare(db_, sql, what, vm_id));
    if (sqlite3_step(stmt.get()) != SQLITE_DONE) return SqliteError(db_, what);
  }
  SMOLVM_RETURN_IF_ERROR(Exec(db_, "COMMIT", what));
  std::move(rollback).Cancel();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PendingOperation>> Store::PendingOperations() {
  constexpr absl::string_view what = "list unfinished operations";
  absl::MutexLock lock(&mu_);
  SMOLVM_ASSIGN_OR_RETURN(
      Stmt stmt, Prepare(db_,
                         "SELECT o.vm_id, o.kind, p.vm_id IS NOT NULL FROM operations o "
                         "LEFT JOIN operation_previous_vms p ON p.vm_id = o.vm_id "
                         "ORDER BY o.started_at",
                         what));
  std::vector<PendingOperation> out;
  int rc;
  while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
    out.push_back({ColumnString(stmt.get(), 0), ColumnString(stmt.get(), 1),
                   sqlite3_column_int(stmt.get(), 2) != 0});
  }
  if (rc != SQLITE_DONE) return SqliteError(db_, what);
  return out;
}

absl::Status Store::RestorePreviousVm(const std::string& vm_id) {
  SMOLVM_RETURN_IF_ERROR(WriteFault("RestorePreviousVm"));
  const std::string what = absl::StrCat("put back the previous row of ", Quoted("vm", vm_id));
  absl::MutexLock lock(&mu_);
  // The replace fires only the vms insert trigger (no recursive triggers:
  // the replaced row's delete trigger does not run), whose 'created' or
  // 'restored' would be wrong: the event of a rollback is the state the VM
  // is back in, saying why.
  return InTransaction(db_, what, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt newest, Prepare(db_, "SELECT coalesce(max(event_id), 0) FROM events", what));
    if (sqlite3_step(newest.get()) != SQLITE_ROW) return SqliteError(db_, what);
    const int64_t before = sqlite3_column_int64(newest.get(), 0);
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt replace,
        Prepare(db_, "INSERT OR REPLACE INTO vms SELECT * FROM operation_previous_vms WHERE vm_id = ?1",
                what, vm_id));
    if (sqlite3_step(replace.get()) != SQLITE_DONE) return SqliteError(db_, what);
    SMOLVM_ASSIGN_OR_RETURN(
        Stmt relabel, Prepare(db_,
                              "UPDATE events SET kind = state, snapshot_id = '', "
                              "detail = 'an interrupted operation was rolled back' "
                              "WHERE event_id > ?2 AND vm_id = ?1",
                              what, vm_id, before));
    if (sqlite3_step(relabel.get()) != SQLITE_DONE) return SqliteError(db_, what);
    return absl::OkStatus();
  });
}

}  // namespace smolvm::store
