// File: system_ops.h
//
// The small synchronous requests: SetClock, AddEntropy and Reidentify
// (which does both and the network in one go). They need root
// (CAP_SYS_TIME, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW); failures are
// reported in OpResult.error.
#pragma once

#include <cstdint>
#include <string>

#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// clock_settime(CLOCK_REALTIME). Returns the error, or "".
std::string StepClock(int64_t unix_time_ns);

// Mixes the seed into the kernel's pool crediting 8 bits per byte
// (RNDADDENTROPY), then reseeds the CRNG at once (RNDRESEEDCRNG). Returns
// the error, or "".
std::string MixEntropy(const std::string& seed);

// clock_settime(CLOCK_REALTIME); guest_time_ns is the clock read back after.
agent::v1::OpResult SetClock(const agent::v1::SetClock& request);

// Mixes the seed into the kernel's pool crediting 8 bits per byte
// (RNDADDENTROPY), then reseeds the CRNG at once (RNDRESEEDCRNG).
agent::v1::OpResult AddEntropy(const agent::v1::AddEntropy& request);

// Clock (unless unix_time_ns is 0), entropy (unless the seed is empty),
// then the network (if set; see net_identity.h, which rewrites
// `resolv_conf`): each part is tried whatever the others did. error joins
// the failed parts' errors with "; "; guest_time_ns is the clock read back
// right after the clock step; bytes the seed's size.
agent::v1::OpResult Reidentify(const agent::v1::Reidentify& request,
                               const std::string& resolv_conf);

}  // namespace smolvm::guest
