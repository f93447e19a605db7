#include "lib/net/dns_message.h"

// stdbool.h first: else ldns/common.h #defines bool, true and false,
// which breaks the C++ headers that follow.
#include <stdbool.h>
#include <ldns/ldns.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::FieldsAre;
using ::testing::IsEmpty;

constexpr uint16_t kA = LDNS_RR_TYPE_A;
constexpr uint16_t kAaaa = LDNS_RR_TYPE_AAAA;
constexpr uint16_t kIn = LDNS_RR_CLASS_IN;

struct PktDeleter {
  void operator()(ldns_pkt* p) const { ldns_pkt_free(p); }
};
using Pkt = std::unique_ptr<ldns_pkt, PktDeleter>;

uint32_t Ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d;
}

std::string Wire(const Pkt& pkt) {
  uint8_t* buf = nullptr;
  size_t size = 0;
  EXPECT_EQ(ldns_pkt2wire(&buf, pkt.get(), &size), LDNS_STATUS_OK);
  std::string out(reinterpret_cast<char*>(buf), size);
  std::free(buf);
  return out;
}

Pkt Decode(const std::string& wire) {
  ldns_pkt* p = nullptr;
  EXPECT_EQ(ldns_wire2pkt(&p, reinterpret_cast<const uint8_t*>(wire.data()), wire.size()),
            LDNS_STATUS_OK);
  return Pkt(p);
}

Pkt Query(const char* name, uint16_t type = kA, uint16_t id = 0x1234, uint16_t flags = LDNS_RD) {
  Pkt p(ldns_pkt_query_new(ldns_dname_new_frm_str(name), static_cast<ldns_rr_type>(type),
                           LDNS_RR_CLASS_IN, flags));
  ldns_pkt_set_id(p.get(), id);
  return p;
}

void Push(const Pkt& p, ldns_pkt_section section, const std::string& text) {
  ldns_rr* rr = nullptr;
  ldns_status s = section == LDNS_SECTION_QUESTION
                      ? ldns_rr_new_question_frm_str(&rr, text.c_str(), nullptr, nullptr)
                      : ldns_rr_new_frm_str(&rr, text.c_str(), 0, nullptr, nullptr);
  ASSERT_EQ(s, LDNS_STATUS_OK) << text;
  ASSERT_TRUE(ldns_pkt_push_rr(p.get(), section, rr));
}

// A response to "example.com. IN A" (id 0x1234) with `answers`.
Pkt Response(const std::vector<std::string>& answers, const char* question = "example.com. IN A",
             uint16_t id = 0x1234) {
  Pkt p(ldns_pkt_new());
  ldns_pkt_set_id(p.get(), id);
  ldns_pkt_set_qr(p.get(), true);
  ldns_pkt_set_rd(p.get(), true);
  ldns_pkt_set_ra(p.get(), true);
  Push(p, LDNS_SECTION_QUESTION, question);
  for (const auto& a : answers) Push(p, LDNS_SECTION_ANSWER, a);
  return p;
}

DnsQuestion ExampleA() { return {0x1234, "example.com", kA, kIn}; }

TEST(ParseDnsQueryTest, ReadsTheQuestion) {
  auto q = ParseDnsQuery(Wire(Query("WWW.Example.COM.", kAaaa, 0xbeef)));
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->id, 0xbeef);
  EXPECT_EQ(q->name, "www.example.com");
  EXPECT_EQ(q->qtype, kAaaa);
  EXPECT_EQ(q->qclass, kIn);
}

TEST(ParseDnsQueryTest, RootIsEmpty) {
  auto q = ParseDnsQuery(Wire(Query(".", LDNS_RR_TYPE_NS)));
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->name, "");
}

TEST(ParseDnsQueryTest, EscapesOddBytesOfLabels) {
  // One label "a.B" (with a dot in it), then "c\x00" and "com".
  static constexpr char kWire[] =
      "\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"  // Header: 1 question.
      "\x03" "a.B" "\x02" "c\x00" "\x03" "com" "\x00" "\x00\x01\x00\x01";
  const std::string wire(kWire, sizeof(kWire) - 1);
  auto q = ParseDnsQuery(wire);
  ASSERT_THAT(q, IsOk());
  EXPECT_EQ(q->name, "a\\046b.c\\000.com");
}

TEST(ParseDnsQueryTest, RejectsResponses) {
  Pkt p = Query("example.com.");
  ldns_pkt_set_qr(p.get(), true);
  EXPECT_THAT(ParseDnsQuery(Wire(p)), StatusIs(absl::StatusCode::kInvalidArgument, "response"));
}

TEST(ParseDnsQueryTest, RejectsOtherOpcodes) {
  Pkt p = Query("example.com.");
  ldns_pkt_set_opcode(p.get(), LDNS_PACKET_NOTIFY);
  EXPECT_THAT(ParseDnsQuery(Wire(p)), StatusIs(absl::StatusCode::kInvalidArgument, "opcode"));
}

TEST(ParseDnsQueryTest, RejectsZeroOrTwoQuestions) {
  Pkt none(ldns_pkt_new());
  EXPECT_THAT(ParseDnsQuery(Wire(none)),
              StatusIs(absl::StatusCode::kInvalidArgument, "exactly one question"));
  Pkt two = Query("a.com.");
  Push(two, LDNS_SECTION_QUESTION, "b.com. IN A");
  EXPECT_THAT(ParseDnsQuery(Wire(two)),
              StatusIs(absl::StatusCode::kInvalidArgument, "exactly one question"));
}

TEST(ParseDnsQueryTest, RejectsMalformedBytes) {
  const std::string good = Wire(Query("example.com."));
  for (const std::string& bad :
       {std::string(), std::string("\x12"), good.substr(0, 11), good.substr(0, good.size() - 1),
        good.substr(0, 14), std::string("garbage, not a DNS message at all"),
        std::string(good.data(), 12) + std::string("\xc0\x0c\x00\x01\x00\x01", 6)}) {
    EXPECT_THAT(ParseDnsQuery(bad), StatusIs(absl::StatusCode::kInvalidArgument))
        << bad.size() << " bytes";
  }
}

TEST(ParseDnsQueryTest, RejectsMoreThan65535Bytes) {
  std::string wire = Wire(Query("example.com."));
  wire.resize(65536, '\0');
  EXPECT_THAT(ParseDnsQuery(wire), StatusIs(absl::StatusCode::kInvalidArgument, "65535"));
}

class ErrorReplyTest : public ::testing::TestWithParam<uint8_t> {};

TEST_P(ErrorReplyTest, EchoesTheQuestion) {
  const uint8_t rcode = GetParam();
  auto reply = MakeDnsErrorReply(Wire(Query("Mixed.Example.com.", kAaaa, 0x4321)), rcode);
  ASSERT_THAT(reply, IsOk());
  Pkt r = Decode(*reply);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(ldns_pkt_id(r.get()), 0x4321);
  EXPECT_TRUE(ldns_pkt_qr(r.get()));
  EXPECT_EQ(ldns_pkt_get_opcode(r.get()), LDNS_PACKET_QUERY);
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), rcode);
  EXPECT_TRUE(ldns_pkt_rd(r.get()));
  EXPECT_TRUE(ldns_pkt_ra(r.get()));
  EXPECT_FALSE(ldns_pkt_tc(r.get()));
  EXPECT_FALSE(ldns_pkt_aa(r.get()));
  EXPECT_EQ(ldns_pkt_ancount(r.get()), 0);
  EXPECT_EQ(ldns_pkt_nscount(r.get()), 0);
  EXPECT_EQ(ldns_pkt_arcount(r.get()), 0);
  EXPECT_FALSE(ldns_pkt_edns(r.get()));
  ASSERT_EQ(ldns_pkt_qdcount(r.get()), 1);
  const ldns_rr* q = ldns_rr_list_rr(ldns_pkt_question(r.get()), 0);
  char* owner = ldns_rdf2str(ldns_rr_owner(q));
  EXPECT_STREQ(owner, "Mixed.Example.com.");  // As asked (0x20 randomization).
  std::free(owner);
  EXPECT_EQ(ldns_rr_get_type(q), LDNS_RR_TYPE_AAAA);
  EXPECT_EQ(ldns_rr_get_class(q), LDNS_RR_CLASS_IN);
}

INSTANTIATE_TEST_SUITE_P(Rcodes, ErrorReplyTest, ::testing::Values(2, 3, 5));

TEST(MakeDnsErrorReplyTest, CopiesRdAndCd) {
  auto reply = MakeDnsErrorReply(Wire(Query("a.com.", kA, 1, LDNS_CD)), 5);
  ASSERT_THAT(reply, IsOk());
  Pkt r = Decode(*reply);
  EXPECT_FALSE(ldns_pkt_rd(r.get()));
  EXPECT_TRUE(ldns_pkt_cd(r.get()));
  EXPECT_TRUE(ldns_pkt_ra(r.get()));
}

TEST(MakeDnsErrorReplyTest, AnswersEdnsWithEdns) {
  Pkt q = Query("a.com.");
  ldns_pkt_set_edns_udp_size(q.get(), 4096);
  ldns_pkt_set_edns_do(q.get(), true);
  auto reply = MakeDnsErrorReply(Wire(q), 3);
  ASSERT_THAT(reply, IsOk());
  Pkt r = Decode(*reply);
  EXPECT_TRUE(ldns_pkt_edns(r.get()));
  EXPECT_EQ(ldns_pkt_edns_version(r.get()), 0);
  EXPECT_TRUE(ldns_pkt_edns_do(r.get()));
  EXPECT_EQ(ldns_pkt_get_rcode(r.get()), 3);
}

TEST(MakeDnsErrorReplyTest, ParsesAsAnEmptyAnswerToTheQuery) {
  const std::string query = Wire(Query("Example.com."));
  auto question = ParseDnsQuery(query);
  ASSERT_THAT(question, IsOk());
  auto reply = MakeDnsErrorReply(query, 2);
  ASSERT_THAT(reply, IsOk());
  auto addresses = ParseDnsAnswer(*reply, *question);
  ASSERT_THAT(addresses, IsOk());
  EXPECT_THAT(*addresses, IsEmpty());
}

TEST(MakeDnsErrorReplyTest, RejectsWhatIsNotAQuery) {
  EXPECT_THAT(MakeDnsErrorReply("", 5), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeDnsErrorReply("garbage garbage", 5),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeDnsErrorReply(Wire(Response({})), 5),
              StatusIs(absl::StatusCode::kInvalidArgument, "response"));
  EXPECT_THAT(MakeDnsErrorReply(Wire(Query("a.com.")), 16),
              StatusIs(absl::StatusCode::kInvalidArgument, "rcode"));
}

TEST(ParseDnsAnswerTest, ReturnsTheARecordsWithTheirTtls) {
  auto a = ParseDnsAnswer(Wire(Response({"example.com. 300 IN A 192.0.2.1",
                                         "example.com. 60 IN A 198.51.100.255"})),
                          ExampleA());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(*a, ElementsAre(FieldsAre(Ip(192, 0, 2, 1), 300u),
                              FieldsAre(Ip(198, 51, 100, 255), 60u)));
}

TEST(ParseDnsAnswerTest, FollowsNoNamesButTakesTheCnameTargetsRecords) {
  auto a = ParseDnsAnswer(Wire(Response({"example.com. 3600 IN CNAME edge.cdn.net.",
                                         "edge.cdn.net. 3600 IN CNAME x.cdn.net.",
                                         "x.cdn.net. 20 IN A 203.0.113.9"})),
                          ExampleA());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(*a, ElementsAre(FieldsAre(Ip(203, 0, 113, 9), 20u)));
}

TEST(ParseDnsAnswerTest, IgnoresOtherTypesAndSections) {
  Pkt p = Response({"example.com. 300 IN AAAA 2001:db8::1", "example.com. 300 IN TXT \"x\"",
                    "example.com. 300 IN A 192.0.2.7"});
  Push(p, LDNS_SECTION_AUTHORITY, "example.com. 300 IN NS ns.example.com.");
  Push(p, LDNS_SECTION_ADDITIONAL, "ns.example.com. 300 IN A 192.0.2.53");
  auto a = ParseDnsAnswer(Wire(p), ExampleA());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(*a, ElementsAre(FieldsAre(Ip(192, 0, 2, 7), 300u)));
}

TEST(ParseDnsAnswerTest, MatchesTheQuestionNameInAnyCase) {
  auto a = ParseDnsAnswer(Wire(Response({"EXAMPLE.com. 5 IN A 192.0.2.1"}, "EXAMPLE.Com. IN A")),
                          ExampleA());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(*a, ElementsAre(FieldsAre(Ip(192, 0, 2, 1), 5u)));
}

TEST(ParseDnsAnswerTest, NxDomainHasNoAddresses) {
  Pkt p = Response({});
  ldns_pkt_set_rcode(p.get(), LDNS_RCODE_NXDOMAIN);
  Push(p, LDNS_SECTION_AUTHORITY,
       "com. 900 IN SOA a.gtld-servers.net. nstld.verisign-grs.com. 1 2 3 4 5");
  auto a = ParseDnsAnswer(Wire(p), ExampleA());
  ASSERT_THAT(a, IsOk());
  EXPECT_THAT(*a, IsEmpty());
}

TEST(ParseDnsAnswerTest, KeepsAtMost64) {
  std::vector<std::string> answers;
  for (int i = 0; i < 100; ++i) answers.push_back(absl::StrCat("example.com. 9 IN A 10.0.0.", i));
  auto a = ParseDnsAnswer(Wire(Response(answers)), ExampleA());
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->size(), 64u);
  EXPECT_EQ(a->front().ip, Ip(10, 0, 0, 0));
  EXPECT_EQ(a->back().ip, Ip(10, 0, 0, 63));
}

TEST(ParseDnsAnswerTest, RejectsAnswersToAnotherQuestion) {
  const std::string ok = Wire(Response({"example.com. 1 IN A 192.0.2.1"}));
  DnsQuestion q = ExampleA();
  q.id = 0x1235;
  EXPECT_THAT(ParseDnsAnswer(ok, q), StatusIs(absl::StatusCode::kInvalidArgument, "id"));
  q = ExampleA();
  q.name = "example.org";
  EXPECT_THAT(ParseDnsAnswer(ok, q), StatusIs(absl::StatusCode::kInvalidArgument, "question"));
  q = ExampleA();
  q.name = "www.example.com";
  EXPECT_THAT(ParseDnsAnswer(ok, q), StatusIs(absl::StatusCode::kInvalidArgument, "question"));
  q = ExampleA();
  q.qtype = kAaaa;
  EXPECT_THAT(ParseDnsAnswer(ok, q), StatusIs(absl::StatusCode::kInvalidArgument, "question"));
  q = ExampleA();
  q.qclass = LDNS_RR_CLASS_CH;
  EXPECT_THAT(ParseDnsAnswer(ok, q), StatusIs(absl::StatusCode::kInvalidArgument, "question"));
  Pkt none(ldns_pkt_new());
  ldns_pkt_set_qr(none.get(), true);
  ldns_pkt_set_id(none.get(), 0x1234);
  EXPECT_THAT(ParseDnsAnswer(Wire(none), ExampleA()),
              StatusIs(absl::StatusCode::kInvalidArgument, "question"));
}

TEST(ParseDnsAnswerTest, RejectsQueries) {
  EXPECT_THAT(ParseDnsAnswer(Wire(Query("example.com.")), ExampleA()),
              StatusIs(absl::StatusCode::kInvalidArgument, "not a response"));
}

TEST(ParseDnsAnswerTest, RejectsMalformedBytes) {
  const std::string good = Wire(Response({"example.com. 1 IN A 192.0.2.1"}));
  for (const std::string& bad : {std::string(), good.substr(0, 11), good.substr(0, good.size() - 1),
                                 good.substr(0, good.size() - 5), std::string("\xff", 1) + good,
                                 std::string(70000, 'x')}) {
    EXPECT_THAT(ParseDnsAnswer(bad, ExampleA()), StatusIs(absl::StatusCode::kInvalidArgument))
        << bad.size() << " bytes";
  }
}

}  // namespace
}  // namespace smolvm::net
