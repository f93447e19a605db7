#include "tests/e2e/e2e_util.h"

#include <filesystem>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace smolvm::testing {
namespace {

std::set<std::string> Entries(const std::string& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    names.insert(e.path().filename().string());
  }
  return names;
}

std::string SetDiff(const char* what, const std::set<std::string>& a,
                    const std::set<std::string>& b) {
  std::vector<std::string> added, removed;
  for (const auto& x : b) {
    if (!a.count(x)) added.push_back(x);
  }
  for (const auto& x : a) {
    if (!b.count(x)) removed.push_back(x);
  }
  if (added.empty() && removed.empty()) return "";
  return absl::StrCat(what, ": added [", absl::StrJoin(added, ", "), "] removed [",
                      absl::StrJoin(removed, ", "), "]\n");
}

}  // namespace

nlohmann::json Json(const std::string& text) {
  return nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
}

std::set<std::string> Column(const std::string& text, const std::string& key) {
  std::set<std::string> values;
  nlohmann::json j = Json(text);
  if (!j.is_array()) return values;
  for (const auto& item : j) {
    if (item.is_object() && item.contains(key) && item[key].is_string()) {
      values.insert(item[key].get<std::string>());
    }
  }
  return values;
}

nlohmann::json One(const std::string& text) {
  nlohmann::json j = Json(text);
  if (j.is_array() && j.size() == 1) return j[0];
  if (j.is_object()) return j;
  return nlohmann::json::object();
}

HostPicture Picture(const TestDaemon& daemon) {
  HostPicture p;
  p.vm_ids = Column(daemon.Ctl({"vm", "list"}).out, "vm_id");
  p.snapshot_ids = Column(daemon.Ctl({"snapshot", "list"}).out, "snapshot_id");
  p.vm_dirs = Entries(daemon.state_dir() + "/vms");
  p.snapshot_dirs = Entries(daemon.state_dir() + "/snapshots");
  p.run_dirs = Entries(daemon.run_dir() + "/vms");
  std::string links = daemon.InNetns(daemon.NetnsHost(), "ip -o link show").second;
  for (absl::string_view line : absl::StrSplit(links, '\n', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(": ", 2));
    if (parts.size() >= 2) p.links.insert(parts[1].substr(0, parts[1].find('@')));
  }
  p.ruleset = daemon.InNetns(daemon.NetnsHost(), "nft -s list ruleset").second;
  for (pid_t pid : daemon.QemuPids()) p.qemu_pids.insert(pid);
  return p;
}

std::string Diff(const HostPicture& a, const HostPicture& b) {
  std::string d = SetDiff("vm rows", a.vm_ids, b.vm_ids) +
                  SetDiff("snapshot rows", a.snapshot_ids, b.snapshot_ids) +
                  SetDiff("<state>/vms", a.vm_dirs, b.vm_dirs) +
                  SetDiff("<state>/snapshots", a.snapshot_dirs, b.snapshot_dirs) +
                  SetDiff("<run>/vms", a.run_dirs, b.run_dirs) + SetDiff("links", a.links, b.links);
  std::set<std::string> pa, pb;
  for (pid_t pid : a.qemu_pids) pa.insert(std::to_string(pid));
  for (pid_t pid : b.qemu_pids) pb.insert(std::to_string(pid));
  d += SetDiff("qemu pids", pa, pb);
  if (a.ruleset != b.ruleset) {
    d += "nft ruleset changed:\n--- before\n" + a.ruleset + "--- after\n" + b.ruleset;
  }
  return d;
}

std::vector<nlohmann::json> AuditLines(const std::string& log) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    size_t at = line.find("{\"audit\":");
    if (at == absl::string_view::npos) continue;
    nlohmann::json j = Json(std::string(line.substr(at)));
    if (!j.is_object()) j = nlohmann::json::object({{"_unparsable", true}});
    j["_raw"] = std::string(line);
    lines.push_back(j);
  }
  return lines;
}

bool FailedWith(const ProcResult& r, int exit_code, const std::string& needle) {
  if (r.exit_code != exit_code) return false;
  return needle.empty() ||
         absl::StrContains(absl::AsciiStrToLower(r.err), absl::AsciiStrToLower(needle));
}

}  // namespace smolvm::testing
