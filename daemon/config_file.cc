#include "daemon/config_file.h"

#include <functional>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "lib/base/file_util.h"
#include "toml++/toml.h"

namespace smolvm::daemon {
namespace {

// A configuration file is a few kilobytes; refuse anything absurd.
constexpr size_t kMaxFileBytes = 1 << 20;

// Checks one value and stores it; returns "" or the rule it broke
// ("must be an integer 1-65535").
using Setter = std::function<std::string(const toml::node&)>;

class Reader;

// One key of a table: either a value (`set`) or a sub-table (`table`).
struct Field {
  const char* key;
  Setter set;
  std::function<absl::Status(const Reader&, const toml::table&)> table;
};

// toml++ hands out std::string_view, which our Abseil does not accept.
std::string KeyStr(const toml::key& key) { return std::string(key.str()); }

// A key as written in the file, escaped if it is not a bare key: quoted
// keys may hold anything, and these names end up on a terminal.
std::string KeyLabel(absl::string_view key) {
  bool bare = !key.empty();
  for (char c : key) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) bare = false;
  }
  if (bare) return std::string(key);
  return absl::StrCat("\"", absl::CHexEscape(key), "\"");
}

// What the file had, for the error message.
std::string Describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: {
      std::string s = *node.value_exact<std::string>();
      if (s.size() > 40) s = s.substr(0, 40) + "...";
      return absl::StrCat("the string \"", absl::CHexEscape(s), "\"");
    }
    case toml::node_type::integer:
      return absl::StrCat("the integer ", *node.value_exact<int64_t>());
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return *node.value_exact<bool>() ? "true" : "false";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  // "<source>:<line>: [table] key: what".
  absl::Status Error(const toml::source_region& where, absl::string_view table,
                     absl::string_view key, absl::string_view what) const {
    std::string location = source_;
    if (where.begin.line > 0) absl::StrAppend(&location, ":", where.begin.line);
    std::string name = table.empty() ? KeyLabel(key)
                       : key.empty() ? absl::StrCat("[", table, "]")
                                     : absl::StrCat("[", table, "] ", KeyLabel(key));
    return absl::InvalidArgumentError(absl::StrCat(location, ": ", name, ": ", what));
  }

  // Applies every key of `t` (the table called `name`) with `fields`.
  absl::Status Apply(const toml::table& t, const std::string& name,
                     const std::vector<Field>& fields) const {
    for (auto&& [key, node] : t) {
      const Field* field = nullptr;
      for (const Field& f : fields) {
        if (KeyStr(key) == f.key) field = &f;
      }
      if (field == nullptr) {
        std::vector<std::string> known;
        for (const Field& f : fields) known.push_back(f.key);
        return Error(key.source(), name, KeyStr(key),
                     absl::StrCat("unknown key; [", name, "] takes ",
                                  absl::StrJoin(known, ", ")));
      }
      if (field->table) {
        const toml::table* sub = node.as_table();
        if (sub == nullptr) {
          return Error(node.source(), name, KeyStr(key),
                       absl::StrCat("must be a table ([", name, ".", field->key, "]), not ",
                                    Describe(node)));
        }
        if (auto s = field->table(*this, *sub); !s.ok()) return s;
        continue;
      }
      if (std::string rule = field->set(node); !rule.empty()) {
        return Error(node.source(), name, KeyStr(key),
                     absl::StrCat(rule, " (got ", Describe(node), ")"));
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string source_;
};

Setter String(std::string* field) {
  return [field](const toml::node& n) -> std::string {
    auto v = n.value_exact<std::string>();
    if (!v) return "must be a string";
    *field = *std::move(v);
    return "";
  };
}

Setter OneOf(std::string* field, std::vector<std::string> choices) {
  return [field, choices = std::move(choices)](const toml::node& n) -> std::string {
    auto v = n.value_exact<std::string>();
    for (const std::string& c : choices) {
      if (v && *v == c) {
        *field = c;
        return "";
      }
    }
    return absl::StrCat("must be one of ", absl::StrJoin(choices, ", "));
  };
}

Setter Bool(bool* field) {
  return [field](const toml::node& n) -> std::string {
    auto v = n.value_exact<bool>();
    if (!v) return "must be true or false";
    *field = *v;
    return "";
  };
}

// An integer in [lo, hi] stored in T.
template <typename T>
Setter Integer(T* field, int64_t lo, int64_t hi) {
  return [field, lo, hi](const toml::node& n) -> std::string {
    auto v = n.value_exact<int64_t>();
    if (!v || *v < lo || *v > hi) return absl::StrCat("must be an integer ", lo, "-", hi);
    *field = static_cast<T>(*v);
    return "";
  };
}

Setter Quota(std::optional<int64_t>* field) {
  return [field](const toml::node& n) -> std::string {
    auto v = n.value_exact<int64_t>();
    if (!v || *v < 0) return "must be an integer >= 0 (leave the key out for no limit)";
    *field = *v;
    return "";
  };
}

Setter StringArray(std::vector<std::string>* field) {
  return [field](const toml::node& n) -> std::string {
    constexpr char kRule[] = "must be an array of strings";
    const toml::array* a = n.as_array();
    if (a == nullptr) return kRule;
    std::vector<std::string> out;
    for (const toml::node& e : *a) {
      auto v = e.value_exact<std::string>();
      if (!v) return kRule;
      out.push_back(*std::move(v));
    }
    *field = std::move(out);
    return "";
  };
}

Setter UidArray(std::vector<uint32_t>* field) {
  return [field](const toml::node& n) -> std::string {
    // (uid_t)-1 means "no change" to the kernel; it is nobody's uid.
    constexpr int64_t kMaxUid = std::numeric_limits<uint32_t>::max() - 1;
    std::string rule = absl::StrCat("must be an array of uids (integers 0-", kMaxUid, ")");
    const toml::array* a = n.as_array();
    if (a == nullptr) return rule;
    std::vector<uint32_t> out;
    for (const toml::node& e : *a) {
      auto v = e.value_exact<int64_t>();
      if (!v || *v < 0 || *v > kMaxUid) return rule;
      out.push_back(static_cast<uint32_t>(*v));
    }
    *field = std::move(out);
    return "";
  };
}

std::vector<Field> QuotaFields(QuotaLimits* q) {
  return {
      {"running_vms", Quota(&q->running_vms), nullptr},
      {"vcpus", Quota(&q->vcpus), nullptr},
      {"memory_mib", Quota(&q->memory_mib), nullptr},
      {"snapshots", Quota(&q->snapshots), nullptr},
      {"snapshot_bytes", Quota(&q->snapshot_bytes), nullptr},
      {"port_forwards", Quota(&q->port_forwards), nullptr},
  };
}

// Applies one table's keys with `fields`.
std::function<absl::Status(const Reader&, const toml::table&)> Table(std::string name,
                                                                     std::vector<Field> fields) {
  return [name = std::move(name), fields = std::move(fields)](const Reader& r,
                                                              const toml::table& t) {
    return r.Apply(t, name, fields);
  };
}

// [tenants.NAME] tables; names are checked by CheckConfig.
std::function<absl::Status(const Reader&, const toml::table&)> Tenants(
    std::vector<TenantConfig>* tenants) {
  return [tenants](const Reader& r, const toml::table& t) -> absl::Status {
    std::vector<TenantConfig> out;
    for (auto&& [key, node] : t) {
      const toml::table* entry = node.as_table();
      if (entry == nullptr) {
        return r.Error(node.source(), "tenants", KeyStr(key),
                       absl::StrCat("must be a table ([tenants.", KeyLabel(KeyStr(key)),
                                    "] with uids, tls_subjects, admin, quotas), not ",
                                    Describe(node)));
      }
      TenantConfig tenant;
      tenant.name = std::string(KeyStr(key));
      std::string name = absl::StrCat("tenants.", KeyLabel(KeyStr(key)));
      std::vector<Field> fields = {
          {"uids", UidArray(&tenant.uids), nullptr},
          {"tls_subjects", StringArray(&tenant.tls_subjects), nullptr},
          {"admin", Bool(&tenant.admin), nullptr},
          {"quotas", nullptr, Table(name + ".quotas", QuotaFields(&tenant.quota))},
      };
      if (auto s = r.Apply(*entry, name, fields); !s.ok()) return s;
      out.push_back(std::move(tenant));
    }
    *tenants = std::move(out);
    return absl::OkStatus();
  };
}

absl::Status ApplyRoot(const Reader& r, const toml::table& root, DaemonConfig& c) {
  constexpr int kMaxPort = 65535;
  std::vector<Field> tables = {
      {"daemon", nullptr,
       Table("daemon",
             {
                 {"socket", String(&c.socket_path), nullptr},
                 {"state_dir", String(&c.state_dir), nullptr},
                 {"run_dir", String(&c.run_dir), nullptr},
                 {"accelerator", OneOf(&c.accelerator, {"auto", "kvm", "tcg"}), nullptr},
                 {"socket_group", String(&c.socket_group), nullptr},
                 {"admin_group", String(&c.admin_group), nullptr},
                 {"instance", String(&c.instance), nullptr},
                 {"log_level",
                  OneOf(&c.log_level, {"trace", "debug", "info", "warn", "error"}), nullptr},
                 {"boot_timeout_seconds", Integer(&c.boot_timeout_seconds, 1, 3600), nullptr},
                 {"fork_parallelism", Integer(&c.fork_parallelism, 0, 256), nullptr},
                 {"console_log_max_bytes",
                  Integer(&c.console_log_max_bytes, 8192, int64_t{1} << 32), nullptr},
                 {"max_events", Integer(&c.max_events, 1000, 100000000), nullptr},
                 {"max_streams_per_tenant", Integer(&c.max_streams_per_tenant, 0, 100000),
                  nullptr},
                 {"machine", String(&c.machine), nullptr},
                 {"qemu_binary", String(&c.qemu_binary), nullptr},
                 {"guest_recipe_dir", String(&c.guest_recipe_dir), nullptr},
                 {"guest_kernel_dir", String(&c.guest_kernel_dir), nullptr},
                 {"mounts_kernel_dir", String(&c.mounts_kernel_dir), nullptr},
                 {"guest_agent", String(&c.guest_agent), nullptr},
                 {"default_image", String(&c.default_image), nullptr},
                 {"package_cache_dir", String(&c.package_cache_dir), nullptr},
                 {"image_build_netns", String(&c.image_build_netns), nullptr},
             })},
      {"vmm", nullptr,
       Table("vmm",
             {
                 {"confinement", OneOf(&c.vmm_confinement, {"on", "off"}), nullptr},
                 {"uid_base", Integer(&c.vmm_uid_base, 1000, int64_t{4294000000}), nullptr},
                 {"uid_count", Integer(&c.vmm_uid_count, 1, int64_t{1} << 24), nullptr},
                 {"cgroup_parent", String(&c.cgroup_parent), nullptr},
                 {"memory_overhead_mib",
                  Integer(&c.vmm_memory_overhead_mib, 0, int64_t{1} << 20), nullptr},
                 {"pids_max", Integer(&c.vmm_pids_max, 16, int64_t{1} << 22), nullptr},
             })},
      {"network", nullptr,
       Table("network",
             {
                 {"enabled", Bool(&c.network), nullptr},
                 {"bridge", String(&c.bridge), nullptr},
                 {"subnet", String(&c.subnet), nullptr},
                 {"uplink", String(&c.uplink), nullptr},
                 {"dns", String(&c.dns), nullptr},
                 {"egress_deny", StringArray(&c.egress.deny_cidrs), nullptr},
                 {"egress_allow_lan", Bool(&c.egress.allow_lan), nullptr},
             })},
      {"ports", nullptr,
       Table("ports",
             {
                 {"host_ips", StringArray(&c.ports.host_ips), nullptr},
                 {"min", Integer(&c.ports.min_port, 1, kMaxPort), nullptr},
                 {"max", Integer(&c.ports.max_port, 1, kMaxPort), nullptr},
             })},
      {"images", nullptr,
       Table("images", {{"allowed_dirs", StringArray(&c.host_paths.allowed_dirs), nullptr}})},
      {"mounts", nullptr,
       Table("mounts", {{"allowed_dirs", StringArray(&c.mount_paths.allowed_dirs), nullptr}})},
      {"listen", nullptr, Table("listen", {{"tcp", String(&c.listen_tcp), nullptr}})},
      {"metrics", nullptr, Table("metrics", {{"listen", String(&c.metrics_listen), nullptr}})},
      {"tls", nullptr,
       Table("tls",
             {
                 {"cert", String(&c.tls_cert), nullptr},
                 {"key", String(&c.tls_key), nullptr},
                 {"client_ca", String(&c.tls_client_ca), nullptr},
             })},
      {"quotas", nullptr, Table("quotas", QuotaFields(&c.default_quota))},
      {"tenants", nullptr, Tenants(&c.tenants)},
  };
  for (auto&& [key, node] : root) {
    const Field* field = nullptr;
    for (const Field& f : tables) {
      if (KeyStr(key) == f.key) field = &f;
    }
    if (field == nullptr) {
      std::string what =
          node.is_table()
              ? "unknown table; the tables are [daemon], [vmm], [network], [ports], [images], "
                "[listen], [tls], [quotas] and [tenants.NAME]"
              : "unknown top-level key; settings go in a table such as [daemon]";
      if (node.is_table()) return r.Error(key.source(), KeyLabel(KeyStr(key)), "", what);
      return r.Error(key.source(), "", KeyStr(key), what);
    }
    const toml::table* t = node.as_table();
    if (t == nullptr) {
      return r.Error(node.source(), "", KeyStr(key),
                     absl::StrCat("must be a table ([", field->key, "]), not ", Describe(node)));
    }
    if (auto s = field->table(r, *t); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyConfigText(const std::string& text, const std::string& source,
                             DaemonConfig& config) {
  Reader reader(source);
  // toml++ as Debian builds it reports syntax errors only by exception;
  // they stop here.
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    return absl::InvalidArgumentError(absl::StrCat(source, ":", at.line, ":", at.column,
                                                   ": not valid TOML: ", std::string(e.description())));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": cannot parse: ", e.what()));
  }
  // Applied to a copy so that a bad file changes nothing.
  DaemonConfig updated = config;
  if (auto s = ApplyRoot(reader, root, updated); !s.ok()) return s;
  config = std::move(updated);
  return absl::OkStatus();
}

absl::Status ApplyConfigFile(const std::string& path, DaemonConfig& config) {
  auto text = ReadFileToString(path, kMaxFileBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("configuration file: ", text.status().message(),
                                     " (pass --config or SMOLVMD_CONFIG to use another)"));
  }
  return ApplyConfigText(*text, path, config);
}

}  // namespace smolvm::daemon
