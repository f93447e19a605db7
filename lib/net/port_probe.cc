#include "lib/net/port_probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "lib/base/file_util.h"
#include "lib/base/ipv4.h"

namespace smolvm::net {
namespace {

// Socket states in /proc/net/{tcp,udp} (include/net/tcp_states.h).
constexpr char kTcpListen[] = "0A";
constexpr char kUdpUnconnected[] = "07";  // TCP_CLOSE: bound, not connected.

// A local address from a socket table: IPv4 as 8 hex digits, IPv6 as 32,
// each 32-bit word printed as the kernel holds it (network byte order read
// as a native integer, hence the ntohl).
struct Bound {
  bool wildcard = false;  // 0.0.0.0 or ::.
  std::optional<uint32_t> ipv4;  // IPv4, or the IPv4 of a v4-mapped IPv6.
};

std::optional<uint32_t> HexWord(absl::string_view hex) {
  uint32_t raw = 0;
  if (hex.size() != 8 || !absl::SimpleHexAtoi(hex, &raw)) return std::nullopt;
  return ntohl(raw);
}

std::optional<Bound> ParseBound(absl::string_view hex) {
  Bound bound;
  if (hex.size() == 8) {
    std::optional<uint32_t> ip = HexWord(hex);
    if (!ip) return std::nullopt;
    bound.ipv4 = *ip;
    bound.wildcard = *ip == 0;
    return bound;
  }
  if (hex.size() != 32) return std::nullopt;
  uint32_t words[4];
  for (int i = 0; i < 4; ++i) {
    std::optional<uint32_t> word = HexWord(hex.substr(i * 8, 8));
    if (!word) return std::nullopt;
    words[i] = *word;
  }
  if (words[0] == 0 && words[1] == 0 && words[2] == 0 && words[3] == 0) {
    bound.wildcard = true;
  } else if (words[0] == 0 && words[1] == 0 && words[2] == 0xffff) {
    bound.ipv4 = words[3];
    bound.wildcard = words[3] == 0;
  }
  return bound;
}

// The inode of the first socket in `table` (the text of /proc/net/tcp or
// the like) in `state` on `port` that an IPv4 forward on `host_ip` would
// collide with; 0 if none.
uint64_t FindHolderInode(const std::string& table, const char* state, uint32_t host_ip,
                         uint32_t port) {
  bool header = true;
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipWhitespace())) {
    if (header) {  // "  sl  local_address rem_address   st ..."
      header = false;
      continue;
    }
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() < 10 || fields[3] != state) continue;
    std::pair<absl::string_view, absl::string_view> local =
        absl::StrSplit(fields[1], absl::MaxSplits(':', 1));
    uint32_t local_port = 0;
    if (!absl::SimpleHexAtoi(local.second, &local_port) || local_port != port) continue;
    std::optional<Bound> bound = ParseBound(local.first);
    if (!bound) continue;
    bool collides = bound->wildcard || (bound->ipv4 && (host_ip == 0 || *bound->ipv4 == host_ip));
    uint64_t inode = 0;
    if (collides && absl::SimpleAtoi(fields[9], &inode)) {
      // Inode 0: a socket being torn down; nobody holds it any more.
      if (inode != 0) return inode;
    }
  }
  return 0;
}

// "sshd (pid 123)" of the lowest pid with an fd on socket `inode`, or "".
std::string DescribeHolder(const std::string& proc_root, uint64_t inode) {
  const std::string target = absl::StrCat("socket:[", inode, "]");
  DIR* proc = opendir(proc_root.c_str());
  if (proc == nullptr) return "";
  std::optional<int> holder;
  while (dirent* entry = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    if (holder && pid > *holder) continue;
    const std::string fd_dir = absl::StrCat(proc_root, "/", pid, "/fd");
    DIR* fds = opendir(fd_dir.c_str());
    if (fds == nullptr) continue;  // Gone meanwhile, or not ours to read.
    while (dirent* fd = readdir(fds)) {
      if (fd->d_name[0] == '.') continue;
      char link[64];
      ssize_t n = readlinkat(dirfd(fds), fd->d_name, link, sizeof(link));
      if (n > 0 && absl::string_view(link, n) == target) {
        holder = pid;
        break;
      }
    }
    closedir(fds);
  }
  closedir(proc);
  if (!holder) return "";
  auto comm = ReadFileToString(absl::StrCat(proc_root, "/", *holder, "/comm"), 4096);
  std::string name = comm.ok() ? std::string(absl::StripTrailingAsciiWhitespace(*comm)) : "";
  // Process names are arbitrary bytes: escaped, they cannot carry terminal
  // escapes into a client's output.
  return absl::StrCat(name.empty() ? "a process" : absl::CHexEscape(name), " (pid ", *holder,
                      ")");
}

}  // namespace

absl::Status CheckHostPortFree(const std::string& host_ip, uint32_t port,
                               const std::string& protocol, const std::string& proc_root) {
  auto ip = ParseIpv4(host_ip);
  if (!ip.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("check host port ", port, ": ", ip.status().message()));
  }
  if (port < 1 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("check host port ", port, ": a port is 1-65535"));
  }
  const bool tcp = protocol == "tcp";
  if (!tcp && protocol != "udp") {
    return absl::InvalidArgumentError(absl::StrCat(
        "check host port ", port, ": protocol \"", absl::CHexEscape(protocol),
        "\" is not tcp or udp"));
  }
  // thread-self, not self: the namespace of the calling thread, which is
  // the one a forward would be made in.
  const std::string net_dir = absl::StrCat(proc_root, "/thread-self/net/");
  uint64_t inode = 0;
  for (absl::string_view suffix : {"", "6"}) {
    const std::string path = absl::StrCat(net_dir, protocol, suffix);
    auto table = ReadFileToString(path);
    if (!table.ok()) {
      // No tcp6/udp6 when IPv6 is off; the IPv4 table always exists.
      if (!suffix.empty() && absl::IsNotFound(table.status())) continue;
      return absl::Status(table.status().code(),
                          absl::StrCat("check host port ", protocol, " ", host_ip, ":", port,
                                       ": ", table.status().message()));
    }
    inode = FindHolderInode(*table, tcp ? kTcpListen : kUdpUnconnected, *ip, port);
    if (inode != 0) break;
  }
  if (inode == 0) return absl::OkStatus();
  std::string holder = DescribeHolder(proc_root, inode);
  return absl::FailedPreconditionError(
      absl::StrCat("host port ", protocol, " ", host_ip, ":", port, " is already in use by ",
                   holder.empty() ? "a host process" : holder, "; pick another host port"));
}

}  // namespace smolvm::net
