// File: stream_limiter.h
//
// Bounds the long calls a tenant holds open at once: every exec, stream,
// watch, wait and transfer (Exec, ExecStream, StreamConsole, WatchVmStats,
// WatchDir, ConnectProcess, WaitProcess, WatchEvents, WatchOperation,
// UploadFile, DownloadFile, BuildImage) keeps a thread of the daemon's
// gRPC server busy for as long as it lasts, so without a bound one tenant
// could hold them all and stall everyone else's calls. Admins are not
// limited (they own the host). Taken in Serve (rpc_reply.h).
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/model/tenant.h"

namespace smolvm::daemon {

class StreamLimiter {
 public:
  // At most `max_per_tenant` long calls per tenant (0: no limit).
  explicit StreamLimiter(int max_per_tenant) : max_per_tenant_(max_per_tenant) {}

  // A place for one long call of `caller`, given back when the returned
  // token is destroyed; RESOURCE_EXHAUSTED naming the limit when the
  // caller's tenant holds them all.
  absl::StatusOr<std::shared_ptr<void>> Take(const Caller& caller);

  // Places `tenant` holds (for tests).
  int HeldBy(const std::string& tenant) const;

 private:
  void Release(const std::string& tenant);

  const int max_per_tenant_;
  mutable absl::Mutex mu_;
  std::map<std::string, int> held_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smolvm::daemon
