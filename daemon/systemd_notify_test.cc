#include "daemon/systemd_notify.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "lib/base/unique_fd.h"
#include "spdlog/spdlog.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::daemon {
namespace {

// A notification socket as systemd's: a datagram socket whose path is
// $NOTIFY_SOCKET. The environment is restored when it goes.
class FakeServiceManager {
 public:
  FakeServiceManager() {
    path_ = temp_.path() + "/notify";
    fd_ = UniqueFd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~FakeServiceManager() {
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
  }
  // The next datagram, or "" if none arrives within `timeout_ms`.
  std::string Next(int timeout_ms = 2000) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return "";
    char buf[4096];
    ssize_t n = recv(fd_.get(), buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  // Every datagram that arrives within `ms`.
  std::vector<std::string> During(int ms) {
    std::vector<std::string> out;
    const auto until = absl::Now() + absl::Milliseconds(ms);
    for (absl::Time now = absl::Now(); now < until; now = absl::Now()) {
      std::string m = Next(static_cast<int>(absl::ToInt64Milliseconds(until - now)) + 1);
      if (!m.empty()) out.push_back(m);
    }
    return out;
  }

 private:
  smolvm_testing::TempDir temp_{"smolvm-notify-test"};
  std::string path_;
  UniqueFd fd_;
};

TEST(ServiceNotifierTest, OutsideSystemdNothingIsSent) {
  unsetenv("NOTIFY_SOCKET");
  ServiceNotifier notifier(nullptr);
  EXPECT_FALSE(notifier.enabled());
  EXPECT_EQ(notifier.watchdog_interval(), absl::ZeroDuration());
  notifier.Ready("serving");  // No socket: must not fail or block.
  notifier.Stopping("bye");
}

TEST(ServiceNotifierTest, ReadyStatusAndStopping) {
  FakeServiceManager manager;
  ServiceNotifier notifier(nullptr);
  ASSERT_TRUE(notifier.enabled());
  notifier.Status("starting: re-attaching VMs");
  EXPECT_EQ(manager.Next(), "STATUS=starting: re-attaching VMs");
  notifier.Ready("serving on unix:/run/smolvmd/smolvmd.sock");
  EXPECT_EQ(manager.Next(), "READY=1\nSTATUS=serving on unix:/run/smolvmd/smolvmd.sock");
  notifier.Stopping("draining");
  EXPECT_EQ(manager.Next(), "STOPPING=1\nSTATUS=draining");
}

TEST(ServiceNotifierTest, WatchdogPingsOnlyWhileHealthy) {
  FakeServiceManager manager;
  setenv("WATCHDOG_USEC", "200000", 1);  // 200 ms: a ping every 100 ms.
  setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
  std::atomic<bool> healthy{true};
  {
    ServiceNotifier notifier([&healthy] {
      return healthy ? absl::OkStatus() : absl::UnavailableError("store wedged");
    });
    EXPECT_EQ(notifier.watchdog_interval(), absl::Milliseconds(200));
    std::vector<std::string> pings = manager.During(450);
    EXPECT_GE(pings.size(), 2u);  // ~4 on an idle machine.
    for (const auto& p : pings) EXPECT_EQ(p, "WATCHDOG=1");

    healthy = false;
    manager.During(150);  // A ping already under way may still land.
    EXPECT_TRUE(manager.During(400).empty()) << "pinged while unhealthy";

    healthy = true;
    EXPECT_EQ(manager.Next(), "WATCHDOG=1");
    notifier.Stopping("draining");
    EXPECT_EQ(manager.Next(), "STOPPING=1\nSTATUS=draining");
    EXPECT_TRUE(manager.During(300).empty()) << "pinged after STOPPING=1";
  }
}

TEST(ServiceNotifierTest, WatchdogOfAnotherPidIsNotOurs) {
  FakeServiceManager manager;
  setenv("WATCHDOG_USEC", "200000", 1);
  setenv("WATCHDOG_PID", "1", 1);  // The watchdog is meant for pid 1, not us.
  ServiceNotifier notifier(nullptr);
  EXPECT_EQ(notifier.watchdog_interval(), absl::ZeroDuration());
  EXPECT_TRUE(manager.During(300).empty());
}

TEST(StdoutIsJournalTest, MatchesOnlyStdoutsOwnDeviceAndInode) {
  smolvm_testing::TempDir temp("smolvm-journal-test");
  const std::string log = temp.path() + "/stdout";
  UniqueFd file(open(log.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  UniqueFd saved(dup(STDOUT_FILENO));
  ASSERT_EQ(dup2(file.get(), STDOUT_FILENO), STDOUT_FILENO);
  struct stat st;
  ASSERT_EQ(fstat(file.get(), &st), 0);

  unsetenv("JOURNAL_STREAM");
  const bool without = StdoutIsJournal();
  setenv("JOURNAL_STREAM", absl::StrCat(st.st_dev, ":", st.st_ino).c_str(), 1);
  const bool same = StdoutIsJournal();
  setenv("JOURNAL_STREAM", absl::StrCat(st.st_dev, ":", st.st_ino + 1).c_str(), 1);
  const bool other = StdoutIsJournal();  // Inherited by a child whose stdout moved.
  setenv("JOURNAL_STREAM", "garbage", 1);
  const bool garbage = StdoutIsJournal();
  // In the journal: a priority prefix and no timestamp of our own.
  setenv("JOURNAL_STREAM", absl::StrCat(st.st_dev, ":", st.st_ino).c_str(), 1);
  ConfigureLogging("info");
  spdlog::warn("disk almost full");
  spdlog::info("serving");
  spdlog::default_logger()->flush();
  fflush(stdout);
  unsetenv("JOURNAL_STREAM");
  ConfigureLogging("info");
  dup2(saved.get(), STDOUT_FILENO);
  std::string written;
  {
    char buf[512];
    UniqueFd in(open(log.c_str(), O_RDONLY | O_CLOEXEC));
    ssize_t n = read(in.get(), buf, sizeof(buf));
    if (n > 0) written.assign(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(written, "<4>warning disk almost full\n<6>info serving\n");

  EXPECT_FALSE(without);
  EXPECT_TRUE(same);
  EXPECT_FALSE(other);
  EXPECT_FALSE(garbage);
}

}  // namespace
}  // namespace smolvm::daemon
