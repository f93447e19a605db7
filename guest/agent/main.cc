// smolvm-agent: the guest agent (see agent.h and
// proto/smolvm/agent/v1/agent.proto).
//
//   smolvm-agent PORT_PATH   serve on a virtio-serial port (/dev/vportNpM);
//                            started by the guest's /sbin/init
//   smolvm-agent --fd N      serve on an inherited, connected stream fd
//                            (host-side tests)
//   ... --resolv-conf PATH   (tests only) the file Reidentify rewrites
//                            instead of /etc/resolv.conf
//
// Exits only on a usage error or when the port cannot be opened (init then
// restarts it); never because of what the host sends.
#include <fcntl.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "guest/agent/agent.h"
#include "guest/agent/channel.h"
#include "guest/agent/log.h"
#include "guest/agent/net_identity.h"
#include "lib/base/unique_fd.h"

namespace {

int Usage() {
  std::fputs("usage: smolvm-agent PORT_PATH | --fd N [--resolv-conf PATH]\n", stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using smolvm::UniqueFd;
  using smolvm::guest::Log;

  // Children must find 0-2 in use so that their pipes never land there.
  for (int fd = 0; fd < 3; ++fd) {
    if (fcntl(fd, F_GETFD) < 0) open("/dev/null", O_RDWR);
  }
  // A write to a closed pipe or socket must fail with EPIPE, not kill us.
  signal(SIGPIPE, SIG_IGN);
  // Children are reaped by pid; an inherited SIG_IGN would auto-reap them.
  signal(SIGCHLD, SIG_DFL);
  // File operations run as a guest user on a thread of their own
  // (guest_user.h): no process of that user may ptrace the agent through
  // that thread.
  prctl(PR_SET_DUMPABLE, 0);

  smolvm::guest::AgentOptions options;
  if (argc >= 3 && std::strcmp(argv[argc - 2], "--resolv-conf") == 0) {
    if (argv[argc - 1][0] != '/') return Usage();
    options.resolv_conf = argv[argc - 1];
    argc -= 2;
  }

  UniqueFd fd;
  std::string where;
  if (argc == 3 && std::strcmp(argv[1], "--fd") == 0) {
    char* end = nullptr;
    long n = std::strtol(argv[2], &end, 10);
    if (end == argv[2] || *end != '\0' || n < 0 || n > 1 << 20 || fcntl(int(n), F_GETFD) < 0) {
      Log("--fd %s: not an open file descriptor", argv[2]);
      return 2;
    }
    fd.Reset(static_cast<int>(n));
    where = std::string("fd ") + argv[2];
  } else if (argc == 2 && argv[1][0] != '-') {
    fd.Reset(open(argv[1], O_RDWR | O_CLOEXEC | O_NOCTTY));
    if (!fd.valid()) {
      Log("open %s: %s", argv[1], std::strerror(errno));
      return 1;
    }
    where = argv[1];
  } else {
    return Usage();
  }

  // Reidentify's sockets made, and every page of the agent resident from
  // now on, so every snapshot holds them: after a restore, the code of a
  // request never served before the snapshot (Reidentify, the first thing
  // a clone is asked) would otherwise be read from the disk page by page,
  // by a guest whose translation cache (under TCG) is empty: tens of
  // milliseconds. MCL_CURRENT only: the threads' stacks (8 MiB each) are
  // left alone.
  smolvm::guest::PrepareNetworkIdentity();
  if (mlockall(MCL_CURRENT) != 0) Log("mlockall: %s", std::strerror(errno));

  Log("serving protocol %d on %s (pid %d)", smolvm::agent::v1::PROTOCOL_VERSION, where.c_str(),
      static_cast<int>(getpid()));
  smolvm::guest::Channel channel(std::move(fd));
  smolvm::guest::Agent agent(&channel, std::move(options));
  agent.Run();
}
