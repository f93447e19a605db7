#include "guest/agent/system_ops.h"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "guest/agent/net_identity.h"
#include "lib/base/unique_fd.h"

namespace smolvm::guest {

namespace {

int64_t RealtimeNs() {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

}  // namespace

std::string StepClock(int64_t unix_time_ns) {
  timespec ts;
  ts.tv_sec = unix_time_ns / 1'000'000'000;
  ts.tv_nsec = unix_time_ns % 1'000'000'000;
  if (ts.tv_nsec < 0) {
    ts.tv_sec -= 1;
    ts.tv_nsec += 1'000'000'000;
  }
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
    return std::string("clock_settime: ") + std::strerror(errno);
  }
  return "";
}

std::string MixEntropy(const std::string& seed) {
  UniqueFd fd(open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) return std::string("open /dev/urandom: ") + std::strerror(errno);
  // struct rand_pool_info ends in a flexible array; build it in a buffer of
  // ints so that it is suitably aligned.
  std::vector<int> buffer(2 + (seed.size() + sizeof(int) - 1) / sizeof(int));
  auto* info = reinterpret_cast<rand_pool_info*>(buffer.data());
  info->entropy_count = static_cast<int>(8 * seed.size());
  info->buf_size = static_cast<int>(seed.size());
  std::memcpy(info->buf, seed.data(), seed.size());
  if (ioctl(fd.get(), RNDADDENTROPY, info) != 0) {
    return std::string("ioctl RNDADDENTROPY: ") + std::strerror(errno);
  }
  if (ioctl(fd.get(), RNDRESEEDCRNG) != 0) {
    return std::string("ioctl RNDRESEEDCRNG: ") + std::strerror(errno);
  }
  return "";
}

agent::v1::OpResult SetClock(const agent::v1::SetClock& request) {
  agent::v1::OpResult result;
  result.set_id(request.id());
  result.set_error(StepClock(request.unix_time_ns()));
  result.set_guest_time_ns(RealtimeNs());
  return result;
}

agent::v1::OpResult AddEntropy(const agent::v1::AddEntropy& request) {
  agent::v1::OpResult result;
  result.set_id(request.id());
  result.set_error(MixEntropy(request.seed()));
  if (result.error().empty()) result.set_bytes(request.seed().size());
  return result;
}

agent::v1::OpResult Reidentify(const agent::v1::Reidentify& request,
                               const std::string& resolv_conf) {
  agent::v1::OpResult result;
  result.set_id(request.id());
  std::string errors;
  auto note = [&errors](std::string error) {
    if (error.empty()) return;
    if (!errors.empty()) errors += "; ";
    errors += error;
  };
  if (request.unix_time_ns() != 0) note(StepClock(request.unix_time_ns()));
  result.set_guest_time_ns(RealtimeNs());
  if (!request.entropy_seed().empty()) {
    note(MixEntropy(request.entropy_seed()));
    result.set_bytes(request.entropy_seed().size());
  }
  if (request.has_network()) note(ApplyNetworkIdentity(request.network(), resolv_conf));
  result.set_error(errors);
  return result;
}

}  // namespace smolvm::guest
