// File: fake_guest.h
//
// FAKE agent::GuestConnector for unit tests of lib/core: a connection
// succeeds while the VM's fake VMM is alive (the abort check says so);
// every agent operation is a FaultPlan step. Execs answer with exit 0 and
// their argv[0] on stdout.
#pragma once

#include <memory>

#include "lib/agent/guest_agent.h"
#include "tests/fakes/fake_host.h"

namespace smolvm::fakes {

class FakeGuestConnector : public agent::GuestConnector {
 public:
  explicit FakeGuestConnector(FakeHost* host) : host_(host) {}
  absl::StatusOr<std::shared_ptr<agent::GuestAgent>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check) override;

 private:
  FakeHost* const host_;
};

}  // namespace smolvm::fakes
