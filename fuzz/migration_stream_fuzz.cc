// Fuzz target: the migration-stream splitter (lib/snapshot/migration_stream.cc)
// that moves a restored VM's RAM out of vmstate.bin. The input is the stream;
// the outputs are memfds. Besides "no crash", a split it accepts must keep
// mem.bin at the RAM size (no write beyond the block) and never grow the
// stream.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "lib/snapshot/migration_stream.h"

namespace {

constexpr uint64_t kRamBytes = 16 * smolvm::snapshot::kMigrationPageBytes;

int Memfd(const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) std::abort();
  return fd;
}

uint64_t Size(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) std::abort();
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int in = Memfd("in");
  int out = Memfd("out");
  int mem = Memfd("mem");
  if (write(in, data, size) != static_cast<ssize_t>(size) || lseek(in, 0, SEEK_SET) != 0 ||
      ftruncate(mem, kRamBytes) != 0) {
    std::abort();
  }
  auto stats = smolvm::snapshot::SplitRamBlockFds(in, "ram", kRamBytes, out, mem);
  if (Size(mem) != kRamBytes) {
    std::fprintf(stderr, "SplitRamBlockFds wrote beyond the RAM block\n");
    std::abort();
  }
  if (stats.ok() && (Size(out) > size || stats->bytes_out != Size(out) ||
                     stats->bytes_in != size)) {
    std::fprintf(stderr, "SplitRamBlockFds accounted its output wrongly\n");
    std::abort();
  }
  close(in);
  close(out);
  close(mem);
  return 0;
}
