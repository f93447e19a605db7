#include "lib/net/dns_message.h"

// stdbool.h first: else ldns/common.h #defines bool, true and false,
// which breaks the C++ headers that follow.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <cstdlib>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace smolvm::net {
namespace {

constexpr size_t kMaxWireBytes = 65535;  // A message's length field over TCP.
constexpr size_t kMaxAddresses = 64;
constexpr uint16_t kEdnsUdpSize = 1232;  // What our error replies advertise.

struct PktDeleter {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using PktPtr = std::unique_ptr<ldns_pkt, PktDeleter>;
struct RrDeleter {
  void operator()(ldns_rr* rr) const { ldns_rr_free(rr); }
};
using RrPtr = std::unique_ptr<ldns_rr, RrDeleter>;
struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

absl::StatusOr<PktPtr> Parse(absl::string_view wire, absl::string_view what) {
  if (wire.empty()) return absl::InvalidArgumentError(absl::StrCat("empty DNS ", what));
  if (wire.size() > kMaxWireBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("DNS ", what, " of ", wire.size(), " bytes (at most 65535)"));
  }
  ldns_pkt* raw = nullptr;
  ldns_status s =
      ldns_wire2pkt(&raw, reinterpret_cast<const uint8_t*>(wire.data()), wire.size());
  PktPtr pkt(raw);
  if (s != LDNS_STATUS_OK || pkt == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed DNS ", what, ": ", ldns_get_errorstr_by_id(s)));
  }
  return pkt;
}

// The one question of `pkt`, or null.
const ldns_rr* OnlyQuestion(const ldns_pkt* pkt) {
  const ldns_rr_list* q = ldns_pkt_question(pkt);
  if (q == nullptr || ldns_rr_list_rr_count(q) != 1) return nullptr;
  return ldns_rr_list_rr(q, 0);
}

// `dname` as text: labels lower-cased and joined by dots, no trailing dot.
// Bytes that are not printable ASCII, and '.' or '\' inside a label, are
// written \DDD (RFC 1035 5.1): such a name then matches no domain pattern
// (those are letters, digits, '-' and '_'), rather than passing for
// another name (a label "a.com" is not the labels "a" and "com").
std::string NameText(const ldns_rdf* dname) {
  std::string out;
  if (dname == nullptr || ldns_rdf_get_type(dname) != LDNS_RDF_TYPE_DNAME) return out;
  const uint8_t* data = ldns_rdf_data(dname);
  const size_t size = ldns_rdf_size(dname);
  // Uncompressed wire form (ldns_wire2dname): length-prefixed labels, then 0.
  for (size_t i = 0; i < size && data[i] != 0;) {
    const size_t len = data[i++];
    if (len > size - i) break;  // ldns never builds this; be safe anyway.
    if (!out.empty()) out += '.';
    for (size_t j = 0; j < len; ++j) {
      const uint8_t c = data[i + j];
      if (c > 0x20 && c < 0x7f && c != '.' && c != '\\') {
        out += absl::ascii_tolower(static_cast<char>(c));
      } else {
        out += absl::StrFormat("\\%03d", c);
      }
    }
    i += len;
  }
  return out;
}

absl::StatusOr<std::string> ToWire(const ldns_pkt* pkt) {
  uint8_t* raw = nullptr;
  size_t size = 0;
  ldns_status s = ldns_pkt2wire(&raw, pkt, &size);
  std::unique_ptr<uint8_t, FreeDeleter> buf(raw);
  if (s != LDNS_STATUS_OK || buf == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot encode a DNS message: ", ldns_get_errorstr_by_id(s)));
  }
  return std::string(reinterpret_cast<const char*>(buf.get()), size);
}

// ParseDnsQuery's checks, keeping the packet for MakeDnsErrorReply.
absl::StatusOr<PktPtr> ParseQueryPkt(absl::string_view wire) {
  auto pkt = Parse(wire, "query");
  if (!pkt.ok()) return pkt.status();
  if (ldns_pkt_qr(pkt->get())) return absl::InvalidArgumentError("DNS query is a response");
  if (ldns_pkt_get_opcode(pkt->get()) != LDNS_PACKET_QUERY) {
    return absl::InvalidArgumentError("DNS query has an opcode other than QUERY");
  }
  if (OnlyQuestion(pkt->get()) == nullptr) {
    return absl::InvalidArgumentError("DNS query does not have exactly one question");
  }
  return pkt;
}

}  // namespace

absl::StatusOr<DnsQuestion> ParseDnsQuery(absl::string_view wire) {
  auto pkt = ParseQueryPkt(wire);
  if (!pkt.ok()) return pkt.status();
  const ldns_rr* q = OnlyQuestion(pkt->get());
  DnsQuestion question;
  question.id = ldns_pkt_id(pkt->get());
  question.name = NameText(ldns_rr_owner(q));
  question.qtype = static_cast<uint16_t>(ldns_rr_get_type(q));
  question.qclass = static_cast<uint16_t>(ldns_rr_get_class(q));
  return question;
}

// The reply copies RD and CD from the query (RFC 1035 4.1.1, RFC 4035
// 3.2.2) and sets RA: to the guest, the daemon is a recursive resolver
// (it forwards to one), and stub resolvers warn when RA is clear. If the
// query had EDNS, so does the reply (RFC 6891 7: responders MUST), with
// version 0 and DO copied (RFC 3225).
absl::StatusOr<std::string> MakeDnsErrorReply(absl::string_view query_wire, uint8_t rcode) {
  if (rcode > 15) {
    return absl::InvalidArgumentError(absl::StrCat("DNS rcode ", int{rcode}, " needs EDNS"));
  }
  auto query = ParseQueryPkt(query_wire);
  if (!query.ok()) return query.status();
  PktPtr reply(ldns_pkt_new());
  RrPtr question(ldns_rr_clone(OnlyQuestion(query->get())));
  if (reply == nullptr || question == nullptr) {
    return absl::ResourceExhaustedError("out of memory for a DNS reply");
  }
  ldns_pkt* r = reply.get();
  const ldns_pkt* q = query->get();
  ldns_pkt_set_id(r, ldns_pkt_id(q));
  ldns_pkt_set_qr(r, true);
  ldns_pkt_set_opcode(r, LDNS_PACKET_QUERY);
  ldns_pkt_set_rd(r, ldns_pkt_rd(q));
  ldns_pkt_set_cd(r, ldns_pkt_cd(q));
  ldns_pkt_set_ra(r, true);
  ldns_pkt_set_rcode(r, rcode);
  if (!ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, question.get())) {
    return absl::ResourceExhaustedError("out of memory for a DNS reply");
  }
  question.release();  // Now owned by the packet.
  if (ldns_pkt_edns(q)) {
    ldns_pkt_set_edns_udp_size(r, kEdnsUdpSize);
    ldns_pkt_set_edns_version(r, 0);
    ldns_pkt_set_edns_do(r, ldns_pkt_edns_do(q));
  }
  return ToWire(r);
}

absl::StatusOr<std::vector<DnsAddress>> ParseDnsAnswer(absl::string_view wire,
                                                      const DnsQuestion& question) {
  auto pkt = Parse(wire, "answer");
  if (!pkt.ok()) return pkt.status();
  const ldns_pkt* p = pkt->get();
  if (!ldns_pkt_qr(p)) return absl::InvalidArgumentError("DNS answer is not a response");
  if (ldns_pkt_id(p) != question.id) {
    return absl::InvalidArgumentError("DNS answer has another id than the query");
  }
  const ldns_rr* q = OnlyQuestion(p);
  if (q == nullptr || ldns_rr_get_type(q) != question.qtype ||
      ldns_rr_get_class(q) != question.qclass || NameText(ldns_rr_owner(q)) != question.name) {
    return absl::InvalidArgumentError("DNS answer is not to the question asked");
  }
  std::vector<DnsAddress> out;
  const ldns_rr_list* answer = ldns_pkt_answer(p);
  const size_t count = answer == nullptr ? 0 : ldns_rr_list_rr_count(answer);
  for (size_t i = 0; i < count && out.size() < kMaxAddresses; ++i) {
    const ldns_rr* rr = ldns_rr_list_rr(answer, i);
    if (rr == nullptr || ldns_rr_get_type(rr) != LDNS_RR_TYPE_A ||
        ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || ldns_rr_rd_count(rr) != 1) {
      continue;
    }
    const ldns_rdf* rdf = ldns_rr_rdf(rr, 0);
    if (rdf == nullptr || ldns_rdf_get_type(rdf) != LDNS_RDF_TYPE_A ||
        ldns_rdf_size(rdf) != 4) {
      continue;
    }
    const uint8_t* d = ldns_rdf_data(rdf);
    out.push_back({(uint32_t{d[0]} << 24) | (uint32_t{d[1]} << 16) | (uint32_t{d[2]} << 8) |
                       uint32_t{d[3]},
                   ldns_rr_ttl(rr)});
  }
  return out;
}

}  // namespace smolvm::net
