// File: systemd_notify.h
//
// Running under systemd (the unit is Type=notify): readiness, status lines,
// stopping and the watchdog through sd_notify(3), and logs that suit the
// journal. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op, so
// the daemon behaves the same when started by hand or by a test.
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace smolvm::daemon {

// Whether stdout, where spdlog's default logger writes, is a stream into
// the journal: $JOURNAL_STREAM names its device and inode (systemd.exec(5)),
// which must be stdout's own (not a stream a parent had).
bool StdoutIsJournal();

// spdlog's output for this process. On a terminal or in a file every line
// carries its time; in the journal it does not (the journal stamps every
// entry itself) and starts with a syslog priority ("<6>"), which journald
// turns into the entry's priority, so `journalctl -p warning` works.
void ConfigureLogging(const std::string& level);

// The unit's notifications. A watchdog thread runs while the object lives
// if the unit sets WatchdogSec=: it sends WATCHDOG=1 at half the interval,
// but only while `health` answers OK (and in time), so a daemon whose
// state store is wedged is restarted by systemd instead of hanging on.
class ServiceNotifier {
 public:
  explicit ServiceNotifier(std::function<absl::Status()> health);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // Whether a service manager listens ($NOTIFY_SOCKET is set).
  bool enabled() const { return enabled_; }
  // The watchdog interval the unit asked for (zero: none).
  absl::Duration watchdog_interval() const { return watchdog_; }

  // READY=1 with a STATUS= line: the socket accepts requests.
  void Ready(const std::string& status);
  // A STATUS= line (`systemctl status` shows the latest).
  void Status(const std::string& status);
  // STOPPING=1 with a STATUS= line; ends the watchdog pings.
  void Stopping(const std::string& status);

 private:
  void Notify(const std::string& state);
  void WatchdogLoop();

  const std::function<absl::Status()> health_;
  bool enabled_ = false;
  absl::Duration watchdog_ = absl::ZeroDuration();
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread watchdog_thread_;
};

}  // namespace smolvm::daemon
