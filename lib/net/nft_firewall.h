// File: nft_firewall.h
//
// NftFirewall: the Firewall on libnftables (no nft process). It keeps the
// NftRuleset it installed last, so that one VM's change is one small
// transaction rendered against it (see firewall.h for the layout).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "lib/net/firewall.h"

struct nft_ctx;

namespace smolvm::net {

// Thread-safe: calls are serialized. Errors name the table and carry
// libnftables' error text.
class NftFirewall : public Firewall {
 public:
  // `netns` names a network namespace (/run/netns/NAME) to work in (tests);
  // "" (production) is the daemon's own.
  static absl::StatusOr<std::unique_ptr<NftFirewall>> Create(std::string netns = "");
  ~NftFirewall() override;
  NftFirewall(const NftFirewall&) = delete;
  NftFirewall& operator=(const NftFirewall&) = delete;

  absl::StatusOr<std::map<std::string, absl::Status>> Apply(
      const FirewallState& state) override;
  bool AcceptsVmChanges(const FirewallState& state) const override;
  absl::StatusOr<std::map<std::string, absl::Status>> ApplyVm(
      const FirewallState& state, const std::string& vm_id) override;
  absl::Status Remove(const std::string& table) override;
  absl::Status AllowLearned(const std::string& table, uint32_t guest, const std::string& vm_id,
                            const std::vector<LearnedAddress>& addresses) override;
  absl::Status ForgetLearned(const std::string& table, uint32_t guest,
                             const std::vector<uint32_t>& addresses) override;

 private:
  NftFirewall(std::string netns, nft_ctx* ctx);
  // Runs `script` as one transaction; `what` prefixes the error.
  absl::Status Run(const std::string& script, const std::string& what)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string netns_;
  mutable absl::Mutex mu_;
  nft_ctx* const ctx_ ABSL_PT_GUARDED_BY(mu_);
  // What the tables hold; nullopt until an Apply, and after a failure.
  std::optional<NftRuleset> installed_ ABSL_GUARDED_BY(mu_);
};

}  // namespace smolvm::net
