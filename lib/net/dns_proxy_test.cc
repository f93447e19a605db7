// DnsProxy over real sockets on loopback (no root, no namespace): the
// guest, the proxy and a fake upstream resolver all live on 127.0.0.1, so
// what is tested is the proxy's actual socket handling (poll loop, UDP
// matching, TCP framing, timeouts, shutdown), not a mock of it. Messages
// are built and read with ldns, independently of dns_message.cc's code.
#include "lib/net/dns_proxy.h"

// stdbool.h first: else ldns/common.h #defines bool, true and false,
// which breaks the C++ headers that follow.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

constexpr uint32_t kGuest = 0x7f000001;   // 127.0.0.1: the guest, proxy and upstream.
constexpr uint32_t kGuest2 = 0x7f000002;  // 127.0.0.2: a second guest (all of 127/8 is local).
constexpr char kTable[] = "smolvm_test";
constexpr char kVmId[] = "vm-dns";
constexpr absl::Duration kReplyWait = absl::Seconds(3);

uint32_t Ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d;
}

sockaddr_in Address(uint32_t ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(ip);
  a.sin_port = htons(port);
  return a;
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_ = -1;
};

// A blocking socket bound to `ip`:`port` (0 = any), listening if a stream
// socket; -1 inside if that port is taken.
Fd Bound(int type, uint32_t ip, uint16_t port) {
  Fd fd(socket(AF_INET, type | SOCK_CLOEXEC, 0));
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = Address(ip, port);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) return Fd();
  if (type == SOCK_STREAM && listen(fd.get(), 16) != 0) return Fd();
  return fd;
}

uint16_t LocalPort(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

bool Readable(int fd, absl::Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) == 1;
}

// DNS over TCP (RFC 1035 4.2.2): a two-byte length, then the message. The
// sockets these run on are blocking with SO_RCVTIMEO, so a peer that goes
// quiet fails the read instead of hanging the test.
void SetReceiveTimeout(int fd, absl::Duration timeout) {
  timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}
bool SendFramed(int fd, const std::string& msg) {
  std::string framed = {static_cast<char>(msg.size() >> 8), static_cast<char>(msg.size() & 0xff)};
  framed += msg;
  return send(fd, framed.data(), framed.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(framed.size());
}
std::optional<std::string> ReceiveFramed(int fd) {
  unsigned char len[2];
  if (recv(fd, len, 2, MSG_WAITALL) != 2) return std::nullopt;
  std::string msg((size_t{len[0]} << 8) | len[1], '\0');
  if (recv(fd, msg.data(), msg.size(), MSG_WAITALL) != static_cast<ssize_t>(msg.size())) {
    return std::nullopt;
  }
  return msg;
}

// ldns packets, owned.
struct PktDeleter {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktDeleter>;

std::string ToWire(const ldns_pkt* pkt) {
  uint8_t* buf = nullptr;
  size_t size = 0;
  EXPECT_EQ(ldns_pkt2wire(&buf, pkt, &size), LDNS_STATUS_OK);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

// Null if `wire` is not a DNS message.
Pkt FromWire(const std::string& wire) {
  ldns_pkt* p = nullptr;
  if (ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(wire.data()), wire.size()) !=
      LDNS_STATUS_OK) {
    return nullptr;
  }
  return Pkt(p);
}

std::string RdfText(const ldns_rdf* rdf) {
  char* s = ldns_rdf2str(rdf);
  std::string out = s == nullptr ? "" : s;
  std::free(s);
  return out;
}

// The question's name, lower case, without the root's trailing dot.
std::string QuestionName(const ldns_pkt* pkt) {
  const ldns_rr_list* q = ldns_pkt_question(pkt);
  if (q == nullptr || ldns_rr_list_rr_count(q) != 1) return "";
  std::string name = absl::AsciiStrToLower(RdfText(ldns_rr_owner(ldns_rr_list_rr(q, 0))));
  if (absl::EndsWith(name, ".")) name.pop_back();
  return name;
}

// The addresses of the answer's A records, as text.
std::vector<std::string> ARecords(const ldns_pkt* pkt) {
  std::vector<std::string> out;
  const ldns_rr_list* answer = ldns_pkt_answer(pkt);
  for (size_t i = 0; answer != nullptr && i < ldns_rr_list_rr_count(answer); ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answer, i);
    if (ldns_rr_get_type(rr) == LDNS_RR_TYPE_A) out.push_back(RdfText(ldns_rr_rdf(rr, 0)));
  }
  return out;
}

std::string Query(const std::string& name, uint16_t id) {
  Pkt q(ldns_pkt_query_new(ldns_dname_new_frm_str(name.c_str()), LDNS_RR_TYPE_A,
                           LDNS_RR_CLASS_IN, LDNS_RD));
  ldns_pkt_set_id(q.get(), id);
  return ToWire(q.get());
}

// What the fake upstream knows. Names outside it get NXDOMAIN.
const std::map<std::string, std::vector<std::string>>& Zone() {
  static const auto* zone = new std::map<std::string, std::vector<std::string>>{
      {"allowed.test", {"allowed.test. 300 IN A 203.0.113.5"}},
      {"a.wild.test", {"a.wild.test. 60 IN A 203.0.113.6", "a.wild.test. 60 IN A 203.0.113.7"}},
      // A chain leading out of the allowed names: the guest connects to
      // the target's address, so that is the one to learn.
      {"cname.wild.test",
       {"cname.wild.test. 30 IN CNAME target.elsewhere.test.",
        "target.elsewhere.test. 120 IN A 203.0.113.9"}},
      {"spoof.wild.test", {"spoof.wild.test. 300 IN A 203.0.113.8"}},
      {"held.wild.test", {"held.wild.test. 300 IN A 203.0.113.10"}},
      {"open.test", {"open.test. 300 IN A 198.51.100.1"}},
  };
  return *zone;
}

// What a spoofer would like the guest to reach.
const std::vector<std::string>& EvilRecords(const std::string& name) {
  static const auto* evil = new std::map<std::string, std::vector<std::string>>{
      {"spoof.wild.test", {"spoof.wild.test. 300 IN A 192.0.2.66"}}};
  return evil->at(name);
}

// A resolver's reply to `query` with `records` (NXDOMAIN if none).
std::string MakeAnswer(const ldns_pkt* query, const std::vector<std::string>& records,
                       uint16_t id) {
  Pkt reply(ldns_pkt_new());
  ldns_pkt_set_id(reply.get(), id);
  ldns_pkt_set_qr(reply.get(), true);
  ldns_pkt_set_rd(reply.get(), ldns_pkt_rd(query));
  ldns_pkt_set_ra(reply.get(), true);
  ldns_pkt_push_rr(reply.get(), LDNS_SECTION_QUESTION,
                   ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(query), 0)));
  for (const std::string& text : records) {
    ldns_rr* rr = nullptr;
    EXPECT_EQ(ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr), LDNS_STATUS_OK)
        << text;
    ldns_pkt_push_rr(reply.get(), LDNS_SECTION_ANSWER, rr);
  }
  if (records.empty()) ldns_pkt_set_rcode(reply.get(), LDNS_RCODE_NXDOMAIN);
  return ToWire(reply.get());
}

std::string ZoneAnswer(const ldns_pkt* query) {
  auto it = Zone().find(QuestionName(query));
  return MakeAnswer(query, it == Zone().end() ? std::vector<std::string>{} : it->second,
                    ldns_pkt_id(query));
}

// A fake upstream resolver on 127.0.0.1, UDP and TCP on one port (the
// proxy has one upstream_port for both). It answers from Zone(), except
// that the first label of the name picks a misbehaviour (UDP only):
//   silent.*  never answered (timeouts, the in-flight cap);
//   held.*    answered only at Release() (an answer that arrives after
//             something the test does meanwhile, without sleeping);
//   spoof.*   preceded by two forged answers: the right id from another
//             port, and the wrong id from the right port.
class FakeUpstream {
 public:
  FakeUpstream() {
    // UDP picks the port; TCP must get the same one (rarely taken: retry).
    for (int attempt = 0; attempt < 16 && tcp_.get() < 0; ++attempt) {
      Fd udp = Bound(SOCK_DGRAM, kGuest, 0);
      Fd tcp = Bound(SOCK_STREAM, kGuest, LocalPort(udp.get()));
      if (tcp.get() >= 0) {
        udp_ = std::move(udp);
        tcp_ = std::move(tcp);
      }
    }
    EXPECT_GE(tcp_.get(), 0) << "no port free for both UDP and TCP";
    wake_ = Fd(eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeUpstream() {
    uint64_t one = 1;
    (void)!write(wake_.get(), &one, sizeof(one));
    thread_.join();
  }

  uint16_t port() const { return LocalPort(udp_.get()); }

  // The queries received so far, "udp:NAME" or "tcp:NAME".
  std::vector<std::string> seen() {
    absl::MutexLock lock(&mu_);
    return seen_;
  }
  // Waits (a bounded time) until `n` queries were received.
  bool WaitSeen(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return seen_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kReplyWait);
  }
  // Answers the held.* queries received so far.
  void Release() {
    absl::MutexLock lock(&mu_);
    for (const auto& [answer, to] : held_) {
      sendto(udp_.get(), answer.data(), answer.size(), 0, reinterpret_cast<const sockaddr*>(&to),
             sizeof(to));
    }
    held_.clear();
  }

 private:
  void Run() {
    while (true) {
      pollfd fds[] = {{wake_.get(), POLLIN, 0}, {udp_.get(), POLLIN, 0}, {tcp_.get(), POLLIN, 0}};
      if (poll(fds, 3, -1) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents & POLLIN) ServeUdp();
      if (fds[2].revents & POLLIN) ServeTcp();
    }
  }

  void ServeUdp() {
    std::string buf(65535, '\0');
    sockaddr_in from{};
    socklen_t len = sizeof(from);
    ssize_t got =
        recvfrom(udp_.get(), buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (got <= 0) return;
    buf.resize(static_cast<size_t>(got));
    Pkt query = FromWire(buf);
    if (query == nullptr) return;
    const std::string name = QuestionName(query.get());
    const std::string answer = ZoneAnswer(query.get());
    {
      // Seen and held at once: a test that saw the query and then calls
      // Release() must find it held.
      absl::MutexLock lock(&mu_);
      seen_.push_back("udp:" + name);
      if (absl::StartsWith(name, "held.")) {
        held_.emplace_back(answer, from);
        return;
      }
    }
    if (absl::StartsWith(name, "silent.")) return;
    auto send_to_asker = [&](int fd, const std::string& msg) {
      sendto(fd, msg.data(), msg.size(), 0, reinterpret_cast<sockaddr*>(&from), sizeof(from));
    };
    if (absl::StartsWith(name, "spoof.")) {
      const uint16_t id = ldns_pkt_id(query.get());
      Fd other = Bound(SOCK_DGRAM, kGuest, 0);
      send_to_asker(other.get(), MakeAnswer(query.get(), EvilRecords(name), id));
      send_to_asker(udp_.get(), MakeAnswer(query.get(), EvilRecords(name), id ^ 0x5a5a));
    }
    send_to_asker(udp_.get(), answer);
  }

  // One query per connection, as the proxy asks.
  void ServeTcp() {
    Fd conn(accept4(tcp_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn.get() < 0) return;
    SetReceiveTimeout(conn.get(), absl::Seconds(2));
    std::optional<std::string> wire = ReceiveFramed(conn.get());
    if (!wire) return;
    Pkt query = FromWire(*wire);
    if (query == nullptr) return;
    {
      absl::MutexLock lock(&mu_);
      seen_.push_back("tcp:" + QuestionName(query.get()));
    }
    SendFramed(conn.get(), ZoneAnswer(query.get()));
  }

  Fd udp_, tcp_, wake_;
  std::thread thread_;
  absl::Mutex mu_;
  std::vector<std::string> seen_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, sockaddr_in>> held_ ABSL_GUARDED_BY(mu_);
};

// A fake Firewall for unit tests: records what DnsProxy asks of the
// dynamic sets (AllowLearned / ForgetLearned) and fails on demand. The
// ruleset methods are not DnsProxy's business and just fail.
class RecordingFirewall : public Firewall {
 public:
  struct Allowed {
    std::string table;
    uint32_t guest;
    std::string vm_id;
    std::vector<LearnedAddress> addresses;
    // What the before_allow hook said, at the time of the call.
    bool guest_had_reply;
  };
  struct Forgotten {
    std::string table;
    uint32_t guest;
    std::vector<uint32_t> addresses;
  };

  absl::StatusOr<std::map<std::string, absl::Status>> Apply(const FirewallState&) override {
    return absl::UnimplementedError("RecordingFirewall");
  }
  bool AcceptsVmChanges(const FirewallState&) const override { return false; }
  absl::StatusOr<std::map<std::string, absl::Status>> ApplyVm(const FirewallState&,
                                                              const std::string&) override {
    return absl::UnimplementedError("RecordingFirewall");
  }
  absl::Status Remove(const std::string&) override { return absl::OkStatus(); }

  absl::Status AllowLearned(const std::string& table, uint32_t guest, const std::string& vm_id,
                            const std::vector<LearnedAddress>& addresses) override {
    absl::MutexLock lock(&mu_);
    allowed_.push_back({table, guest, vm_id, addresses, guest_has_reply_ && guest_has_reply_()});
    return fail_allow_ ? absl::UnavailableError("nft said no") : absl::OkStatus();
  }
  absl::Status ForgetLearned(const std::string& table, uint32_t guest,
                             const std::vector<uint32_t>& addresses) override {
    absl::MutexLock lock(&mu_);
    forgotten_.push_back({table, guest, addresses});
    return absl::OkStatus();
  }

  void set_fail_allow(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_allow_ = fail;
  }
  // Asked during AllowLearned, on the proxy's thread: whether the guest
  // has received its reply already (it must not have: the address must be
  // reachable before the guest can try to connect to it).
  void set_guest_has_reply(std::function<bool()> f) {
    absl::MutexLock lock(&mu_);
    guest_has_reply_ = std::move(f);
  }
  std::vector<Allowed> allowed() {
    absl::MutexLock lock(&mu_);
    return allowed_;
  }
  std::vector<Forgotten> forgotten() {
    absl::MutexLock lock(&mu_);
    return forgotten_;
  }

 private:
  absl::Mutex mu_;
  bool fail_allow_ ABSL_GUARDED_BY(mu_) = false;
  std::function<bool()> guest_has_reply_ ABSL_GUARDED_BY(mu_);
  std::vector<Allowed> allowed_ ABSL_GUARDED_BY(mu_);
  std::vector<Forgotten> forgotten_ ABSL_GUARDED_BY(mu_);
};

// A guest's stub resolver: a UDP socket on `ip` talking to the proxy.
class GuestSocket {
 public:
  GuestSocket(uint16_t proxy_port, uint32_t ip = kGuest) : fd_(Bound(SOCK_DGRAM, ip, 0)) {
    sockaddr_in proxy = Address(kGuest, proxy_port);
    EXPECT_EQ(connect(fd_.get(), reinterpret_cast<sockaddr*>(&proxy), sizeof(proxy)), 0);
  }
  void Send(const std::string& wire) {
    EXPECT_EQ(send(fd_.get(), wire.data(), wire.size(), 0), static_cast<ssize_t>(wire.size()));
  }
  void SendQuery(const std::string& name, uint16_t id) { Send(Query(name, id)); }
  // The next datagram, or null if none within `timeout`.
  Pkt Receive(absl::Duration timeout = kReplyWait) {
    if (!Readable(fd_.get(), timeout)) return nullptr;
    std::string buf(65535, '\0');
    ssize_t got = recv(fd_.get(), buf.data(), buf.size(), 0);
    if (got < 0) return nullptr;
    buf.resize(static_cast<size_t>(got));
    Pkt pkt = FromWire(buf);
    EXPECT_NE(pkt, nullptr) << "the proxy sent something that is not DNS";
    return pkt;
  }
  Pkt Ask(const std::string& name, uint16_t id) {
    SendQuery(name, id);
    return Receive();
  }
  // Whether a datagram is waiting (without taking it).
  bool HasReply() {
    char c;
    return recv(fd_.get(), &c, 1, MSG_PEEK | MSG_DONTWAIT) >= 0;
  }

 private:
  Fd fd_;
};

// A guest's resolver retrying over TCP.
class GuestTcp {
 public:
  explicit GuestTcp(uint16_t proxy_port) : fd_(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in proxy = Address(kGuest, proxy_port);
    EXPECT_EQ(connect(fd_.get(), reinterpret_cast<sockaddr*>(&proxy), sizeof(proxy)), 0);
    SetReceiveTimeout(fd_.get(), kReplyWait);
  }
  Pkt Ask(const std::string& name, uint16_t id) {
    EXPECT_TRUE(SendFramed(fd_.get(), Query(name, id)));
    std::optional<std::string> reply = ReceiveFramed(fd_.get());
    return reply ? FromWire(*reply) : nullptr;
  }

 private:
  Fd fd_;
};

EgressPolicy Restricted() {
  EgressPolicy e;
  e.mode = EgressMode::kRestricted;
  e.allow_domains = {"allowed.test", "*.wild.test"};
  return e;
}

EgressPolicy OpenDenying() {
  EgressPolicy e;
  e.mode = EgressMode::kOpen;
  e.deny_domains = {"denied.test"};
  return e;
}

class DnsProxyTest : public ::testing::Test {
 protected:
  // Options for the fake upstream; tests change what they are about.
  DnsProxy::Options Options() {
    DnsProxy::Options o;
    o.listen_ip = kGuest;
    o.port = 0;
    o.upstream_ip = kGuest;
    o.upstream_port = upstream_.port();
    o.upstream_timeout = absl::Seconds(3);
    o.firewall = &firewall_;
    o.table = kTable;
    return o;
  }
  std::unique_ptr<DnsProxy> Start(DnsProxy::Options options) {
    auto proxy = DnsProxy::Start(options, [this](uint32_t guest) {
      absl::MutexLock lock(&mu_);
      auto it = clients_.find(guest);
      return it == clients_.end() ? std::nullopt : std::make_optional(it->second);
    });
    EXPECT_THAT(proxy, IsOk());
    return proxy.ok() ? *std::move(proxy) : nullptr;
  }
  std::unique_ptr<DnsProxy> Start() { return Start(Options()); }

  void SetClient(const EgressPolicy& egress, uint32_t guest = kGuest) {
    absl::MutexLock lock(&mu_);
    clients_[guest] = DnsProxy::Client{kVmId, egress};
  }

  FakeUpstream upstream_;
  RecordingFirewall firewall_;
  absl::Mutex mu_;
  std::map<uint32_t, DnsProxy::Client> clients_ ABSL_GUARDED_BY(mu_);
};

// Each reply is checked to be the one to its query (id and question), as a
// stub resolver would.
void ExpectReply(const Pkt& reply, uint16_t id, const std::string& name, ldns_pkt_rcode rcode) {
  ASSERT_NE(reply, nullptr) << "no reply to " << name;
  EXPECT_TRUE(ldns_pkt_qr(reply.get()));
  EXPECT_EQ(ldns_pkt_id(reply.get()), id) << name;
  EXPECT_EQ(QuestionName(reply.get()), name);
  EXPECT_EQ(ldns_pkt_get_rcode(reply.get()), rcode) << name;
}

TEST_F(DnsProxyTest, RestrictedForwardsAllowedNamesAndLearnsBeforeReplying) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());
  firewall_.set_guest_has_reply([&] { return guest.HasReply(); });

  Pkt reply = guest.Ask("allowed.test", 0x1001);
  ExpectReply(reply, 0x1001, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("203.0.113.5"));
  // A wildcard's name, with two addresses: both learned, in one call.
  reply = guest.Ask("A.Wild.Test", 0x1002);
  ASSERT_NE(reply, nullptr);
  EXPECT_EQ(ldns_pkt_get_rcode(reply.get()), LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("203.0.113.6", "203.0.113.7"));

  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 2u);
  EXPECT_EQ(allowed[0].table, kTable);
  EXPECT_EQ(allowed[0].guest, kGuest);
  EXPECT_EQ(allowed[0].vm_id, kVmId);
  // The TTL as the answer says (clamping is the firewall's rendering).
  EXPECT_THAT(allowed[0].addresses, ElementsAre(FieldsAre(Ip(203, 0, 113, 5), 300u)));
  EXPECT_FALSE(allowed[0].guest_had_reply) << "the guest got the address before it was allowed";
  EXPECT_THAT(allowed[1].addresses, ElementsAre(FieldsAre(Ip(203, 0, 113, 6), 60u),
                                                FieldsAre(Ip(203, 0, 113, 7), 60u)));
  EXPECT_FALSE(allowed[1].guest_had_reply);
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:allowed.test", "udp:a.wild.test"));
}

TEST_F(DnsProxyTest, RestrictedRefusesOtherNamesWithoutAskingUpstream) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  // The wildcard's apex, a suffix that is not a label boundary, a name
  // under an exact pattern, and one the allowed name is a prefix of.
  uint16_t id = 0x2000;
  for (const char* name : {"other.test", "wild.test", "notwild.test", "sub.allowed.test",
                           "allowed.test.evil"}) {
    ++id;
    ExpectReply(guest.Ask(name, id), id, name, LDNS_RCODE_REFUSED);
  }
  // Queries are served in order: had any refused name gone upstream, the
  // upstream would have seen it before this one.
  ++id;
  ExpectReply(guest.Ask("allowed.test", id), id, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:allowed.test"));
  EXPECT_EQ(firewall_.allowed().size(), 1u);
}

TEST_F(DnsProxyTest, CnameChainTeachesTheTargetsAddress) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  Pkt reply = guest.Ask("cname.wild.test", 0x3001);
  ExpectReply(reply, 0x3001, "cname.wild.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("203.0.113.9"));
  EXPECT_EQ(ldns_rr_list_rr_count(ldns_pkt_answer(reply.get())), 2u) << "CNAME kept";
  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 1u);
  EXPECT_THAT(allowed[0].addresses, ElementsAre(FieldsAre(Ip(203, 0, 113, 9), 120u)));
}

TEST_F(DnsProxyTest, OpenWithDenyDomainsAnswersNxDomainAndLearnsNothing) {
  SetClient(OpenDenying());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  ExpectReply(guest.Ask("DENIED.test.", 0x4001), 0x4001, "denied.test", LDNS_RCODE_NXDOMAIN);
  Pkt reply = guest.Ask("open.test", 0x4002);
  ExpectReply(reply, 0x4002, "open.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("198.51.100.1"));
  // An open VM reaches everything already: nothing to learn.
  EXPECT_THAT(firewall_.allowed(), IsEmpty());
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:open.test"));
}

TEST_F(DnsProxyTest, UnknownGuestIsRefused) {
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  ExpectReply(guest.Ask("open.test", 0x5001), 0x5001, "open.test", LDNS_RCODE_REFUSED);
  // The lookup is asked per query: a VM that gains domain rules is served.
  SetClient(OpenDenying());
  ExpectReply(guest.Ask("open.test", 0x5002), 0x5002, "open.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:open.test"));
}

TEST_F(DnsProxyTest, NoUpstreamMeansServfailForForwardedNames) {
  SetClient(Restricted());
  DnsProxy::Options options = Options();
  options.upstream_ip = 0;
  auto proxy = Start(options);
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  ExpectReply(guest.Ask("allowed.test", 0x6001), 0x6001, "allowed.test", LDNS_RCODE_SERVFAIL);
  // What the policy decides alone is still decided.
  ExpectReply(guest.Ask("other.test", 0x6002), 0x6002, "other.test", LDNS_RCODE_REFUSED);
  EXPECT_THAT(upstream_.seen(), IsEmpty());
  EXPECT_THAT(firewall_.allowed(), IsEmpty());
}

TEST_F(DnsProxyTest, SilentUpstreamMeansServfailAfterTheTimeout) {
  SetClient(Restricted());
  DnsProxy::Options options = Options();
  options.upstream_timeout = absl::Milliseconds(500);
  auto proxy = Start(options);
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  const absl::Time start = absl::Now();
  Pkt reply = guest.Ask("silent.wild.test", 0x7001);
  const absl::Duration took = absl::Now() - start;
  ExpectReply(reply, 0x7001, "silent.wild.test", LDNS_RCODE_SERVFAIL);
  EXPECT_GE(took, absl::Milliseconds(450));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_THAT(firewall_.allowed(), IsEmpty());
}

// Nothing listens on the upstream port: the kernel reports the ICMP port
// unreachable on the proxy's connected socket (ECONNREFUSED, POLLERR
// without POLLIN). The guest gets SERVFAIL at once rather than at the
// timeout, and the proxy does not spin on the error meanwhile.
TEST_F(DnsProxyTest, ClosedUpstreamPortMeansServfailAtOnce) {
  SetClient(Restricted());
  DnsProxy::Options options = Options();
  options.upstream_port = LocalPort(Bound(SOCK_DGRAM, kGuest, 0).get());  // Free again.
  options.upstream_timeout = absl::Seconds(10);
  auto proxy = Start(options);
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  const absl::Time start = absl::Now();
  ExpectReply(guest.Ask("allowed.test", 0x7101), 0x7101, "allowed.test", LDNS_RCODE_SERVFAIL);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST_F(DnsProxyTest, ForgedAnswersAreIgnored) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  Pkt reply = guest.Ask("spoof.wild.test", 0x8001);
  ExpectReply(reply, 0x8001, "spoof.wild.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("203.0.113.8"));
  // The next datagram is the next query's reply: no forgery got through
  // after the real answer either.
  ExpectReply(guest.Ask("allowed.test", 0x8002), 0x8002, "allowed.test", LDNS_RCODE_NOERROR);
  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 2u);
  EXPECT_THAT(allowed[0].addresses, ElementsAre(FieldsAre(Ip(203, 0, 113, 8), 300u)));
}

TEST_F(DnsProxyTest, FirewallRefusalMeansServfail) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());
  firewall_.set_fail_allow(true);

  // An address the guest could not reach is worse than no answer: the
  // stub resolver retries or tries the next server.
  Pkt reply = guest.Ask("allowed.test", 0x9001);
  ExpectReply(reply, 0x9001, "allowed.test", LDNS_RCODE_SERVFAIL);
  EXPECT_THAT(ARecords(reply.get()), IsEmpty());
  EXPECT_EQ(firewall_.allowed().size(), 1u);
  // Nor is the address remembered as learned.
  ASSERT_THAT(proxy->Forget(kGuest), IsOk());
  auto forgotten = firewall_.forgotten();
  ASSERT_EQ(forgotten.size(), 1u);
  EXPECT_THAT(forgotten[0].addresses, IsEmpty());
}

TEST_F(DnsProxyTest, ForgetRemovesWhatWasLearnedAndOlderQueriesTeachNothing) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  ExpectReply(guest.Ask("allowed.test", 0xa001), 0xa001, "allowed.test", LDNS_RCODE_NOERROR);
  // A query asked under the old policy, answered after Forget (the policy
  // changed meanwhile).
  guest.SendQuery("held.wild.test", 0xa002);
  ASSERT_TRUE(upstream_.WaitSeen(2));
  ASSERT_THAT(proxy->Forget(kGuest), IsOk());
  auto forgotten = firewall_.forgotten();
  ASSERT_EQ(forgotten.size(), 1u);
  EXPECT_EQ(forgotten[0].table, kTable);
  EXPECT_EQ(forgotten[0].guest, kGuest);
  EXPECT_THAT(forgotten[0].addresses, ElementsAre(Ip(203, 0, 113, 5)));

  upstream_.Release();
  Pkt reply = guest.Receive();
  ExpectReply(reply, 0xa002, "held.wild.test", LDNS_RCODE_NOERROR);
  EXPECT_EQ(firewall_.allowed().size(), 1u) << "an answer to an older query taught something";
  ASSERT_THAT(proxy->Forget(kGuest), IsOk());
  forgotten = firewall_.forgotten();
  ASSERT_EQ(forgotten.size(), 2u);
  EXPECT_THAT(forgotten[1].addresses, IsEmpty());

  // Queries asked after Forget teach again.
  ExpectReply(guest.Ask("allowed.test", 0xa003), 0xa003, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_EQ(firewall_.allowed().size(), 2u);
}

TEST_F(DnsProxyTest, ReinstallPutsBackWhatIsStillValid) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  ExpectReply(guest.Ask("allowed.test", 0xa101), 0xa101, "allowed.test", LDNS_RCODE_NOERROR);
  ASSERT_EQ(firewall_.allowed().size(), 1u);
  // The tables were replaced: the address goes back, with the time left
  // of its TTL (300 s, the fake upstream's).
  proxy->Reinstall({kGuest});
  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 2u);
  ASSERT_EQ(allowed[1].addresses.size(), 1u);
  EXPECT_EQ(allowed[1].vm_id, kVmId);
  EXPECT_LE(allowed[1].addresses[0].ttl, 301u);
  EXPECT_GE(allowed[1].addresses[0].ttl, 295u);
  EXPECT_THAT(firewall_.forgotten(), IsEmpty());
  // Still on record for Forget.
  ASSERT_THAT(proxy->Forget(kGuest), IsOk());
  auto forgotten = firewall_.forgotten();
  ASSERT_EQ(forgotten.size(), 1u);
  EXPECT_EQ(forgotten[0].addresses.size(), 1u) << "Reinstall lost a record";
  // A guest not kept (its policy changed) loses its records, firewall
  // untouched (the new tables never had them).
  ExpectReply(guest.Ask("allowed.test", 0xa102), 0xa102, "allowed.test", LDNS_RCODE_NOERROR);
  proxy->Reinstall({});
  EXPECT_EQ(firewall_.allowed().size(), 3u);
  ASSERT_THAT(proxy->Forget(kGuest), IsOk());
  EXPECT_THAT(firewall_.forgotten().back().addresses, IsEmpty());
}

// A resolver the VM's policy closes stays closed through the proxy: a deny
// list of names must not open DNS as a way out.
TEST_F(DnsProxyTest, TheResolverIsReachedOnlyWhereThePolicyAllowsIt) {
  EgressPolicy restricted;
  restricted.mode = EgressMode::kRestricted;
  restricted.allow_cidrs = {"10.0.0.0/8"};
  restricted.deny_domains = {"bad.test"};
  SetClient(restricted);
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());
  ExpectReply(guest.Ask("allowed.test", 0xc101), 0xc101, "allowed.test", LDNS_RCODE_REFUSED);
  ExpectReply(guest.Ask("bad.test", 0xc102), 0xc102, "bad.test", LDNS_RCODE_NXDOMAIN);
  // With the resolver in its allow list, forwarded (nothing learned).
  restricted.allow_cidrs = {"127.0.0.0/8"};
  SetClient(restricted);
  ExpectReply(guest.Ask("allowed.test", 0xc103), 0xc103, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(firewall_.allowed(), IsEmpty());
  // Open, but the resolver in its deny list.
  EgressPolicy open = OpenDenying();
  open.deny_cidrs = {"127.0.0.1"};
  SetClient(open);
  ExpectReply(guest.Ask("allowed.test", 0xc104), 0xc104, "allowed.test", LDNS_RCODE_REFUSED);
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:allowed.test"))
      << "only the one allowed query went upstream";
}

TEST_F(DnsProxyTest, TcpQueriesAreForwardedOverTcpAndRefusedAlike) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestTcp guest(proxy->port());

  Pkt reply = guest.Ask("allowed.test", 0xb001);
  ExpectReply(reply, 0xb001, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(ARecords(reply.get()), ElementsAre("203.0.113.5"));
  // Several queries on one connection.
  ExpectReply(guest.Ask("other.test", 0xb002), 0xb002, "other.test", LDNS_RCODE_REFUSED);
  ExpectReply(guest.Ask("a.wild.test", 0xb003), 0xb003, "a.wild.test", LDNS_RCODE_NOERROR);

  EXPECT_THAT(upstream_.seen(), ElementsAre("tcp:allowed.test", "tcp:a.wild.test"));
  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 2u);
  EXPECT_EQ(allowed[0].guest, kGuest);
  EXPECT_EQ(allowed[0].vm_id, kVmId);
  EXPECT_THAT(allowed[0].addresses, ElementsAre(FieldsAre(Ip(203, 0, 113, 5), 300u)));
}

TEST_F(DnsProxyTest, GarbageIsDroppedAndServingGoesOn) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  guest.Send("");
  guest.Send("\x12\x34 this is not DNS");
  guest.Send(std::string(12, '\xff'));  // A header with absurd counts.
  guest.Send(std::string(5000, 'x'));   // Longer than any query.
  // A response, not a query: answering it could start a loop between two
  // resolvers.
  Pkt response(ldns_pkt_query_new(ldns_dname_new_frm_str("allowed.test"), LDNS_RR_TYPE_A,
                                  LDNS_RR_CLASS_IN, LDNS_QR));
  guest.Send(ToWire(response.get()));
  // Served in order: had any of the above been answered, that answer
  // would come first.
  ExpectReply(guest.Ask("allowed.test", 0xc001), 0xc001, "allowed.test", LDNS_RCODE_NOERROR);
  EXPECT_THAT(upstream_.seen(), ElementsAre("udp:allowed.test"));
}

TEST_F(DnsProxyTest, InFlightCapPerGuestAnswersTheExcessWithServfail) {
  SetClient(Restricted());
  SetClient(Restricted(), kGuest2);
  auto proxy = Start();  // Upstream timeout 3 s: the SERVFAILs below are not timeouts.
  ASSERT_NE(proxy, nullptr);
  GuestSocket guest(proxy->port());

  constexpr int kExtra = 5;
  const absl::Time start = absl::Now();
  for (int id = 1; id <= DnsProxy::kMaxInFlightPerGuest + kExtra; ++id) {
    guest.SendQuery("silent.wild.test", static_cast<uint16_t>(id));
  }
  std::set<int> failed;
  for (int i = 0; i < kExtra; ++i) {
    Pkt reply = guest.Receive();
    ASSERT_NE(reply, nullptr);
    EXPECT_EQ(ldns_pkt_get_rcode(reply.get()), LDNS_RCODE_SERVFAIL);
    failed.insert(ldns_pkt_id(reply.get()));
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  // The queries beyond the cap, in order of arrival.
  std::set<int> expected;
  for (int i = 1; i <= kExtra; ++i) expected.insert(DnsProxy::kMaxInFlightPerGuest + i);
  EXPECT_EQ(failed, expected);

  // The cap is per guest: another is served meanwhile.
  GuestSocket other(proxy->port(), kGuest2);
  ExpectReply(other.Ask("allowed.test", 0xd001), 0xd001, "allowed.test", LDNS_RCODE_NOERROR);
  auto allowed = firewall_.allowed();
  ASSERT_EQ(allowed.size(), 1u);
  EXPECT_EQ(allowed[0].guest, kGuest2);
}

TEST_F(DnsProxyTest, DestructionDoesNotWaitForAnIdleTcpConnection) {
  SetClient(Restricted());
  auto proxy = Start();
  ASSERT_NE(proxy, nullptr);
  GuestTcp guest(proxy->port());
  // A query first, so the connection is being served (its thread waits
  // for the next query, up to the proxy's idle limit of seconds).
  ExpectReply(guest.Ask("allowed.test", 0xe001), 0xe001, "allowed.test", LDNS_RCODE_NOERROR);

  const absl::Time start = absl::Now();
  proxy.reset();
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

}  // namespace
}  // namespace smolvm::net
