#include "lib/vmm/console_recorder.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::vmm {
namespace {

// Plays QEMU's side: a listening console socket; Accept() returns the
// recorder's connection.
class FakeConsole {
 public:
  explicit FakeConsole(const std::string& path) {
    listen_ = UniqueFd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    EXPECT_EQ(bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(listen_.get(), 1), 0);
  }
  UniqueFd Accept() { return UniqueFd(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC)); }

 private:
  UniqueFd listen_;
};

uint64_t SizeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    ASSERT_GT(n, 0);
    done += n;
  }
}

TEST(ConsoleRecorderTest, StaysWithinItsCapAndKeepsTheNewestOutput) {
  smolvm_testing::TempDir dir;
  const std::string sock = dir.path() + "/console.sock", log = dir.path() + "/console.log";
  FakeConsole qemu(sock);
  constexpr uint64_t kCap = 64 << 10;
  ConsoleRecorder recorder(sock, log, kCap);
  UniqueFd conn = qemu.Accept();
  ASSERT_TRUE(conn.valid());
  // 4 MiB of numbered lines: 64 times the cap.
  std::string last;
  for (int block = 0; block < 64; ++block) {
    std::string chunk;
    for (int i = 0; i < 2048; ++i) {
      last = "line " + std::to_string(block * 2048 + i) + " ..........................\n";
      chunk += last;
    }
    WriteAll(conn.get(), chunk);
    EXPECT_LE(SizeOf(log) + SizeOf(log + ".1"), kCap);
  }
  conn.Reset();  // QEMU exits.
  std::string tail = recorder.Tail(4096, /*vmm_gone=*/true);
  EXPECT_EQ(tail.substr(tail.size() - last.size()), last);
  EXPECT_LE(SizeOf(log) + SizeOf(log + ".1"), kCap);
  EXPECT_GT(SizeOf(log + ".1"), 0u);
}

TEST(ConsoleRecorderTest, TailSpansTheRotatedFileAndContinuesAfterReattach) {
  smolvm_testing::TempDir dir;
  const std::string sock = dir.path() + "/console.sock", log = dir.path() + "/console.log";
  FakeConsole qemu(sock);
  {
    ConsoleRecorder recorder(sock, log, 8192);
    UniqueFd conn = qemu.Accept();
    WriteAll(conn.get(), std::string(4000, 'a') + std::string(200, 'b'));
    conn.Reset();
    EXPECT_EQ(recorder.Tail(300, true), std::string(100, 'a') + std::string(200, 'b'));
  }
  // A new daemon attaches to the same VM: the log goes on.
  ConsoleRecorder again(sock, log, 8192);
  UniqueFd conn = qemu.Accept();
  WriteAll(conn.get(), "after restart\n");
  conn.Reset();
  EXPECT_EQ(again.Tail(14, true), "after restart\n");
}

TEST(ConsoleRecorderTest, NoSocketMeansAnEmptyTailAndAPromptStop) {
  smolvm_testing::TempDir dir;
  ConsoleRecorder recorder(dir.path() + "/missing.sock", dir.path() + "/console.log", 8192);
  EXPECT_EQ(recorder.Tail(100, /*vmm_gone=*/true, std::chrono::milliseconds(20)), "");
}

}  // namespace
}  // namespace smolvm::vmm
