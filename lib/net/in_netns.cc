#include "lib/net/in_netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "absl/strings/str_cat.h"

namespace smolvm::net {

absl::Status InNetns(const std::string& netns, absl::FunctionRef<absl::Status()> fn) {
  if (netns.empty()) return fn();
  absl::Status status;
  // A thread of its own: it ends in the namespace, and nothing else ever
  // runs on it.
  std::thread worker([&] {
    const std::string path = absl::StrCat("/run/netns/", netns);
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      status = absl::ErrnoToStatus(errno, absl::StrCat("open network namespace ", path));
      return;
    }
    int entered = setns(fd, CLONE_NEWNET);
    int saved = errno;
    close(fd);
    if (entered != 0) {
      status = absl::ErrnoToStatus(saved, absl::StrCat("enter network namespace ", netns));
      return;
    }
    status = fn();
  });
  worker.join();
  return status;
}

}  // namespace smolvm::net
