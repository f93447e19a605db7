// The real daemon under a service manager's notification socket, as systemd
// runs the unit (Type=notify, WatchdogSec=): STATUS while it starts,
// READY=1 only once the socket serves, WATCHDOG=1 pings, STOPPING=1 on
// SIGTERM. The socket here is the test's own datagram socket in
// $NOTIFY_SOCKET, which is all sd_notify(3) talks to. (No systemd runs as
// PID 1 on CI machines; README "Running under systemd" says so.)
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "lib/base/unique_fd.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

class NotifySocket {
 public:
  explicit NotifySocket(const std::string& path) : path_(path) {
    fd_ = UniqueFd(socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    EXPECT_EQ(bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  // Messages until one contains `want` (returned last), or all that came
  // within `timeout`.
  std::vector<std::string> Until(const std::string& want, absl::Duration timeout) {
    std::vector<std::string> got;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now())) + 1) !=
          1) {
        break;
      }
      char buf[4096];
      ssize_t n = recv(fd_.get(), buf, sizeof(buf), 0);
      if (n <= 0) continue;
      got.emplace_back(buf, static_cast<size_t>(n));
      if (absl::StrContains(got.back(), want)) break;
    }
    return got;
  }

 private:
  std::string path_;
  UniqueFd fd_;
};

TEST(ServiceManagerTest, NotifiesReadyWatchdogAndStopping) {
  TestDaemon daemon;
  NotifySocket notify(daemon.dir() + "/notify");
  // What systemd sets for Type=notify with WatchdogSec=1 (inherited by the
  // daemon; the harness execs it in place, so it is the main process).
  setenv("NOTIFY_SOCKET", (daemon.dir() + "/notify").c_str(), 1);
  setenv("WATCHDOG_USEC", "1000000", 1);
  absl::Status started = daemon.Start();
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  ASSERT_TRUE(started.ok()) << started;

  // Start returned once ListVms was answered, so READY=1 is there or
  // arrives now, after the start-up status.
  std::vector<std::string> boot = notify.Until("READY=1", absl::Seconds(10));
  ASSERT_FALSE(boot.empty());
  EXPECT_EQ(boot.front().rfind("STATUS=starting", 0), 0u) << boot.front();
  EXPECT_EQ(boot.back(), "READY=1\nSTATUS=serving on unix:" + daemon.socket_path());
  // Serving when it says so.
  ClientOptions options;
  options.socket_path = daemon.socket_path();
  EXPECT_TRUE(SmolVMManager(options).list_vms().ok());

  // Pings at half the interval while the store answers.
  std::vector<std::string> pings = notify.Until("WATCHDOG=1", absl::Seconds(3));
  ASSERT_FALSE(pings.empty());
  EXPECT_EQ(pings.back(), "WATCHDOG=1");

  const pid_t pid = daemon.pid();
  ASSERT_EQ(kill(pid, SIGTERM), 0);
  std::vector<std::string> stop = notify.Until("STOPPING=1", absl::Seconds(10));
  ASSERT_FALSE(stop.empty());
  EXPECT_EQ(stop.back().rfind("STOPPING=1\nSTATUS=", 0), 0u) << stop.back();
  const int status = daemon.Stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

}  // namespace
}  // namespace smolvm::testing
