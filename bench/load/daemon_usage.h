// File: bench/load/daemon_usage.h
// -----------------------------------------------------------------------------
//
// The daemon's resource use as the load benchmark samples it from /proc (so
// it must run on the daemon's host, as root or as the daemon's user):
// resident memory, open file descriptors and threads, and the daemon's pid
// found from its Unix socket.
#ifndef SMOLVM_BENCH_LOAD_DAEMON_USAGE_H_
#define SMOLVM_BENCH_LOAD_DAEMON_USAGE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace smolvm::load {

struct DaemonUsage {
  int64_t rss_kib = 0;       // VmRSS of /proc/<pid>/status: the two below
  int64_t rss_anon_kib = 0;  // RssAnon: heap, stacks (what a leak grows)
  int64_t rss_file_kib = 0;  // RssFile: mapped files (code paged in)
  int64_t fds = 0;           // Entries of /proc/<pid>/fd.
  int64_t threads = 0;       // Threads of /proc/<pid>/status.

  nlohmann::json ToJson() const;
  bool operator==(const DaemonUsage&) const = default;
};

// Samples process `pid` once.
absl::StatusOr<DaemonUsage> ReadUsage(pid_t pid);

// FindDaemonPid returns the pid of the process that listens on the Unix
// socket `socket_path`: the socket's inode is looked up in each process's
// own /proc/<pid>/net/unix (the daemon may run in another network
// namespace), and the process must hold that inode open. NOT_FOUND if none.
absl::StatusOr<pid_t> FindDaemonPid(const std::string& socket_path);

}  // namespace smolvm::load

#endif  // SMOLVM_BENCH_LOAD_DAEMON_USAGE_H_
