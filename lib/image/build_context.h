// File: build_context.h
//
// What every step of an image build gets: where to report progress, how to
// tell that the build was cancelled (the client went away, the daemon is
// stopping), and the bounded time an external program may take.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/time/time.h"

namespace smolvm::image {

struct BuildContext {
  // A step starts ("debootstrap", "unpack layers", "mkfs.ext4", ...) or has
  // made progress (`bytes` written so far, 0 when unknown). May be empty.
  std::function<void(const std::string& step, uint64_t bytes)> progress;
  // True once the build should stop: steps check it between programs and
  // pass it to the programs they run, and return CANCELLED.
  std::function<bool()> cancelled;
  // Network namespace (a path, e.g. /proc/1/ns/net) in which downloads
  // run; "" = the daemon's own.
  std::string download_netns;
  // Longest any one external program may run.
  absl::Duration step_timeout = absl::Minutes(20);

  void Report(const std::string& step, uint64_t bytes = 0) const {
    if (progress) progress(step, bytes);
  }
  bool IsCancelled() const { return cancelled && cancelled(); }
};

}  // namespace smolvm::image
