#include "daemon/systemd_notify.h"

#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/spdlog.h"

namespace smolvm::daemon {
namespace {

// %* in a pattern: the syslog priority of the line's level as "<N>"
// (sd-daemon.h's SD_ERR ... SD_DEBUG), which journald strips and keeps.
class SyslogPriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    int priority = 6;  // info
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: priority = 7; break;
      case spdlog::level::info: priority = 6; break;
      case spdlog::level::warn: priority = 4; break;
      case spdlog::level::err: priority = 3; break;
      case spdlog::level::critical: priority = 2; break;
      default: break;
    }
    const std::string text = absl::StrCat("<", priority, ">");
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }
};

}  // namespace

bool StdoutIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  std::pair<std::string, std::string> parts = absl::StrSplit(stream, absl::MaxSplits(':', 1));
  uint64_t dev = 0, ino = 0;
  if (!absl::SimpleAtoi(parts.first, &dev) || !absl::SimpleAtoi(parts.second, &ino)) return false;
  struct stat st;
  if (fstat(STDOUT_FILENO, &st) != 0) return false;
  return static_cast<uint64_t>(st.st_dev) == dev && static_cast<uint64_t>(st.st_ino) == ino;
}

void ConfigureLogging(const std::string& level) {
  spdlog::set_level(spdlog::level::from_str(level));
  if (!StdoutIsJournal()) {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    return;
  }
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*%l %v");
  spdlog::set_formatter(std::move(formatter));
}

ServiceNotifier::ServiceNotifier(std::function<absl::Status()> health)
    : health_(std::move(health)) {
  enabled_ = std::getenv("NOTIFY_SOCKET") != nullptr;
  uint64_t usec = 0;
  // > 0 only when WatchdogSec= is set and $WATCHDOG_PID is this process.
  if (enabled_ && sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0) {
    watchdog_ = absl::Microseconds(static_cast<int64_t>(usec));
    watchdog_thread_ = std::thread([this] { WatchdogLoop(); });
  }
}

ServiceNotifier::~ServiceNotifier() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (watchdog_thread_.joinable()) watchdog_thread_.join();
}

void ServiceNotifier::Notify(const std::string& state) {
  if (!enabled_) return;
  if (int rc = sd_notify(/*unset_environment=*/0, state.c_str()); rc < 0) {
    spdlog::warn("sd_notify: {}", std::string(strerror(-rc)));
  }
}

void ServiceNotifier::Ready(const std::string& status) {
  Notify(absl::StrCat("READY=1\nSTATUS=", status));
}

void ServiceNotifier::Status(const std::string& status) { Notify(absl::StrCat("STATUS=", status)); }

void ServiceNotifier::Stopping(const std::string& status) {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Notify(absl::StrCat("STOPPING=1\nSTATUS=", status));
}

void ServiceNotifier::WatchdogLoop() {
  const absl::Duration period = watchdog_ / 2;
  spdlog::info("systemd watchdog: every {} while the state store answers",
               absl::FormatDuration(period));
  bool told = false;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), period)) return;
    }
    // A health check that hangs (a wedged store) sends nothing: systemd
    // then restarts the daemon once the interval passes.
    absl::Status health = health_ ? health_() : absl::OkStatus();
    if (health.ok()) {
      Notify("WATCHDOG=1");
      told = false;
    } else if (!told) {
      spdlog::error("systemd watchdog: not pinging, the daemon is unhealthy: {}",
                    health.ToString());
      told = true;
    }
  }
}

}  // namespace smolvm::daemon
