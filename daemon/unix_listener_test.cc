// UnixListener never takes over a socket a live process answers on, replaces
// a stale one, and at exit removes only its own socket.
#include "daemon/unix_listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "gtest/gtest.h"
#include "lib/base/file_util.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/temp_dir.h"

namespace smolvm::daemon {
namespace {

using ::smolvm_testing::StatusIs;

// A plain listening socket at `path`, as another daemon would have.
UniqueFd ListenAt(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(listen(fd.get(), 8), 0);
  return fd;
}

ino_t InodeOf(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

class UnixListenerTest : public ::testing::Test {
 protected:
  smolvm_testing::TempDir temp_{"smolvm-listener-test"};
  std::string path_ = temp_.path() + "/smolvmd.sock";
};

TEST_F(UnixListenerTest, ALiveSocketIsNeverTakenOver) {
  UniqueFd other = ListenAt(path_);
  ino_t before = InodeOf(path_);
  EXPECT_TRUE(AnswersOn(path_));
  EXPECT_THAT(UnixListener::Create(path_, getgid()),
              StatusIs(absl::StatusCode::kFailedPrecondition, "another process"));
  EXPECT_EQ(InodeOf(path_), before) << "the other daemon's socket was replaced";
  EXPECT_TRUE(AnswersOn(path_));
}

TEST_F(UnixListenerTest, AStaleSocketIsReplaced) {
  { UniqueFd gone = ListenAt(path_); }  // Closed: nobody answers any more.
  EXPECT_TRUE(PathExists(path_));
  EXPECT_FALSE(AnswersOn(path_));
  auto listener = UnixListener::Create(path_, getgid());
  ASSERT_TRUE(listener.ok()) << listener.status();
  EXPECT_TRUE(AnswersOn(path_));
  struct stat st;
  ASSERT_EQ(stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  listener->reset();
  EXPECT_FALSE(PathExists(path_)) << "its own socket is removed at exit";
}

TEST_F(UnixListenerTest, AtExitASocketThatIsNoLongerOursStays) {
  auto listener = UnixListener::Create(path_, getgid());
  ASSERT_TRUE(listener.ok()) << listener.status();
  // Someone replaced the path (an operator, or a daemon started by hand).
  ASSERT_EQ(unlink(path_.c_str()), 0);
  UniqueFd other = ListenAt(path_);
  ino_t theirs = InodeOf(path_);
  listener->reset();
  EXPECT_EQ(InodeOf(path_), theirs);
  EXPECT_TRUE(AnswersOn(path_));
}

}  // namespace
}  // namespace smolvm::daemon
