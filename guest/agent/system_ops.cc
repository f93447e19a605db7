#include "guest/agent/system_ops.h"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "lib/base/unique_fd.h"

namespace smolvm::guest {

agent::v1::OpResult SetClock(const agent::v1::SetClock& request) {
  agent::v1::OpResult result;
  result.set_id(request.id());
  int64_t ns = request.unix_time_ns();
  timespec ts;
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  if (ts.tv_nsec < 0) {
    ts.tv_sec -= 1;
    ts.tv_nsec += 1'000'000'000;
  }
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) {
    result.set_error(std::string("clock_settime: ") + std::strerror(errno));
  }
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  result.set_guest_time_ns(int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec);
  return result;
}

agent::v1::OpResult AddEntropy(const agent::v1::AddEntropy& request) {
  agent::v1::OpResult result;
  result.set_id(request.id());
  const std::string& seed = request.seed();
  UniqueFd fd(open("/dev/urandom", O_WRONLY | O_CLOEXEC));
  if (!fd.valid()) {
    result.set_error(std::string("open /dev/urandom: ") + std::strerror(errno));
    return result;
  }
  // struct rand_pool_info ends in a flexible array; build it in a buffer of
  // ints so that it is suitably aligned.
  std::vector<int> buffer(2 + (seed.size() + sizeof(int) - 1) / sizeof(int));
  auto* info = reinterpret_cast<rand_pool_info*>(buffer.data());
  info->entropy_count = static_cast<int>(8 * seed.size());
  info->buf_size = static_cast<int>(seed.size());
  std::memcpy(info->buf, seed.data(), seed.size());
  if (ioctl(fd.get(), RNDADDENTROPY, info) != 0) {
    result.set_error(std::string("ioctl RNDADDENTROPY: ") + std::strerror(errno));
    return result;
  }
  if (ioctl(fd.get(), RNDRESEEDCRNG) != 0) {
    result.set_error(std::string("ioctl RNDRESEEDCRNG: ") + std::strerror(errno));
    return result;
  }
  result.set_bytes(seed.size());
  return result;
}

}  // namespace smolvm::guest
