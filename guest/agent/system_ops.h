// File: system_ops.h
//
// The small synchronous requests: SetClock and AddEntropy. Both need root
// (CAP_SYS_TIME, CAP_SYS_ADMIN); failures are reported in OpResult.error.
#pragma once

#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// clock_settime(CLOCK_REALTIME); guest_time_ns is the clock read back after.
agent::v1::OpResult SetClock(const agent::v1::SetClock& request);

// Mixes the seed into the kernel's pool crediting 8 bits per byte
// (RNDADDENTROPY), then reseeds the CRNG at once (RNDRESEEDCRNG).
agent::v1::OpResult AddEntropy(const agent::v1::AddEntropy& request);

}  // namespace smolvm::guest
