// File: bench/load/load_options.cc
#include "bench/load/load_options.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace smolvm::load {

Mix DefaultMix() {
  Mix mix{};
  auto set = [&mix](Rpc rpc, int weight) { mix[static_cast<int>(rpc)] = weight; };
  set(Rpc::kListVms, 15);
  set(Rpc::kGetVm, 15);
  set(Rpc::kListSnapshots, 10);
  set(Rpc::kGetSnapshot, 10);
  set(Rpc::kExec, 28);
  // Creations and deletions balance: 6 restores + 2 forks of 2 clones make
  // 10 VMs per 8 DeleteVm (the slots cap the rest); snapshots likewise.
  set(Rpc::kRestoreSnapshot, 6);
  set(Rpc::kForkSnapshot, 2);
  set(Rpc::kCreateSnapshot, 3);
  set(Rpc::kDeleteVm, 8);
  set(Rpc::kDeleteSnapshot, 3);
  return mix;
}

absl::Status ParseMix(absl::string_view text, Mix* mix) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    Rpc rpc;
    int weight;
    if (kv.size() != 2 || !ParseRpc(kv[0], &rpc) || !absl::SimpleAtoi(kv[1], &weight) ||
        weight < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("mix entry \"", part, "\": want NAME=WEIGHT (WEIGHT >= 0), NAME one of ",
                       MixToString(DefaultMix())));
    }
    (*mix)[static_cast<int>(rpc)] = weight;
  }
  return absl::OkStatus();
}

std::string MixToString(const Mix& mix) {
  std::vector<std::string> parts;
  for (int i = 0; i < kRpcCount; ++i) {
    parts.push_back(absl::StrCat(RpcFlagName(static_cast<Rpc>(i)), "=", mix[i]));
  }
  return absl::StrJoin(parts, ",");
}

}  // namespace smolvm::load
