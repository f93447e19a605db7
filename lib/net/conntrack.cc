#include "lib/net/conntrack.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/base/file_util.h"

namespace smolvm::net {
namespace {

// TCP states in which a connection still carries (or is about to carry)
// data; the others are closing or closed.
bool TcpOpen(absl::string_view state) { return state == "ESTABLISHED" || state == "SYN_RECV"; }

}  // namespace

std::map<std::string, ForwardedConnections> CountForwardedByGuest(
    absl::string_view table, absl::Duration established_timeout) {
  std::map<std::string, ForwardedConnections> out;
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
    // "ipv4 2 tcp 6 431999 ESTABLISHED src=A dst=B sport=p dport=q src=C
    //  dst=A sport=r dport=p [ASSURED] mark=0 zone=0 use=2": the first
    // src/dst are the original direction, the second the reply's;
    // [UNREPLIED] sits between them while the far end has not answered.
    // Field 4 is the seconds left before the entry expires (reset by each
    // packet).
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6 || f[0] != "ipv4") continue;
    const absl::string_view proto = f[2];
    int64_t left_s = 0;
    if (!absl::SimpleAtoi(f[4], &left_s)) continue;
    absl::string_view state, orig_dst, reply_src;
    int srcs = 0;
    bool unreplied = false;
    for (size_t i = 5; i < f.size(); ++i) {
      const absl::string_view w = f[i];
      if (absl::StartsWith(w, "src=")) {
        if (++srcs == 2) reply_src = w.substr(4);
      } else if (absl::StartsWith(w, "dst=") && srcs == 1 && orig_dst.empty()) {
        orig_dst = w.substr(4);
      } else if (w == "[UNREPLIED]") {
        unreplied = true;
      } else if (srcs == 0 && i == 5) {
        state = w;  // TCP, SCTP: the state word before the tuples.
      }
    }
    // Sent to the guest, but addressed to something else: a forward.
    if (reply_src.empty() || orig_dst.empty() || orig_dst == reply_src) continue;
    ForwardedConnections& c = out[std::string(reply_src)];
    if (unreplied) {
      ++c.waiting;
    } else if (proto != "tcp") {
      ++c.open;
      c.quiet_for = absl::ZeroDuration();
    } else if (TcpOpen(state)) {
      ++c.open;
      c.quiet_for = std::min(
          c.quiet_for, std::max(absl::ZeroDuration(), established_timeout - absl::Seconds(left_s)));
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadConntrackTable() {
  // 160 bytes a line: a quarter of a GiB is ~1.5 million connections.
  auto text = ReadFileToString("/proc/net/nf_conntrack", size_t{256} << 20);
  if (!text.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the connection tracking table cannot be read (", text.status().message(),
        "): forwarded connections neither keep VMs busy nor resume them"));
  }
  return text;
}

absl::Duration EstablishedTimeout() {
  auto text = ReadFileToString("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established");
  int64_t s = 0;
  if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &s) && s > 0) {
    return absl::Seconds(s);
  }
  return absl::Hours(120);
}

}  // namespace smolvm::net
