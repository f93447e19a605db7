// Fuzz target: the DNS messages of the VMs' resolver (lib/net/dns_message.cc,
// over ldns) and the domain rules it applies to the names. The input is
// both a guest's query and an upstream's answer (to the fixed question
// below, which fuzz/make_corpus.py's answers use). Besides "no crash",
// a query that parses must get an error reply that parses back as an
// answer to it with no addresses, and names come out as documented.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "lib/model/domain_rules.h"
#include "lib/net/dns_message.h"

namespace {

void Fail(const char* what) {
  std::fprintf(stderr, "%s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace smolvm::net;
  const absl::string_view wire(reinterpret_cast<const char*>(data), size);

  static const DnsQuestion kQuestion{0x1234, "example.com", 1, 1};
  auto addresses = ParseDnsAnswer(wire, kQuestion);
  if (addresses.ok() && addresses->size() > 64) Fail("ParseDnsAnswer returned more than 64");

  auto question = ParseDnsQuery(wire);
  if (!question.ok()) return 0;
  const std::string& name = question->name;
  if (!name.empty() && name.back() == '.') Fail("ParseDnsQuery kept a trailing dot");
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') Fail("ParseDnsQuery kept an upper-case letter");
  }
  smolvm::EgressPolicy egress;
  egress.mode = smolvm::EgressMode::kRestricted;
  egress.allow_domains = {"*.example.com", "a.b"};
  egress.deny_domains = {"x.example.com"};
  smolvm::DecideDnsQuery(egress, name);

  for (uint8_t rcode : {2, 3, 5}) {
    auto reply = MakeDnsErrorReply(wire, rcode);
    if (!reply.ok()) Fail("MakeDnsErrorReply failed on a query ParseDnsQuery accepted");
    if (ParseDnsQuery(*reply).ok()) Fail("an error reply parses as a query");
    auto answer = ParseDnsAnswer(*reply, *question);
    if (!answer.ok() || !answer->empty()) Fail("an error reply is not an empty answer");
  }
  return 0;
}
