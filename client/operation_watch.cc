#include "client/operation_watch.h"

#include <random>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace smolvm {
namespace {

// How long Finish waits for the last update once the call has returned:
// the daemon sends it at most 100 ms after the change (its rate limit).
constexpr auto kFinalUpdateWait = std::chrono::milliseconds(1000);

}  // namespace

std::string NewOperationId() {
  std::random_device rd;
  std::uniform_int_distribution<uint64_t> dist;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd());
  return absl::StrFormat("op-%016x%016x", dist(rng), dist(rng));
}

OperationWatcher::OperationWatcher(const Connection& connection, std::string operation_id,
                                   ProgressCallback on_progress)
    : on_progress_(std::move(on_progress)) {
  thread_ = std::thread([this, &connection, id = std::move(operation_id)] {
    Run(connection, id);
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    ended_cv_.notify_all();
  });
}

OperationWatcher::~OperationWatcher() { Finish(); }

void OperationWatcher::Run(const Connection& connection, const std::string& operation_id) {
  // No deadline: the watch lasts as long as the call, which has its own.
  if (!connection.PrepareContext(&context_, absl::InfiniteDuration()).ok()) return;
  v1::WatchOperationRequest request;
  request.set_operation_id(operation_id);
  auto reader = connection.operation_stub().WatchOperation(&context_, request);
  v1::Operation update;
  while (reader->Read(&update)) {
    if (on_progress_) on_progress_(update);
    if (update.finished()) break;
  }
  (void)reader->Finish();
}

void OperationWatcher::Finish() {
  if (!thread_.joinable()) return;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!ended_cv_.wait_for(lock, kFinalUpdateWait, [this] { return ended_; })) {
      context_.TryCancel();
    }
  }
  thread_.join();
}

}  // namespace smolvm
