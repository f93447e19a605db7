#include "lib/net/conntrack.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lib/base/file_util.h"

namespace smolvm::net {
namespace {

// TCP states in which a connection still carries (or is about to carry)
// data; the others are closing or closed.
bool TcpOpen(absl::string_view state) {
  return state == "ESTABLISHED" || state == "SYN_RECV";
}

}  // namespace

ForwardedConnections CountForwarded(absl::string_view table, const std::string& guest_ip) {
  ForwardedConnections out;
  const std::string reply_src = absl::StrCat("src=", guest_ip);
  for (absl::string_view line : absl::StrSplit(table, '\n', absl::SkipEmpty())) {
    // "ipv4 2 tcp 6 431999 ESTABLISHED src=A dst=B sport=p dport=q src=C
    //  dst=A sport=r dport=p [ASSURED] mark=0 ..." — the first src/dst are
    // the original direction, the second the reply's; [UNREPLIED] sits
    // between them while the far end has not answered.
    std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (f.size() < 6 || f[0] != "ipv4") continue;
    const absl::string_view proto = f[2];
    absl::string_view state;
    int srcs = 0;
    absl::string_view orig_dst;
    bool reply_is_guest = false, unreplied = false;
    for (size_t i = 5; i < f.size(); ++i) {
      const absl::string_view w = f[i];
      if (absl::StartsWith(w, "src=")) {
        ++srcs;
        if (srcs == 2) reply_is_guest = (w == reply_src);
      } else if (absl::StartsWith(w, "dst=") && srcs == 1 && orig_dst.empty()) {
        orig_dst = w.substr(4);
      } else if (w == "[UNREPLIED]") {
        unreplied = true;
      } else if (srcs == 0 && i == 5) {
        state = w;  // TCP, SCTP: the state word before the tuples.
      }
    }
    // Sent to the guest, but addressed to something else: a forward.
    if (!reply_is_guest || orig_dst == guest_ip) continue;
    if (unreplied) {
      ++out.waiting;
    } else if (proto != "tcp" || TcpOpen(state)) {
      ++out.open;
    }
  }
  return out;
}

absl::StatusOr<std::string> ReadConntrackTable() {
  auto text = ReadFileToString("/proc/net/nf_conntrack");
  if (!text.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "the connection tracking table cannot be read (", text.status().message(),
        "): forwarded connections neither keep VMs busy nor resume them"));
  }
  return text;
}

}  // namespace smolvm::net
