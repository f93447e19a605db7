#include "tests/e2e/heartbeat.h"

#include <sstream>
#include <thread>

namespace smolvm::testing {

std::optional<Tick> LastTick(const std::string& console) {
  std::optional<Tick> last;
  std::istringstream in(console);
  std::string line;
  while (std::getline(in, line)) {
    auto pos = line.find("SMOLVM_TICK ");
    if (pos == std::string::npos) continue;
    std::istringstream fields(line.substr(pos + 12));
    Tick t;
    if (fields >> t.boot_id >> t.n && t.boot_id.size() == 36) last = t;
  }
  return last;
}

std::optional<Tick> WaitForTick(const TestDaemon& daemon, const std::string& vm_id,
                                long min_n, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    auto t = LastTick(daemon.ConsoleLog(vm_id));
    if (t && t->n >= min_n) return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return std::nullopt;
}

}  // namespace smolvm::testing
