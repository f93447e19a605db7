// File: fake_network.h
//
// FAKE net::LinkBackend and net::Firewall for unit tests of lib/core: links
// and the applied ruleset are sets in a FakeHost; every change is a
// FaultPlan step.
#pragma once

#include "lib/net/firewall.h"
#include "lib/net/link_backend.h"
#include "tests/fakes/fake_host.h"

namespace smolvm::fakes {

class FakeLinkBackend : public net::LinkBackend {
 public:
  explicit FakeLinkBackend(FakeHost* host) : host_(host) {}
  absl::Status EnsureBridge(const std::string& name, uint32_t gateway_ip,
                            int prefix) override;
  absl::Status CreateTap(const std::string& name, const std::string& bridge) override;
  absl::Status DeleteLink(const std::string& name) override;
  absl::StatusOr<std::vector<std::string>> ListLinks(const std::string& prefix) override;
  absl::StatusOr<std::string> DefaultRouteInterface() override { return std::string("eth0"); }
  absl::StatusOr<std::vector<std::string>> ConnectedSubnets(
      const std::string& exclude_bridge) override {
    return std::vector<std::string>{};
  }

 private:
  FakeHost* const host_;
};

class FakeFirewall : public net::Firewall {
 public:
  explicit FakeFirewall(FakeHost* host) : host_(host) {}
  absl::StatusOr<std::map<std::string, absl::Status>> Apply(
      const net::FirewallState& state) override;
  // Per-VM changes are never taken: every change is a whole Apply, which
  // the tests observe (firewall_vms, firewall_applies).
  bool AcceptsVmChanges(const net::FirewallState&) const override { return false; }
  absl::StatusOr<std::map<std::string, absl::Status>> ApplyVm(
      const net::FirewallState&, const std::string&) override {
    return absl::FailedPreconditionError("fake firewall: apply the whole state");
  }
  absl::Status Remove(const std::string& table) override;
  // The fake has no resolver traffic: nothing is ever learned.
  absl::Status AllowLearned(const std::string&, uint32_t, const std::string&,
                            const std::vector<net::LearnedAddress>&) override {
    return absl::OkStatus();
  }
  absl::Status ForgetLearned(const std::string&, uint32_t,
                             const std::vector<uint32_t>&) override {
    return absl::OkStatus();
  }

 private:
  FakeHost* const host_;
};

}  // namespace smolvm::fakes
