// Tests of smolvm-agent: the real static binary, run on the host with one end
// of a socketpair (--fd 3), driven through the real frame codec. No mocks.
#include <dirent.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <net/ethernet.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "guest/agent/guest_user.h"
#include "gtest/gtest.h"
#include "lib/agent/frame_codec.h"
#include "nlohmann/json.hpp"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {
namespace {

namespace fs = std::filesystem;
namespace v1 = agent::v1;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The agent under test, talking over a socketpair.
class AgentProcess {
 public:
  // `without_host_privileges`: the agent runs without CAP_SYS_TIME and
  // CAP_SYS_ADMIN, so its clock and entropy operations can never change the
  // machine running the test (they fail with EPERM instead; their success
  // on a real guest is covered by the e2e restores).
  explicit AgentProcess(bool without_host_privileges = false)
      : AgentProcess(Setup{without_host_privileges, "", {}}) {}

  struct Setup {
    bool without_host_privileges = false;
    // Non-empty: the agent runs in a network namespace of its own, after
    // this shell script has run there (with the same privileges).
    std::string netns_script;
    std::vector<std::string> extra_args;  // After "--fd 3".
  };

  explicit AgentProcess(const Setup& setup) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    std::vector<std::string> args = {"smolvm-agent", "--fd", "3"};
    args.insert(args.end(), setup.extra_args.begin(), setup.extra_args.end());
    if (!setup.netns_script.empty()) {
      // sh -c 'SCRIPT && exec "$0" "$@"' AGENT --fd 3 ...
      args[0] = SMOLVM_AGENT_BINARY;
      args.insert(args.begin(),
                  {"/bin/sh", "-c", "(" + setup.netns_script + ") && exec \"$0\" \"$@\""});
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const char* program = setup.netns_script.empty() ? SMOLVM_AGENT_BINARY : "/bin/sh";
    pid_ = fork();
    if (pid_ == 0) {
      if (dup2(sv[1], 3) < 0) _exit(126);
      if (!setup.netns_script.empty() && unshare(CLONE_NEWNET) != 0) _exit(124);
      if (setup.without_host_privileges) {
        for (int cap : {CAP_SYS_TIME, CAP_SYS_ADMIN}) {
          if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EPERM) _exit(125);
        }
        // Dropping from the bounding set does not touch the effective set:
        // switch to a set without them.
        __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
        __user_cap_data_struct data[2] = {};
        if (syscall(SYS_capget, &header, data) != 0) _exit(125);
        for (int cap : {CAP_SYS_TIME, CAP_SYS_ADMIN}) {
          data[cap / 32].effective &= ~(1u << (cap % 32));
          data[cap / 32].permitted &= ~(1u << (cap % 32));
          data[cap / 32].inheritable &= ~(1u << (cap % 32));
        }
        if (syscall(SYS_capset, &header, data) != 0) _exit(125);
      }
      execv(program, argv.data());
      _exit(127);
    }
    close(sv[1]);
    fd_ = sv[0];
    reader_ = std::thread([this] { ReadLoop(); });
  }

  ~AgentProcess() {
    shutdown(fd_, SHUT_RDWR);
    reader_.join();
    close(fd_);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

  pid_t pid() const { return pid_; }
  int fd() const { return fd_; }

  void Send(const v1::Frame& frame) {
    std::string bytes;
    ASSERT_TRUE(agent::EncodeFrame(frame, &bytes));
    SendRaw(bytes);
  }

  void SendRaw(const std::string& bytes) {
    std::lock_guard<std::mutex> lock(write_mu_);
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      ASSERT_GT(n, 0) << std::strerror(errno);
      done += static_cast<size_t>(n);
    }
  }

  // Removes and returns the first received frame matching `pred`.
  std::optional<v1::Frame> WaitFor(const std::function<bool(const v1::Frame&)>& pred,
                                   Clock::duration timeout = 20s) {
    std::unique_lock<std::mutex> lock(mu_);
    Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      for (auto it = frames_.begin(); it != frames_.end(); ++it) {
        if (pred(*it)) {
          v1::Frame frame = std::move(*it);
          frames_.erase(it);
          return frame;
        }
      }
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) return std::nullopt;
    }
  }

  std::optional<v1::Hello> Hello(Clock::duration timeout = 10s) {
    v1::Frame frame;
    frame.mutable_hello_request()->set_host_protocol_version(1);
    Send(frame);
    auto reply = WaitFor([](const v1::Frame& f) { return f.has_hello(); }, timeout);
    if (!reply) return std::nullopt;
    return reply->hello();
  }

 private:
  void ReadLoop() {
    agent::FrameDecoder decoder;
    std::vector<char> buffer(1 << 20);
    v1::Frame frame;
    for (;;) {
      ssize_t n = read(fd_, buffer.data(), buffer.size());
      if (n <= 0) return;
      decoder.Feed(buffer.data(), static_cast<size_t>(n));
      for (;;) {
        auto result = decoder.Next(&frame);
        if (result == agent::FrameDecoder::Result::kError) {
          ADD_FAILURE() << "agent sent a corrupt stream: " << decoder.error();
          return;
        }
        if (result == agent::FrameDecoder::Result::kNeedMore) break;
        std::lock_guard<std::mutex> lock(mu_);
        frames_.push_back(frame);
        cv_.notify_all();
      }
    }
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::thread reader_;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::Frame> frames_;
};

struct ExecResult {
  std::string out;
  std::string err;
  v1::ExecExit exit;
  bool done = false;
};

v1::ExecStart Cmd(uint64_t id, std::vector<std::string> argv) {
  v1::ExecStart start;
  start.set_id(id);
  for (auto& a : argv) start.add_argv(a);
  return start;
}

void SendExecStart(AgentProcess& agent, const v1::ExecStart& start) {
  v1::Frame frame;
  *frame.mutable_exec_start() = start;
  agent.Send(frame);
}

void SendStdin(AgentProcess& agent, uint64_t id, const std::string& data, bool eof) {
  v1::Frame frame;
  frame.mutable_exec_stdin()->set_id(id);
  frame.mutable_exec_stdin()->set_data(data);
  frame.mutable_exec_stdin()->set_eof(eof);
  agent.Send(frame);
}

// Collects the output of exec `id` until its ExecExit.
ExecResult Collect(AgentProcess& agent, uint64_t id, Clock::duration timeout = 30s) {
  ExecResult result;
  Clock::time_point deadline = Clock::now() + timeout;
  while (!result.done) {
    auto frame = agent.WaitFor(
        [id](const v1::Frame& f) {
          return (f.has_exec_output() && f.exec_output().id() == id) ||
                 (f.has_exec_exit() && f.exec_exit().id() == id);
        },
        deadline - Clock::now());
    if (!frame) {
      ADD_FAILURE() << "no ExecExit for exec " << id;
      break;
    }
    if (frame->has_exec_exit()) {
      result.exit = frame->exec_exit();
      result.done = true;
    } else {
      EXPECT_LE(frame->exec_output().data().size(), agent::kMaxChunkBytes);
      (frame->exec_output().stream() == v1::ExecOutput::STDERR ? result.err : result.out) +=
          frame->exec_output().data();
    }
  }
  return result;
}

ExecResult RunExec(AgentProcess& agent, const v1::ExecStart& start) {
  SendExecStart(agent, start);
  return Collect(agent, start.id());
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/agent_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::set<std::string> ListDir(const std::string& path) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(path)) names.insert(e.path().filename());
  return names;
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// A process as /proc/<pid>/stat describes it.
struct ProcStat {
  pid_t pid = 0;
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
  pid_t tpgid = 0;  // the foreground group of its controlling terminal, else -1
};

// Every live (not zombie) process on the machine.
std::vector<ProcStat> LiveProcesses() {
  std::vector<ProcStat> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = ReadAll("/proc/" + name + "/stat");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0, pgrp = 0, session = 0, tty = 0, tpgid = 0;
    if (std::sscanf(stat.c_str() + paren + 1, " %c %d %d %d %d %d", &state, &ppid, &pgrp, &session,
                    &tty, &tpgid) != 6) {
      continue;
    }
    if (state == 'Z' || state == 'X') continue;
    out.push_back({std::stoi(name), ppid, pgrp, session, tpgid});
  }
  return out;
}

// Pids of live (not zombie) processes whose process group is `pgid`.
std::vector<pid_t> LiveGroupMembers(pid_t pgid) {
  std::vector<pid_t> out;
  for (const ProcStat& p : LiveProcesses()) {
    if (p.pgrp == pgid) out.push_back(p.pid);
  }
  return out;
}

// Pids of live (not zombie) processes in session `sid`.
std::vector<pid_t> LiveSessionMembers(pid_t sid) {
  std::vector<pid_t> out;
  for (const ProcStat& p : LiveProcesses()) {
    if (p.session == sid) out.push_back(p.pid);
  }
  return out;
}

// Polls `done` every 20 ms until it holds or `timeout` passed; its last value.
bool Eventually(const std::function<bool()>& done, Clock::duration timeout = 5s) {
  for (Clock::time_point end = Clock::now() + timeout;; std::this_thread::sleep_for(20ms)) {
    if (done()) return true;
    if (Clock::now() >= end) return false;
  }
}

// --- tests -------------------------------------------------------------------

TEST(AgentTest, Hello) {
  AgentProcess agent;
  auto hello = agent.Hello();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->protocol_version(), static_cast<uint32_t>(v1::PROTOCOL_VERSION));
  EXPECT_EQ(hello->agent_pid(), agent.pid());
  EXPECT_FALSE(hello->agent_version().empty());
  // Hello is also a ping: a second one gets answered too.
  ASSERT_TRUE(agent.Hello());
}

TEST(AgentTest, ExitCodesAndSignals) {
  AgentProcess agent;
  ExecResult r = RunExec(agent, Cmd(1, {"true"}));
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_EQ(r.exit.signal(), 0);
  EXPECT_EQ(r.exit.start_error(), "");
  r = RunExec(agent, Cmd(2, {"sh", "-c", "exit 7"}));
  EXPECT_EQ(r.exit.exit_code(), 7);
  r = RunExec(agent, Cmd(3, {"sh", "-c", "kill -TERM $$"}));
  EXPECT_EQ(r.exit.signal(), SIGTERM);
  EXPECT_FALSE(r.exit.timed_out());
}

TEST(AgentTest, StdoutAndStderrAreSeparate) {
  AgentProcess agent;
  ExecResult r = RunExec(agent, Cmd(1, {"sh", "-c", "echo out; echo err >&2; echo out2; exit 3"}));
  EXPECT_EQ(r.out, "out\nout2\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(r.exit.exit_code(), 3);
}

TEST(AgentTest, StdinRoundTrip) {
  AgentProcess agent;
  // Without stdin_follows stdin is /dev/null.
  ExecResult r = RunExec(agent, Cmd(1, {"cat"}));
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.exit.exit_code(), 0);

  // 3 MiB in chunks, more than a pipe holds, so feeding has to wait on cat.
  std::string data;
  for (int i = 0; data.size() < (3u << 20); ++i) data += "line " + std::to_string(i) + "\n";
  v1::ExecStart start = Cmd(2, {"cat"});
  start.set_stdin_follows(true);
  SendExecStart(agent, start);
  for (size_t off = 0; off < data.size(); off += 50000) {
    SendStdin(agent, 2, data.substr(off, 50000), false);
  }
  SendStdin(agent, 2, "", true);
  r = Collect(agent, 2);
  EXPECT_EQ(r.out.size(), data.size());
  EXPECT_TRUE(r.out == data);
  EXPECT_EQ(r.exit.exit_code(), 0);
}

TEST(AgentTest, StdinClosedEarlyByChildIsHarmless) {
  AgentProcess agent;
  v1::ExecStart start = Cmd(1, {"head", "-c", "3"});
  start.set_stdin_follows(true);
  SendExecStart(agent, start);
  for (int i = 0; i < 8; ++i) SendStdin(agent, 1, std::string(512 << 10, 'x'), false);
  SendStdin(agent, 1, "", true);
  ExecResult r = Collect(agent, 1);
  EXPECT_EQ(r.out, "xxx");
  EXPECT_EQ(r.exit.exit_code(), 0);
  ASSERT_TRUE(agent.Hello());
}

TEST(AgentTest, StdinOverflowFailsTheExec) {
  AgentProcess agent;
  v1::ExecStart start = Cmd(1, {"sleep", "100"});  // never reads stdin
  start.set_stdin_follows(true);
  SendExecStart(agent, start);
  std::string chunk(512 << 10, 'z');
  for (int i = 0; i < 36; ++i) SendStdin(agent, 1, chunk, false);  // 18 MiB
  ExecResult r = Collect(agent, 1);
  EXPECT_NE(r.exit.start_error().find("more than 16 MiB queued"), std::string::npos)
      << r.exit.start_error();
  ASSERT_TRUE(agent.Hello());
}

TEST(AgentTest, LargeStdoutStreamsWithoutLoss) {
  AgentProcess agent;
  std::string expected;
  expected.reserve(21 << 20);
  for (int i = 1; i <= 2700000; ++i) {
    expected += std::to_string(i);
    expected += '\n';
  }
  ASSERT_GT(expected.size(), 20'000'000u);
  ExecResult r = RunExec(agent, Cmd(1, {"seq", "1", "2700000"}));
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_EQ(r.out.size(), expected.size());
  EXPECT_EQ(Fnv1a(r.out), Fnv1a(expected));
  EXPECT_EQ(r.err, "");
}

TEST(AgentTest, TimeoutKillsTheWholeGroup) {
  AgentProcess agent;
  v1::ExecStart start = Cmd(1, {"sh", "-c", "echo $$; sleep 100 & echo $!; sleep 100"});
  start.set_timeout_ms(700);
  Clock::time_point t0 = Clock::now();
  ExecResult r = RunExec(agent, start);
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_TRUE(r.exit.timed_out());
  EXPECT_EQ(r.exit.start_error(), "");
  std::istringstream lines(r.out);
  pid_t shell = 0, background = 0;
  lines >> shell >> background;
  ASSERT_GT(shell, 0) << r.out;
  ASSERT_GT(background, 0) << r.out;
  // Both sleeps (and the shell) are gone; killed orphans may linger as
  // zombies until the host's init reaps them, which does not count.
  std::vector<pid_t> live;
  for (Clock::time_point end = Clock::now() + 3s; Clock::now() < end;) {
    live = LiveGroupMembers(shell);
    if (live.empty()) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(live.empty()) << "still running in group " << shell << ": " << live.size();
  std::string stat = ReadAll("/proc/" + std::to_string(background) + "/stat");
  EXPECT_TRUE(stat.empty() || stat.find(") Z") != std::string::npos) << stat;
}

TEST(AgentTest, CancelKillsTheGroup) {
  AgentProcess agent;
  SendExecStart(agent, Cmd(1, {"sleep", "100"}));
  std::this_thread::sleep_for(100ms);
  v1::Frame cancel;
  cancel.mutable_exec_cancel()->set_id(1);
  agent.Send(cancel);
  ExecResult r = Collect(agent, 1, 5s);
  EXPECT_EQ(r.exit.signal(), SIGKILL);
}

TEST(AgentTest, BackgroundChildHoldingThePipesDoesNotBlockExit) {
  AgentProcess agent;
  Clock::time_point t0 = Clock::now();
  ExecResult r = RunExec(agent, Cmd(1, {"sh", "-c", "echo hi; sleep 5 & exit 4"}));
  EXPECT_LT(Clock::now() - t0, 3s);
  EXPECT_EQ(r.out, "hi\n");
  EXPECT_EQ(r.exit.exit_code(), 4);
}

TEST(AgentTest, StartErrors) {
  AgentProcess agent;
  ExecResult r = RunExec(agent, Cmd(1, {"no-such-program-smolvm"}));
  EXPECT_EQ(r.exit.start_error(), "exec no-such-program-smolvm: No such file or directory");
  EXPECT_EQ(r.out + r.err, "");
  EXPECT_EQ(r.exit.start_errno(), ENOENT);
  r = RunExec(agent, Cmd(2, {"/nonexistent/prog"}));
  EXPECT_EQ(r.exit.start_error(), "exec /nonexistent/prog: No such file or directory");
  v1::ExecStart start = Cmd(3, {"true"});
  start.set_cwd("/nonexistent-dir-smolvm");
  r = RunExec(agent, start);
  EXPECT_EQ(r.exit.start_error(), "chdir /nonexistent-dir-smolvm: No such file or directory");
  EXPECT_EQ(r.exit.start_errno(), ENOENT);
  r = RunExec(agent, Cmd(6, {"/etc/passwd"}));  // not executable
  EXPECT_EQ(r.exit.start_error(), "exec /etc/passwd: Permission denied");
  EXPECT_EQ(r.exit.start_errno(), EACCES);
  r = RunExec(agent, Cmd(4, {}));
  EXPECT_NE(r.exit.start_error(), "");
  // PATH comes from the request's environment.
  start = Cmd(5, {"sh", "-c", "true"});
  (*start.mutable_env())["PATH"] = "/nonexistent";
  r = RunExec(agent, start);
  EXPECT_EQ(r.exit.start_error(), "exec sh: No such file or directory");
}

TEST(AgentTest, ConcurrentExecs) {
  AgentProcess agent;
  Clock::time_point t0 = Clock::now();
  for (int i = 1; i <= 8; ++i) {
    SendExecStart(agent, Cmd(i, {"sh", "-c", "sleep 0.5; echo " + std::to_string(i * 11)}));
  }
  for (int i = 1; i <= 8; ++i) {
    ExecResult r = Collect(agent, i);
    EXPECT_EQ(r.out, std::to_string(i * 11) + "\n");
    EXPECT_EQ(r.exit.exit_code(), 0);
  }
  EXPECT_LT(Clock::now() - t0, 3s);  // 8 x 0.5 s one after the other would be 4 s
}

TEST(AgentTest, EnvAndCwd) {
  setenv("AGENT_TEST_LEAK", "leaked", 1);
  AgentProcess agent;
  TempDir dir;
  v1::ExecStart start =
      Cmd(1, {"sh", "-c", "echo $FOO/$HOME/$TERM/$PATH/${AGENT_TEST_LEAK:-unset}; pwd"});
  (*start.mutable_env())["FOO"] = "bar";
  (*start.mutable_env())["HOME"] = "/home/x";
  start.set_cwd(dir.path());
  ExecResult r = RunExec(agent, start);
  // The agent's own environment (AGENT_TEST_LEAK, inherited from this test)
  // is not passed on: only the base environment plus the request's.
  EXPECT_EQ(r.out, "bar//home/x/dumb//usr/sbin:/usr/bin:/sbin:/bin:/.smolvm/bin/unset\n" +
                       dir.path() + "\n");
  // Default cwd is /root.
  r = RunExec(agent, Cmd(2, {"pwd"}));
  EXPECT_EQ(r.out, "/root\n");
}

// A program file without #! runs under the image's /bin/sh (ENOEXEC, as
// execvp does; /.smolvm/bin/sh in an image without /bin/sh).
TEST(AgentTest, ScriptWithoutShebangRunsUnderSh) {
  AgentProcess agent;
  TempDir dir;
  std::string script = dir.path() + "/noshebang";
  {
    std::ofstream out(script);
    out << "echo \"ran $0 $1\"\n";
  }
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  ExecResult r = RunExec(agent, Cmd(1, {script, "arg"}));
  EXPECT_EQ(r.out, "ran " + script + " arg\n");
  EXPECT_EQ(r.exit.exit_code(), 0);
}

void StartUpload(AgentProcess& agent, uint64_t id, const std::string& path, uint32_t mode,
                 bool tar, bool make_parents, const std::string& user = "") {
  v1::Frame frame;
  auto* start = frame.mutable_file_write_start();
  start->set_user(user);
  start->set_id(id);
  start->set_path(path);
  start->set_mode(mode);
  start->set_tar(tar);
  start->set_make_parents(make_parents);
  agent.Send(frame);
}

void SendFileData(AgentProcess& agent, uint64_t id, const std::string& data, bool eof) {
  v1::Frame frame;
  frame.mutable_file_data()->set_id(id);
  frame.mutable_file_data()->set_data(data);
  frame.mutable_file_data()->set_eof(eof);
  agent.Send(frame);
}

v1::OpResult WaitResult(AgentProcess& agent, uint64_t id) {
  auto frame = agent.WaitFor(
      [id](const v1::Frame& f) { return f.has_op_result() && f.op_result().id() == id; });
  EXPECT_TRUE(frame) << "no OpResult for " << id;
  return frame ? frame->op_result() : v1::OpResult();
}

v1::OpResult Upload(AgentProcess& agent, uint64_t id, const std::string& path,
                    const std::string& data, uint32_t mode = 0, bool tar = false,
                    bool make_parents = false, const std::string& user = "") {
  StartUpload(agent, id, path, mode, tar, make_parents, user);
  for (size_t off = 0; off < data.size(); off += agent::kMaxChunkBytes) {
    SendFileData(agent, id, data.substr(off, agent::kMaxChunkBytes), false);
  }
  SendFileData(agent, id, "", true);
  return WaitResult(agent, id);
}

struct Download {
  std::string data;
  v1::OpResult result;
  bool saw_eof = false;
  int chunks = 0;
};

Download Fetch(AgentProcess& agent, uint64_t id, const std::string& path, bool tar = false,
               const std::string& user = "") {
  v1::Frame frame;
  frame.mutable_file_read_start()->set_user(user);
  frame.mutable_file_read_start()->set_id(id);
  frame.mutable_file_read_start()->set_path(path);
  frame.mutable_file_read_start()->set_tar(tar);
  agent.Send(frame);
  Download d;
  for (;;) {
    auto f = agent.WaitFor([id](const v1::Frame& f) {
      return (f.has_file_data() && f.file_data().id() == id) ||
             (f.has_op_result() && f.op_result().id() == id);
    });
    if (!f) {
      ADD_FAILURE() << "download " << id << " stalled";
      return d;
    }
    if (f->has_op_result()) {
      d.result = f->op_result();
      return d;
    }
    EXPECT_FALSE(d.saw_eof) << "data after eof";
    EXPECT_LE(f->file_data().data().size(), agent::kMaxChunkBytes);
    d.data += f->file_data().data();
    d.saw_eof = f->file_data().eof();
    ++d.chunks;
  }
}

TEST(AgentTest, FileWriteReadRoundTrip) {
  AgentProcess agent;
  TempDir dir;
  std::string data;
  for (int i = 0; data.size() < 300000; ++i) data += static_cast<char>((i * 7919) & 0xff);
  const std::string path = dir.path() + "/a/b/file.bin";
  v1::OpResult r = Upload(agent, 1, path, data, 0640, false, true);
  EXPECT_EQ(r.error(), "");
  EXPECT_EQ(r.bytes(), data.size());
  EXPECT_EQ(ReadAll(path), data);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(ListDir(dir.path() + "/a/b"), std::set<std::string>{"file.bin"});

  Download d = Fetch(agent, 2, path);
  EXPECT_EQ(d.result.error(), "");
  EXPECT_TRUE(d.saw_eof);
  EXPECT_TRUE(d.data == data);
  EXPECT_EQ(d.result.bytes(), data.size());
  EXPECT_EQ(d.result.mode(), 0640u);
  EXPECT_EQ(d.chunks, 5);  // 300000 bytes = 4 full chunks + 1, the last with eof

  // Mode 0 means 0644; an empty file is one empty chunk with eof.
  r = Upload(agent, 3, dir.path() + "/empty", "");
  EXPECT_EQ(r.error(), "");
  d = Fetch(agent, 4, dir.path() + "/empty");
  EXPECT_EQ(d.result.mode(), 0644u);
  EXPECT_EQ(d.chunks, 1);
  EXPECT_TRUE(d.saw_eof);
  EXPECT_EQ(d.data, "");
}

TEST(AgentTest, FileWriteIsAtomic) {
  AgentProcess agent;
  TempDir dir;
  const std::string path = dir.path() + "/config";
  { std::ofstream(path) << "old contents\n"; }
  StartUpload(agent, 1, path, 0600, false, false);
  SendFileData(agent, 1, "new ", false);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(ReadAll(path), "old contents\n");  // not visible before eof
  EXPECT_EQ(ListDir(dir.path()).size(), 2u);   // the target + one temp file
  SendFileData(agent, 1, "contents\n", true);
  v1::OpResult r = WaitResult(agent, 1);
  EXPECT_EQ(r.error(), "");
  EXPECT_EQ(ReadAll(path), "new contents\n");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"config"});
}

TEST(AgentTest, FileErrorsNameThePath) {
  AgentProcess agent;
  TempDir dir;
  v1::OpResult r = Upload(agent, 1, dir.path() + "/missing/x", "data");
  EXPECT_EQ(r.error(), "open " + dir.path() + "/missing/x: No such file or directory");
  r = Upload(agent, 2, "relative/path", "data");
  EXPECT_NE(r.error(), "");
  { std::ofstream(dir.path() + "/plain") << "x"; }
  r = Upload(agent, 3, dir.path() + "/plain/sub/x", "data", 0, false, true);
  EXPECT_EQ(r.error(), "mkdir " + dir.path() + "/plain/sub: Not a directory");

  Download d = Fetch(agent, 4, dir.path() + "/nope");
  EXPECT_EQ(d.chunks, 0);
  EXPECT_EQ(d.result.error(), "open " + dir.path() + "/nope: No such file or directory");
  d = Fetch(agent, 5, dir.path());
  EXPECT_EQ(d.chunks, 0);
  EXPECT_EQ(d.result.error(), "read " + dir.path() + ": Is a directory");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"plain"});
  ASSERT_TRUE(agent.Hello());
}

// Exec and file operations as another user: its uid, gid, environment and
// permissions; what it writes is its own. Runs as root (the agent switches
// to "nobody", which every Debian has: uid and gid 65534, home /nonexistent).
TEST(AgentTest, RunsAsTheRequestedUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  AgentProcess agent;
  v1::ExecStart start = Cmd(1, {"sh", "-c", "id -u; id -g; echo $USER/$LOGNAME/$HOME; pwd"});
  start.set_user("nobody");
  ExecResult r = RunExec(agent, start);
  EXPECT_EQ(r.exit.start_error(), "");
  // nobody's home does not exist: cwd falls back to /, as login does.
  EXPECT_EQ(r.out, "65534\n65534\nnobody/nobody//nonexistent\n/\n");
  start = Cmd(2, {"sh", "-c", "id -u; echo $USER/$HOME"});
  start.set_user("65534");  // a numeric uid finds the same entry
  r = RunExec(agent, start);
  EXPECT_EQ(r.out, "65534\nnobody//nonexistent\n");
  r = RunExec(agent, Cmd(3, {"sh", "-c", "id -u; echo $USER"}));
  EXPECT_EQ(r.out, "0\nroot\n");  // "" is root, with USER set too
  start = Cmd(4, {"true"});
  start.set_user("no-such-user-smolvm");
  r = RunExec(agent, start);
  EXPECT_EQ(r.exit.start_error(),
            "user \"no-such-user-smolvm\": no such user in the guest's /etc/passwd");
  EXPECT_EQ(r.exit.start_errno(), EINVAL);

  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0777), 0);
  v1::OpResult w = Upload(agent, 5, dir.path() + "/sub/owned", "mine", 0600, false, true, "nobody");
  EXPECT_EQ(w.error(), "");
  struct stat st;
  ASSERT_EQ(stat((dir.path() + "/sub/owned").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  ASSERT_EQ(stat((dir.path() + "/sub").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);  // made parents are the user's too
  Download d = Fetch(agent, 6, dir.path() + "/sub/owned", false, "nobody");
  EXPECT_EQ(d.result.error(), "");
  EXPECT_EQ(d.data, "mine");

  // Root's files stay root's: permission denied, with its errno.
  { std::ofstream(dir.path() + "/secret") << "root only"; }
  ASSERT_EQ(chmod((dir.path() + "/secret").c_str(), 0600), 0);
  d = Fetch(agent, 7, dir.path() + "/secret", false, "nobody");
  EXPECT_EQ(d.result.error(), "open " + dir.path() + "/secret: Permission denied");
  EXPECT_EQ(d.result.error_errno(), EACCES);
  ASSERT_EQ(mkdir((dir.path() + "/rootdir").c_str(), 0755), 0);
  w = Upload(agent, 8, dir.path() + "/rootdir/x", "data", 0, false, false, "nobody");
  EXPECT_EQ(w.error_errno(), EACCES) << w.error();
  w = Upload(agent, 9, dir.path() + "/x", "data", 0, false, false, "no-such-user-smolvm");
  EXPECT_EQ(w.error_errno(), EINVAL) << w.error();
  // Root still works on the same connection after a thread switched users.
  d = Fetch(agent, 10, dir.path() + "/secret");
  EXPECT_EQ(d.data, "root only");
  ASSERT_TRUE(agent.Hello());
}

TEST(GuestUserTest, ResolvesFromTheGuestsOwnFiles) {
  TempDir etc;
  {
    std::ofstream(etc.path() + "/passwd")
        << "root:x:0:0:root:/srv/root:/bin/sh\n"
           "garbage line\n"
           "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
           "svc:x:998:50::/:/sbin/nologin\n";
    std::ofstream(etc.path() + "/group")
        << "root:x:0:\nalice:x:1000:\nwheel:x:10:bob,alice\ndocker:x:999:alice\n"
           "other:x:20:bob\n";
  }
  GuestUser u;
  std::string error;
  ASSERT_TRUE(ResolveUser("alice", &u, &error, etc.path()));
  EXPECT_EQ(u.uid, 1000u);
  EXPECT_EQ(u.gid, 1000u);
  EXPECT_EQ(u.home, "/home/alice");
  EXPECT_EQ(u.groups, (std::vector<gid_t>{1000, 10, 999}));
  ASSERT_TRUE(ResolveUser("998", &u, &error, etc.path()));
  EXPECT_EQ(u.name, "svc");
  EXPECT_EQ(u.gid, 50u);
  ASSERT_TRUE(ResolveUser("4242", &u, &error, etc.path()));  // no entry: gid = uid, home /
  EXPECT_EQ(u.name, "");
  EXPECT_EQ(u.gid, 4242u);
  EXPECT_EQ(u.home, "/");
  ASSERT_TRUE(ResolveUser("", &u, &error, etc.path()));
  EXPECT_TRUE(u.is_root());
  EXPECT_EQ(u.home, "/srv/root");
  EXPECT_FALSE(ResolveUser("bob", &u, &error, etc.path()));
  EXPECT_EQ(error, "user \"bob\": no such user in the guest's /etc/passwd");
  EXPECT_FALSE(ResolveUser("99999999999", &u, &error, etc.path()));
}

TEST(AgentTest, TarUploadAndDownload) {
  AgentProcess agent;
  TempDir dir;
  const std::string src = dir.path() + "/src";
  fs::create_directories(src + "/sub/deeper");
  { std::ofstream(src + "/a.txt") << "alpha\n"; }
  { std::ofstream(src + "/sub/b.txt") << "beta\n"; }
  { std::ofstream(src + "/sub/deeper/c.bin") << std::string(200000, 'c'); }
  chmod((src + "/a.txt").c_str(), 0600);

  Download d = Fetch(agent, 1, src, /*tar=*/true);
  ASSERT_EQ(d.result.error(), "");
  EXPECT_TRUE(d.saw_eof);
  EXPECT_EQ(d.result.bytes(), d.data.size());
  EXPECT_GT(d.data.size(), 200000u);

  const std::string dst = dir.path() + "/dst/nested";
  v1::OpResult r = Upload(agent, 2, dst, d.data, 0, /*tar=*/true);
  ASSERT_EQ(r.error(), "");
  EXPECT_EQ(r.bytes(), d.data.size());
  EXPECT_EQ(ReadAll(dst + "/a.txt"), "alpha\n");
  EXPECT_EQ(ReadAll(dst + "/sub/b.txt"), "beta\n");
  EXPECT_EQ(ReadAll(dst + "/sub/deeper/c.bin"), std::string(200000, 'c'));
  struct stat st;
  ASSERT_EQ(stat((dst + "/a.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  // A corrupt archive: the error carries tar's stderr.
  r = Upload(agent, 3, dir.path() + "/bad", std::string(4096, 'x'), 0, true);
  EXPECT_NE(r.error().find("tar -x -C " + dir.path() + "/bad: "), std::string::npos) << r.error();
  EXPECT_GT(r.error().size(), ("tar -x -C " + dir.path() + "/bad: ").size());
  // A missing directory.
  d = Fetch(agent, 4, dir.path() + "/nope", true);
  EXPECT_EQ(d.result.error(), "stat " + dir.path() + "/nope: No such file or directory");
}

TEST(AgentTest, ResyncsAfterGarbage) {
  AgentProcess agent;
  ASSERT_TRUE(agent.Hello());
  // An oversized length prefix.
  agent.SendRaw(std::string("\xff\xff\xff\xff garbage garbage", 20));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(agent.Hello());
  // A well-sized frame that does not parse.
  agent.SendRaw(std::string("\x00\x00\x00\x06\xff\xff\xff\xff\xff\xff", 10));
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(agent.Hello());
  // Random bytes.
  std::string noise;
  for (int i = 0; i < 5000; ++i) noise += static_cast<char>((i * 2654435761u) >> 24);
  agent.SendRaw(std::string("\x7f", 1) + noise);
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(agent.Hello());
  // Messages that only the guest sends, unknown ids: ignored.
  v1::Frame frame;
  frame.mutable_hello()->set_protocol_version(1);
  agent.Send(frame);
  SendStdin(agent, 999, "x", true);
  SendFileData(agent, 998, "x", true);
  frame.mutable_exec_cancel()->set_id(997);
  agent.Send(frame);
  agent.SendRaw(std::string("\x00\x00\x00\x00", 4));  // an empty Frame
  ASSERT_TRUE(agent.Hello());
  EXPECT_EQ(kill(agent.pid(), 0), 0);
}

TEST(AgentTest, SurvivesEndOfStream) {
  AgentProcess agent;
  SendExecStart(agent, Cmd(1, {"sh", "-c", "sleep 0.3; echo done"}));
  // Half a frame, then the host side stops sending: the agent sees EOF.
  agent.SendRaw(std::string("\x00\x00\x01\x00\x1a", 5));
  ASSERT_EQ(shutdown(agent.fd(), SHUT_WR), 0);
  ExecResult r = Collect(agent, 1);  // running execs outlive the disconnect
  EXPECT_EQ(r.out, "done\n");
  EXPECT_EQ(r.exit.exit_code(), 0);
  std::this_thread::sleep_for(200ms);
  int status;
  EXPECT_EQ(waitpid(agent.pid(), &status, WNOHANG), 0) << "the agent exited at EOF";
}

TEST(AgentTest, UnfinishedUploadIsCancelledAtEndOfStream) {
  AgentProcess agent;
  TempDir dir;
  StartUpload(agent, 1, dir.path() + "/partial", 0, false, false);
  SendFileData(agent, 1, "some", false);
  std::this_thread::sleep_for(100ms);
  ASSERT_EQ(shutdown(agent.fd(), SHUT_WR), 0);
  v1::OpResult r = WaitResult(agent, 1);
  EXPECT_NE(r.error().find("cancelled"), std::string::npos) << r.error();
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(AgentTest, ACancelledUploadCommitsNothing) {
  AgentProcess agent;
  TempDir dir;
  StartUpload(agent, 1, dir.path() + "/partial", 0, false, false);
  SendFileData(agent, 1, "some", false);
  v1::Frame cancel;
  cancel.mutable_exec_cancel()->set_id(1);
  agent.Send(cancel);
  v1::OpResult r = WaitResult(agent, 1);
  EXPECT_NE(r.error().find("cancelled"), std::string::npos) << r.error();
  EXPECT_TRUE(ListDir(dir.path()).empty());
}

TEST(AgentTest, AddEntropyWithoutPrivilegeReportsTheError) {
  AgentProcess agent(/*without_host_privileges=*/true);
  v1::Frame frame;
  frame.mutable_add_entropy()->set_id(1);
  frame.mutable_add_entropy()->set_seed(std::string(64, 'x'));
  agent.Send(frame);
  v1::OpResult r = WaitResult(agent, 1);
  EXPECT_NE(r.error().find("RNDADDENTROPY"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("Operation not permitted"), std::string::npos) << r.error();
}

TEST(AgentTest, SetClockWithoutPrivilegeReportsTheErrorAndTheGuestTime) {
  AgentProcess agent(/*without_host_privileges=*/true);
  ASSERT_TRUE(agent.Hello());
  timespec before;
  clock_gettime(CLOCK_REALTIME, &before);
  const int64_t before_ns = int64_t{before.tv_sec} * 1'000'000'000 + before.tv_nsec;
  v1::Frame frame;
  frame.mutable_set_clock()->set_id(1);
  frame.mutable_set_clock()->set_unix_time_ns(1'000'000'000);  // 1970: would be obvious.
  agent.Send(frame);
  v1::OpResult r = WaitResult(agent, 1);
  EXPECT_NE(r.error().find("clock_settime"), std::string::npos) << r.error();
  EXPECT_NE(r.error().find("Operation not permitted"), std::string::npos) << r.error();
  // The reported time is the (unchanged) clock's.
  EXPECT_GE(r.guest_time_ns(), before_ns);
  EXPECT_LT(r.guest_time_ns(), before_ns + 5'000'000'000);
}

// --- Reidentify --------------------------------------------------------------
//
// The network part runs against a veth pair in a network namespace that the
// test's agent gets of its own ("eth0" for the agent, "peer0" for the
// capture); it dies with the agent. The agent runs without CAP_SYS_TIME and
// CAP_SYS_ADMIN, so its clock and entropy parts can never change the machine
// running the test (they fail with EPERM, and say so).

// A guest's eth0 as a restored clone has it: its snapshot's addresses (two
// in one subnet, one in another) and default route.
constexpr char kGuestNet[] =
    "ip link add eth0 type veth peer name peer0 && ip link set peer0 up && "
    "ip link set eth0 address 02:53:c0:00:02:07 && ip link set eth0 up && "
    "ip addr add 192.0.2.7/24 dev eth0 && ip addr add 192.0.2.8/24 dev eth0 && "
    "ip addr add 198.51.100.9/24 dev eth0 && ip route add default via 192.0.2.1";

// Why this host cannot give a test a network namespace with a veth pair,
// or "" when it can.
const std::string& NetnsUnavailable() {
  static const std::string why = [] {
    pid_t child = fork();
    if (child == 0) {
      if (unshare(CLONE_NEWNET) != 0) _exit(1);
      execl("/bin/sh", "sh", "-c", "ip link add t0 type veth peer name t1 >/dev/null 2>&1",
            static_cast<char*>(nullptr));
      _exit(2);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return std::string();
    return std::string("cannot make a network namespace with a veth pair here (needs root, ")
           + "iproute2 and veth)";
  }();
  return why;
}

// Runs `argv` in the network namespace of process `pid`; its stdout.
std::string RunInNetns(pid_t pid, std::vector<std::string> argv) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return "";
  const std::string ns = "/proc/" + std::to_string(pid) + "/ns/net";
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t child = fork();
  if (child == 0) {
    int fd = open(ns.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) _exit(124);
    if (dup2(out[1], 1) < 0) _exit(125);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof(buf))) > 0;) text.append(buf, n);
  close(out[0]);
  waitpid(child, nullptr, 0);
  return text;
}

// `ip -j ARGS` in the agent's namespace, parsed.
nlohmann::json Ip(pid_t pid, std::vector<std::string> args) {
  args.insert(args.begin(), {"ip", "-j"});
  std::string text = RunInNetns(pid, args);
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(json.is_array()) << "ip output: " << text;
  return json.is_array() ? json : nlohmann::json::array();
}

struct Ipv4 {
  std::string local;
  int prefixlen = 0;
  std::string broadcast;
};

std::vector<Ipv4> AddressesOf(pid_t pid, const std::string& dev) {
  std::vector<Ipv4> out;
  for (const auto& link : Ip(pid, {"-4", "addr", "show", "dev", dev})) {
    for (const auto& a : link.value("addr_info", nlohmann::json::array())) {
      out.push_back({a.value("local", ""), a.value("prefixlen", 0), a.value("broadcast", "")});
    }
  }
  return out;
}

std::string MacOf(pid_t pid, const std::string& dev) {
  auto links = Ip(pid, {"link", "show", "dev", dev});
  return links.empty() ? "" : links[0].value("address", "");
}

bool IsUp(pid_t pid, const std::string& dev) {
  auto links = Ip(pid, {"link", "show", "dev", dev});
  if (links.empty()) return false;
  for (const auto& flag : links[0].value("flags", nlohmann::json::array())) {
    if (flag == "UP") return true;
  }
  return false;
}

// Receives the ARP frames arriving on one interface of another process's
// network namespace.
class ArpCapture {
 public:
  ArpCapture(pid_t pid, const std::string& dev) {
    // setns affects only the calling thread: a thread of its own opens the
    // socket, which stays in that namespace.
    std::thread([&] {
      const std::string ns = "/proc/" + std::to_string(pid) + "/ns/net";
      int fd = open(ns.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return;
      int entered = setns(fd, CLONE_NEWNET);
      close(fd);
      if (entered != 0) return;
      UniqueSocket sock(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP)));
      sockaddr_ll ll{};
      ll.sll_family = AF_PACKET;
      ll.sll_protocol = htons(ETH_P_ARP);
      ll.sll_ifindex = static_cast<int>(if_nametoindex(dev.c_str()));
      if (sock.fd < 0 || ll.sll_ifindex == 0 ||
          bind(sock.fd, reinterpret_cast<sockaddr*>(&ll), sizeof(ll)) != 0) {
        return;
      }
      fd_ = std::exchange(sock.fd, -1);
    }).join();
  }
  ~ArpCapture() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // The next Ethernet frame (header included) within `timeout`.
  std::optional<std::string> Next(Clock::duration timeout) {
    Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[2048];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n > 0) return std::string(buf, static_cast<size_t>(n));
    }
  }

 private:
  struct UniqueSocket {
    explicit UniqueSocket(int f) : fd(f) {}
    ~UniqueSocket() {
      if (fd >= 0) close(fd);
    }
    int fd;
  };
  int fd_ = -1;
};

std::string Hex(const std::string& bytes) {
  std::string out;
  char b[4];
  for (unsigned char c : bytes) {
    std::snprintf(b, sizeof(b), "%02x", c);
    out += b;
  }
  return out;
}

v1::NetworkIdentity CloneIdentity() {
  v1::NetworkIdentity n;
  n.set_interface("eth0");
  n.set_mac("02:53:0a:4d:00:05");
  n.set_ipv4_address("10.77.0.5");
  n.set_prefix_length(24);
  n.set_gateway("10.77.0.1");
  n.set_dns_server("10.77.0.1");
  return n;
}

v1::OpResult Reidentify(AgentProcess& agent, uint64_t id, const v1::NetworkIdentity& network,
                        int64_t unix_time_ns = 0, const std::string& seed = "") {
  v1::Frame frame;
  v1::Reidentify* r = frame.mutable_reidentify();
  r->set_id(id);
  r->set_unix_time_ns(unix_time_ns);
  r->set_entropy_seed(seed);
  *r->mutable_network() = network;
  agent.Send(frame);
  return WaitResult(agent, id);
}

TEST(AgentTest, ReidentifySetsClockEntropyAndNetworkInOneRequest) {
  if (!NetnsUnavailable().empty()) GTEST_SKIP() << NetnsUnavailable();
  TempDir dir;
  const std::string resolv = dir.path() + "/resolv.conf";
  { std::ofstream(resolv) << "nameserver 192.0.2.1\n"; }
  AgentProcess agent({/*without_host_privileges=*/true, kGuestNet, {"--resolv-conf", resolv}});
  auto hello = agent.Hello();
  ASSERT_TRUE(hello) << "the agent did not start in its network namespace";
  EXPECT_EQ(hello->protocol_version(), static_cast<uint32_t>(v1::PROTOCOL_VERSION));
  ASSERT_EQ(MacOf(agent.pid(), "eth0"), "02:53:c0:00:02:07");
  ASSERT_EQ(AddressesOf(agent.pid(), "eth0").size(), 3u);
  ArpCapture arp(agent.pid(), "peer0");
  ASSERT_TRUE(arp.ok()) << std::strerror(errno);

  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  const int64_t now_ns = int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
  Clock::time_point t0 = Clock::now();
  v1::OpResult r = Reidentify(agent, 1, CloneIdentity(), now_ns, std::string(64, 's'));
  std::printf("reidentify round trip (netns, host): %.2f ms\n",
              std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  // Clock, then entropy, each failing here for want of privilege and named;
  // the network part is applied all the same.
  EXPECT_EQ(r.error(),
            "clock_settime: Operation not permitted; ioctl RNDADDENTROPY: Operation not permitted");
  EXPECT_GE(r.guest_time_ns(), now_ns);
  EXPECT_LT(r.guest_time_ns(), now_ns + 5'000'000'000);

  EXPECT_EQ(MacOf(agent.pid(), "eth0"), "02:53:0a:4d:00:05");
  EXPECT_TRUE(IsUp(agent.pid(), "eth0"));
  std::vector<Ipv4> addrs = AddressesOf(agent.pid(), "eth0");
  ASSERT_EQ(addrs.size(), 1u) << "the snapshot's addresses were not all removed";
  EXPECT_EQ(addrs[0].local, "10.77.0.5");
  EXPECT_EQ(addrs[0].prefixlen, 24);
  EXPECT_EQ(addrs[0].broadcast, "10.77.0.255");
  auto routes = Ip(agent.pid(), {"-4", "route", "show", "default"});
  ASSERT_EQ(routes.size(), 1u) << routes.dump();
  EXPECT_EQ(routes[0].value("gateway", ""), "10.77.0.1");
  EXPECT_EQ(routes[0].value("dev", ""), "eth0");
  EXPECT_EQ(ReadAll(resolv), "nameserver 10.77.0.1\n");
  EXPECT_EQ(ListDir(dir.path()), std::set<std::string>{"resolv.conf"});

  // One ARP announcement: broadcast from the new MAC, a request whose
  // sender and target address are the new address.
  std::optional<std::string> garp;
  while (auto frame = arp.Next(3s)) {
    if (frame->size() >= 42 && frame->substr(28, 4) == std::string("\x0a\x4d\x00\x05", 4)) {
      garp = frame;
      break;
    }
  }
  ASSERT_TRUE(garp) << "no gratuitous ARP for 10.77.0.5 seen on the peer";
  EXPECT_EQ(Hex(garp->substr(0, 6)), "ffffffffffff");     // to everyone
  EXPECT_EQ(Hex(garp->substr(6, 6)), "02530a4d0005");     // from the new MAC
  EXPECT_EQ(Hex(garp->substr(12, 2)), "0806");            // ARP
  EXPECT_EQ(Hex(garp->substr(14, 8)), "0001080006040001");  // Ethernet/IPv4, request
  EXPECT_EQ(Hex(garp->substr(22, 6)), "02530a4d0005");    // sender MAC
  EXPECT_EQ(Hex(garp->substr(28, 4)), "0a4d0005");        // sender IP
  EXPECT_EQ(Hex(garp->substr(32, 6)), "000000000000");    // target MAC
  EXPECT_EQ(Hex(garp->substr(38, 4)), "0a4d0005");        // target IP

  // Idempotent: a repeat (a retried fix-up) ends the same and succeeds.
  r = Reidentify(agent, 2, CloneIdentity());
  EXPECT_EQ(r.error(), "");
  addrs = AddressesOf(agent.pid(), "eth0");
  ASSERT_EQ(addrs.size(), 1u);
  EXPECT_EQ(addrs[0].local, "10.77.0.5");
  EXPECT_EQ(Ip(agent.pid(), {"-4", "route", "show", "default"}).size(), 1u);

  // An interface found down is brought up (as the script's `ip link set
  // eth0 up` did).
  RunInNetns(agent.pid(), {"ip", "link", "set", "eth0", "down"});
  ASSERT_FALSE(IsUp(agent.pid(), "eth0"));
  r = Reidentify(agent, 3, CloneIdentity());
  EXPECT_EQ(r.error(), "");
  EXPECT_TRUE(IsUp(agent.pid(), "eth0"));
  EXPECT_EQ(Ip(agent.pid(), {"-4", "route", "show", "default"}).size(), 1u);
}

TEST(AgentTest, ReidentifyReplacesResolvConfAtomically) {
  if (!NetnsUnavailable().empty()) GTEST_SKIP() << NetnsUnavailable();
  TempDir dir;
  const std::string resolv = dir.path() + "/resolv.conf";
  // As images link it: to a file that does not exist in the guest.
  ASSERT_EQ(symlink("../run/systemd/resolve/stub-resolv.conf", resolv.c_str()), 0);
  AgentProcess agent({/*without_host_privileges=*/true, kGuestNet, {"--resolv-conf", resolv}});
  ASSERT_TRUE(agent.Hello());
  v1::NetworkIdentity n = CloneIdentity();
  n.clear_dns_server();  // An empty resolv.conf.
  v1::OpResult r = Reidentify(agent, 1, n);  // No clock, no entropy: only the network.
  EXPECT_EQ(r.error(), "");
  struct stat st;
  ASSERT_EQ(lstat(resolv.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode)) << "the dangling link was not replaced by a file";
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(ReadAll(resolv), "");

  // A link to a file that exists is written through: the file is replaced,
  // the link stays.
  const std::string real = dir.path() + "/real.conf";
  { std::ofstream(real) << "nameserver 192.0.2.1\n"; }
  ASSERT_EQ(unlink(resolv.c_str()), 0);
  ASSERT_EQ(symlink("real.conf", resolv.c_str()), 0);
  r = Reidentify(agent, 2, CloneIdentity());
  EXPECT_EQ(r.error(), "");
  ASSERT_EQ(lstat(resolv.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_EQ(ReadAll(real), "nameserver 10.77.0.1\n");
  EXPECT_EQ(ListDir(dir.path()), (std::set<std::string>{"real.conf", "resolv.conf"}));

  // Already saying so: left alone (the same inode, not rewritten).
  struct stat before, after;
  ASSERT_EQ(stat(real.c_str(), &before), 0);
  r = Reidentify(agent, 3, CloneIdentity());
  EXPECT_EQ(r.error(), "");
  ASSERT_EQ(stat(real.c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);
  EXPECT_EQ(ReadAll(real), "nameserver 10.77.0.1\n");
}

TEST(AgentTest, ReidentifyErrorsNameTheStep) {
  if (!NetnsUnavailable().empty()) GTEST_SKIP() << NetnsUnavailable();
  TempDir dir;
  const std::string resolv = dir.path() + "/resolv.conf";
  AgentProcess agent({/*without_host_privileges=*/true, kGuestNet, {"--resolv-conf", resolv}});
  ASSERT_TRUE(agent.Hello());

  // Refused before anything changes.
  v1::NetworkIdentity n = CloneIdentity();
  n.set_interface("eth9");
  EXPECT_EQ(Reidentify(agent, 1, n).error(), "interface eth9: No such device");
  n = CloneIdentity();
  n.set_ipv4_address("10.77.0.300");
  EXPECT_EQ(Reidentify(agent, 2, n).error(), "address \"10.77.0.300\": not an IPv4 address");
  n = CloneIdentity();
  n.set_prefix_length(33);
  EXPECT_EQ(Reidentify(agent, 3, n).error(), "prefix length 33: not 1-32");
  n.set_prefix_length(0);
  EXPECT_EQ(Reidentify(agent, 4, n).error(), "prefix length 0: not 1-32");
  n = CloneIdentity();
  n.set_mac("01:00:5e:00:00:01");
  EXPECT_EQ(Reidentify(agent, 5, n).error(),
            "mac \"01:00:5e:00:00:01\": not a unicast aa:bb:cc:dd:ee:ff address");
  n = CloneIdentity();
  n.set_gateway("10.77.0");
  EXPECT_EQ(Reidentify(agent, 6, n).error(), "gateway \"10.77.0\": not an IPv4 address");
  EXPECT_EQ(MacOf(agent.pid(), "eth0"), "02:53:c0:00:02:07");
  EXPECT_EQ(AddressesOf(agent.pid(), "eth0").size(), 3u);
  EXPECT_FALSE(fs::exists(resolv));

  // A gateway outside the new subnet: the interface is moved, then the
  // route fails, named with its errno; the interface stays up.
  n = CloneIdentity();
  n.set_gateway("203.0.113.1");
  EXPECT_EQ(Reidentify(agent, 7, n).error(),
            "default route via 203.0.113.1 dev eth0: Network is unreachable");
  EXPECT_TRUE(IsUp(agent.pid(), "eth0"));
  std::vector<Ipv4> addrs = AddressesOf(agent.pid(), "eth0");
  ASSERT_EQ(addrs.size(), 1u);
  EXPECT_EQ(addrs[0].local, "10.77.0.5");
  ASSERT_TRUE(agent.Hello());
}

// --- Filesystem calls and watches (protocol 4) -------------------------------

v1::FsRequest FsOp(v1::FsRequest::Op op, const std::string& path, const std::string& user = "") {
  v1::FsRequest request;
  request.set_op(op);
  request.set_path(path);
  request.set_user(user);
  return request;
}

// Sends `request` with a fresh id and returns its FsReply.
v1::FsReply Fs(AgentProcess& agent, v1::FsRequest request) {
  static std::atomic<uint64_t> next_id{5000};
  const uint64_t id = next_id++;
  request.set_id(id);
  v1::Frame frame;
  *frame.mutable_fs_request() = request;
  agent.Send(frame);
  auto reply = agent.WaitFor(
      [id](const v1::Frame& f) { return f.has_fs_reply() && f.fs_reply().id() == id; });
  EXPECT_TRUE(reply) << "no FsReply for " << id;
  return reply ? reply->fs_reply() : v1::FsReply();
}

std::vector<std::string> EntryPaths(const v1::FsReply& reply) {
  std::vector<std::string> out;
  for (const auto& e : reply.entries()) out.push_back(e.path());
  return out;
}

TEST(GuestUserTest, PathFromHomeIsAbsoluteAndNormalized) {
  GuestUser u;
  u.home = "/home/alice";
  EXPECT_EQ(PathFromHome(u, ""), "/home/alice");
  EXPECT_EQ(PathFromHome(u, "x"), "/home/alice/x");
  EXPECT_EQ(PathFromHome(u, "./x//y/"), "/home/alice/x/y");
  EXPECT_EQ(PathFromHome(u, "a/../b"), "/home/alice/a/../b");  // ".." is kept
  EXPECT_EQ(PathFromHome(u, "/abs/./p/"), "/abs/p");
  EXPECT_EQ(PathFromHome(u, "/"), "/");
  EXPECT_EQ(PathFromHome(u, "//"), "/");
  u.home = "/";
  EXPECT_EQ(PathFromHome(u, "x"), "/x");
  EXPECT_EQ(PathFromHome(u, ""), "/");
}

TEST(AgentFsTest, StatReportsFilesDirectoriesAndSymlinks) {
  AgentProcess agent;
  TempDir dir;
  const std::string file = dir.path() + "/file";
  { std::ofstream(file) << "hello"; }
  ASSERT_EQ(chmod(file.c_str(), 0640), 0);
  ASSERT_EQ(mkdir((dir.path() + "/sub").c_str(), 0750), 0);
  ASSERT_EQ(chmod((dir.path() + "/sub").c_str(), 0750), 0);  // whatever the umask
  ASSERT_EQ(symlink("file", (dir.path() + "/link").c_str()), 0);
  struct stat st;
  ASSERT_EQ(lstat(file.c_str(), &st), 0);

  v1::FsReply r = Fs(agent, FsOp(v1::FsRequest::STAT, file));
  EXPECT_EQ(r.error(), "");
  ASSERT_EQ(r.entries_size(), 1);
  const v1::FsEntry& e = r.entries(0);
  EXPECT_EQ(e.path(), file);
  EXPECT_EQ(e.name(), "file");
  EXPECT_EQ(e.type(), v1::FsEntry::FILE);
  EXPECT_EQ(e.size(), 5u);
  EXPECT_EQ(e.mode(), 0640u);
  EXPECT_EQ(e.uid(), st.st_uid);
  EXPECT_EQ(e.gid(), st.st_gid);
  EXPECT_EQ(e.mtime_ns(), int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec);
  EXPECT_EQ(e.symlink_target(), "");

  r = Fs(agent, FsOp(v1::FsRequest::STAT, dir.path() + "//./sub/"));  // normalized
  ASSERT_EQ(r.entries_size(), 1) << r.error();
  EXPECT_EQ(r.entries(0).path(), dir.path() + "/sub");
  EXPECT_EQ(r.entries(0).name(), "sub");
  EXPECT_EQ(r.entries(0).type(), v1::FsEntry::DIRECTORY);
  EXPECT_EQ(r.entries(0).mode(), 0750u);

  r = Fs(agent, FsOp(v1::FsRequest::STAT, dir.path() + "/link"));  // not followed
  ASSERT_EQ(r.entries_size(), 1) << r.error();
  EXPECT_EQ(r.entries(0).type(), v1::FsEntry::SYMLINK);
  EXPECT_EQ(r.entries(0).symlink_target(), "file");

  r = Fs(agent, FsOp(v1::FsRequest::STAT, dir.path() + "/missing"));
  EXPECT_EQ(r.error(), "lstat " + dir.path() + "/missing: No such file or directory");
  EXPECT_EQ(r.error_errno(), ENOENT);
  EXPECT_EQ(r.entries_size(), 0);

  v1::FsRequest unknown = FsOp(v1::FsRequest::STAT, file);
  unknown.set_op(static_cast<v1::FsRequest::Op>(99));
  r = Fs(agent, unknown);
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
  ASSERT_TRUE(agent.Hello());
}

TEST(AgentFsTest, ListIsBreadthFirstSortedAndNeverFollowsLinks) {
  AgentProcess agent;
  TempDir dir;
  const std::string& d = dir.path();
  ASSERT_EQ(mkdir((d + "/a").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((d + "/a/y").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((d + "/d").c_str(), 0755), 0);
  { std::ofstream(d + "/b") << "b"; }
  { std::ofstream(d + "/a/z") << "z"; }
  { std::ofstream(d + "/a/y/deep") << "deep"; }
  { std::ofstream(d + "/d/x") << "x"; }
  ASSERT_EQ(symlink((d + "/a").c_str(), (d + "/c").c_str()), 0);

  v1::FsReply r = Fs(agent, FsOp(v1::FsRequest::LIST, d));  // depth 0 = 1
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(r.truncated());
  EXPECT_EQ(EntryPaths(r), (std::vector<std::string>{d + "/a", d + "/b", d + "/c", d + "/d"}));
  ASSERT_EQ(r.entries_size(), 4);
  EXPECT_EQ(r.entries(0).type(), v1::FsEntry::DIRECTORY);
  EXPECT_EQ(r.entries(1).name(), "b");
  EXPECT_EQ(r.entries(1).size(), 1u);
  EXPECT_EQ(r.entries(2).type(), v1::FsEntry::SYMLINK);
  EXPECT_EQ(r.entries(2).symlink_target(), d + "/a");

  v1::FsRequest request = FsOp(v1::FsRequest::LIST, d);
  request.set_depth(2);
  r = Fs(agent, request);
  EXPECT_EQ(EntryPaths(r), (std::vector<std::string>{d + "/a", d + "/b", d + "/c", d + "/d",
                                                     d + "/a/y", d + "/a/z", d + "/d/x"}));
  request.set_depth(32);
  r = Fs(agent, request);
  EXPECT_EQ(r.entries_size(), 8);  // + a/y/deep; c (a link) is not entered
  EXPECT_EQ(r.entries(7).path(), d + "/a/y/deep");

  request.set_depth(33);
  r = Fs(agent, request);
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
  EXPECT_EQ(r.entries_size(), 0);

  r = Fs(agent, FsOp(v1::FsRequest::LIST, d + "/b"));
  EXPECT_EQ(r.error_errno(), ENOTDIR) << r.error();
  r = Fs(agent, FsOp(v1::FsRequest::LIST, d + "/c"));  // a link to a directory is not one
  EXPECT_EQ(r.error_errno(), ENOTDIR) << r.error();
  r = Fs(agent, FsOp(v1::FsRequest::LIST, d + "/nope"));
  EXPECT_EQ(r.error_errno(), ENOENT) << r.error();
  ASSERT_EQ(mkdir((d + "/empty").c_str(), 0755), 0);
  r = Fs(agent, FsOp(v1::FsRequest::LIST, d + "/empty"));
  EXPECT_EQ(r.error(), "");
  EXPECT_EQ(r.entries_size(), 0);
}

TEST(AgentFsTest, MkdirWithAndWithoutParents) {
  umask(022);  // inherited by the agent
  AgentProcess agent;
  TempDir dir;
  const std::string& d = dir.path();
  v1::FsReply r = Fs(agent, FsOp(v1::FsRequest::MKDIR, d + "/new"));
  EXPECT_EQ(r.error(), "");
  EXPECT_TRUE(r.created());
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_EQ(r.entries(0).path(), d + "/new");
  EXPECT_EQ(r.entries(0).type(), v1::FsEntry::DIRECTORY);
  EXPECT_EQ(r.entries(0).mode(), 0755u);  // mode 0 = 0755

  r = Fs(agent, FsOp(v1::FsRequest::MKDIR, d + "/new"));
  EXPECT_EQ(r.error(), "mkdir " + d + "/new: File exists");
  EXPECT_EQ(r.error_errno(), EEXIST);

  v1::FsRequest request = FsOp(v1::FsRequest::MKDIR, d + "/new");
  request.set_parents(true);
  r = Fs(agent, request);
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(r.created());  // already there: fine with parents
  ASSERT_EQ(r.entries_size(), 1);

  request = FsOp(v1::FsRequest::MKDIR, d + "/p/q/r");
  request.set_parents(true);
  request.set_mode(0700);
  r = Fs(agent, request);
  EXPECT_EQ(r.error(), "");
  EXPECT_TRUE(r.created());
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_EQ(r.entries(0).mode(), 0700u);
  struct stat st;
  ASSERT_EQ(stat((d + "/p/q").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));

  r = Fs(agent, FsOp(v1::FsRequest::MKDIR, d + "/missing/x"));
  EXPECT_EQ(r.error_errno(), ENOENT) << r.error();
  EXPECT_FALSE(fs::exists(d + "/missing"));

  { std::ofstream(d + "/file") << "x"; }
  request = FsOp(v1::FsRequest::MKDIR, d + "/file");
  request.set_parents(true);
  r = Fs(agent, request);
  EXPECT_EQ(r.error_errno(), EEXIST) << r.error();
  request.set_path(d + "/file/sub");
  r = Fs(agent, request);
  EXPECT_EQ(r.error_errno(), ENOTDIR) << r.error();
}

TEST(AgentFsTest, RemoveFilesLinksAndTrees) {
  AgentProcess agent;
  TempDir dir, outside;
  const std::string& d = dir.path();
  { std::ofstream(d + "/file") << "x"; }
  v1::FsReply r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/file"));
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(fs::exists(d + "/file"));
  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/file"));
  EXPECT_EQ(r.error(), "lstat " + d + "/file: No such file or directory");
  EXPECT_EQ(r.error_errno(), ENOENT);

  // The tree: t/a/b/f, t/out -> outside (a directory), t/a/keep -> outside/keep.
  const std::string keep = outside.path() + "/keep";
  { std::ofstream(keep) << "keep"; }
  ASSERT_EQ(mkdir((d + "/t").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((d + "/t/a").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((d + "/t/a/b").c_str(), 0755), 0);
  { std::ofstream(d + "/t/a/b/f") << "f"; }
  ASSERT_EQ(symlink(outside.path().c_str(), (d + "/t/out").c_str()), 0);
  ASSERT_EQ(symlink(keep.c_str(), (d + "/t/a/keep").c_str()), 0);

  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/t"));
  EXPECT_EQ(r.error(), "rmdir " + d + "/t: Directory not empty");
  EXPECT_EQ(r.error_errno(), ENOTEMPTY);
  EXPECT_TRUE(fs::exists(d + "/t/a/b/f"));

  // A link to a directory is removed, not its target.
  ASSERT_EQ(symlink(outside.path().c_str(), (d + "/link").c_str()), 0);
  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/link"));
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(fs::is_symlink(d + "/link"));
  EXPECT_EQ(ReadAll(keep), "keep");

  v1::FsRequest request = FsOp(v1::FsRequest::REMOVE, d + "/t");
  request.set_recursive(true);
  r = Fs(agent, request);
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(fs::exists(d + "/t"));
  EXPECT_EQ(ReadAll(keep), "keep");  // nothing followed out of the tree
  EXPECT_EQ(ListDir(outside.path()), std::set<std::string>{"keep"});

  // An empty directory goes without recursive; "/" and "x/.." never.
  ASSERT_EQ(mkdir((d + "/empty").c_str(), 0755), 0);
  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/empty"));
  EXPECT_EQ(r.error(), "");
  EXPECT_FALSE(fs::exists(d + "/empty"));
  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, "/"));
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
  ASSERT_EQ(mkdir((d + "/x").c_str(), 0755), 0);
  r = Fs(agent, FsOp(v1::FsRequest::REMOVE, d + "/x/.."));
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
  EXPECT_TRUE(fs::exists(d + "/x"));
}

TEST(AgentFsTest, RenameRefusesToReplaceUnlessAsked) {
  AgentProcess agent;
  TempDir dir;
  const std::string& d = dir.path();
  { std::ofstream(d + "/a") << "A"; }
  { std::ofstream(d + "/b") << "BB"; }
  v1::FsRequest request = FsOp(v1::FsRequest::RENAME, d + "/a");
  request.set_new_path(d + "/b");
  v1::FsReply r = Fs(agent, request);
  EXPECT_EQ(r.error_errno(), EEXIST) << r.error();
  EXPECT_EQ(r.error().rfind("rename " + d + "/a", 0), 0u) << r.error();
  EXPECT_EQ(ReadAll(d + "/a"), "A");
  EXPECT_EQ(ReadAll(d + "/b"), "BB");

  request.set_overwrite(true);
  r = Fs(agent, request);
  EXPECT_EQ(r.error(), "");
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_EQ(r.entries(0).path(), d + "/b");
  EXPECT_EQ(r.entries(0).size(), 1u);
  EXPECT_FALSE(fs::exists(d + "/a"));
  EXPECT_EQ(ReadAll(d + "/b"), "A");

  request = FsOp(v1::FsRequest::RENAME, d + "/b");
  request.set_new_path(d + "/c");
  r = Fs(agent, request);
  EXPECT_EQ(r.error(), "");
  EXPECT_EQ(ReadAll(d + "/c"), "A");

  request = FsOp(v1::FsRequest::RENAME, d + "/nope");
  request.set_new_path(d + "/other");
  r = Fs(agent, request);
  EXPECT_EQ(r.error_errno(), ENOENT) << r.error();
}

// Relative paths are under the user's home (from the host's /etc/passwd
// here); the call runs with the user's permissions.
TEST(AgentFsTest, RelativePathsAreUnderTheUsersHome) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  AgentProcess agent;
  GuestUser nobody;
  std::string error;
  ASSERT_TRUE(ResolveUser("nobody", &nobody, &error)) << error;
  v1::FsReply r = Fs(agent, FsOp(v1::FsRequest::STAT, "smolvm-missing/x", "nobody"));
  EXPECT_EQ(r.error(), "lstat " + PathFromHome(nobody, "smolvm-missing/x") +
                           ": No such file or directory");
  EXPECT_EQ(r.error_errno(), ENOENT);

  GuestUser root;
  ASSERT_TRUE(ResolveUser("", &root, &error)) << error;
  r = Fs(agent, FsOp(v1::FsRequest::STAT, ""));
  if (r.error().empty()) {
    ASSERT_EQ(r.entries_size(), 1);
    EXPECT_EQ(r.entries(0).path(), PathFromHome(root, ""));
  } else {
    EXPECT_EQ(r.error().rfind("lstat " + PathFromHome(root, "") + ":", 0), 0u) << r.error();
  }

  TempDir dir;  // root's, 0700
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  r = Fs(agent, FsOp(v1::FsRequest::MKDIR, dir.path() + "/x", "nobody"));
  EXPECT_EQ(r.error(), "mkdir " + dir.path() + "/x: Permission denied");
  EXPECT_EQ(r.error_errno(), EACCES);
  ASSERT_EQ(chmod(dir.path().c_str(), 0777), 0);
  r = Fs(agent, FsOp(v1::FsRequest::MKDIR, dir.path() + "/x", "nobody"));
  EXPECT_EQ(r.error(), "");
  ASSERT_EQ(r.entries_size(), 1);
  EXPECT_EQ(r.entries(0).uid(), 65534u);

  r = Fs(agent, FsOp(v1::FsRequest::STAT, dir.path(), "no-such-user-smolvm"));
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
}

void StartWatch(AgentProcess& agent, uint64_t id, const std::string& path, bool recursive) {
  v1::Frame frame;
  frame.mutable_fs_watch()->set_id(id);
  frame.mutable_fs_watch()->set_path(path);
  frame.mutable_fs_watch()->set_recursive(recursive);
  agent.Send(frame);
}

// The next event of watch `id` (any, if type is TYPE_UNSPECIFIED) at `path`.
std::optional<v1::FsEvent> NextEvent(AgentProcess& agent, uint64_t id,
                                     v1::FsEvent::Type type = v1::FsEvent::TYPE_UNSPECIFIED,
                                     const std::string& path = "",
                                     Clock::duration timeout = 10s) {
  auto frame = agent.WaitFor(
      [&](const v1::Frame& f) {
        if (!f.has_fs_event() || f.fs_event().id() != id) return false;
        if (type == v1::FsEvent::TYPE_UNSPECIFIED) return true;
        return f.fs_event().type() == type && f.fs_event().path() == path;
      },
      timeout);
  if (!frame) return std::nullopt;
  return frame->fs_event();
}

void SendCancel(AgentProcess& agent, uint64_t id) {
  v1::Frame cancel;
  cancel.mutable_exec_cancel()->set_id(id);
  agent.Send(cancel);
}

TEST(AgentFsTest, RecursiveWatchReportsChangesUntilCancelled) {
  AgentProcess agent;
  TempDir dir, outside;
  const std::string& d = dir.path();
  ASSERT_EQ(mkdir((d + "/pre").c_str(), 0755), 0);  // watched from the start
  StartWatch(agent, 1, d, true);
  auto first = NextEvent(agent, 1);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->type(), v1::FsEvent::WATCHING) << first->error();
  EXPECT_EQ(first->path(), d);

  { std::ofstream(d + "/a") << "x"; }
  auto e = NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/a");
  ASSERT_TRUE(e) << "no CREATE";
  EXPECT_FALSE(e->is_dir());
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::MODIFY, d + "/a")) << "no MODIFY";
  { std::ofstream(d + "/pre/p") << "x"; }
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/pre/p"));

  ASSERT_EQ(mkdir((d + "/sub").c_str(), 0755), 0);
  e = NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/sub");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->is_dir());
  { std::ofstream(d + "/sub/f") << "f"; }
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/sub/f"));

  ASSERT_EQ(rename((d + "/a").c_str(), (d + "/sub/b").c_str()), 0);
  e = NextEvent(agent, 1, v1::FsEvent::RENAME, d + "/sub/b");
  ASSERT_TRUE(e) << "no RENAME";
  EXPECT_EQ(e->old_path(), d + "/a");

  // A renamed directory is followed under its new name.
  ASSERT_EQ(rename((d + "/sub").c_str(), (d + "/sub2").c_str()), 0);
  e = NextEvent(agent, 1, v1::FsEvent::RENAME, d + "/sub2");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->old_path(), d + "/sub");
  EXPECT_TRUE(e->is_dir());
  { std::ofstream(d + "/sub2/g") << "g"; }
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/sub2/g"));
  ASSERT_EQ(chmod((d + "/sub2/g").c_str(), 0600), 0);
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::CHMOD, d + "/sub2/g"));
  ASSERT_EQ(unlink((d + "/sub2/g").c_str()), 0);
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::DELETE, d + "/sub2/g"));
  // Moved out of the tree: a DELETE; moved in: a CREATE.
  ASSERT_EQ(rename((d + "/sub2/b").c_str(), (outside.path() + "/b").c_str()), 0);
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::DELETE, d + "/sub2/b"));
  ASSERT_EQ(rename((outside.path() + "/b").c_str(), (d + "/in").c_str()), 0);
  EXPECT_TRUE(NextEvent(agent, 1, v1::FsEvent::CREATE, d + "/in"));

  SendCancel(agent, 1);
  ASSERT_TRUE(agent.Hello());  // the cancel was read
  std::this_thread::sleep_for(100ms);
  while (NextEvent(agent, 1, v1::FsEvent::TYPE_UNSPECIFIED, "", 200ms)) {
  }  // drop what was in flight
  { std::ofstream(d + "/late") << "x"; }
  ASSERT_EQ(mkdir((d + "/late-dir").c_str(), 0755), 0);
  auto late = NextEvent(agent, 1, v1::FsEvent::TYPE_UNSPECIFIED, "", 500ms);
  EXPECT_FALSE(late) << "event after cancel: " << late->path();
}

TEST(AgentFsTest, WatchErrorsAndNonRecursiveWatch) {
  AgentProcess agent;
  TempDir dir;
  const std::string& d = dir.path();
  { std::ofstream(d + "/file") << "x"; }
  ASSERT_EQ(mkdir((d + "/sub").c_str(), 0755), 0);

  StartWatch(agent, 1, d + "/file", false);
  auto e = NextEvent(agent, 1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type(), v1::FsEvent::ERROR);
  EXPECT_EQ(e->error(), "inotify_add_watch " + d + "/file: Not a directory");
  EXPECT_EQ(e->error_errno(), ENOTDIR);
  StartWatch(agent, 2, d + "/missing", true);
  e = NextEvent(agent, 2);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type(), v1::FsEvent::ERROR);
  EXPECT_EQ(e->error_errno(), ENOENT);
  EXPECT_FALSE(NextEvent(agent, 1, v1::FsEvent::TYPE_UNSPECIFIED, "", 200ms));  // ERROR ends it

  StartWatch(agent, 3, d, false);
  e = NextEvent(agent, 3);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type(), v1::FsEvent::WATCHING);
  { std::ofstream(d + "/sub/deep") << "x"; }  // not watched without recursive
  { std::ofstream(d + "/top") << "x"; }
  EXPECT_TRUE(NextEvent(agent, 3, v1::FsEvent::CREATE, d + "/top"));
  EXPECT_FALSE(NextEvent(agent, 3, v1::FsEvent::CREATE, d + "/sub/deep", 300ms));
  // Removing the watched directory itself ends the watch.
  ASSERT_EQ(unlink((d + "/top").c_str()), 0);
  ASSERT_EQ(unlink((d + "/file").c_str()), 0);
  ASSERT_EQ(unlink((d + "/sub/deep").c_str()), 0);
  ASSERT_EQ(rmdir((d + "/sub").c_str()), 0);
  ASSERT_EQ(rmdir(d.c_str()), 0);
  e = NextEvent(agent, 3, v1::FsEvent::ERROR, d);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->error_errno(), ENOENT);
  ASSERT_TRUE(agent.Hello());
}

size_t ThreadCount(pid_t pid) {
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    (void)entry;
    ++n;
  }
  return n;
}

TEST(AgentFsTest, WatchesStopWhenTheHostDisconnects) {
  AgentProcess agent;
  TempDir dir;
  ASSERT_TRUE(agent.Hello());
  const size_t idle = ThreadCount(agent.pid());
  StartWatch(agent, 1, dir.path(), true);
  auto e = NextEvent(agent, 1);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type(), v1::FsEvent::WATCHING);
  EXPECT_EQ(ThreadCount(agent.pid()), idle + 1);
  ASSERT_EQ(shutdown(agent.fd(), SHUT_WR), 0);
  Clock::time_point deadline = Clock::now() + 5s;
  while (ThreadCount(agent.pid()) > idle && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(ThreadCount(agent.pid()), idle) << "the watch thread did not end";
}


// --- background processes (protocol 5) --------------------------------------

// Kills the process groups of the background processes a test started (they
// outlive the agent).
class GroupKiller {
 public:
  GroupKiller() = default;
  GroupKiller(const GroupKiller&) = delete;
  GroupKiller& operator=(const GroupKiller&) = delete;
  ~GroupKiller() {
    for (pid_t pid : pids_) kill(-pid, SIGKILL);
  }
  void Add(pid_t pid) {
    if (pid > 0) pids_.push_back(pid);
  }

 private:
  std::vector<pid_t> pids_;
};

v1::ProcReply ProcCall(AgentProcess& agent, const v1::Frame& request, uint64_t id,
                       Clock::duration timeout = 10s) {
  agent.Send(request);
  auto reply = agent.WaitFor(
      [id](const v1::Frame& f) { return f.has_proc_reply() && f.proc_reply().id() == id; },
      timeout);
  if (!reply) {
    ADD_FAILURE() << "no ProcReply " << id;
    return {};
  }
  return reply->proc_reply();
}

v1::ProcReply StartProc(AgentProcess& agent, uint64_t id, std::vector<std::string> argv,
                        GroupKiller* killer, const std::string& user = "") {
  v1::Frame frame;
  frame.mutable_proc_start()->set_id(id);
  for (auto& a : argv) frame.mutable_proc_start()->add_argv(a);
  frame.mutable_proc_start()->set_user(user);
  v1::ProcReply reply = ProcCall(agent, frame, id);
  if (reply.processes_size() == 1) killer->Add(reply.processes(0).pid());
  return reply;
}

v1::ProcReply ListProcs(AgentProcess& agent, uint64_t id) {
  v1::Frame frame;
  frame.mutable_proc_list()->set_id(id);
  return ProcCall(agent, frame, id);
}

std::optional<v1::ProcInfo> Listed(AgentProcess& agent, uint64_t id, pid_t pid) {
  v1::ProcReply reply = ListProcs(agent, id);
  EXPECT_EQ(reply.error(), "");
  for (const v1::ProcInfo& info : reply.processes()) {
    if (info.pid() == pid) return info;
  }
  return std::nullopt;
}

v1::ProcReply SignalProc(AgentProcess& agent, uint64_t id, pid_t pid, int sig, bool group) {
  v1::Frame frame;
  frame.mutable_proc_signal()->set_id(id);
  frame.mutable_proc_signal()->set_pid(pid);
  frame.mutable_proc_signal()->set_signal(sig);
  frame.mutable_proc_signal()->set_group(group);
  return ProcCall(agent, frame, id);
}

void AttachProc(AgentProcess& agent, uint64_t id, pid_t pid, uint32_t tail_bytes, bool output) {
  v1::Frame frame;
  frame.mutable_proc_attach()->set_id(id);
  frame.mutable_proc_attach()->set_pid(pid);
  frame.mutable_proc_attach()->set_tail_bytes(tail_bytes);
  frame.mutable_proc_attach()->set_output(output);
  agent.Send(frame);
}

// Appends the stdout of attach `id` to *out until it contains `needle`.
bool OutputUntil(AgentProcess& agent, uint64_t id, const std::string& needle, std::string* out,
                 Clock::duration timeout = 10s) {
  Clock::time_point deadline = Clock::now() + timeout;
  while (out->find(needle) == std::string::npos) {
    auto frame = agent.WaitFor(
        [id](const v1::Frame& f) { return f.has_exec_output() && f.exec_output().id() == id; },
        deadline - Clock::now());
    if (!frame) return false;
    EXPECT_EQ(frame->exec_output().skipped_bytes(), 0u);
    *out += frame->exec_output().data();
  }
  return true;
}

// Drops what attach `id` has sent so far; false if it sent anything within
// `quiet` after that.
bool QuietAfterDrain(AgentProcess& agent, uint64_t id, Clock::duration quiet) {
  auto of_id = [id](const v1::Frame& f) {
    return (f.has_exec_output() && f.exec_output().id() == id) ||
           (f.has_exec_exit() && f.exec_exit().id() == id);
  };
  while (agent.WaitFor(of_id, 200ms)) {
  }
  return !agent.WaitFor(of_id, quiet);
}

constexpr uint64_t kMaxTracked = 64;  // process_table.h's kMaxProcesses

const char* const kLoopScript = "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.1; done";

TEST(AgentProcTest, StartListAttachDetachSignal) {
  AgentProcess agent;
  GroupKiller killer;
  v1::ProcReply started = StartProc(agent, 1, {"sh", "-c", kLoopScript}, &killer);
  ASSERT_EQ(started.error(), "");
  ASSERT_EQ(started.processes_size(), 1);
  const v1::ProcInfo& info = started.processes(0);
  const pid_t pid = info.pid();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(info.running());
  EXPECT_EQ(info.user(), "");
  EXPECT_EQ(info.cwd(), "/root");
  EXPECT_GT(info.started_unix_ns(), 0);
  EXPECT_EQ(info.ended_unix_ns(), 0);
  EXPECT_EQ(getpgid(pid), pid) << "not in a session of its own";
  // A cancel of the start's id is not the process's business.
  SendCancel(agent, 1);

  std::this_thread::sleep_for(350ms);
  auto listed = Listed(agent, 2, pid);
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->running());
  ASSERT_EQ(listed->argv_size(), 3);
  EXPECT_EQ(listed->argv(0), "sh");
  EXPECT_EQ(listed->argv(2), kLoopScript);
  EXPECT_GT(listed->output_bytes(), 0u);

  // From the start of the buffer, then live.
  AttachProc(agent, 3, pid, 1000000, true);
  std::string all;
  ASSERT_TRUE(OutputUntil(agent, 3, "line8\n", &all)) << all;
  EXPECT_EQ(all.rfind("line0\nline1\nline2\n", 0), 0u) << all;

  // From now on only.
  AttachProc(agent, 4, pid, 0, true);
  std::string fresh;
  ASSERT_TRUE(OutputUntil(agent, 4, "\n", &fresh));
  EXPECT_EQ(fresh.rfind("line", 0), 0u) << fresh;
  EXPECT_GE(std::stoi(fresh.substr(4)), 9) << fresh;

  // Detach 3: its output stops, the process and attach 4 go on.
  SendCancel(agent, 3);
  ASSERT_TRUE(agent.Hello());
  EXPECT_TRUE(QuietAfterDrain(agent, 3, 500ms)) << "output after detaching";
  std::string more;
  ASSERT_TRUE(OutputUntil(agent, 4, "\nline", &more));
  auto after = Listed(agent, 5, pid);
  ASSERT_TRUE(after);
  EXPECT_TRUE(after->running());
  EXPECT_GT(after->output_bytes(), listed->output_bytes());

  // An attach without output gets only the exit.
  AttachProc(agent, 6, pid, 1000000, false);
  v1::ProcReply signalled = SignalProc(agent, 7, pid, SIGTERM, true);
  EXPECT_EQ(signalled.error(), "");
  ASSERT_EQ(signalled.processes_size(), 1);
  EXPECT_EQ(signalled.processes(0).pid(), pid);
  ExecResult quiet = Collect(agent, 6, 10s);
  ASSERT_TRUE(quiet.done);
  EXPECT_EQ(quiet.out + quiet.err, "");
  EXPECT_EQ(quiet.exit.signal(), SIGTERM);
  ExecResult live = Collect(agent, 4, 10s);
  ASSERT_TRUE(live.done);
  EXPECT_EQ(live.exit.signal(), SIGTERM);

  auto ended = Listed(agent, 8, pid);
  ASSERT_TRUE(ended);
  EXPECT_FALSE(ended->running());
  EXPECT_EQ(ended->signal(), SIGTERM);
  EXPECT_GE(ended->ended_unix_ns(), ended->started_unix_ns());
  v1::ProcReply again = SignalProc(agent, 9, pid, SIGTERM, false);
  EXPECT_EQ(again.error_errno(), ESRCH);
  EXPECT_EQ(again.error(), "process " + std::to_string(pid) + " is not running");
  // Attaching to an exited process: the exit at once (after the tail asked for).
  AttachProc(agent, 10, pid, 0, true);
  ExecResult late = Collect(agent, 10, 5s);
  EXPECT_EQ(late.out, "");
  EXPECT_EQ(late.exit.signal(), SIGTERM);
  AttachProc(agent, 11, pid, 6, true);
  late = Collect(agent, 11, 5s);
  EXPECT_EQ(late.out.size(), 6u);
  EXPECT_EQ(late.exit.signal(), SIGTERM);
}

// A process whose pipes outlive it (a grandchild in a session of its own
// keeps writing): listed as exited and never signalled once reaped, since
// its pid may be reused; the attach's exit waits for the pipes.
TEST(AgentProcTest, AReapedProcessIsNeverSignalled) {
  AgentProcess agent;
  GroupKiller killer;
  v1::ProcReply started = StartProc(
      agent, 1,
      {"sh", "-c", "setsid sh -c 'echo grandchild $$; while :; do echo x; sleep 0.1; done' & "
                   "sleep 0.3; exit 4"},
      &killer);
  ASSERT_EQ(started.error(), "");
  ASSERT_EQ(started.processes_size(), 1);
  const pid_t pid = started.processes(0).pid();
  AttachProc(agent, 2, pid, 1000, true);
  std::string out;
  ASSERT_TRUE(OutputUntil(agent, 2, "grandchild ", &out));
  ASSERT_TRUE(OutputUntil(agent, 2, "\nx\n", &out));
  pid_t grandchild = 0;
  {
    size_t at = out.find("grandchild ");
    grandchild = static_cast<pid_t>(std::stol(out.substr(at + 11)));
    killer.Add(grandchild);  // its own session: its own group
  }
  // The leader exits after 0.3 s; the grandchild keeps the pipe open.
  std::optional<v1::ProcInfo> info;
  for (Clock::time_point end = Clock::now() + 5s; Clock::now() < end;) {
    info = Listed(agent, 3, pid);
    if (info && !info->running()) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->running());
  EXPECT_EQ(info->exit_code(), 4);
  EXPECT_GT(info->ended_unix_ns(), 0);
  v1::ProcReply signalled = SignalProc(agent, 4, pid, SIGTERM, true);
  EXPECT_EQ(signalled.error_errno(), ESRCH) << signalled.error();
  EXPECT_EQ(kill(grandchild, 0), 0) << "the grandchild must not have been signalled";
  // No exit while the output goes on.
  EXPECT_FALSE(agent.WaitFor(
      [](const v1::Frame& f) { return f.has_exec_exit() && f.exec_exit().id() == 2; }, 300ms));
  kill(-grandchild, SIGKILL);
  auto exit = agent.WaitFor(
      [](const v1::Frame& f) { return f.has_exec_exit() && f.exec_exit().id() == 2; }, 10s);
  ASSERT_TRUE(exit.has_value());
  EXPECT_EQ(exit->exec_exit().exit_code(), 4);
}

TEST(AgentProcTest, ExitCodeComesAfterAllOutput) {
  AgentProcess agent;
  GroupKiller killer;
  v1::ProcReply started = StartProc(
      agent, 1,
      {"sh", "-c",
       "sleep 0.3; i=0; while [ $i -lt 3000 ]; do echo out$i; i=$((i+1)); done; "
       "echo oops >&2; exit 3"},
      &killer);
  ASSERT_EQ(started.processes_size(), 1) << started.error();
  const pid_t pid = started.processes(0).pid();
  AttachProc(agent, 2, pid, 1000000, true);
  ExecResult r = Collect(agent, 2, 20s);
  ASSERT_TRUE(r.done);
  std::string expected;
  for (int i = 0; i < 3000; ++i) expected += "out" + std::to_string(i) + "\n";
  EXPECT_EQ(r.out, expected);
  EXPECT_EQ(r.err, "oops\n");
  EXPECT_EQ(r.exit.exit_code(), 3);
  EXPECT_EQ(r.exit.signal(), 0);
  auto info = Listed(agent, 3, pid);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->running());
  EXPECT_EQ(info->exit_code(), 3);
  EXPECT_EQ(info->output_bytes(), expected.size() + 5);
}

TEST(AgentProcTest, BufferKeepsTheLast256KiB) {
  AgentProcess agent;
  GroupKiller killer;
  v1::ProcReply started = StartProc(agent, 1, {"head", "-c", "600000", "/dev/zero"}, &killer);
  ASSERT_EQ(started.processes_size(), 1) << started.error();
  const pid_t pid = started.processes(0).pid();
  AttachProc(agent, 2, pid, 0, false);
  ExecResult done = Collect(agent, 2, 20s);
  ASSERT_TRUE(done.done);
  EXPECT_EQ(done.exit.exit_code(), 0);
  AttachProc(agent, 3, pid, 1000000, true);
  ExecResult r = Collect(agent, 3, 20s);
  ASSERT_TRUE(r.done);
  EXPECT_EQ(r.out.size(), 262144u);
  EXPECT_EQ(r.out, std::string(262144, '\0'));
  AttachProc(agent, 4, pid, 1000, true);
  r = Collect(agent, 4, 20s);
  EXPECT_EQ(r.out.size(), 1000u);
  auto info = Listed(agent, 5, pid);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->output_bytes(), 600000u);
}

TEST(AgentProcTest, Errors) {
  AgentProcess agent;
  GroupKiller killer;
  v1::Frame frame;
  frame.mutable_proc_attach()->set_id(1);
  frame.mutable_proc_attach()->set_pid(999999999);
  frame.mutable_proc_attach()->set_output(true);
  v1::ProcReply r = ProcCall(agent, frame, 1);
  EXPECT_EQ(r.error_errno(), ESRCH);
  EXPECT_EQ(r.error(), "no process 999999999");

  r = StartProc(agent, 2, {"no-such-program-smolvm"}, &killer);
  EXPECT_EQ(r.error(), "exec no-such-program-smolvm: No such file or directory");
  EXPECT_EQ(r.error_errno(), ENOENT);
  EXPECT_EQ(r.processes_size(), 0);
  r = StartProc(agent, 3, {"/etc/passwd"}, &killer);
  EXPECT_EQ(r.error_errno(), EACCES);
  r = StartProc(agent, 4, {"true"}, &killer, "no-such-user-smolvm");
  EXPECT_EQ(r.error_errno(), EINVAL);
  EXPECT_NE(r.error().find("no-such-user-smolvm"), std::string::npos) << r.error();
  EXPECT_EQ(ListProcs(agent, 5).processes_size(), 0) << "a failed start is tracked";

  r = SignalProc(agent, 6, 999999999, SIGTERM, false);
  EXPECT_EQ(r.error_errno(), ESRCH);
  EXPECT_EQ(r.error(), "no process 999999999");
  r = StartProc(agent, 7, {"sleep", "100"}, &killer);
  ASSERT_EQ(r.processes_size(), 1) << r.error();
  const pid_t pid = r.processes(0).pid();
  EXPECT_EQ(SignalProc(agent, 8, pid, 0, false).error_errno(), EINVAL);
  EXPECT_EQ(SignalProc(agent, 9, pid, 65, false).error_errno(), EINVAL);
  // Attach ids are operation ids.
  AttachProc(agent, 10, pid, 0, false);
  frame.mutable_proc_attach()->set_id(10);
  frame.mutable_proc_attach()->set_pid(pid);
  r = ProcCall(agent, frame, 10);
  EXPECT_EQ(r.error_errno(), EINVAL) << r.error();
  EXPECT_EQ(SignalProc(agent, 11, pid, SIGKILL, false).error(), "");
  ExecResult exit = Collect(agent, 10, 10s);
  EXPECT_EQ(exit.exit.signal(), SIGKILL);
}

TEST(AgentProcTest, AtMost64AndTheOldestExitedIsEvicted) {
  AgentProcess agent;
  GroupKiller killer;
  std::vector<pid_t> pids;
  for (uint64_t id = 1; id <= kMaxTracked; ++id) {
    v1::ProcReply r = StartProc(agent, id, {"sleep", "100"}, &killer);
    ASSERT_EQ(r.processes_size(), 1) << r.error();
    pids.push_back(r.processes(0).pid());
  }
  v1::ProcReply full = StartProc(agent, 100, {"true"}, &killer);
  EXPECT_EQ(full.error_errno(), EAGAIN);
  EXPECT_EQ(full.error(), "64 processes are running; wait for or kill one");
  // Two exit; the first of them to have started is evicted first.
  for (size_t i : {5, 2}) {
    ASSERT_EQ(SignalProc(agent, 200 + i, pids[i], SIGKILL, false).error(), "");
    AttachProc(agent, 300 + i, pids[i], 0, false);
    ASSERT_TRUE(Collect(agent, 300 + i, 10s).done);
  }
  v1::ProcReply r = StartProc(agent, 101, {"sleep", "100"}, &killer);
  ASSERT_EQ(r.processes_size(), 1) << r.error();
  v1::ProcReply list = ListProcs(agent, 102);
  EXPECT_EQ(list.processes_size(), 64);
  std::set<pid_t> listed;
  for (const v1::ProcInfo& info : list.processes()) listed.insert(info.pid());
  EXPECT_EQ(listed.count(pids[2]), 0u);
  EXPECT_EQ(listed.count(pids[5]), 1u);
  for (int i = 1; i < list.processes_size(); ++i) {
    EXPECT_LT(list.processes(i - 1).pid(), list.processes(i).pid()) << "not by pid";
  }
}

// The test harness cannot reconnect a host to the same agent (one
// socketpair per agent), so this checks what a disconnect does from the
// outside: attaches end, the process goes on.
TEST(AgentProcTest, ProcessesOutliveTheHostAndAttachesEndWithIt) {
  AgentProcess agent;
  GroupKiller killer;
  ASSERT_TRUE(agent.Hello());
  const size_t idle = ThreadCount(agent.pid());
  v1::ProcReply started = StartProc(agent, 1, {"sh", "-c", kLoopScript}, &killer);
  ASSERT_EQ(started.processes_size(), 1) << started.error();
  const pid_t pid = started.processes(0).pid();
  AttachProc(agent, 2, pid, 0, true);
  std::string out;
  ASSERT_TRUE(OutputUntil(agent, 2, "\n", &out));
  EXPECT_EQ(ThreadCount(agent.pid()), idle + 2);  // the process's and the attach's

  ASSERT_EQ(shutdown(agent.fd(), SHUT_WR), 0);
  Clock::time_point deadline = Clock::now() + 5s;
  while (ThreadCount(agent.pid()) > idle + 1 && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(ThreadCount(agent.pid()), idle + 1) << "the attach did not end";
  EXPECT_TRUE(QuietAfterDrain(agent, 2, 500ms));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(LiveGroupMembers(pid).empty(), false) << "the process died with the host";
  EXPECT_EQ(kill(pid, 0), 0);
}

// --- interactive execs (protocol 6) -----------------------------------------

// Kills, when the test ends (also on failure), every process in the
// sessions of the execs the agent ran: each exec leads a session of its own,
// and a job-control shell on a terminal puts its jobs in other process
// groups of it. Track() records the sessions of the agent's current
// children; declare the killer after the AgentProcess (it must run while the
// agent still lives).
class SessionKiller {
 public:
  explicit SessionKiller(const AgentProcess& agent) : agent_(agent.pid()) {}
  SessionKiller(const SessionKiller&) = delete;
  SessionKiller& operator=(const SessionKiller&) = delete;
  ~SessionKiller() {
    Track();
    for (const ProcStat& p : LiveProcesses()) {
      if (sessions_.count(p.session) != 0) kill(p.pid, SIGKILL);
    }
  }
  void Track() {
    for (const ProcStat& p : LiveProcesses()) {
      if (p.ppid == agent_) sessions_.insert(p.pid);
    }
  }
  // The agent's one running child (an exec's program); 0 if not exactly one.
  pid_t OnlyChild() {
    Track();
    pid_t child = 0;
    for (const ProcStat& p : LiveProcesses()) {
      if (p.ppid != agent_) continue;
      if (child != 0) return 0;
      child = p.pid;
    }
    return child;
  }

 private:
  const pid_t agent_;
  std::set<pid_t> sessions_;
};

// One running exec, driven as a host's interactive session drives it: typed
// into, signalled and resized while its output (by stream), its stdin acks
// and its end are read as they come.
class LiveExec {
 public:
  LiveExec(AgentProcess& agent, const v1::ExecStart& start) : agent_(agent), id_(start.id()) {
    SendExecStart(agent, start);
  }

  void Type(const std::string& data, bool eof = false) { SendStdin(agent_, id_, data, eof); }
  void Signal(int sig) {
    v1::Frame frame;
    frame.mutable_exec_signal()->set_id(id_);
    frame.mutable_exec_signal()->set_signal(sig);
    agent_.Send(frame);
  }
  void Resize(uint32_t rows, uint32_t cols) {
    v1::Frame frame;
    frame.mutable_exec_resize()->set_id(id_);
    frame.mutable_exec_resize()->mutable_size()->set_rows(rows);
    frame.mutable_exec_resize()->mutable_size()->set_cols(cols);
    agent_.Send(frame);
  }

  // Reads until `needle` shows up in the stdout that came after the previous
  // match (so one match never counts twice); false if it does not within
  // `timeout` or the exec ended first.
  bool Until(const std::string& needle, Clock::duration timeout = 10s) {
    Clock::time_point deadline = Clock::now() + timeout;
    for (;;) {
      size_t at = out_.find(needle, mark_);
      if (at != std::string::npos) {
        mark_ = at + needle.size();
        return true;
      }
      if (exited_ || !Next(deadline - Clock::now())) return false;
    }
  }

  // Whether its ExecExit came within `timeout`.
  bool ExitsWithin(Clock::duration timeout) {
    Clock::time_point deadline = Clock::now() + timeout;
    while (!exited_ && Next(deadline - Clock::now())) {
    }
    return exited_;
  }

  // Everything up to its ExecExit.
  ExecResult Finish(Clock::duration timeout = 10s) {
    if (!ExitsWithin(timeout)) ADD_FAILURE() << "no ExecExit for exec " << id_;
    return ExecResult{out_, err_, exit_, exited_};
  }

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }
  // consumed_bytes of each ExecStdinAck so far, in the order received.
  const std::vector<uint64_t>& acks() const { return acks_; }

 private:
  // Takes the next frame of this exec; false if none came within `timeout`.
  bool Next(Clock::duration timeout) {
    const uint64_t id = id_;
    auto frame = agent_.WaitFor(
        [id](const v1::Frame& f) {
          return (f.has_exec_output() && f.exec_output().id() == id) ||
                 (f.has_exec_stdin_ack() && f.exec_stdin_ack().id() == id) ||
                 (f.has_exec_exit() && f.exec_exit().id() == id);
        },
        std::max<Clock::duration>(timeout, Clock::duration::zero()));
    if (!frame) return false;
    if (frame->has_exec_output()) {
      EXPECT_FALSE(exited_) << "output after the ExecExit";
      (frame->exec_output().stream() == v1::ExecOutput::STDERR ? err_ : out_) +=
          frame->exec_output().data();
    } else if (frame->has_exec_stdin_ack()) {
      EXPECT_FALSE(exited_) << "a stdin ack after the ExecExit";
      acks_.push_back(frame->exec_stdin_ack().consumed_bytes());
    } else {
      EXPECT_FALSE(exited_) << "a second ExecExit";
      exit_ = frame->exec_exit();
      exited_ = true;
    }
    return true;
  }

  AgentProcess& agent_;
  const uint64_t id_;
  std::string out_, err_;
  size_t mark_ = 0;  // where Until looks from
  std::vector<uint64_t> acks_;
  v1::ExecExit exit_;
  bool exited_ = false;
};

// An exec of `argv` on a terminal of rows x cols (0 = the default 24 x 80)
// whose stdin the test types into.
v1::ExecStart TtyCmd(uint64_t id, std::vector<std::string> argv, uint32_t rows = 0,
                     uint32_t cols = 0) {
  v1::ExecStart start = Cmd(id, std::move(argv));
  start.set_stdin_follows(true);
  start.mutable_tty()->set_rows(rows);
  start.mutable_tty()->set_cols(cols);
  return start;
}

// The foreground process group of the terminal `pid` runs on (-1 if none).
pid_t ForegroundGroupOf(pid_t pid) {
  for (const ProcStat& p : LiveProcesses()) {
    if (p.pid == pid) return p.tpgid;
  }
  return -1;
}

// What is typed into a shell on a terminal is echoed back, so every marker
// the tests wait for is computed by the shell ("A$((1+1))B" prints "A2B"),
// never typed as it is printed.

TEST(AgentTtyTest, ShellOnATerminalResizesAndSendsAllOutputAsStdout) {
  AgentProcess agent;
  SessionKiller killer(agent);
  LiveExec sh(agent, TtyCmd(1, {"sh"}));  // the default size
  sh.Type("tty; stty size\n");
  ASSERT_TRUE(sh.Until("/dev/pts/")) << sh.out();
  ASSERT_TRUE(sh.Until("24 80")) << sh.out();
  killer.Track();
  // Every standard stream is the terminal.
  sh.Type("for fd in 0 1 2; do test -t $fd && echo T$((fd+10)); done\n");
  ASSERT_TRUE(sh.Until("T10")) << sh.out();
  ASSERT_TRUE(sh.Until("T11")) << sh.out();
  ASSERT_TRUE(sh.Until("T12")) << sh.out();

  sh.Resize(40, 120);
  sh.Type("stty size\n");
  ASSERT_TRUE(sh.Until("40 120")) << sh.out();
  // A size of 0 x 0 is the default again.
  sh.Resize(0, 0);
  sh.Type("stty size\n");
  ASSERT_TRUE(sh.Until("24 80")) << sh.out();

  sh.Type("echo E$((2+3))E >&2\n");
  ASSERT_TRUE(sh.Until("E5E")) << sh.out();
  sh.Type("exit 7\n");
  ExecResult r = sh.Finish();
  EXPECT_EQ(r.exit.start_error(), "");
  EXPECT_EQ(r.exit.signal(), 0);
  EXPECT_EQ(r.exit.exit_code(), 7);
  EXPECT_EQ(r.err, "") << "output on a terminal is all STDOUT";
  EXPECT_EQ(r.out.find("E5E"), r.out.rfind("E5E")) << "stderr echoed twice: " << r.out;
}

TEST(AgentTtyTest, TerminalOfTheRequestedSizeWithoutStdin) {
  AgentProcess agent;
  SessionKiller killer(agent);
  v1::ExecStart start = TtyCmd(1, {"sh", "-c", "stty size; test -t 0 && echo stdin-tty"}, 30, 100);
  start.set_stdin_follows(false);  // the terminal is still its stdin
  ExecResult r = RunExec(agent, start);
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_EQ(r.out, "30 100\r\nstdin-tty\r\n");  // the terminal turns \n into \r\n
  EXPECT_EQ(r.err, "");
}

// As another user (see RunsAsTheRequestedUser): the terminal is the user's,
// as login makes it, its group the terminal's own (not the user's group:
// its other members must not write to it).
TEST(AgentTtyTest, TerminalBelongsToTheRequestedUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch users";
  AgentProcess agent;
  SessionKiller killer(agent);
  v1::ExecStart start =
      TtyCmd(1, {"sh", "-c", "id -u; stat -c %u:%a \"$(tty)\"; stat -c %g \"$(tty)\" |"
                             " grep -vqx \"$(id -g)\" && echo other-group; echo $USER; stty size"});
  start.set_user("nobody");
  start.set_stdin_follows(false);
  ExecResult r = RunExec(agent, start);
  EXPECT_EQ(r.exit.start_error(), "");
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_EQ(r.out, "65534\r\n65534:620\r\nother-group\r\nnobody\r\n24 80\r\n");
  EXPECT_EQ(r.err, "");
}

TEST(AgentTtyTest, SignalGoesToTheExecsGroup) {
  AgentProcess agent;
  SessionKiller killer(agent);
  // Sent right behind the start: applied once the program runs.
  Clock::time_point t0 = Clock::now();
  LiveExec sleep(agent, Cmd(1, {"sleep", "100"}));
  sleep.Signal(SIGINT);
  ExecResult r = sleep.Finish(5s);
  killer.Track();
  EXPECT_LT(Clock::now() - t0, 5s);
  EXPECT_EQ(r.exit.signal(), SIGINT);
  EXPECT_FALSE(r.exit.timed_out());
  EXPECT_EQ(r.exit.start_error(), "");

  // The whole group gets it, not only the exec's own process.
  LiveExec sh(agent, Cmd(2, {"sh", "-c", "sleep 100 & echo $!; wait"}));
  ASSERT_TRUE(sh.Until("\n"));
  killer.Track();
  const pid_t background = std::stoi(sh.out());
  const pid_t group = killer.OnlyChild();
  ASSERT_GT(group, 0);
  sh.Signal(SIGTERM);
  r = sh.Finish(5s);
  EXPECT_EQ(r.exit.signal(), SIGTERM);
  EXPECT_TRUE(Eventually([&] { return LiveGroupMembers(group).empty(); }))
      << "the background sleep " << background << " survived";
}

TEST(AgentTtyTest, SignalOnATerminalGoesToTheForegroundJob) {
  AgentProcess agent;
  SessionKiller killer(agent);
  LiveExec sh(agent, TtyCmd(1, {"sh"}));
  sh.Type("echo S$((1+1))S\n");
  ASSERT_TRUE(sh.Until("S2S")) << sh.out();
  const pid_t shell = killer.OnlyChild();
  ASSERT_GT(shell, 0);
  ASSERT_EQ(ForegroundGroupOf(shell), shell);

  sh.Type("sleep 100\n");
  // The job-control shell runs it in a group of its own, in the foreground.
  pid_t job = -1;
  ASSERT_TRUE(Eventually([&] {
    job = ForegroundGroupOf(shell);
    return job > 0 && job != shell;
  })) << sh.out();
  sh.Signal(SIGINT);  // as ^C
  EXPECT_TRUE(Eventually([&] { return LiveGroupMembers(job).empty(); }))
      << "the foreground sleep survived ^C";
  sh.Type("echo A$((1+1))B\n");
  ASSERT_TRUE(sh.Until("A2B")) << "the shell did not survive ^C: " << sh.out();
  EXPECT_EQ(ForegroundGroupOf(shell), shell);
  sh.Type("exit\n");
  ExecResult r = sh.Finish();
  EXPECT_EQ(r.exit.signal(), 0);
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_EQ(r.err, "");
}

TEST(AgentTtyTest, StdinAcksCountWhatTheChildTook) {
  AgentProcess agent;
  SessionKiller killer(agent);
  v1::ExecStart start = Cmd(1, {"cat"});
  start.set_stdin_follows(true);
  start.set_ack_stdin(true);
  LiveExec cat(agent, start);
  std::string data;
  for (int chunk = 0; chunk < 3; ++chunk) {
    std::string part;
    for (int i = 0; i < 10000; ++i) part += static_cast<char>('a' + (chunk * 7 + i) % 26);
    cat.Type(part);
    data += part;
  }
  cat.Type("", true);
  ExecResult r = cat.Finish();
  EXPECT_EQ(r.exit.exit_code(), 0);
  EXPECT_TRUE(r.out == data) << r.out.size() << " bytes back of " << data.size();
  ASSERT_FALSE(cat.acks().empty());
  for (size_t i = 1; i < cat.acks().size(); ++i) {
    EXPECT_LE(cat.acks()[i - 1], cat.acks()[i]) << "ack " << i << " went back";
  }
  EXPECT_EQ(cat.acks().back(), data.size());

  // Only what the child took is acked, not what the agent queued: a
  // program that never reads holds at most a pipe's worth.
  start = Cmd(2, {"sleep", "100"});
  start.set_stdin_follows(true);
  start.set_ack_stdin(true);
  LiveExec sleeper(agent, start);
  const std::string chunk(64 << 10, 'q');
  for (int i = 0; i < 16; ++i) sleeper.Type(chunk);  // 1 MiB
  EXPECT_FALSE(sleeper.ExitsWithin(500ms));
  killer.Track();
  ASSERT_FALSE(sleeper.acks().empty()) << "nothing fit in the pipe?";
  EXPECT_LT(sleeper.acks().back(), 16u * chunk.size());
  v1::Frame cancel;
  cancel.mutable_exec_cancel()->set_id(2);
  agent.Send(cancel);
  EXPECT_EQ(sleeper.Finish(5s).exit.signal(), SIGKILL);

  // Without ack_stdin no ack comes.
  start = Cmd(3, {"cat"});
  start.set_stdin_follows(true);
  LiveExec quiet(agent, start);
  quiet.Type("abc", true);
  r = quiet.Finish();
  EXPECT_EQ(r.out, "abc");
  EXPECT_TRUE(quiet.acks().empty());
}

TEST(AgentTtyTest, StdinDroppedAfterTheChildClosedItIsAcked) {
  AgentProcess agent;
  SessionKiller killer(agent);
  v1::ExecStart start = Cmd(1, {"sh", "-c", "exec 0<&-; echo closed; sleep 1"});
  start.set_stdin_follows(true);
  start.set_ack_stdin(true);
  LiveExec exec(agent, start);
  ASSERT_TRUE(exec.Until("closed\n"));
  killer.Track();
  // More than a pipe holds, sent after no one can read it any more.
  const std::string chunk(100000, 'd');
  for (int i = 0; i < 5; ++i) exec.Type(chunk);
  exec.Type("", true);
  ExecResult r = exec.Finish();
  EXPECT_EQ(r.exit.exit_code(), 0);
  ASSERT_FALSE(exec.acks().empty());
  for (size_t i = 1; i < exec.acks().size(); ++i) {
    EXPECT_LE(exec.acks()[i - 1], exec.acks()[i]) << "ack " << i << " went back";
  }
  EXPECT_EQ(exec.acks().back(), 5u * chunk.size()) << "dropped stdin must count as consumed";
}

// cat closes its stdin, stdout and stderr just before it exits: the agent
// must not hang the terminal up in that window (it did once; see
// ClosingItsTerminalAfterEofDoesNotHangItUp), else cat ends with SIGHUP.
TEST(AgentTtyTest, EofOnATerminalIsOneCtrlD) {
  AgentProcess agent;
  SessionKiller killer(agent);
  LiveExec cat(agent, TtyCmd(1, {"cat"}));
  cat.Type("hello\n");
  cat.Type("", true);
  ExecResult r = cat.Finish();
  EXPECT_EQ(r.exit.signal(), 0);
  EXPECT_EQ(r.exit.exit_code(), 0);
  // The terminal's echo, then cat's copy.
  EXPECT_EQ(r.out, "hello\r\nhello\r\n");
  EXPECT_EQ(r.err, "");
}

// With a tty the ^D that the agent types for eof is not the host's: it is
// not counted in ExecStdinAck.consumed_bytes (the acks would exceed the
// bytes the host sent).
TEST(AgentTtyTest, AcksOnATerminalCountOnlyTheHostsBytes) {
  AgentProcess agent;
  SessionKiller killer(agent);
  v1::ExecStart start = TtyCmd(1, {"cat"});
  start.set_ack_stdin(true);
  LiveExec cat(agent, start);
  cat.Type("hello\n");
  cat.Type("", true);
  ExecResult r = cat.Finish();
  EXPECT_EQ(r.exit.exit_code(), 0);
  ASSERT_FALSE(cat.acks().empty());
  EXPECT_EQ(cat.acks().back(), 6u) << "the host sent 6 bytes";
}

// Once the host's stdin ended (eof: the agent types ^D and closes its
// duplicate of the master), the agent's only fd on the master is the
// output side. When the program then closes every fd it has on its
// terminal (a daemon redirecting to /dev/null; coreutils' close_stdout
// right before every cat or ls exits), the master reads EIO; closing it
// then, while the program still runs, would hang the terminal up (SIGHUP to
// the session leader and the foreground group: signal 1 instead of the
// exit code). The terminal is hung up only once the program has ended, as
// sshd or a terminal emulator do.
TEST(AgentTtyTest, ClosingItsTerminalAfterEofDoesNotHangItUp) {
  AgentProcess agent;
  SessionKiller killer(agent);
  LiveExec exec(agent, TtyCmd(1, {"sh", "-c",
                                  "read line; echo got-$line; sleep 0.3;"
                                  " exec </dev/null >/dev/null 2>&1; sleep 0.5; exit 3"}));
  exec.Type("go\n", true);
  ASSERT_TRUE(exec.Until("got-go")) << exec.out();
  killer.Track();
  ExecResult r = exec.Finish();
  EXPECT_EQ(r.exit.signal(), 0) << "killed by signal " << r.exit.signal();
  EXPECT_EQ(r.exit.exit_code(), 3);
}

// The harness cannot reconnect a host to the same agent (see
// ProcessesOutliveTheHostAndAttachesEndWithIt): the host only stops
// sending, and the agent's frames still arrive. A plain exec running on
// through a disconnect is SurvivesEndOfStream; here it runs next to
// interactive ones, which end.
TEST(AgentTtyTest, InteractiveExecsEndWithTheHost) {
  AgentProcess agent;
  SessionKiller killer(agent);
  // An interactive shell on a terminal, with a job in the foreground.
  v1::ExecStart start = TtyCmd(1, {"sh"});
  start.set_interactive(true);
  LiveExec shell(agent, start);
  shell.Type("echo S$((1+1))S\n");
  ASSERT_TRUE(shell.Until("S2S")) << shell.out();
  const pid_t shell_pid = killer.OnlyChild();
  ASSERT_GT(shell_pid, 0);
  shell.Type("sleep 100\n");
  ASSERT_TRUE(Eventually([&] {
    pid_t job = ForegroundGroupOf(shell_pid);
    return job > 0 && job != shell_pid;
  })) << "sleep never ran in the foreground: "
      << shell.out();
  killer.Track();
  // A program of its own.
  start = Cmd(2, {"sh", "-c", "echo $$; exec sleep 100"});
  start.set_interactive(true);
  LiveExec interactive(agent, start);
  ASSERT_TRUE(interactive.Until("\n"));
  killer.Track();
  const pid_t pid = std::stoi(interactive.out());
  LiveExec plain(agent, Cmd(3, {"sh", "-c", "sleep 0.5; echo done"}));

  ASSERT_EQ(shutdown(agent.fd(), SHUT_WR), 0);
  ExecResult r = interactive.Finish(5s);
  EXPECT_EQ(r.exit.signal(), SIGKILL);
  EXPECT_TRUE(Eventually([&] { return kill(pid, 0) != 0; })) << pid << " still exists";
  r = shell.Finish(5s);
  EXPECT_EQ(r.exit.signal(), SIGKILL);
  EXPECT_TRUE(Eventually([&] { return LiveSessionMembers(shell_pid).empty(); }))
      << "the shell's foreground job outlived it";
  r = plain.Finish();
  EXPECT_EQ(r.out, "done\n");
  EXPECT_EQ(r.exit.exit_code(), 0);
}

TEST(AgentTtyTest, InvalidSignalsAndResizeWithoutATerminalAreIgnored) {
  AgentProcess agent;
  SessionKiller killer(agent);
  LiveExec exec(agent, Cmd(1, {"sh", "-c", "echo $$; exec sleep 100"}));
  ASSERT_TRUE(exec.Until("\n"));
  killer.Track();
  const pid_t pid = std::stoi(exec.out());
  for (int sig : {0, 65, -1, -9, 1000}) exec.Signal(sig);
  exec.Resize(40, 120);  // no terminal: nothing to resize
  // For ids that are not running: nothing.
  v1::Frame frame;
  frame.mutable_exec_signal()->set_id(99);
  frame.mutable_exec_signal()->set_signal(SIGKILL);
  agent.Send(frame);
  frame.mutable_exec_resize()->set_id(98);
  agent.Send(frame);
  ASSERT_TRUE(agent.Hello());  // all of it was read
  EXPECT_FALSE(exec.ExitsWithin(500ms)) << "exit " << exec.Finish().exit.ShortDebugString();
  EXPECT_EQ(kill(pid, 0), 0);
  EXPECT_EQ(exec.out(), std::to_string(pid) + "\n");
  EXPECT_EQ(exec.err(), "");
  // The highest valid signal still works (SIGRTMAX's default ends it).
  exec.Signal(64);
  ExecResult r = exec.Finish(5s);
  EXPECT_EQ(r.exit.signal(), 64);
  // Once it exited, its id takes no more signals, and the agent goes on.
  exec.Signal(SIGKILL);
  exec.Resize(1, 1);
  ASSERT_TRUE(agent.Hello());
}

}  // namespace
}  // namespace smolvm::guest
