#include "client/cli_format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace smolvm::cli {

namespace {

constexpr char kColumnGap[] = "   ";

// Utf8Length is the length of the valid UTF-8 sequence at the start of
// `text` (RFC 3629: no overlong forms, surrogates or code points past
// U+10FFFF), or 0 when there is none. `text` is not empty and starts with a
// byte >= 0x80.
size_t Utf8Length(absl::string_view text) {
  const auto byte = [&](size_t i) {
    return static_cast<unsigned char>(text[i]);
  };
  const unsigned char lead = byte(0);
  size_t length = 0;
  unsigned char min = 0x80, max = 0xbf;  // Allowed range of the 2nd byte.
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) min = 0xa0;  // Overlong.
    if (lead == 0xed) max = 0x9f;  // Surrogates.
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) min = 0x90;  // Overlong.
    if (lead == 0xf4) max = 0x8f;  // Past U+10FFFF.
  } else {
    return 0;
  }
  if (text.size() < length || byte(1) < min || byte(1) > max) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xbf) return 0;
  }
  return length;
}

void AppendHex(absl::string_view bytes, std::string* out) {
  for (char c : bytes) {
    absl::StrAppend(out, "\\x",
                    absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
  }
}

// Escape implements EscapeForTerminal; `keep_layout` = keep \n and \t.
std::string Escape(absl::string_view text, bool keep_layout) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      const bool layout = c == '\n' || c == '\t';
      if ((c < 0x20 && !(layout && keep_layout)) || c == 0x7f) {
        AppendHex(text.substr(i, 1), &out);
      } else {
        out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    const size_t length = Utf8Length(text.substr(i));
    if (length == 0) {  // Not UTF-8: this byte alone, then resynchronize.
      AppendHex(text.substr(i, 1), &out);
      ++i;
      continue;
    }
    // U+0080-U+009F (C1 controls, e.g. U+009B CSI) are 0xc2 0x80-0x9f.
    const bool c1 = c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0;
    if (c1) {
      AppendHex(text.substr(i, length), &out);
    } else {
      out.append(text.data() + i, length);
    }
    i += length;
  }
  return out;
}

// Cell escapes a table cell or detail value: one line, nothing the terminal
// interprets.
std::string Cell(absl::string_view text) {
  return Escape(text, /*keep_layout=*/false);
}

// Width is the number of UTF-8 characters in the (valid UTF-8) `text`: an
// approximation of its width on screen that is right for most text.
size_t Width(absl::string_view text) {
  size_t width = 0;
  for (char c : text) {
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++width;
  }
  return width;
}

// Dash renders "" as "-" so that empty cells stay visible in tables.
std::string Dash(std::string value) {
  return value.empty() ? std::string("-") : std::move(value);
}

std::string StatusName(v1::VmStatus status) {
  return v1::VmStatus_Name(status);
}

// Details renders "name: value" lines with the values aligned.
std::string Details(
    const std::vector<std::pair<std::string, std::string>>& kv) {
  size_t width = 0;
  for (const auto& [name, value] : kv) width = std::max(width, name.size());
  std::string out;
  for (const auto& [name, value] : kv) {
    absl::StrAppend(&out, name, ":", std::string(width - name.size() + 1, ' '),
                    Cell(Dash(value)), "\n");
  }
  return out;
}

// "k1=v1,k2=v2", sorted by key (a proto map has no order).
std::string FormatLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, ",");
}

std::string ActionName(v1::LifetimeAction action) {
  switch (action) {
    case v1::LIFETIME_DELETE: return "delete";
    case v1::LIFETIME_STOP: return "stop";
    case v1::LIFETIME_PAUSE: return "pause";
    case v1::LIFETIME_SNAPSHOT: return "snapshot";
    default: return "";
  }
}

void AppendConfig(const std::string& prefix, const v1::VMConfig& config,
                  std::vector<std::pair<std::string, std::string>>* kv) {
  kv->emplace_back(prefix + "vcpu_count", absl::StrCat(config.vcpu_count()));
  kv->emplace_back(prefix + "memory_mib", absl::StrCat(config.memory_mib()));
  kv->emplace_back(prefix + "kernel_path", config.kernel_path());
  kv->emplace_back(prefix + "initrd_path", config.initrd_path());
  kv->emplace_back(prefix + "rootfs_path", config.rootfs_path());
  kv->emplace_back(prefix + "image", config.image());
  kv->emplace_back(prefix + "image_digest", config.image_digest());
  kv->emplace_back(prefix + "disk_size_mib",
                   config.disk_size_mib() == 0 ? "" : absl::StrCat(config.disk_size_mib()));
  kv->emplace_back(prefix + "boot_args", config.boot_args());
  kv->emplace_back(prefix + "egress", FormatEgress(config.egress()));
  kv->emplace_back(prefix + "port_forwards",
                   FormatPortForwards(config.port_forwards()));
  kv->emplace_back(prefix + "labels", FormatLabels(config.labels()));
  kv->emplace_back(prefix + "lifetime",
                   config.has_lifetime() ? FormatLifetime(config.lifetime()) : "");
  if (!config.mounts().empty()) {
    // As vm create --mount takes them.
    std::vector<std::string> mounts;
    for (const v1::Mount& m : config.mounts()) {
      std::string opts = m.read_only() ? "ro" : "rw";
      if (m.detach_on_snapshot()) absl::StrAppend(&opts, ",detach");
      mounts.push_back(absl::StrCat(m.host_path(), ":", m.guest_path(), ":", opts));
    }
    kv->emplace_back(prefix + "mounts", absl::StrJoin(mounts, ", "));
  }
}

void AppendNetwork(const std::string& prefix, const v1::NetworkConfig& network,
                   std::vector<std::pair<std::string, std::string>>* kv) {
  kv->emplace_back(prefix + "guest_ip", network.guest_ip());
  kv->emplace_back(prefix + "gateway_ip", network.gateway_ip());
  kv->emplace_back(prefix + "netmask", network.netmask());
  kv->emplace_back(prefix + "tap_device", network.tap_device());
  kv->emplace_back(prefix + "guest_mac", network.guest_mac());
  kv->emplace_back(prefix + "dns_server", network.dns_server());
  kv->emplace_back(prefix + "port_forwards",
                   FormatPortForwards(network.port_forwards()));
  // An unset policy here means no networking was reported, not "open".
  kv->emplace_back(prefix + "egress", network.has_egress()
                                          ? FormatEgress(network.egress())
                                          : std::string());
}

absl::StatusOr<nlohmann::ordered_json> ToJsonValue(
    const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string json;
  auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("render ", message.GetTypeName(),
                                            " as json: ", status.ToString()));
  }
  // Re-parsed so that single objects and arrays share one indentation style;
  // ordered_json keeps the proto field order.
  nlohmann::ordered_json value = nlohmann::ordered_json::parse(
      json, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InternalError(absl::StrCat("render ", message.GetTypeName(),
                                            " as json: unparsable output"));
  }
  return value;
}

}  // namespace

std::string EscapeForTerminal(absl::string_view text) {
  return Escape(text, /*keep_layout=*/true);
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    std::vector<std::string>& escaped = cells.emplace_back();
    if (row.size() > widths.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      escaped.push_back(Cell(row[i]));
      widths[i] = std::max(widths[i], Width(escaped.back()));
    }
  }
  std::string out;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : std::string();
      absl::StrAppend(&line, cell);
      if (i + 1 < widths.size()) {
        absl::StrAppend(&line, std::string(widths[i] - Width(cell), ' '),
                        kColumnGap);
      }
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string VmTable(absl::Span<const v1::Vm> vms) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "STATUS", "VCPUS", "MEM_MIB", "IP", "PID", "CREATED", "OWNER"}};
  for (const v1::Vm& vm : vms) {
    rows.push_back({vm.vm_id(), StatusName(vm.status()),
                    absl::StrCat(vm.config().vcpu_count()),
                    absl::StrCat(vm.config().memory_mib()),
                    Dash(vm.network().guest_ip()),
                    vm.vmm_pid() == 0 ? "-" : absl::StrCat(vm.vmm_pid()),
                    FormatTimestamp(vm.created_at()), Dash(vm.owner())});
  }
  return RenderTable(rows);
}

std::string SnapshotTable(absl::Span<const v1::SnapshotInfo> snapshots) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "VM", "SIZE", "CREATED", "RESTORED", "RESTORED_VM", "OWNER"}};
  for (const v1::SnapshotInfo& s : snapshots) {
    rows.push_back(
        {s.snapshot_id(), Dash(s.vm_id()), FormatBytes(s.size_bytes()),
         FormatTimestamp(s.created_at()), s.restored() ? "yes" : "no",
         s.has_restored_vm_id() ? Dash(s.restored_vm_id()) : "-",
         Dash(s.owner())});
  }
  return RenderTable(rows);
}

namespace {
std::string FormatUnixMillis(int64_t ms) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(ms / 1000);
  ts.set_nanos(static_cast<int32_t>(ms % 1000) * 1000000);
  return FormatTimestamp(ts);
}
}  // namespace

std::string PoolTable(absl::Span<const v1::Pool> pools) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "SNAPSHOT", "SIZE", "READY", "STARTING", "CREATED", "OWNER", "LAST_ERROR"}};
  for (const v1::Pool& p : pools) {
    rows.push_back({p.pool_id(), p.snapshot_id(), absl::StrCat(p.size()),
                    absl::StrCat(p.ready_vm_ids_size()), absl::StrCat(p.starting()),
                    FormatTimestamp(p.created_at()), Dash(p.owner()),
                    Dash(p.last_error())});
  }
  return RenderTable(rows);
}

std::string ImageTable(absl::Span<const v1::Image> images) {
  std::vector<std::vector<std::string>> rows = {
      {"NAMES", "DIGEST", "SOURCE", "DISK", "SIZE", "CREATED", "OWNER", "USED_BY"}};
  for (const v1::Image& i : images) {
    rows.push_back({Dash(absl::StrJoin(i.names(), ",")), i.digest().substr(0, 19),
                    Dash(i.source_kind()), FormatBytes(i.disk_size_bytes()),
                    FormatBytes(i.size_bytes()), FormatUnixMillis(i.created_at_unix_ms()),
                    i.owner().empty() ? "(built-in)" : i.owner(),
                    absl::StrCat(i.used_by_size())});
  }
  return RenderTable(rows);
}

std::string ImageDetails(const v1::Image& i) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"digest", i.digest()},
      {"names", Dash(absl::StrJoin(i.names(), ", "))},
      {"owner", i.owner().empty() ? "(built-in)" : i.owner()},
      {"source_kind", Dash(i.source_kind())},
      {"source", i.source()},
      {"size_bytes", absl::StrCat(i.size_bytes(), " (", FormatBytes(i.size_bytes()), ")")},
      {"disk_size_bytes",
       absl::StrCat(i.disk_size_bytes(), " (", FormatBytes(i.disk_size_bytes()), ")")},
      {"created_at", FormatUnixMillis(i.created_at_unix_ms())},
      {"build_ms", absl::StrCat(i.build_ms())},
      {"kernel_version", Dash(i.kernel_version())},
      {"kernel_package", Dash(i.kernel_package())},
      {"exec_defaults.working_dir", Dash(i.exec_defaults().working_dir())},
      {"exec_defaults.user", Dash(i.exec_defaults().user())},
      {"used_by", Dash(absl::StrJoin(i.used_by(), ", "))}};
  std::map<std::string, std::string> env(i.exec_defaults().env().begin(),
                                         i.exec_defaults().env().end());
  for (const auto& [k, v] : env) kv.emplace_back("exec_defaults.env." + k, v);
  return Details(kv);
}

std::string ForkTable(absl::Span<const v1::ForkResult> results) {
  std::vector<std::vector<std::string>> rows = {
      {"VM", "STATUS", "IP", "MAC", "TAP", "ERROR"}};
  for (const v1::ForkResult& r : results) {
    if (r.error_code() != 0) {
      const auto code = static_cast<absl::StatusCode>(r.error_code());
      std::string name = absl::StatusCodeToString(code);
      if (name.empty()) name = absl::StrCat("CODE_", r.error_code());
      rows.push_back({Dash(r.vm_id()), "FAILED", "-", "-", "-",
                      r.error_message().empty()
                          ? name
                          : absl::StrCat(name, ": ", r.error_message())});
      continue;
    }
    const v1::NetworkConfig& net = r.vm().network();
    rows.push_back({Dash(r.vm_id()), StatusName(r.vm().status()),
                    Dash(net.guest_ip()), Dash(net.guest_mac()),
                    Dash(net.tap_device()), "-"});
  }
  return RenderTable(rows);
}

namespace {

std::string FileTypeName(v1::FileType type) {
  switch (type) {
    case v1::FILE_TYPE_FILE:
      return "file";
    case v1::FILE_TYPE_DIRECTORY:
      return "dir";
    case v1::FILE_TYPE_SYMLINK:
      return "link";
    case v1::FILE_TYPE_OTHER:
      return "other";
    default:
      return "-";
  }
}

std::string FormatUnixNanos(int64_t ns) {
  int64_t seconds = ns / 1000000000;
  int64_t nanos = ns % 1000000000;
  if (nanos < 0) {  // Before 1970: the Timestamp's nanos count forward.
    --seconds;
    nanos += 1000000000;
  }
  google::protobuf::Timestamp ts;
  ts.set_seconds(seconds);
  ts.set_nanos(static_cast<int32_t>(nanos));
  return FormatTimestamp(ts);
}

// StripPath is `path` without `prefix`, or all of it when it does not start
// with it (or is the prefix itself).
std::string StripPath(const std::string& path, absl::string_view prefix) {
  if (prefix.empty() || path.size() <= prefix.size() || !absl::StartsWith(path, prefix)) {
    return path;
  }
  return path.substr(prefix.size());
}

}  // namespace

std::string FileEntryTable(absl::Span<const v1::FileEntry> entries,
                           absl::string_view strip_prefix) {
  std::vector<std::vector<std::string>> rows = {
      {"TYPE", "MODE", "SIZE", "OWNER", "MTIME", "PATH"}};
  for (const v1::FileEntry& e : entries) {
    std::string path = StripPath(e.path(), strip_prefix);
    if (e.type() == v1::FILE_TYPE_SYMLINK) absl::StrAppend(&path, " -> ", e.symlink_target());
    rows.push_back({FileTypeName(e.type()), absl::StrFormat("%04o", e.mode() & 07777u),
                    absl::StrCat(e.size()), absl::StrCat(e.uid(), ":", e.gid()),
                    FormatUnixNanos(e.mtime_unix_ns()), path});
  }
  return RenderTable(rows);
}

std::string FileEntryNames(absl::Span<const v1::FileEntry> entries,
                           absl::string_view strip_prefix) {
  std::string out;
  for (const v1::FileEntry& e : entries) {
    absl::StrAppend(&out, Cell(StripPath(e.path(), strip_prefix)), "\n");
  }
  return out;
}

std::string ListedDirPrefix(absl::Span<const v1::FileEntry> entries) {
  if (entries.empty()) return "";
  const std::string& first = entries.front().path();
  const size_t slash = first.rfind('/');
  return slash == std::string::npos ? "" : first.substr(0, slash + 1);
}

std::string WatchEventLine(const v1::WatchDirEvent& event) {
  std::string line(
      absl::StripPrefix(v1::WatchEventType_Name(event.type()), "WATCH_EVENT_TYPE_"));
  if (line.empty()) line = absl::StrCat("EVENT_", static_cast<int>(event.type()));
  const auto shown = [&event](const std::string& path) {
    return event.is_dir() && !path.empty() && path.back() != '/' ? path + "/" : path;
  };
  if (event.type() == v1::WATCH_EVENT_TYPE_RENAME && !event.old_path().empty()) {
    absl::StrAppend(&line, " ", shown(event.old_path()), " ->");
  }
  if (!event.path().empty()) absl::StrAppend(&line, " ", shown(event.path()));
  return Cell(line);
}

std::string EventKindName(v1::EventKind kind) {
  std::string name = absl::AsciiStrToLower(v1::EventKind_Name(kind));
  return name.empty() ? absl::StrCat("kind_", static_cast<int>(kind)) : name;
}

absl::StatusOr<v1::EventKind> ParseEventKind(absl::string_view name) {
  v1::EventKind kind;
  if (!v1::EventKind_Parse(absl::AsciiStrToUpper(name), &kind) ||
      kind == v1::EVENT_KIND_UNSPECIFIED) {
    std::vector<std::string> known;
    for (int k = v1::EventKind_MIN + 1; k <= v1::EventKind_MAX; ++k) {
      if (v1::EventKind_IsValid(k)) known.push_back(EventKindName(static_cast<v1::EventKind>(k)));
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown event kind \"", name,
                                                   "\"; known: ", absl::StrJoin(known, ", ")));
  }
  return kind;
}

std::string EventLine(const v1::Event& event) {
  const std::string state = event.state() == v1::VM_STATUS_UNSPECIFIED
                                ? ""
                                : absl::AsciiStrToLower(StatusName(event.state()));
  return Cell(absl::StrJoin({absl::StrCat(event.event_id()), FormatTimestamp(event.time()),
                             EventKindName(event.kind()), Dash(event.vm_id()),
                             Dash(event.snapshot_id()), Dash(state), Dash(event.detail())},
                            "  "));
}

namespace {

// ShellWord is `word` as a POSIX shell reads it back: as it is when it has
// only characters a shell takes literally, else in single quotes (a ' in it
// becomes '\'').
std::string ShellWord(const std::string& word) {
  const bool plain = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
           absl::StrContains("_@%+=:,./-", c);
  });
  if (plain) return word;
  return absl::StrCat("'", absl::StrReplaceAll(word, {{"'", "'\\''"}}), "'");
}

}  // namespace

std::string SignalName(int sig) {
  // The Linux numbering (asm-generic, x86 and arm64 alike): the guest's.
  static constexpr const char* kNames[] = {
      nullptr, "HUP",  "INT",    "QUIT", "ILL",  "TRAP", "ABRT", "BUS",  "FPE",  "KILL", "USR1",
      "SEGV",  "USR2", "PIPE",   "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP",
      "TTIN",  "TTOU", "URG",    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO",  "PWR",
      "SYS"};
  if (sig > 0 && static_cast<size_t>(sig) < std::size(kNames)) return kNames[sig];
  return absl::StrCat(sig);
}

std::string ProcessStatus(const v1::ProcessInfo& process) {
  if (process.running()) return "running";
  if (process.signal() != 0) return absl::StrCat("signal ", SignalName(process.signal()));
  return absl::StrCat("exited ", process.exit_code());
}

std::string ProcessTable(absl::Span<const v1::ProcessInfo> processes) {
  std::vector<std::vector<std::string>> rows = {
      {"PID", "STATUS", "STARTED", "OUTPUT", "USER", "COMMAND"}};
  for (const v1::ProcessInfo& p : processes) {
    std::vector<std::string> words;
    for (const std::string& arg : p.argv()) words.push_back(ShellWord(arg));
    rows.push_back({absl::StrCat(p.pid()), ProcessStatus(p),
                    FormatUnixNanos(p.started_at_unix_ns()), FormatBytes(p.output_bytes()),
                    Dash(p.user()), Dash(absl::StrJoin(words, " "))});
  }
  return RenderTable(rows);
}

std::string VerifyTable(const v1::VerifySnapshotResponse& r) {
  std::vector<std::vector<std::string>> rows = {
      {"FILE", "STATUS", "CHECKSUM", "EXPECTED", "PATH"}};
  for (const v1::FileCheck& f : r.files()) {
    const char* status = r.legacy() ? "unverifiable" : f.ok() ? "ok" : "MISMATCH";
    const bool same = f.expected().empty() || f.expected() == f.actual();
    rows.push_back({Dash(f.name()), status, Dash(f.actual()), same ? "-" : f.expected(),
                    Dash(f.path())});
  }
  std::string summary;
  if (r.legacy()) {
    summary = absl::StrCat("snapshot ", r.snapshot_id(),
                           ": taken before checksums were recorded; it cannot be verified");
  } else {
    summary = absl::StrCat("snapshot ", r.snapshot_id(), ": ",
                           r.ok() ? "ok" : "CORRUPT", ", ", r.files_size(), " files read in ",
                           r.duration_ms(), " ms (", FormatBytes(r.bytes_read()), ")");
  }
  return absl::StrCat(RenderTable(rows), EscapeForTerminal(summary), "\n");
}

std::string VmDetails(const v1::Vm& vm) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"vm_id", vm.vm_id()},
      {"owner", vm.owner()},
      {"status", StatusName(vm.status())},
      {"vmm_pid", vm.vmm_pid() == 0 ? "" : absl::StrCat(vm.vmm_pid())},
      {"vmm_uid", vm.vmm_uid() == 0 ? "" : absl::StrCat(vm.vmm_uid())},
      {"created_at", FormatTimestamp(vm.created_at())},
      {"updated_at", FormatTimestamp(vm.updated_at())},
      {"restored_from_snapshot_id", vm.restored_from_snapshot_id()},
  };
  AppendConfig("config.", vm.config(), &kv);
  AppendNetwork("network.", vm.network(), &kv);
  kv.emplace_back("lifetime_deadline",
                  vm.has_lifetime_deadline()
                      ? absl::StrCat(FormatTimestamp(vm.lifetime_deadline()), " (",
                                     ActionName(vm.lifetime_action()), ")")
                      : "");
  kv.emplace_back("idle_paused", vm.idle_paused() ? "true" : "false");
  kv.emplace_back("lifetime_snapshot_id", vm.lifetime_snapshot_id());
  kv.emplace_back("error", vm.error());
  return Details(kv);
}

std::string FormatLifetime(const v1::Lifetime& lifetime) {
  auto action = [](v1::LifetimeAction a, const char* unset) {
    return a == v1::LIFETIME_ACTION_UNSPECIFIED ? std::string(unset) : ActionName(a);
  };
  std::vector<std::string> parts;
  if (lifetime.max_lifetime_seconds() != 0) {
    parts.push_back(absl::StrCat("max ", lifetime.max_lifetime_seconds(), "s then ",
                                 action(lifetime.max_lifetime_action(), "delete")));
  }
  if (lifetime.idle_timeout_seconds() != 0) {
    parts.push_back(absl::StrCat("idle ", lifetime.idle_timeout_seconds(), "s then ",
                                 action(lifetime.idle_action(), "pause"),
                                 lifetime.has_auto_resume() && !lifetime.auto_resume()
                                     ? " (no auto-resume)"
                                     : ""));
  }
  return absl::StrJoin(parts, ", ");
}

std::string SnapshotDetails(const v1::SnapshotInfo& s) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"snapshot_id", s.snapshot_id()},
      {"vm_id", s.vm_id()},
      {"owner", s.owner()},
      {"created_at", FormatTimestamp(s.created_at())},
      {"size_bytes",
       absl::StrCat(s.size_bytes(), " (", FormatBytes(s.size_bytes()), ")")},
      {"accelerator", s.accelerator()},
      {"restored", s.restored() ? "true" : "false"},
      {"restored_vm_id", s.has_restored_vm_id() ? s.restored_vm_id() : ""},
      {"labels", FormatLabels(s.labels())},
      {"snapshot_path", s.snapshot_path()},
      {"mem_file_path", s.mem_file_path()},
      {"disk_path", s.disk_path()},
      {"vm_config.vm_id", s.vm_config().vm_id()},
  };
  AppendConfig("vm_config.", s.vm_config(), &kv);
  AppendNetwork("network_config.", s.network_config(), &kv);
  return Details(kv);
}

std::string FormatPortForward(const v1::PortForward& forward) {
  std::string out;
  if (!forward.host_ip().empty()) absl::StrAppend(&out, forward.host_ip(), ":");
  absl::StrAppend(&out, forward.host_port(), ":", forward.guest_port(), "/",
                  forward.protocol().empty() ? "tcp" : forward.protocol());
  return out;
}

std::string FormatPortForwards(
    const google::protobuf::RepeatedPtrField<v1::PortForward>& forwards) {
  std::vector<std::string> parts;
  for (const v1::PortForward& forward : forwards) {
    parts.push_back(FormatPortForward(forward));
  }
  return absl::StrJoin(parts, ", ");
}

std::string FormatEgress(const v1::EgressPolicy& egress) {
  std::string mode = absl::AsciiStrToLower(
      absl::StripPrefix(v1::EgressPolicy::Mode_Name(egress.mode()), "EGRESS_"));
  if (mode.empty()) mode = absl::StrCat("mode ", egress.mode());
  std::string out = mode;
  if (!egress.allow_cidrs().empty()) {
    absl::StrAppend(&out, ": ", absl::StrJoin(egress.allow_cidrs(), ", "));
  }
  if (!egress.allow_domains().empty()) {
    absl::StrAppend(&out, egress.allow_cidrs().empty() ? ": " : ", ",
                    absl::StrJoin(egress.allow_domains(), ", "));
  }
  if (!egress.deny_cidrs().empty() || !egress.deny_domains().empty()) {
    std::vector<std::string> denied(egress.deny_cidrs().begin(), egress.deny_cidrs().end());
    denied.insert(denied.end(), egress.deny_domains().begin(), egress.deny_domains().end());
    absl::StrAppend(&out, "; denied ", absl::StrJoin(denied, ", "));
  }
  return out;
}

std::string StatsTable(absl::Span<const v1::VmStats> stats,
                       absl::Span<const v1::VmStats> previous) {
  std::vector<std::vector<std::string>> rows = {
      {"VM", "CPU", "VMM_RSS", "GUEST_MEM", "DISK", "NET_TX", "NET_RX", "UPTIME"}};
  auto ns = [](const google::protobuf::Timestamp& t) {
    return t.seconds() * 1'000'000'000 + t.nanos();
  };
  for (const v1::VmStats& s : stats) {
    std::string cpu = "-";
    for (const v1::VmStats& p : previous) {
      const int64_t wall = ns(s.taken_at()) - ns(p.taken_at());
      if (p.vm_id() == s.vm_id() && wall > 0 && s.cpu_time_ns() >= p.cpu_time_ns()) {
        cpu = absl::StrFormat("%.1f%%",
                              100.0 * static_cast<double>(s.cpu_time_ns() - p.cpu_time_ns()) /
                                  static_cast<double>(wall));
      }
    }
    std::string mem = "-";
    if (s.guest_memory_known()) {
      const uint64_t total = s.guest_memory_total_bytes();
      const uint64_t used = total - std::min(total, s.guest_memory_available_bytes());
      mem = absl::StrCat(FormatBytes(used), " / ", FormatBytes(total));
    }
    const uint64_t up = s.uptime_ms() / 1000;
    rows.push_back({s.vm_id(), cpu, FormatBytes(s.vmm_rss_bytes()), mem,
                    FormatBytes(s.disk_allocated_bytes()), FormatBytes(s.guest_tx_bytes()),
                    FormatBytes(s.guest_rx_bytes()),
                    absl::StrFormat("%d:%02d:%02d", up / 3600, up / 60 % 60, up % 60)});
  }
  return RenderTable(rows);
}

std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(ts.seconds()),
                          absl::UTCTimeZone());
}

std::string FormatBytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

absl::StatusOr<std::string> ToJson(const google::protobuf::Message& message) {
  absl::StatusOr<nlohmann::ordered_json> value = ToJsonValue(message);
  if (!value.ok()) return value.status();
  return value->dump(2, ' ', /*ensure_ascii=*/false,
                     nlohmann::ordered_json::error_handler_t::replace);
}

absl::StatusOr<std::string> ToJsonLine(const google::protobuf::Message& message) {
  absl::StatusOr<nlohmann::ordered_json> value = ToJsonValue(message);
  if (!value.ok()) return value.status();
  return value->dump(-1, ' ', /*ensure_ascii=*/false,
                     nlohmann::ordered_json::error_handler_t::replace);
}

absl::StatusOr<std::string> ToJsonArray(
    absl::Span<const google::protobuf::Message* const> messages) {
  nlohmann::ordered_json array = nlohmann::ordered_json::array();
  for (const google::protobuf::Message* message : messages) {
    absl::StatusOr<nlohmann::ordered_json> value = ToJsonValue(*message);
    if (!value.ok()) return value.status();
    array.push_back(*std::move(value));
  }
  return array.dump(2, ' ', /*ensure_ascii=*/false,
                    nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace smolvm::cli
