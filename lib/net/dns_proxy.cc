#include "lib/net/dns_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "lib/base/status_macros.h"
#include "lib/base/unique_fd.h"
#include "lib/model/domain_rules.h"
#include "lib/net/dns_message.h"
#include "spdlog/spdlog.h"

namespace smolvm::net {
namespace {

bool InAnyCidr(uint32_t ip, const std::vector<std::string>& cidrs) {
  for (const std::string& text : cidrs) {
    auto cidr = ParseCidr(text);
    if (cidr.ok() && (ip & PrefixToMask(cidr->second)) == cidr->first) return true;
  }
  return false;
}

constexpr uint8_t kServFail = 2;
constexpr uint8_t kNxDomain = 3;
constexpr uint8_t kRefused = 5;
// A UDP query larger than this is not a query a resolver sends.
constexpr size_t kMaxUdpQuery = 4096;
// A TCP connection serves at most this many queries, for at most this long.
constexpr int kMaxTcpQueries = 32;
constexpr absl::Duration kTcpLifetime = absl::Seconds(30);
constexpr absl::Duration kTcpIdle = absl::Seconds(5);


sockaddr_in Address(uint32_t ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  return a;
}

absl::StatusOr<UniqueFd> BoundSocket(int type, uint32_t ip, uint16_t port) {
  UniqueFd fd(socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = Address(ip, port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("bind ", IpToString(ip), ":", port, ": ", strerror(errno)));
  }
  if (type == SOCK_STREAM && listen(fd.get(), 64) != 0) {
    return absl::InternalError(absl::StrCat("listen: ", strerror(errno)));
  }
  return fd;
}

uint16_t LocalPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// Blocking I/O with a deadline on a non-blocking socket.
bool WaitFor(int fd, short events, absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  if (ms <= 0) return false;
  pollfd p{fd, events, 0};
  return poll(&p, 1, static_cast<int>(ms)) == 1;
}
bool ReadExactly(int fd, char* buf, size_t n, absl::Time deadline) {
  while (n > 0) {
    ssize_t got = recv(fd, buf, n, 0);
    if (got > 0) {
      buf += got;
      n -= static_cast<size_t>(got);
    } else if (got == 0) {
      return false;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (!WaitFor(fd, POLLIN, deadline)) return false;
    } else {
      return false;
    }
  }
  return true;
}
bool WriteAll(int fd, const std::string& data, absl::Time deadline) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t put = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (put > 0) {
      off += static_cast<size_t>(put);
    } else if (put < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!WaitFor(fd, POLLOUT, deadline)) return false;
    } else {
      return false;
    }
  }
  return true;
}
// A DNS message over TCP: a two-byte length, then the message.
std::optional<std::string> ReadTcpMessage(int fd, absl::Time deadline) {
  unsigned char len[2];
  if (!ReadExactly(fd, reinterpret_cast<char*>(len), 2, deadline)) return std::nullopt;
  std::string msg((size_t{len[0]} << 8) | len[1], '\0');
  if (msg.empty() || !ReadExactly(fd, msg.data(), msg.size(), deadline)) return std::nullopt;
  return msg;
}
bool WriteTcpMessage(int fd, const std::string& msg, absl::Time deadline) {
  if (msg.size() > 65535) return false;
  std::string framed;
  framed.push_back(static_cast<char>(msg.size() >> 8));
  framed.push_back(static_cast<char>(msg.size() & 0xff));
  framed += msg;
  return WriteAll(fd, framed, deadline);
}

}  // namespace

struct DnsProxy::Impl {
  Options options;
  Lookup lookup;
  UniqueFd udp, tcp, wake;
  std::atomic<bool> stopping{false};
  std::thread loop;

  // What the firewall holds per guest, for Forget; generation changes at
  // each Forget so that answers to older queries teach nothing.
  struct Guest {
    uint64_t generation = 0;
    std::string vm_id;  // Of the last learning, for the elements' comments.
    std::map<uint32_t, absl::Time> learned;  // Address -> when its element expires.
    int in_flight = 0;
  };
  absl::Mutex mu;
  std::map<uint32_t, Guest> guests ABSL_GUARDED_BY(mu);

  // A query sent upstream over UDP (loop thread only).
  struct Pending {
    UniqueFd upstream;
    sockaddr_in guest_addr{};
    uint32_t guest = 0;
    std::string query;  // For a SERVFAIL.
    DnsQuestion question;
    bool allow = false;  // Learn the answer's addresses.
    std::string vm_id;
    uint64_t generation = 0;
    absl::Time deadline;
  };
  std::list<Pending> pending;

  struct TcpConnection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    int fd = -1;  // Shut down at stop; owned (closed) by the thread.
    uint32_t guest = 0;
  };
  absl::Mutex tcp_mu;
  std::list<TcpConnection> tcp_connections ABSL_GUARDED_BY(tcp_mu);

  // What a query gets: an answer now (`reply`), or forwarding with the
  // fields below.
  struct Decision {
    std::optional<std::string> reply;
    DnsQuestion question;
    bool allow = false;
    std::string vm_id;
    uint64_t generation = 0;
  };

  // nullopt: not a query worth an answer (dropped).
  std::optional<Decision> Decide(uint32_t guest, const std::string& wire) {
    auto question = ParseDnsQuery(wire);
    if (!question.ok()) return std::nullopt;
    Decision d;
    d.question = *question;
    // No reply built: dropped, never forwarded (a refused name must not
    // go upstream).
    auto error = [&](uint8_t rcode) -> std::optional<Decision> {
      auto r = MakeDnsErrorReply(wire, rcode);
      if (!r.ok()) return std::nullopt;
      d.reply = *std::move(r);
      return d;
    };
    // The generation first: a policy change between here and the learning
    // (the map updated, then Forget) makes this answer teach nothing.
    {
      absl::MutexLock lock(&mu);
      d.generation = guests[guest].generation;
    }
    std::optional<Client> client = lookup(guest);
    if (!client) return error(kRefused);
    switch (DecideDnsQuery(client->egress, question->name)) {
      case DnsVerdict::kNxDomain:
        return error(kNxDomain);
      case DnsVerdict::kRefused:
        return error(kRefused);
      case DnsVerdict::kForwardAndAllow:
        d.allow = true;
        break;
      case DnsVerdict::kForward:
        break;
    }
    if (options.upstream_ip == 0) return error(kServFail);
    // The resolver is a destination like any other: a VM whose policy
    // closes it (its deny_cidrs; restricted without it in allow_cidrs)
    // must not reach it through us, or the deny list would open DNS as a
    // way out. Names it allows explicitly are the exception (the point).
    const bool closed = InAnyCidr(options.upstream_ip, client->egress.deny_cidrs) ||
                        (!d.allow && client->egress.mode == EgressMode::kRestricted &&
                         !InAnyCidr(options.upstream_ip, client->egress.allow_cidrs));
    if (closed) return error(kRefused);
    d.vm_id = client->vm_id;
    return d;
  }

  // Makes the answer's addresses reachable for the guest (if the decision
  // says so and its policy did not change since); false if the firewall
  // refused (the guest then gets SERVFAIL, not an address it cannot use).
  bool Learn(uint32_t guest, const Decision& d, const std::string& answer) {
    if (!d.allow) return true;
    auto addresses = ParseDnsAnswer(answer, d.question);
    if (!addresses.ok()) return false;
    absl::MutexLock lock(&mu);
    Guest& g = guests[guest];
    if (g.generation != d.generation) return true;
    const absl::Time now = absl::Now();
    if (g.learned.size() >= kMaxLearnedPerGuest) {
      // Full: the addresses whose answers expired go, from the firewall too
      // (every element must stay on record, or Forget would miss it; a
      // connection still using one of them ends).
      std::vector<uint32_t> expired;
      for (const auto& [ip, expires] : g.learned) {
        if (expires < now) expired.push_back(ip);
      }
      if (options.firewall->ForgetLearned(options.table, guest, expired).ok()) {
        for (uint32_t ip : expired) g.learned.erase(ip);
      }
    }
    std::vector<LearnedAddress> add;
    for (const DnsAddress& a : *addresses) {
      if (g.learned.size() >= kMaxLearnedPerGuest && g.learned.count(a.ip) == 0) {
        spdlog::warn("dns: vm {} holds {} learned addresses; {} not allowed", d.vm_id,
                     g.learned.size(), IpToString(a.ip));
        continue;
      }
      add.push_back({a.ip, a.ttl});
    }
    if (add.empty()) return addresses->empty();
    if (auto s = options.firewall->AllowLearned(options.table, guest, d.vm_id, add); !s.ok()) {
      spdlog::error("dns: {}", std::string(s.message()));
      return false;
    }
    g.vm_id = d.vm_id;
    for (const LearnedAddress& a : add) {
      g.learned[a.ip] =
          now + absl::Seconds(std::clamp(a.ttl, kLearnedMinSeconds, kLearnedMaxSeconds));
    }
    return true;
  }

  void ServeUdpQuery() {
    char buf[kMaxUdpQuery];
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    ssize_t got = recvfrom(udp.get(), buf, sizeof(buf), MSG_TRUNC,
                           reinterpret_cast<sockaddr*>(&from), &len);
    if (got <= 0 || static_cast<size_t>(got) > sizeof(buf) || from.sin_family != AF_INET) return;
    const uint32_t guest = ntohl(from.sin_addr.s_addr);
    const std::string wire(buf, static_cast<size_t>(got));
    std::optional<Decision> d = Decide(guest, wire);
    if (!d) return;
    auto reply = [&](const std::string& msg) {
      sendto(udp.get(), msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&from),
             sizeof(from));
    };
    if (d->reply) return reply(*d->reply);
    auto fail = [&] {
      if (auto r = MakeDnsErrorReply(wire, kServFail); r.ok()) reply(*r);
    };
    {
      absl::MutexLock lock(&mu);
      Guest& g = guests[guest];
      if (static_cast<int>(pending.size()) >= kMaxInFlight || g.in_flight >= kMaxInFlightPerGuest) {
        return fail();
      }
      ++g.in_flight;
    }
    Pending p;
    p.upstream = UniqueFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in up = Address(options.upstream_ip, options.upstream_port);
    if (p.upstream.get() < 0 ||
        connect(p.upstream.get(), reinterpret_cast<sockaddr*>(&up), sizeof(up)) != 0 ||
        send(p.upstream.get(), wire.data(), wire.size(), 0) < 0) {
      Done(guest);
      return fail();
    }
    p.guest_addr = from;
    p.guest = guest;
    p.query = wire;
    p.question = d->question;
    p.allow = d->allow;
    p.vm_id = d->vm_id;
    p.generation = d->generation;
    p.deadline = absl::Now() + options.upstream_timeout;
    pending.push_back(std::move(p));
  }

  // Entries are never erased: their generation must outlive them (there
  // is one per guest address, a bounded number).
  void Done(uint32_t guest) {
    absl::MutexLock lock(&mu);
    --guests[guest].in_flight;
  }

  void SendToGuest(const Pending& p, const std::string& msg) {
    sendto(udp.get(), msg.data(), msg.size(), 0, reinterpret_cast<const sockaddr*>(&p.guest_addr),
           sizeof(p.guest_addr));
  }
  void ServFail(const Pending& p) {
    if (auto r = MakeDnsErrorReply(p.query, kServFail); r.ok()) SendToGuest(p, *r);
  }

  // An upstream answer (or nothing, if it was not one: a stray or spoofed
  // datagram leaves the query waiting).
  bool ServeUpstreamAnswer(Pending& p) {
    std::string buf(65535, '\0');
    ssize_t got = recv(p.upstream.get(), buf.data(), buf.size(), 0);
    if (got < 0 && errno != EAGAIN && errno != EINTR) {
      // The upstream refused (ICMP port unreachable: ECONNREFUSED): no
      // answer will come.
      ServFail(p);
      return true;
    }
    if (got <= 0) return false;
    buf.resize(static_cast<size_t>(got));
    auto parsed = ParseDnsAnswer(buf, p.question);
    if (!parsed.ok()) return false;
    Decision d;
    d.question = p.question;
    d.allow = p.allow;
    d.vm_id = p.vm_id;
    d.generation = p.generation;
    if (Learn(p.guest, d, buf)) {
      SendToGuest(p, buf);
    } else {
      ServFail(p);
    }
    return true;
  }

  void Loop() {
    while (!stopping) {
      std::vector<pollfd> fds = {{wake.get(), POLLIN, 0}, {udp.get(), POLLIN, 0},
                                 {tcp.get(), POLLIN, 0}};
      absl::Time next = absl::InfiniteFuture();
      for (const Pending& p : pending) {
        fds.push_back({p.upstream.get(), POLLIN, 0});
        next = std::min(next, p.deadline);
      }
      int timeout = -1;
      if (next != absl::InfiniteFuture()) {
        timeout = static_cast<int>(
            std::max<int64_t>(0, absl::ToInt64Milliseconds(next - absl::Now()) + 1));
      }
      // TCP threads that ended are joined at least every second.
      if (timeout < 0 || timeout > 1000) timeout = 1000;
      if (poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) {
        spdlog::error("dns: poll: {}", strerror(errno));
        return;
      }
      if (fds[0].revents) break;
      if (fds[1].revents & POLLIN) ServeUdpQuery();
      if (fds[2].revents & POLLIN) AcceptTcp();
      const absl::Time now = absl::Now();
      size_t i = 3;
      for (auto it = pending.begin(); it != pending.end(); ++i) {
        bool finished = false;
        // POLLERR too: a socket error (ECONNREFUSED) comes without POLLIN
        // and stays until read, so poll would return at once until the
        // deadline.
        if (i < fds.size() && (fds[i].revents & (POLLIN | POLLERR))) {
          finished = ServeUpstreamAnswer(*it);
        }
        if (!finished && it->deadline <= now) {
          ServFail(*it);
          finished = true;
        }
        if (finished) {
          Done(it->guest);
          it = pending.erase(it);
        } else {
          ++it;
        }
      }
      ReapTcp(/*all=*/false);
    }
  }

  void AcceptTcp() {
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    UniqueFd conn(accept4(tcp.get(), reinterpret_cast<sockaddr*>(&from), &len,
                    SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (conn.get() < 0) return;
    const uint32_t guest = ntohl(from.sin_addr.s_addr);
    absl::MutexLock lock(&tcp_mu);
    // Closed when over the caps: one guest cannot take every connection.
    if (tcp_connections.size() >= kMaxTcpConnections) return;
    if (std::count_if(tcp_connections.begin(), tcp_connections.end(), [&](const auto& c) {
          return c.guest == guest;
        }) >= kMaxTcpConnectionsPerGuest) {
      return;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    const int fd = conn.get();
    tcp_connections.push_back(TcpConnection{
        std::thread([this, c = std::move(conn), guest, done]() mutable {
          ServeTcp(c.get(), guest);
          // Closed and marked done at once, under the lock ReapTcp shuts
          // down under: else it could shut down the fd's number after the
          // close, by then another socket of the daemon's.
          absl::MutexLock lock(&tcp_mu);
          c.Reset();
          *done = true;
        }),
        done, fd, guest});
  }

  void ServeTcp(int fd, uint32_t guest) {
    const absl::Time end = absl::Now() + kTcpLifetime;
    for (int n = 0; n < kMaxTcpQueries && !stopping; ++n) {
      auto query = ReadTcpMessage(fd, std::min(end, absl::Now() + kTcpIdle));
      if (!query) return;
      std::optional<Decision> d = Decide(guest, *query);
      if (!d) return;
      std::string reply;
      if (d->reply) {
        reply = *d->reply;
      } else if (auto answer = AskUpstreamTcp(*query, d->question); answer && Learn(guest, *d,
                                                                                      *answer)) {
        reply = *answer;
      } else if (auto r = MakeDnsErrorReply(*query, kServFail); r.ok()) {
        reply = *r;
      }
      if (reply.empty() || !WriteTcpMessage(fd, reply, end)) return;
    }
  }

  std::optional<std::string> AskUpstreamTcp(const std::string& query,
                                            const DnsQuestion& question) {
    const absl::Time deadline = absl::Now() + options.upstream_timeout;
    UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_in up = Address(options.upstream_ip, options.upstream_port);
    if (fd.get() < 0) return std::nullopt;
    if (connect(fd.get(), reinterpret_cast<sockaddr*>(&up), sizeof(up)) != 0) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (errno != EINPROGRESS || !WaitFor(fd.get(), POLLOUT, deadline) ||
          getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        return std::nullopt;
      }
    }
    if (!WriteTcpMessage(fd.get(), query, deadline)) return std::nullopt;
    auto answer = ReadTcpMessage(fd.get(), deadline);
    if (!answer || !ParseDnsAnswer(*answer, question).ok()) return std::nullopt;
    return answer;
  }

  void ReapTcp(bool all) {
    std::list<TcpConnection> finished;
    {
      absl::MutexLock lock(&tcp_mu);
      for (auto it = tcp_connections.begin(); it != tcp_connections.end();) {
        if (all || *it->done) {
          if (all && !*it->done) shutdown(it->fd, SHUT_RDWR);
          finished.splice(finished.end(), tcp_connections, it++);
        } else {
          ++it;
        }
      }
    }
    for (TcpConnection& c : finished) c.thread.join();
  }
};

DnsProxy::DnsProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

absl::StatusOr<std::unique_ptr<DnsProxy>> DnsProxy::Start(Options options, Lookup lookup) {
  if (options.firewall == nullptr || options.listen_ip == 0) {
    return absl::InvalidArgumentError("dns proxy: needs a firewall and an address");
  }
  auto impl = std::make_unique<Impl>();
  // The preferred port, else any port free for both UDP and TCP.
  absl::Status last;
  for (int attempt = 0; attempt < 16; ++attempt) {
    const uint16_t want = attempt == 0 ? options.port : 0;
    auto udp = BoundSocket(SOCK_DGRAM, options.listen_ip, want);
    if (!udp.ok()) {
      last = udp.status();
      continue;
    }
    auto tcp = BoundSocket(SOCK_STREAM, options.listen_ip, LocalPort(udp->get()));
    if (!tcp.ok()) {
      last = tcp.status();
      continue;
    }
    impl->udp = *std::move(udp);
    impl->tcp = *std::move(tcp);
    break;
  }
  if (impl->udp.get() < 0) {
    return absl::UnavailableError(absl::StrCat("dns proxy: ", last.message()));
  }
  impl->wake = UniqueFd(eventfd(0, EFD_CLOEXEC));
  if (impl->wake.get() < 0) return absl::InternalError("dns proxy: eventfd failed");
  impl->options = std::move(options);
  impl->lookup = std::move(lookup);
  Impl* raw = impl.get();
  impl->loop = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<DnsProxy>(new DnsProxy(std::move(impl)));
}

DnsProxy::~DnsProxy() {
  impl_->stopping = true;
  uint64_t one = 1;
  (void)!write(impl_->wake.get(), &one, sizeof(one));
  impl_->loop.join();
  impl_->ReapTcp(/*all=*/true);
}

uint16_t DnsProxy::port() const { return LocalPort(impl_->udp.get()); }

absl::Status DnsProxy::Forget(uint32_t guest) {
  absl::MutexLock lock(&impl_->mu);
  Impl::Guest& g = impl_->guests[guest];
  ++g.generation;
  std::vector<uint32_t> addresses;
  for (const auto& [ip, expires] : g.learned) addresses.push_back(ip);
  SMOLVM_RETURN_IF_ERROR(
      impl_->options.firewall->ForgetLearned(impl_->options.table, guest, addresses));
  // Only now: on failure the elements are still there, and so are their
  // records, for the next Forget.
  g.learned.clear();
  return absl::OkStatus();
}

void DnsProxy::Reinstall(const std::set<uint32_t>& keep) {
  absl::MutexLock lock(&impl_->mu);
  const absl::Time now = absl::Now();
  for (auto& [guest, g] : impl_->guests) {
    if (keep.count(guest) == 0) {
      ++g.generation;
      g.learned.clear();
      continue;
    }
    std::vector<LearnedAddress> back;
    for (auto it = g.learned.begin(); it != g.learned.end();) {
      if (it->second <= now) {
        it = g.learned.erase(it);  // Gone with the old table; not due back.
        continue;
      }
      back.push_back({it->first, static_cast<uint32_t>(
                                     absl::ToInt64Seconds(it->second - now) + 1)});
      ++it;
    }
    if (back.empty()) continue;
    // A timeout below the minimum is fine here: it is what was left.
    if (auto s = impl_->options.firewall->AllowLearned(impl_->options.table, guest, g.vm_id,
                                                       back);
        !s.ok()) {
      spdlog::error("dns: {}", std::string(s.message()));
      g.learned.clear();  // Not in the new table.
    }
  }
}

}  // namespace smolvm::net
