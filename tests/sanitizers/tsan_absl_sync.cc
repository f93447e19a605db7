// File: tsan_absl_sync.cc
//
// ThreadSanitizer builds only (SMOLVM_SANITIZE=thread; linked into every
// executable by tests/sanitizers/sanitizers.cmake). Makes Debian's Abseil
// synchronization visible to TSan.
//
// Debian's libabsl_synchronization.so is not built with TSan, so its
// absl::Mutex, absl::CondVar and absl::Notification synchronize through
// atomics and futexes that TSan never sees. Without help, TSan reports every
// field guarded by an absl::Mutex (ABSL_GUARDED_BY) as racy. gRPC 1.51 locks
// with absl::Mutex too (GPR_ABSEIL_SYNC).
//
// This file defines those functions in the executable, which the dynamic
// linker prefers over the library's definitions for every caller (project
// code, gRPC, and Abseil's own calls through its PLT). Each definition tells
// TSan what the operation does, with the same __tsan_mutex_* annotations an
// instrumented Abseil makes (absl/synchronization/mutex.cc), and calls the
// library's definition (dlsym RTLD_NEXT). Nothing is suppressed: a field that
// is really accessed without its mutex is still reported.
//
// Not wrapped: ~Mutex. gRPC destroys its mutexes on whichever thread drops
// the last reference (uninstrumented atomics), so a destroy annotation
// there would be reported as racing with the last lock; TSan forgets a heap
// mutex when its memory is freed anyway.
//
// What it cannot see: lock-free handoffs inside uninstrumented libraries
// (gRPC's completion queues and closures, Abseil's SpinLock); see
// docs/sanitizers.md.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

// In libtsan (tsan_interface.cpp) but not in gcc 12's tsan_interface.h.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();

namespace {

#define SMOLVM_STR2(x) #x
#define SMOLVM_STR(x) SMOLVM_STR2(x)

// The library's definition of `rest` (the mangled name after the inline
// namespace, e.g. "5Mutex4LockEv"); `konst` for const members.
void* Real(const char* rest, bool konst = false) {
  const std::string ns = SMOLVM_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  std::string name =
      std::string(konst ? "_ZNK" : "_ZN") + "4absl" + std::to_string(ns.size()) + ns + rest;
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found in Abseil: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return fn;
}

template <typename R, typename... Args>
using Fn = R (*)(Args...);

template <typename F>
F RealAs(const char* rest, bool konst = false) {
  return reinterpret_cast<F>(Real(rest, konst));
}

// absl::Mutex's state word (mutex.cc): kMuWriter is set while a writer holds
// it. Await and CondVar::Wait work in either mode, and TSan must be told which.
constexpr intptr_t kMuWriter = 0x0008L;
unsigned HeldFlags(const absl::Mutex* mu) {
  static_assert(sizeof(absl::Mutex) == sizeof(std::atomic<intptr_t>));
  auto word = reinterpret_cast<const std::atomic<intptr_t>*>(mu)->load(std::memory_order_relaxed);
  return (word & kMuWriter) != 0 ? 0 : __tsan_mutex_read_lock;
}

// Some of these functions call others of them (AwaitWithTimeout calls
// AwaitWithDeadline, Notify calls Lock): only the outermost call tells TSan.
thread_local int depth = 0;
class Outermost {
 public:
  Outermost() : outermost_(depth++ == 0) {}
  ~Outermost() { --depth; }
  explicit operator bool() const { return outermost_; }

 private:
  bool outermost_;
};

// Waiting releases and reacquires `mu` inside the library, which may run
// the caller's absl::Condition on this thread meanwhile: TSan sees an unlock
// before and a lock after, and ignores the condition's reads in between (an
// instrumented Abseil runs them as part of the mutex operation, too).
template <typename F>
auto WhileReleased(absl::Mutex* mu, F wait) {
  Outermost outermost;
  if (!outermost) return wait();
  unsigned flags = HeldFlags(mu);
  __tsan_mutex_pre_unlock(mu, flags);
  __tsan_mutex_post_unlock(mu, flags);
  __tsan_ignore_thread_begin();
  auto result = wait();
  __tsan_ignore_thread_end();
  __tsan_mutex_pre_lock(mu, flags);
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

// Locks: the lock is held on return, whatever a ...When... call returns.
template <typename F>
auto Locking(absl::Mutex* mu, unsigned flags, F lock) {
  Outermost outermost;
  if (!outermost) return lock();
  __tsan_mutex_pre_lock(mu, flags);
  auto result = lock();
  __tsan_mutex_post_lock(mu, flags, 0);
  return result;
}

template <typename F>
bool TryLocking(absl::Mutex* mu, unsigned flags, F try_lock) {
  Outermost outermost;
  if (!outermost) return try_lock();
  flags |= __tsan_mutex_try_lock;
  __tsan_mutex_pre_lock(mu, flags);
  bool locked = try_lock();
  __tsan_mutex_post_lock(mu, locked ? flags : flags | __tsan_mutex_try_lock_failed, 0);
  return locked;
}

template <typename F>
void Unlocking(absl::Mutex* mu, unsigned flags, F unlock) {
  Outermost outermost;
  if (!outermost) return unlock();
  __tsan_mutex_pre_unlock(mu, flags);
  unlock();
  __tsan_mutex_post_unlock(mu, flags);
}

// Notify's store to notified_yet_ is invisible; HasBeenNotified() (inline,
// instrumented) loads it with acquire order, so the release goes there.
const void* NotifiedFlag(const absl::Notification* n) {
  static_assert(sizeof(absl::Notification) == 2 * sizeof(absl::Mutex));
  return reinterpret_cast<const char*>(n) + sizeof(absl::Mutex);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = RealAs<Fn<void, Mutex*>>("5Mutex4LockEv");
  Locking(this, 0, [&] { return (real(this), 0); });
}

void Mutex::ReaderLock() {
  static const auto real = RealAs<Fn<void, Mutex*>>("5Mutex10ReaderLockEv");
  Locking(this, __tsan_mutex_read_lock, [&] { return (real(this), 0); });
}

bool Mutex::TryLock() {
  static const auto real = RealAs<Fn<bool, Mutex*>>("5Mutex7TryLockEv");
  return TryLocking(this, 0, [&] { return real(this); });
}

bool Mutex::ReaderTryLock() {
  static const auto real = RealAs<Fn<bool, Mutex*>>("5Mutex13ReaderTryLockEv");
  return TryLocking(this, __tsan_mutex_read_lock, [&] { return real(this); });
}

void Mutex::Unlock() {
  static const auto real = RealAs<Fn<void, Mutex*>>("5Mutex6UnlockEv");
  Unlocking(this, 0, [&] { real(this); });
}

void Mutex::ReaderUnlock() {
  static const auto real = RealAs<Fn<void, Mutex*>>("5Mutex12ReaderUnlockEv");
  Unlocking(this, __tsan_mutex_read_lock, [&] { real(this); });
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      RealAs<Fn<void, Mutex*, const Condition&>>("5Mutex8LockWhenERKNS0_9ConditionE");
  Locking(this, 0, [&] { return (real(this, cond), 0); });
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real =
      RealAs<Fn<void, Mutex*, const Condition&>>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Locking(this, __tsan_mutex_read_lock, [&] { return (real(this, cond), 0); });
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Duration>>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Locking(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Duration>>(
      "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Locking(this, __tsan_mutex_read_lock, [&] { return real(this, cond, timeout); });
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Time>>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Locking(this, 0, [&] { return real(this, cond, deadline); });
}

bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Time>>(
      "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Locking(this, __tsan_mutex_read_lock, [&] { return real(this, cond, deadline); });
}

void Mutex::Await(const Condition& cond) {
  static const auto real =
      RealAs<Fn<void, Mutex*, const Condition&>>("5Mutex5AwaitERKNS0_9ConditionE");
  WhileReleased(this, [&] { return (real(this, cond), 0); });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Duration>>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return WhileReleased(this, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = RealAs<Fn<bool, Mutex*, const Condition&, Time>>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return WhileReleased(this, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static const auto real = RealAs<Fn<void, CondVar*, Mutex*>>("7CondVar4WaitEPNS0_5MutexE");
  WhileReleased(mu, [&] { return (real(this, mu), 0); });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto real = RealAs<Fn<bool, CondVar*, Mutex*, Duration>>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return WhileReleased(mu, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto real =
      RealAs<Fn<bool, CondVar*, Mutex*, Time>>("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return WhileReleased(mu, [&] { return real(this, mu, deadline); });
}

void Notification::Notify() {
  static const auto real = RealAs<Fn<void, Notification*>>("12Notification6NotifyEv");
  Outermost outermost;
  if (outermost) __tsan_release(const_cast<void*>(NotifiedFlag(this)));
  real(this);
}

void Notification::WaitForNotification() const {
  static const auto real =
      RealAs<Fn<void, const Notification*>>("12Notification19WaitForNotificationEv", true);
  Outermost outermost;
  real(this);
  if (outermost) __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
}

bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  static const auto real = RealAs<Fn<bool, const Notification*, Duration>>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  Outermost outermost;
  bool notified = real(this, timeout);
  if (outermost && notified) __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  static const auto real = RealAs<Fn<bool, const Notification*, Time>>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  Outermost outermost;
  bool notified = real(this, deadline);
  if (outermost && notified) __tsan_acquire(const_cast<void*>(NotifiedFlag(this)));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
