#include "lib/net/conntrack.h"

#include "gtest/gtest.h"

namespace smolvm::net {
namespace {

// Lines as the kernel prints them. A forward from 127.0.0.1:8080 (and from
// a LAN client to 192.168.1.5:2222) to the guest 10.200.0.2.
constexpr char kTable[] =
    "ipv4     2 tcp      6 431999 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=40000 "
    "dport=8080 src=10.200.0.2 dst=10.200.0.1 sport=80 dport=40000 [ASSURED] mark=0 zone=0 "
    "use=2\n"
    "ipv4     2 tcp      6 118 SYN_SENT src=192.168.1.9 dst=192.168.1.5 sport=5000 dport=2222 "
    "[UNREPLIED] src=10.200.0.2 dst=192.168.1.9 sport=22 dport=5000 mark=0 zone=0 use=2\n"
    "ipv4     2 tcp      6 100 TIME_WAIT src=127.0.0.1 dst=127.0.0.1 sport=40001 dport=8080 "
    "src=10.200.0.2 dst=10.200.0.1 sport=80 dport=40001 [ASSURED] mark=0 zone=0 use=2\n"
    "ipv4     2 udp      17 25 src=127.0.0.1 dst=127.0.0.1 sport=5353 dport=9053 "
    "src=10.200.0.2 dst=10.200.0.1 sport=53 dport=5353 mark=0 zone=0 use=2\n"
    // The guest's own connection out (masqueraded): not a forward to it.
    "ipv4     2 tcp      6 300 ESTABLISHED src=10.200.0.2 dst=1.1.1.1 sport=33000 dport=443 "
    "src=1.1.1.1 dst=192.168.1.5 sport=443 dport=33000 [ASSURED] mark=0 zone=0 use=2\n"
    // A connection straight to the guest's address (no DNAT).
    "ipv4     2 tcp      6 300 ESTABLISHED src=10.200.0.1 dst=10.200.0.2 sport=33001 dport=22 "
    "src=10.200.0.2 dst=10.200.0.1 sport=22 dport=33001 [ASSURED] mark=0 zone=0 use=2\n"
    // Another guest.
    "ipv4     2 tcp      6 300 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=40002 dport=8081 "
    "src=10.200.0.3 dst=10.200.0.1 sport=80 dport=40002 [ASSURED] mark=0 zone=0 use=2\n"
    "ipv6     10 tcp      6 300 ESTABLISHED src=::1 dst=::1 sport=1 dport=2 src=::1 dst=::1 "
    "sport=2 dport=1 [ASSURED] mark=0 zone=0 use=2\n"
    "garbage\n";

TEST(Conntrack, CountsForwardsToTheGuestOnly) {
  const auto by_guest = CountForwardedByGuest(kTable, absl::Seconds(432000));
  ASSERT_TRUE(by_guest.count("10.200.0.2"));
  const ForwardedConnections& c = by_guest.at("10.200.0.2");
  EXPECT_EQ(c.open, 2);  // The established TCP one and the UDP one.
  EXPECT_EQ(c.waiting, 1);
  EXPECT_EQ(c.quiet_for, absl::ZeroDuration());  // The UDP one is fresh.
  ASSERT_TRUE(by_guest.count("10.200.0.3"));
  EXPECT_EQ(by_guest.at("10.200.0.3").open, 1);
  EXPECT_EQ(by_guest.at("10.200.0.3").waiting, 0);
  // 300 of 432000 s left: quiet for 431700 s (a client that vanished).
  EXPECT_EQ(by_guest.at("10.200.0.3").quiet_for, absl::Seconds(431700));
  // The guest's own connections out, and ones straight to its address,
  // are not forwards; other guests' are theirs.
  EXPECT_FALSE(by_guest.count("1.1.1.1"));
  EXPECT_FALSE(by_guest.count("10.200.0.20"));
}

TEST(Conntrack, AQuietEstablishedConnectionSaysHowLong) {
  constexpr char kQuiet[] =
      "ipv4     2 tcp      6 400000 ESTABLISHED src=127.0.0.1 dst=127.0.0.1 sport=1 dport=8080 "
      "src=10.200.0.2 dst=10.200.0.1 sport=80 dport=1 [ASSURED] mark=0 zone=0 use=2\n";
  const auto by_guest = CountForwardedByGuest(kQuiet, absl::Seconds(432000));
  EXPECT_EQ(by_guest.at("10.200.0.2").open, 1);
  EXPECT_EQ(by_guest.at("10.200.0.2").quiet_for, absl::Seconds(32000));
}

TEST(Conntrack, ReadsThisHostsTableOrSaysWhy) {
  auto table = ReadConntrackTable();
  if (!table.ok()) {
    EXPECT_TRUE(absl::IsUnavailable(table.status())) << table.status();
  }
}

}  // namespace
}  // namespace smolvm::net
