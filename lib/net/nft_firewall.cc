#include "lib/net/nft_firewall.h"

#include <nftables/libnftables.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "lib/base/status_macros.h"
#include "lib/net/in_netns.h"

namespace smolvm::net {

absl::StatusOr<std::unique_ptr<NftFirewall>> NftFirewall::Create(std::string netns) {
  nft_ctx* ctx = nullptr;
  SMOLVM_RETURN_IF_ERROR(InNetns(netns, [&ctx]() -> absl::Status {
    ctx = nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx == nullptr) return absl::InternalError("create nftables context: nft_ctx_new failed");
    return absl::OkStatus();
  }));
  // Errors (and the output, which nothing here asks for) go to buffers,
  // not to the daemon's stderr.
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    return absl::InternalError("create nftables context: cannot buffer its output");
  }
  return std::unique_ptr<NftFirewall>(new NftFirewall(std::move(netns), ctx));
}

NftFirewall::NftFirewall(std::string netns, nft_ctx* ctx) : netns_(std::move(netns)), ctx_(ctx) {}

NftFirewall::~NftFirewall() { nft_ctx_free(ctx_); }

absl::Status NftFirewall::Run(const std::string& script, const std::string& what) {
  return InNetns(netns_, [&]() -> absl::Status {
    int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
    std::string error = nft_ctx_get_error_buffer(ctx_);
    (void)nft_ctx_get_output_buffer(ctx_);  // Drains it.
    if (rc == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(
        what, ": nftables rejected the transaction: ",
        absl::StripTrailingAsciiWhitespace(error.empty() ? "(no message)" : error)));
  });
}

absl::StatusOr<std::map<std::string, absl::Status>> NftFirewall::Apply(
    const FirewallState& state) {
  SMOLVM_ASSIGN_OR_RETURN(NftRuleset ruleset, NftRuleset::Render(state));
  absl::MutexLock lock(&mu_);
  // A failed transaction changes nothing: installed_ stays right.
  SMOLVM_RETURN_IF_ERROR(Run(ruleset.script(), absl::StrCat("apply firewall table ", state.table)));
  std::map<std::string, absl::Status> rejected = ruleset.rejected();
  installed_ = std::move(ruleset);
  return rejected;
}

bool NftFirewall::AcceptsVmChanges(const FirewallState& state) const {
  absl::MutexLock lock(&mu_);
  return installed_.has_value() && installed_->AcceptsVmChanges(state);
}

absl::StatusOr<std::map<std::string, absl::Status>> NftFirewall::ApplyVm(
    const FirewallState& state, const std::string& vm_id) {
  absl::MutexLock lock(&mu_);
  const std::string what = absl::StrCat("apply firewall rules of vm ", vm_id, " in table ",
                                        state.table);
  if (!installed_ || !installed_->AcceptsVmChanges(state)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": the installed rules are not those of this state's settings; apply the "
        "whole state"));
  }
  auto entry = std::find_if(state.vms.begin(), state.vms.end(),
                            [&](const VmFirewallEntry& vm) { return vm.vm_id == vm_id; });
  NftRuleset::VmChange change =
      installed_->RenderVmChange(vm_id, entry == state.vms.end() ? nullptr : &*entry);
  if (!change.script.empty()) {
    if (absl::Status s = Run(change.script, what); !s.ok()) {
      installed_.reset();  // Unknown now: the next change applies the whole state.
      return s;
    }
  }
  installed_->CommitVmChange();
  std::map<std::string, absl::Status> rejected;
  if (!change.rejected.ok()) rejected.emplace(vm_id, change.rejected);
  return rejected;
}

absl::Status NftFirewall::Remove(const std::string& table) {
  SMOLVM_RETURN_IF_ERROR(ValidateNftTableName(table));
  std::string script;
  for (const char* family : {"inet", "bridge"}) {
    absl::StrAppend(&script, "add table ", family, " ", table, "\ndelete table ", family, " ",
                    table, "\n");
  }
  absl::MutexLock lock(&mu_);
  installed_.reset();
  return Run(script, absl::StrCat("remove firewall table ", table));
}

absl::Status NftFirewall::AllowLearned(const std::string& table, uint32_t guest,
                                       const std::string& vm_id,
                                       const std::vector<LearnedAddress>& addresses) {
  SMOLVM_RETURN_IF_ERROR(ValidateNftTableName(table));
  const std::string script = RenderLearnedScript(table, guest, vm_id, addresses);
  if (script.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  return Run(script, absl::StrCat("allow addresses learned from DNS for ", vm_id));
}

absl::Status NftFirewall::ForgetLearned(const std::string& table, uint32_t guest,
                                        const std::vector<uint32_t>& addresses) {
  SMOLVM_RETURN_IF_ERROR(ValidateNftTableName(table));
  const std::string script = RenderForgetScript(table, guest, addresses);
  if (script.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  return Run(script, absl::StrCat("forget addresses learned from DNS for ", IpToString(guest)));
}

}  // namespace smolvm::net
