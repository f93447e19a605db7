#include "lib/model/domain_rules.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace smolvm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;

// n labels "a" joined by dots: 2n-1 characters.
std::string Labels(int n) {
  std::string s = "a";
  for (int i = 1; i < n; ++i) s += ".a";
  return s;
}

struct PatternCase {
  const char* label;
  std::string pattern;
};

class ValidPatternTest : public ::testing::TestWithParam<PatternCase> {};

TEST_P(ValidPatternTest, IsAccepted) {
  EXPECT_THAT(ValidateDomainPattern(GetParam().pattern, "egress.allow_domains"), IsOk());
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, ValidPatternTest,
    ::testing::Values(PatternCase{"name", "example.com"}, PatternCase{"one_label", "localhost"},
                      PatternCase{"wildcard", "*.a.com"}, PatternCase{"uppercase", "Example.COM"},
                      PatternCase{"underscore", "_dmarc.a.com"},
                      PatternCase{"hyphen_inside", "a-b.c-d.com"},
                      PatternCase{"digits", "0.1.2.3"},
                      PatternCase{"label_63", std::string(63, 'x') + ".com"},
                      PatternCase{"name_253", Labels(127)},
                      PatternCase{"wildcard_253", "*." + Labels(126)}),
    [](const auto& info) { return std::string(info.param.label); });

class InvalidPatternTest : public ::testing::TestWithParam<PatternCase> {};

TEST_P(InvalidPatternTest, IsRejectedNamingFieldAndPattern) {
  const std::string& p = GetParam().pattern;
  auto s = ValidateDomainPattern(p, "egress.deny_domains");
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument, "egress.deny_domains"));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          absl::StrCat("\"", absl::CHexEscape(p.substr(0, 20)))));
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, InvalidPatternTest,
    ::testing::Values(PatternCase{"empty", ""}, PatternCase{"star", "*"},
                      PatternCase{"star_dot", "*."}, PatternCase{"empty_label", "a..b"},
                      PatternCase{"leading_dot", ".a.com"},
                      PatternCase{"leading_hyphen", "-a.com"},
                      PatternCase{"trailing_hyphen", "a-.com"},
                      PatternCase{"trailing_dot", "a.com."},
                      PatternCase{"two_wildcards", "*.*.a.com"},
                      PatternCase{"star_in_label", "a*.com"},
                      PatternCase{"star_inside", "a.*.com"},
                      PatternCase{"space", "a b.com"}, PatternCase{"slash", "a/b.com"},
                      PatternCase{"nul", std::string("a\0.com", 6)},
                      PatternCase{"unicode", "caf\xc3\xa9.com"},
                      PatternCase{"label_64", std::string(64, 'x') + ".com"},
                      PatternCase{"name_254", "a" + Labels(127)},
                      PatternCase{"wildcard_255", "*." + Labels(127)},
                      PatternCase{"labels_128", Labels(128)}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(ValidateDomainPatternTest, SaysWhatIsWrong) {
  EXPECT_THAT(ValidateDomainPattern("a.com.", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, "must not end with a dot"));
  EXPECT_THAT(ValidateDomainPattern("*.*.a.com", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, "leading \"*.\""));
  EXPECT_THAT(ValidateDomainPattern(std::string(64, 'x'), "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, "longer than 63"));
  EXPECT_THAT(ValidateDomainPattern(Labels(128), "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, "longer than 253"));
}

TEST(ValidateDomainPatternTest, EscapesControlBytes) {
  EXPECT_THAT(ValidateDomainPattern("a\n.com", "f"),
              StatusIs(absl::StatusCode::kInvalidArgument, R"("a\n.com")"));
}

TEST(DomainMatchesTest, NameMatchesItselfOnly) {
  EXPECT_TRUE(DomainMatches("a.com", "a.com"));
  EXPECT_FALSE(DomainMatches("a.com", "b.a.com"));
  EXPECT_FALSE(DomainMatches("a.com", "xa.com"));
  EXPECT_FALSE(DomainMatches("a.com", "a.co"));
  EXPECT_FALSE(DomainMatches("a.com", ""));
}

TEST(DomainMatchesTest, IgnoresCaseAndOneTrailingDot) {
  EXPECT_TRUE(DomainMatches("a.com", "A.CoM"));
  EXPECT_TRUE(DomainMatches("Example.COM", "example.com"));
  EXPECT_TRUE(DomainMatches("a.com", "a.com."));
  EXPECT_FALSE(DomainMatches("a.com", "a.com.."));
  EXPECT_TRUE(DomainMatches("*.a.com", "B.A.COM."));
}

TEST(DomainMatchesTest, WildcardMatchesEveryNameBelowButNotTheApex) {
  EXPECT_TRUE(DomainMatches("*.a.com", "b.a.com"));
  EXPECT_TRUE(DomainMatches("*.a.com", "c.b.a.com"));
  EXPECT_FALSE(DomainMatches("*.a.com", "a.com"));
  EXPECT_FALSE(DomainMatches("*.a.com", "a.com."));
  EXPECT_FALSE(DomainMatches("*.a.com", "xa.com"));
  EXPECT_FALSE(DomainMatches("*.a.com", ".a.com"));
  EXPECT_FALSE(DomainMatches("*.a.com", "b.a.com.evil"));
}

TEST(DomainMatchesTest, EscapedLabelsMatchNothing) {
  // dns_message.h writes a label "b.a" as "b\046a".
  EXPECT_FALSE(DomainMatches("b.a.com", "b\\046a.com"));
}

TEST(AnyDomainMatchesTest, AnyOf) {
  EXPECT_FALSE(AnyDomainMatches({}, "a.com"));
  EXPECT_TRUE(AnyDomainMatches({"x.org", "*.a.com"}, "b.a.com"));
  EXPECT_FALSE(AnyDomainMatches({"x.org", "*.a.com"}, "a.com"));
}

EgressPolicy Policy(EgressMode mode, std::vector<std::string> allow,
                    std::vector<std::string> deny) {
  EgressPolicy e;
  e.mode = mode;
  e.allow_domains = std::move(allow);
  e.deny_domains = std::move(deny);
  return e;
}

TEST(HasDomainRulesTest, ByMode) {
  EXPECT_FALSE(HasDomainRules(EgressPolicy{}));
  EXPECT_TRUE(HasDomainRules(Policy(EgressMode::kOpen, {}, {"a.com"})));
  EXPECT_TRUE(HasDomainRules(Policy(EgressMode::kRestricted, {"a.com"}, {})));
  EXPECT_TRUE(HasDomainRules(Policy(EgressMode::kRestricted, {}, {"a.com"})));
  EgressPolicy cidrs_only = Policy(EgressMode::kRestricted, {}, {});
  cidrs_only.allow_cidrs = {"10.0.0.0/8"};
  EXPECT_FALSE(HasDomainRules(cidrs_only));
  EXPECT_FALSE(HasDomainRules(Policy(EgressMode::kOff, {}, {})));
}

TEST(DecideDnsQueryTest, Restricted) {
  EgressPolicy e = Policy(EgressMode::kRestricted, {"*.a.com", "b.com"}, {"bad.a.com"});
  EXPECT_EQ(DecideDnsQuery(e, "x.a.com"), DnsVerdict::kForwardAndAllow);
  EXPECT_EQ(DecideDnsQuery(e, "B.COM."), DnsVerdict::kForwardAndAllow);
  EXPECT_EQ(DecideDnsQuery(e, "a.com"), DnsVerdict::kRefused);
  EXPECT_EQ(DecideDnsQuery(e, "other.org"), DnsVerdict::kRefused);
  EXPECT_EQ(DecideDnsQuery(e, ""), DnsVerdict::kRefused);
  // Deny wins over allow.
  EXPECT_EQ(DecideDnsQuery(e, "bad.a.com"), DnsVerdict::kNxDomain);
}

TEST(DecideDnsQueryTest, RestrictedWithoutAllowDomainsForwards) {
  EgressPolicy e = Policy(EgressMode::kRestricted, {}, {"*.bad.com"});
  e.allow_cidrs = {"10.0.0.0/8"};
  EXPECT_EQ(DecideDnsQuery(e, "a.com"), DnsVerdict::kForward);
  EXPECT_EQ(DecideDnsQuery(e, "x.bad.com"), DnsVerdict::kNxDomain);
}

TEST(DecideDnsQueryTest, OpenDeniesOnlyDenyDomains) {
  EgressPolicy e = Policy(EgressMode::kOpen, {}, {"*.bad.com", "evil.org"});
  EXPECT_EQ(DecideDnsQuery(e, "a.com"), DnsVerdict::kForward);
  EXPECT_EQ(DecideDnsQuery(e, "bad.com"), DnsVerdict::kForward);
  EXPECT_EQ(DecideDnsQuery(e, "x.bad.com"), DnsVerdict::kNxDomain);
  EXPECT_EQ(DecideDnsQuery(e, "EVIL.org."), DnsVerdict::kNxDomain);
  EXPECT_EQ(DecideDnsQuery(EgressPolicy{}, "a.com"), DnsVerdict::kForward);
}

TEST(DecideDnsQueryTest, OffRefusesEverything) {
  EXPECT_EQ(DecideDnsQuery(Policy(EgressMode::kOff, {}, {}), "a.com"), DnsVerdict::kRefused);
}

}  // namespace
}  // namespace smolvm
