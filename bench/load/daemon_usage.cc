// File: bench/load/daemon_usage.cc
#include "bench/load/daemon_usage.h"

#include <dirent.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace smolvm::load {
namespace {

// The numeric entries of directory `dir` (pids of /proc, fds of a process).
absl::StatusOr<std::vector<int64_t>> NumericEntries(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("opendir ", dir));
  std::vector<int64_t> out;
  while (dirent* e = readdir(d)) {
    int64_t n;
    if (absl::SimpleAtoi(e->d_name, &n)) out.push_back(n);
  }
  closedir(d);
  return out;
}

// The number after `key` in a "Key:   123 kB" line of /proc/<pid>/status.
bool StatusField(const std::string& status, absl::string_view key, int64_t* value) {
  for (absl::string_view line : absl::StrSplit(status, '\n')) {
    if (!absl::ConsumePrefix(&line, key)) continue;
    line = absl::StripAsciiWhitespace(line);
    return absl::SimpleAtoi(line.substr(0, line.find(' ')), value);
  }
  return false;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The inodes of the sockets bound to `socket_path` in process `pid`'s
// network namespace.
std::set<std::string> SocketInodes(pid_t pid, const std::string& socket_path) {
  std::set<std::string> inodes;
  // Num RefCount Protocol Flags Type St Inode Path
  for (absl::string_view line :
       absl::StrSplit(Slurp(absl::StrCat("/proc/", pid, "/net/unix")), '\n')) {
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() == 8 && f[7] == socket_path) inodes.insert(std::string(f[6]));
  }
  return inodes;
}

}  // namespace

nlohmann::json DaemonUsage::ToJson() const {
  return {{"rss_kib", rss_kib},
          {"rss_anon_kib", rss_anon_kib},
          {"rss_file_kib", rss_file_kib},
          {"fds", fds},
          {"threads", threads}};
}

absl::StatusOr<DaemonUsage> ReadUsage(pid_t pid) {
  const std::string status = Slurp(absl::StrCat("/proc/", pid, "/status"));
  DaemonUsage usage;
  if (!StatusField(status, "VmRSS:", &usage.rss_kib) ||
      !StatusField(status, "RssAnon:", &usage.rss_anon_kib) ||
      !StatusField(status, "RssFile:", &usage.rss_file_kib) ||
      !StatusField(status, "Threads:", &usage.threads)) {
    return absl::NotFoundError(absl::StrCat("read /proc/", pid,
                                            "/status: no such process "
                                            "(or no VmRSS: a zombie)"));
  }
  auto fds = NumericEntries(absl::StrCat("/proc/", pid, "/fd"));
  if (!fds.ok()) return fds.status();
  usage.fds = static_cast<int64_t>(fds->size());
  return usage;
}

absl::StatusOr<pid_t> FindDaemonPid(const std::string& socket_path) {
  auto pids = NumericEntries("/proc");
  if (!pids.ok()) return pids.status();
  for (int64_t pid : *pids) {
    if (pid == getpid()) continue;
    std::set<std::string> inodes = SocketInodes(static_cast<pid_t>(pid), socket_path);
    if (inodes.empty()) continue;
    const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
    auto fds = NumericEntries(fd_dir);
    if (!fds.ok()) continue;
    for (int64_t fd : *fds) {
      char target[128];
      ssize_t n = readlink(absl::StrCat(fd_dir, "/", fd).c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      absl::string_view link(target, static_cast<size_t>(n));
      if (absl::ConsumePrefix(&link, "socket:[") && absl::ConsumeSuffix(&link, "]") &&
          inodes.count(std::string(link)) > 0) {
        return static_cast<pid_t>(pid);
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("no process listens on ", socket_path,
                                          " (pass the daemon's pid with --daemon-pid)"));
}

}  // namespace smolvm::load
