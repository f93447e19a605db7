// File: fake_guest.h
//
// FAKE agent::GuestConnector for unit tests of lib/core: a connection
// succeeds while the VM's fake VMM is alive (the abort check says so);
// every agent operation is a FaultPlan step. Execs answer with exit 0 and
// their argv[0] on stdout. The agents speak the protocol version the
// connector was made with (an old one has no Reidentify) and note what
// they were asked in a FakeGuestLog.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "lib/agent/guest_agent.h"
#include "tests/fakes/fake_host.h"

namespace smolvm::fakes {

// What the fake agents of a connector were asked to do (successful
// operations only), in order.
class FakeGuestLog {
 public:
  void AddExec(std::vector<std::string> argv);
  void AddReidentity(agent::Reidentity r);
  std::vector<std::vector<std::string>> execs() const;
  std::vector<agent::Reidentity> reidentities() const;
  void Clear();

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<std::string>> execs_ ABSL_GUARDED_BY(mu_);
  std::vector<agent::Reidentity> reidentities_ ABSL_GUARDED_BY(mu_);
};

class FakeGuestConnector : public agent::GuestConnector {
 public:
  // `log` may be null.
  explicit FakeGuestConnector(FakeHost* host,
                              uint32_t protocol_version = agent::kReidentifyProtocolVersion,
                              std::shared_ptr<FakeGuestLog> log = nullptr)
      : host_(host), protocol_version_(protocol_version), log_(std::move(log)) {}
  absl::StatusOr<std::shared_ptr<agent::GuestAgent>> Connect(
      const std::string& socket_path, absl::Duration timeout,
      const std::function<absl::Status()>& abort_check) override;

 private:
  FakeHost* const host_;
  const uint32_t protocol_version_;
  const std::shared_ptr<FakeGuestLog> log_;
};

}  // namespace smolvm::fakes
