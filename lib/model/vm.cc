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

ListFilter WithImageAliases(ListFilter filter) {
  const size_t given = filter.images.size();
  for (size_t i = 0; i < given; ++i) {
    const std::string ref = filter.images[i];
    if (ref.rfind("sha256:", 0) == 0) continue;
    const size_t slash = ref.rfind('/');
    const size_t colon = ref.find(':', slash == std::string::npos ? 0 : slash);
    if (colon == std::string::npos) {
      filter.images.push_back(ref + ":latest");
    } else if (ref.compare(colon, std::string::npos, ":latest") == 0) {
      filter.images.push_back(ref.substr(0, colon));
    }
  }
  return filter;
}

}  // namespace smolvm
