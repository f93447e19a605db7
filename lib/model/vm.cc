#include "lib/model/vm.h"

namespace smolvm {

const char* VmStateName(VmState state) {
  switch (state) {
    case VmState::kCreated: return "created";
    case VmState::kRunning: return "running";
    case VmState::kPaused: return "paused";
    case VmState::kStopped: return "stopped";
    case VmState::kError: return "error";
  }
  return "error";
}

std::optional<VmState> ParseVmState(const std::string& name) {
  for (VmState s : {VmState::kCreated, VmState::kRunning, VmState::kPaused,
                    VmState::kStopped, VmState::kError}) {
    if (name == VmStateName(s)) return s;
  }
  return std::nullopt;
}

}  // namespace smolvm
