#include "lib/net/port_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::net {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kTcpHeader[] =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n";

// A socket table line: local address (kernel hex), port, state, inode.
std::string Line(const std::string& local_hex, int port, const char* state, int inode) {
  char buf[256];
  snprintf(buf, sizeof(buf),
           "   0: %s:%04X 00000000:0000 %s 00000000:00000000 00:00000000 00000000     0"
           "        0 %d 1 0000000000000000 100 0 0 10 0\n",
           local_hex.c_str(), port, state, inode);
  return buf;
}

// 127.0.0.1 etc. as the kernel prints an IPv4 address (on this host).
std::string Hex4(const char* ip) {
  in_addr addr{};
  inet_pton(AF_INET, ip, &addr);
  char buf[16];
  snprintf(buf, sizeof(buf), "%08X", addr.s_addr);
  return buf;
}

std::string Hex6Mapped(const char* ip) {
  char buf[16];
  snprintf(buf, sizeof(buf), "%08X", htonl(0xffff));
  return std::string("0000000000000000") + buf + Hex4(ip);
}

class FakeProcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = temp_.path();
    ASSERT_THAT(MakeDirs(root_ + "/thread-self/net"), IsOk());
    Table("tcp", std::string(kTcpHeader) +
                     Line(Hex4("127.0.0.1"), 10000, "0A", 111) +
                     Line(Hex4("0.0.0.0"), 10001, "0A", 222) +
                     Line(Hex4("127.0.0.1"), 10002, "01", 333) +  // Established.
                     Line(Hex4("127.0.0.1"), 10006, "0A", 0));    // Torn down.
    Table("tcp6", std::string(kTcpHeader) +
                      Line(std::string(32, '0'), 10003, "0A", 444) +
                      Line(Hex6Mapped("10.0.0.2"), 10004, "0A", 555) +
                      Line("000080FE00000000FF00000001000000", 10007, "0A", 777));  // fe80::1
    Table("udp", std::string(kTcpHeader) + Line(Hex4("127.0.0.1"), 10005, "07", 666) +
                     Line(Hex4("127.0.0.1"), 10008, "01", 888));  // Connected.
    // No udp6: IPv6 may be off.
    Process(123, "sshd\n", {{3, 111}});
    Process(77, "nginx\n", {{4, 222}, {5, 999}});
    Process(500, "nginx\n", {{9, 222}});  // A worker sharing the socket.
    Process(42, "evil\x1b[2J\n", {{0, 666}});
  }

  void Table(const std::string& name, const std::string& text) {
    ASSERT_THAT(WriteFileAtomic(root_ + "/thread-self/net/" + name, text), IsOk());
  }

  void Process(int pid, const std::string& comm, std::vector<std::pair<int, int>> fds) {
    const std::string dir = absl::StrCat(root_, "/", pid);
    ASSERT_THAT(MakeDirs(dir + "/fd"), IsOk());
    ASSERT_THAT(WriteFileAtomic(dir + "/comm", comm), IsOk());
    for (const auto& [fd, inode] : fds) {
      ASSERT_EQ(symlink(absl::StrCat("socket:[", inode, "]").c_str(),
                        absl::StrCat(dir, "/fd/", fd).c_str()),
                0);
    }
  }

  absl::Status Check(const std::string& ip, uint32_t port, const std::string& protocol) {
    return CheckHostPortFree(ip, port, protocol, root_);
  }

  smolvm_testing::TempDir temp_{"smolvm-port-probe-test"};
  std::string root_;
};

TEST_F(FakeProcTest, ListenerOnTheAddressNamesTheHolder) {
  EXPECT_THAT(Check("127.0.0.1", 10000, "tcp"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "host port tcp 127.0.0.1:10000 is already in use by sshd (pid 123); "
                       "pick another host port"));
  // Another loopback address is another socket address.
  EXPECT_THAT(Check("127.0.0.2", 10000, "tcp"), IsOk());
  // A forward on every address collides with any listener on the port.
  EXPECT_THAT(Check("0.0.0.0", 10000, "tcp"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "0.0.0.0:10000"));
  // Not for udp.
  EXPECT_THAT(Check("127.0.0.1", 10000, "udp"), IsOk());
}

TEST_F(FakeProcTest, WildcardListenersCollideWithEveryAddress) {
  // The lowest pid among those sharing the socket.
  EXPECT_THAT(Check("192.0.2.1", 10001, "tcp"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "by nginx (pid 77);"));
  // :: may be dual-stack; its holder is not visible here.
  EXPECT_THAT(Check("127.0.0.1", 10003, "tcp"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       "127.0.0.1:10003 is already in use by a host process;"));
}

TEST_F(FakeProcTest, Ipv6SocketsCountWhenTheyCanReceiveIpv4) {
  EXPECT_THAT(Check("10.0.0.2", 10004, "tcp"),
              StatusIs(absl::StatusCode::kFailedPrecondition, "10.0.0.2:10004"));
  EXPECT_THAT(Check("10.0.0.3", 10004, "tcp"), IsOk());
  EXPECT_THAT(Check("0.0.0.0", 10004, "tcp"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Check("0.0.0.0", 10007, "tcp"), IsOk());  // fe80::1 only.
}

TEST_F(FakeProcTest, OnlyListenersAndUnconnectedUdp) {
  EXPECT_THAT(Check("127.0.0.1", 10002, "tcp"), IsOk());  // An established connection.
  EXPECT_THAT(Check("127.0.0.1", 10006, "tcp"), IsOk());  // Inode 0.
  EXPECT_THAT(Check("127.0.0.1", 10008, "udp"), IsOk());  // A connected client.
  absl::Status udp = Check("127.0.0.1", 10005, "udp");
  EXPECT_THAT(udp, StatusIs(absl::StatusCode::kFailedPrecondition,
                            "host port udp 127.0.0.1:10005 is already in use by evil"));
  // The holder's name is escaped.
  EXPECT_THAT(std::string(udp.message()), HasSubstr("evil\\x1b[2J (pid 42)"));
  EXPECT_THAT(Check("127.0.0.1", 10005, "tcp"), IsOk());
  EXPECT_THAT(Check("127.0.0.1", 10009, "tcp"), IsOk());
}

TEST_F(FakeProcTest, RefusesBadArguments) {
  EXPECT_THAT(Check("localhost", 10000, "tcp"),
              StatusIs(absl::StatusCode::kInvalidArgument, "localhost"));
  EXPECT_THAT(Check("127.0.0.1", 0, "tcp"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Check("127.0.0.1", 65536, "tcp"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Check("127.0.0.1", 10000, "sctp"),
              StatusIs(absl::StatusCode::kInvalidArgument, "sctp"));
  EXPECT_THAT(CheckHostPortFree("127.0.0.1", 10000, "tcp", root_ + "/nonexistent"),
              StatusIs(absl::StatusCode::kNotFound, "check host port tcp 127.0.0.1:10000"));
}

// The real /proc of this process's network namespace: a socket this test
// binds is seen, and this process named as its holder.
TEST(CheckHostPortFreeTest, SeesItsOwnSockets) {
  for (int type : {SOCK_STREAM, SOCK_DGRAM}) {
    const std::string protocol = type == SOCK_STREAM ? "tcp" : "udp";
    UniqueFd fd(socket(AF_INET, type | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(fd.valid());
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    if (type == SOCK_STREAM) {
      ASSERT_EQ(listen(fd.get(), 1), 0);
    }
    socklen_t len = sizeof(addr);
    ASSERT_EQ(getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
    const uint32_t port = ntohs(addr.sin_port);

    absl::Status status = CheckHostPortFree("127.0.0.1", port, protocol);
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 absl::StrCat("host port ", protocol, " 127.0.0.1:", port,
                                              " is already in use by port_probe_test (pid ",
                                              getpid(), ")")));
    EXPECT_THAT(CheckHostPortFree("0.0.0.0", port, protocol),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    fd.Reset();
    EXPECT_THAT(CheckHostPortFree("127.0.0.1", port, protocol), IsOk()) << protocol;
  }
}

}  // namespace
}  // namespace smolvm::net
