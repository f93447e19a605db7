// File: tsan_canary.cc
//
// A real data race on a field guarded by an absl::Mutex: one thread writes it
// under the lock, the other without. scripts/sanitize.sh tsan requires TSan
// to report it, as the proof that tsan_absl_sync.cc (which tells TSan what
// absl::Mutex does) does not hide races from code that skips the lock.
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace {

struct Counter {
  absl::Mutex mu;
  int value ABSL_GUARDED_BY(mu) = 0;
};

void AddLocked(Counter& c) {
  absl::MutexLock lock(&c.mu);
  ++c.value;
}

void AddUnlocked(Counter& c) ABSL_NO_THREAD_SAFETY_ANALYSIS { ++c.value; }

}  // namespace

int main() {
  Counter c;
  std::thread locked([&] { AddLocked(c); });
  AddUnlocked(c);
  locked.join();
  return 0;
}
