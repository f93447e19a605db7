// File: client/operation_watch.h
// -----------------------------------------------------------------------------
//
// Progress of long calls (smolvm.v1.OperationService). A call that takes an
// operation_id (CreateVm, StartVm, CreateSnapshot, RestoreSnapshot,
// ForkSnapshot) is made while an OperationWatcher streams that operation's
// updates to a callback on a thread of its own:
//
//   std::string id = NewOperationId();
//   OperationWatcher watch(connection, id, [](const v1::Operation& op) {
//     std::cerr << op.stage() << " " << op.done() << "/" << op.total() << "\n";
//   });
//   request.set_operation_id(id);
//   ... make the call ...
//   watch.Finish();  // the last update has been delivered (or the watch gave up)
//
// SmolVM and SmolVMManager take such a callback (ProgressCallback) on their
// long methods and do this themselves.

#ifndef SMOLVM_CLIENT_OPERATION_WATCH_H_
#define SMOLVM_CLIENT_OPERATION_WATCH_H_

#include <grpcpp/client_context.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "client/connection.h"
#include "smolvm/v1/operation_service.pb.h"

namespace smolvm {

// Sees each update of an operation, the last one with finished() set. Runs
// on the watcher's thread, one call at a time.
using ProgressCallback = std::function<void(const v1::Operation&)>;

// A fresh operation id: "op-" and 32 random hex digits.
std::string NewOperationId();

// Streams operation `operation_id`'s updates to `on_progress` from
// construction until the operation finishes or Finish() gives up on it.
// Progress is best effort: a watch that fails (an older daemon, a dropped
// stream) only ends the updates, never the call being watched.
class OperationWatcher {
 public:
  OperationWatcher(const Connection& connection, std::string operation_id,
                   ProgressCallback on_progress);
  ~OperationWatcher();  // Finish().
  OperationWatcher(const OperationWatcher&) = delete;
  OperationWatcher& operator=(const OperationWatcher&) = delete;

  // Waits briefly for the final update (the call has returned, so it is on
  // its way), then stops watching; idempotent.
  void Finish();

 private:
  void Run(const Connection& connection, const std::string& operation_id);

  ProgressCallback on_progress_;
  grpc::ClientContext context_;
  std::mutex mu_;
  std::condition_variable ended_cv_;
  bool ended_ = false;
  std::thread thread_;
};

// Makes `call()` (which sends `request`) with its progress going to
// `on_progress`: a fresh operation_id in the request and a watcher around
// the call. Without a callback it is just `call()`.
template <typename Request, typename Call>
auto CallWithProgress(const Connection& connection, Request& request,
                      const ProgressCallback& on_progress, Call&& call) {
  if (!on_progress) return call();
  request.set_operation_id(NewOperationId());
  OperationWatcher watch(connection, request.operation_id(), on_progress);
  auto result = call();
  watch.Finish();
  return result;
}

}  // namespace smolvm

#endif  // SMOLVM_CLIENT_OPERATION_WATCH_H_
