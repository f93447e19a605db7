#include "lib/core/vm_stats.h"

#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"

namespace smolvm::core {
namespace {

// "Name:   123 kB" lines of /proc files, in bytes.
uint64_t KbField(const std::string& text, absl::string_view name, bool* found) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::ConsumePrefix(&line, name) || !absl::ConsumePrefix(&line, ":")) continue;
    line = absl::StripAsciiWhitespace(line);
    absl::ConsumeSuffix(&line, " kB");
    uint64_t kb = 0;
    if (absl::SimpleAtoi(line, &kb)) {
      if (found) *found = true;
      return kb * 1024;
    }
  }
  return 0;
}

}  // namespace

bool ParseMeminfo(const std::string& text, uint64_t* total, uint64_t* available) {
  bool has_total = false, has_available = false;
  *total = KbField(text, "MemTotal", &has_total);
  *available = KbField(text, "MemAvailable", &has_available);
  return has_total && has_available;
}

absl::StatusOr<VmStats> CollectHostStats(pid_t vmm_pid, const std::string& disk_path) {
  VmStats s;
  s.taken_at = absl::Now();
  const std::string proc = absl::StrCat("/proc/", vmm_pid);
  auto proc_stat = ReadFileToString(proc + "/stat", 4096);
  if (!proc_stat.ok()) {
    return absl::NotFoundError(absl::StrCat("vmm process ", vmm_pid, " is gone"));
  }
  // Fields after the command (which may hold spaces and parentheses): from
  // the last ')'. utime and stime are fields 14 and 15, starttime 22.
  const size_t close = proc_stat->rfind(')');
  if (close == std::string::npos || close + 2 > proc_stat->size()) {
    return absl::InternalError("unreadable " + proc + "/stat");
  }
  std::vector<absl::string_view> f =
      absl::StrSplit(absl::string_view(*proc_stat).substr(close + 2), ' ', absl::SkipEmpty());
  uint64_t utime = 0, stime = 0, start = 0;
  if (f.size() < 20 || !absl::SimpleAtoi(f[11], &utime) || !absl::SimpleAtoi(f[12], &stime) ||
      !absl::SimpleAtoi(f[19], &start)) {
    return absl::InternalError("unreadable " + proc + "/stat");
  }
  const long hz = sysconf(_SC_CLK_TCK);
  s.cpu_time_ns = (utime + stime) * (1'000'000'000ULL / static_cast<uint64_t>(hz));
  auto uptime = ReadFileToString("/proc/uptime", 256);
  double up = 0;
  if (uptime.ok()) {
    std::vector<absl::string_view> u = absl::StrSplit(*uptime, ' ');
    if (!u.empty() && absl::SimpleAtod(u[0], &up)) {
      s.uptime = absl::Seconds(up) - absl::Seconds(static_cast<double>(start) / hz);
      if (s.uptime < absl::ZeroDuration()) s.uptime = absl::ZeroDuration();
    }
  }
  if (auto rollup = ReadFileToString(proc + "/smaps_rollup", 1 << 16); rollup.ok()) {
    s.vmm_rss_bytes = KbField(*rollup, "Rss", nullptr);
    s.vmm_pss_bytes = KbField(*rollup, "Pss", nullptr);
  }
  struct stat st;
  if (!disk_path.empty() && stat(disk_path.c_str(), &st) == 0) {
    s.disk_allocated_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return s;
}

}  // namespace smolvm::core
