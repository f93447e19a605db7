#include "client/cli_format.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace smolvm::cli {

namespace {

constexpr char kColumnGap[] = "   ";

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
                    Dash(value), "\n");
  }
  return out;
}

void AppendConfig(const std::string& prefix, const v1::VMConfig& config,
                  std::vector<std::pair<std::string, std::string>>* kv) {
  kv->emplace_back(prefix + "vcpu_count", absl::StrCat(config.vcpu_count()));
  kv->emplace_back(prefix + "memory_mib", absl::StrCat(config.memory_mib()));
  kv->emplace_back(prefix + "kernel_path", config.kernel_path());
  kv->emplace_back(prefix + "initrd_path", config.initrd_path());
  kv->emplace_back(prefix + "rootfs_path", config.rootfs_path());
  kv->emplace_back(prefix + "boot_args", config.boot_args());
  kv->emplace_back(prefix + "egress", FormatEgress(config.egress()));
  kv->emplace_back(prefix + "port_forwards",
                   FormatPortForwards(config.port_forwards()));
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

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (row.size() > widths.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < widths.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : std::string();
      absl::StrAppend(&line, cell);
      if (i + 1 < widths.size()) {
        absl::StrAppend(&line, std::string(widths[i] - cell.size(), ' '),
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
      {"ID", "STATUS", "VCPUS", "MEM_MIB", "IP", "PID", "CREATED"}};
  for (const v1::Vm& vm : vms) {
    rows.push_back({vm.vm_id(), StatusName(vm.status()),
                    absl::StrCat(vm.config().vcpu_count()),
                    absl::StrCat(vm.config().memory_mib()),
                    Dash(vm.network().guest_ip()),
                    vm.vmm_pid() == 0 ? "-" : absl::StrCat(vm.vmm_pid()),
                    FormatTimestamp(vm.created_at())});
  }
  return RenderTable(rows);
}

std::string SnapshotTable(absl::Span<const v1::SnapshotInfo> snapshots) {
  std::vector<std::vector<std::string>> rows = {
      {"ID", "VM", "SIZE", "CREATED", "RESTORED", "RESTORED_VM"}};
  for (const v1::SnapshotInfo& s : snapshots) {
    rows.push_back(
        {s.snapshot_id(), Dash(s.vm_id()), FormatBytes(s.size_bytes()),
         FormatTimestamp(s.created_at()), s.restored() ? "yes" : "no",
         s.has_restored_vm_id() ? Dash(s.restored_vm_id()) : "-"});
  }
  return RenderTable(rows);
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

std::string VmDetails(const v1::Vm& vm) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"vm_id", vm.vm_id()},
      {"status", StatusName(vm.status())},
      {"vmm_pid", vm.vmm_pid() == 0 ? "" : absl::StrCat(vm.vmm_pid())},
      {"created_at", FormatTimestamp(vm.created_at())},
      {"updated_at", FormatTimestamp(vm.updated_at())},
      {"restored_from_snapshot_id", vm.restored_from_snapshot_id()},
  };
  AppendConfig("config.", vm.config(), &kv);
  AppendNetwork("network.", vm.network(), &kv);
  kv.emplace_back("error", vm.error());
  return Details(kv);
}

std::string SnapshotDetails(const v1::SnapshotInfo& s) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"snapshot_id", s.snapshot_id()},
      {"vm_id", s.vm_id()},
      {"created_at", FormatTimestamp(s.created_at())},
      {"size_bytes",
       absl::StrCat(s.size_bytes(), " (", FormatBytes(s.size_bytes()), ")")},
      {"accelerator", s.accelerator()},
      {"restored", s.restored() ? "true" : "false"},
      {"restored_vm_id", s.has_restored_vm_id() ? s.restored_vm_id() : ""},
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
  if (egress.allow_cidrs().empty()) return mode;
  return absl::StrCat(mode, ": ", absl::StrJoin(egress.allow_cidrs(), ", "));
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
  return value->dump(2);
}

absl::StatusOr<std::string> ToJsonArray(
    absl::Span<const google::protobuf::Message* const> messages) {
  nlohmann::ordered_json array = nlohmann::ordered_json::array();
  for (const google::protobuf::Message* message : messages) {
    absl::StatusOr<nlohmann::ordered_json> value = ToJsonValue(*message);
    if (!value.ok()) return value.status();
    array.push_back(*std::move(value));
  }
  return array.dump(2);
}

}  // namespace smolvm::cli
