// smolvmctl as a user meets it (docs/cli.md): the real binary against a real
// daemon, asserting exit codes and messages. One cold boot for the suite
// (cli-vm, RUNNING); the other VMs are created without booting. `vm shell`
// runs in a private tmux server, which plays the user's terminal.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/test_daemon.h"
#include "tests/e2e/test_users.h"

namespace smolvm::testing {
namespace {

constexpr char kVm[] = "cli-vm";

// Tmux is a private tmux server (its own socket, no config file) with one
// session, "t", whose pane plays a user's terminal.
class Tmux {
 public:
  explicit Tmux(std::string socket) : socket_(std::move(socket)) {}

  ProcResult Run(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"tmux", "-S", socket_, "-f", "/dev/null"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv);
  }
  // Types `keys` (tmux key names such as Enter or C-c, or literal text).
  void Keys(const std::vector<std::string>& keys) const {
    std::vector<std::string> args = {"send-keys", "-t", "t"};
    args.insert(args.end(), keys.begin(), keys.end());
    Run(args);
  }
  // The pane's text, each line's trailing blanks dropped (capture-pane).
  std::string Screen() const { return Run({"capture-pane", "-p", "-t", "t"}).out; }
  // "ROWS COLS" of the pane, as `stty size` prints them.
  std::string PaneSize() const {
    return std::string(absl::StripTrailingAsciiWhitespace(
        Run({"display-message", "-p", "-t", "t", "#{pane_height} #{pane_width}"}).out));
  }
  // Polls the screen every 200 ms until `done` holds or `timeout` passes;
  // the last screen is left in *screen.
  bool WaitFor(const std::function<bool(const std::string&)>& done, absl::Duration timeout,
               std::string* screen) const {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      *screen = Screen();
      if (done(*screen)) return true;
      if (absl::Now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  void Kill() const { Run({"kill-server"}); }

 private:
  std::string socket_;
};

// HasLine: one of the screen's lines is `line` (trailing blanks aside).
bool HasLine(const std::string& screen, absl::string_view line) {
  for (absl::string_view l : absl::StrSplit(screen, '\n')) {
    if (absl::StripTrailingAsciiWhitespace(l) == line) return true;
  }
  return false;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    absl::Status s = daemon_->Start();
    ASSERT_TRUE(s.ok()) << s;
    ProcResult created = Cli({"vm", "create", "--id", kVm, "--memory-mib", "256"});
    ASSERT_EQ(created.exit_code, 0) << created.Describe() << daemon_->DaemonLog();
    ready_ = true;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    if (!ready_) GTEST_FAIL() << "suite set-up failed (see above)";
  }

  // smolvmctl --socket OURS `args` (tables, unlike TestDaemon::Ctl's --json).
  static ProcResult Cli(const std::vector<std::string>& args,
                        std::optional<RunAs> as = std::nullopt) {
    std::vector<std::string> argv = AsUser(as);
    argv.insert(argv.end(), {SmolvmctlPath(), "--socket", daemon_->socket_path()});
    argv.insert(argv.end(), args.begin(), args.end());
    return RunProcess(argv, {"SMOLVMD_ENDPOINT="});
  }
  static std::set<std::string> Lines(const std::string& text) {
    std::set<std::string> lines;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      lines.insert(std::string(line));
    }
    return lines;
  }

  static TestDaemon* daemon_;
  static bool ready_;
};
TestDaemon* CliTest::daemon_ = nullptr;
bool CliTest::ready_ = false;

TEST_F(CliTest, ExecExitCodes) {
  ProcResult r = Cli({"vm", "exec", kVm, "--", "sh", "-c", "echo out; exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "");

  r = Cli({"vm", "exec", "no-such-vm", "--", "true"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "no-such-vm")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "not found")) << r.err;

  r = Cli({"vm", "exec", kVm, "--", "/no/such/program"});
  EXPECT_EQ(r.exit_code, 127) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "No such file or directory")) << r.err;

  r = Cli({"vm", "exec", kVm, "--", "/etc/hostname"});  // Not executable.
  EXPECT_EQ(r.exit_code, 126) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "Permission denied")) << r.err;

  r = Cli({"vm", "exec", kVm, "--", "sh", "-c", "kill -9 $$"});
  EXPECT_EQ(r.exit_code, 137) << r.Describe();

  r = Cli({"vm", "exec", kVm});  // No command: a usage error, also 125.
  EXPECT_EQ(r.exit_code, 125) << r.Describe();

  // --user: a uid without a passwd entry runs as that uid; an unknown name
  // cannot start (126, as docker exec -u says).
  r = Cli({"vm", "exec", "--user", "4321", kVm, "--", "sh", "-c", "id -u; echo $HOME"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "4321\n/\n");
  r = Cli({"vm", "exec", "-u", "no-such-user", kVm, "--", "true"});
  EXPECT_EQ(r.exit_code, 126) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "no such user")) << r.err;
}

TEST_F(CliTest, ExecWithoutSeparatorAndTimeout) {
  ProcResult r = Cli({"vm", "exec", kVm, "uname", "-a"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "Linux ")) << r.out;
  // Flags before the command are smolvmctl's, after it the command's.
  r = Cli({"vm", "exec", kVm, "--env", "X=1", "sh", "-c", "echo $X \"$0\"", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "1 --json\n");

  r = Cli({"vm", "exec", kVm, "--timeout", "1", "--", "sleep", "5"});
  EXPECT_EQ(r.exit_code, 124) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "timed out after 1000 ms")) << r.err;
  // The global --timeout, before `vm`, limits the command too.
  r = Cli({"--timeout", "1", "vm", "exec", kVm, "--", "sleep", "5"});
  EXPECT_EQ(r.exit_code, 124) << r.Describe();

  r = Cli({"--timeout", "0", "vm", "list"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "more than 0")) << r.err;
  EXPECT_LT(r.err.size(), 200u) << r.err;
}

TEST_F(CliTest, AliasesSuggestionsAndVersion) {
  ProcResult r = Cli({"vm", "ls"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, kVm)) << r.out;
  EXPECT_EQ(Cli({"snapshot", "ls"}).exit_code, 0);
  EXPECT_EQ(Cli({"image", "ls"}).exit_code, 0);
  EXPECT_EQ(Cli({"pool", "ls"}).exit_code, 0);

  r = Cli({"vm", "lst"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "did you mean \"list\"?")) << r.err;
  r = Cli({"version"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "did you mean \"--version\"?")) << r.err;
  r = Cli({"vm", "remove", "x"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "unknown command \"remove\"")) << r.err;

  r = Cli({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "smolvmctl ")) << r.out;
}

TEST_F(CliTest, CreateValidatesVcpusAtTheEdge) {
  ProcResult r = Cli({"vm", "create", "--id", "zero", "--vcpus", "0", "--no-start"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "1 to 32")) << r.err;
  EXPECT_EQ(Cli({"vm", "get", "zero"}).exit_code, 3);  // Nothing was sent.
}

TEST_F(CliTest, ListQuietAndDeleteSeveral) {
  for (const char* id : {"cli-a", "cli-b", "cli-c"}) {
    ProcResult r = Cli({"vm", "create", "--id", id, "--no-start", "--label",
                        absl::StrCat("team=", id[4] == 'a' ? "red" : "blue"), "--label", "tier=x"});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
  ProcResult r = Cli({"vm", "list", "-q"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Lines(r.out), (std::set<std::string>{kVm, "cli-a", "cli-b", "cli-c"})) << r.out;
  // Labels are shown and filter the list (all labels, any status).
  EXPECT_TRUE(absl::StrContains(Cli({"vm", "get", "cli-a"}).out, "team=red,tier=x"));
  EXPECT_EQ(Lines(Cli({"vm", "list", "-q", "--label", "team=blue", "--label", "tier=x"}).out),
            (std::set<std::string>{"cli-b", "cli-c"}));
  EXPECT_EQ(Lines(Cli({"vm", "list", "-q", "--status", "running"}).out),
            std::set<std::string>{kVm});
  EXPECT_EQ(Lines(Cli({"vm", "list", "-q", "--status", "created", "--label", "team=red"}).out),
            std::set<std::string>{"cli-a"});
  r = Cli({"vm", "list", "--status", "sleeping"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  r = Cli({"vm", "create", "--id", "cli-bad", "--no-start", "--label", "bad key=v"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "label key")) << r.err;

  r = Cli({"vm", "delete", "cli-a", "cli-b"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "deleted vm cli-a\ndeleted vm cli-b\n");
  // One missing id: the others go, the exit code is the failure's.
  r = Cli({"vm", "rm", "cli-gone", "cli-c"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();
  EXPECT_EQ(r.out, "deleted vm cli-c\n");
  EXPECT_TRUE(absl::StrContains(r.err, "cli-gone")) << r.err;
  EXPECT_EQ(Lines(Cli({"vm", "ls", "-q"}).out), std::set<std::string>{kVm});

  // --all without a terminal needs --yes; nothing is deleted.
  r = Cli({"vm", "delete", "--all"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "--yes")) << r.err;
  EXPECT_EQ(Lines(Cli({"vm", "ls", "-q"}).out), std::set<std::string>{kVm});
}

// vm logs: the console's tail, as JSON lines too, and -f printing what the
// guest writes as it writes it, until Ctrl-C.
TEST_F(CliTest, LogsTailAndFollow) {
  auto say = [](const std::string& text) {
    return Cli({"vm", "exec", kVm, "--", "sh", "-c", "echo " + text + " > /dev/console"});
  };
  ASSERT_EQ(say("logs-marker-1").exit_code, 0);
  // The recorder copies the console to its file on a thread of its own.
  ProcResult r;
  for (int i = 0; i < 50; ++i) {
    r = Cli({"vm", "logs", "--tail", "4096", kVm});
    if (absl::StrContains(r.out, "logs-marker-1")) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, "logs-marker-1")) << r.Describe();
  EXPECT_LE(r.out.size(), 4096u);
  r = Cli({"--json", "vm", "logs", "--tail", "64", kVm});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string decoded;
  for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
    auto chunk = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(chunk.is_object()) << line;
    std::string data;
    ASSERT_TRUE(absl::Base64Unescape(chunk.value("data", ""), &data)) << line;
    decoded += data;
  }
  EXPECT_TRUE(absl::StrContains(decoded, "logs-marker-1")) << r.out;

  // Follow from now (--tail 0): only what comes next.
  const std::string out_path = daemon_->dir() + "/logs-follow.out";
  pid_t follower = fork();
  if (follower == 0) {
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    execl(SmolvmctlPath().c_str(), "smolvmctl", "--socket", daemon_->socket_path().c_str(),
          "vm", "logs", "-f", "--tail", "0", kVm, nullptr);
    _exit(127);
  }
  ASSERT_GT(follower, 0);
  absl::Cleanup reap = [follower] {
    kill(follower, SIGKILL);
    waitpid(follower, nullptr, 0);
  };
  auto followed = [&] {
    std::ifstream in(out_path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    // Said again until seen: the follower may not be streaming yet.
    if (i % 10 == 0) ASSERT_EQ(say("logs-marker-2").exit_code, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = absl::StrContains(followed(), "logs-marker-2");
  }
  EXPECT_TRUE(seen) << followed();
  EXPECT_FALSE(absl::StrContains(followed(), "logs-marker-1")) << "--tail 0 replayed old output";
  ASSERT_EQ(kill(follower, SIGINT), 0);
  int status = 0;
  ASSERT_EQ(waitpid(follower, &status, 0), follower);
  std::move(reap).Cancel();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;

  // A VM that never ran has no console kept.
  ASSERT_EQ(Cli({"vm", "create", "--id", "cli-logs-off", "--no-start"}).exit_code, 0);
  r = Cli({"vm", "logs", "cli-logs-off"});
  EXPECT_EQ(r.exit_code, 5) << r.Describe();  // FAILED_PRECONDITION
  EXPECT_TRUE(absl::StrContains(r.err, "has no console kept")) << r.Describe();
  EXPECT_EQ(Cli({"vm", "delete", "cli-logs-off"}).exit_code, 0);
}

// vm stats / vm top: the numbers move when the guest burns CPU and sends
// traffic.
TEST_F(CliTest, StatsMoveWithTheGuest) {
  auto stats = [] {
    ProcResult r = Cli({"--json", "vm", "stats", kVm});
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_object() ? j : nlohmann::json::object();
  };
  auto number = [](const nlohmann::json& j, const char* key) -> uint64_t {
    // Protobuf JSON writes 64-bit integers as strings.
    if (!j.contains(key)) return 0;
    return j[key].is_string() ? std::stoull(j[key].get<std::string>()) : j[key].get<uint64_t>();
  };
  nlohmann::json before = stats();
  EXPECT_EQ(before.value("vm_id", ""), kVm) << before.dump();
  EXPECT_GT(number(before, "vmm_rss_bytes"), 16u << 20) << before.dump();
  EXPECT_GT(number(before, "disk_allocated_bytes"), 0u) << before.dump();
  EXPECT_GT(number(before, "uptime_ms"), 0u) << before.dump();
  EXPECT_TRUE(before.value("guest_memory_known", false)) << before.dump();
  EXPECT_GT(number(before, "guest_memory_total_bytes"), 64u << 20) << before.dump();
  // One second of a busy loop, and 5 pings at the gateway (dropped by the
  // host, but counted on the TAP as the guest's).
  ProcResult burn = Cli({"vm", "exec", kVm, "--", "sh", "-c",
                         "timeout 1 sh -c 'while :; do :; done'; "
                         "ping -c 5 -W 1 -i 0.2 10.123.0.1 >/dev/null 2>&1; true"});
  ASSERT_EQ(burn.exit_code, 0) << burn.Describe();
  nlohmann::json after = stats();
  EXPECT_GE(number(after, "cpu_time_ns"), number(before, "cpu_time_ns") + 500'000'000)
      << before.dump() << "\n" << after.dump();
  EXPECT_GE(number(after, "guest_tx_packets"), number(before, "guest_tx_packets") + 5)
      << before.dump() << "\n" << after.dump();
  EXPECT_GT(number(after, "guest_tx_bytes"), number(before, "guest_tx_bytes"));

  // vm top, two rounds: the table, with a CPU share the second time.
  ProcResult top = Cli({"vm", "top", "-n", "2", "--interval", "0.5"});
  ASSERT_EQ(top.exit_code, 0) << top.Describe();
  EXPECT_TRUE(absl::StrContains(top.out, "VMM_RSS")) << top.out;
  EXPECT_TRUE(absl::StrContains(top.out, kVm)) << top.out;
  EXPECT_TRUE(absl::StrContains(top.out, "%")) << top.out;

  // Not running: FAILED_PRECONDITION, named.
  ASSERT_EQ(Cli({"vm", "create", "--id", "cli-stats-off", "--no-start"}).exit_code, 0);
  ProcResult off = Cli({"vm", "stats", "cli-stats-off"});
  EXPECT_NE(off.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(off.err, "only a running or paused VM has stats")) << off.Describe();
  EXPECT_EQ(Cli({"vm", "delete", "cli-stats-off"}).exit_code, 0);
}

TEST_F(CliTest, ExposePrintsTheForward) {
  ProcResult r = Cli({"vm", "expose", kVm, "18080:80"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "127.0.0.1:18080 -> 80/tcp\n");
  r = daemon_->Ctl({"vm", "expose", kVm, "127.0.0.1:18081:81/udp"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json forward = nlohmann::json::parse(r.out);
  EXPECT_EQ(forward["host_port"], 18081);
  EXPECT_EQ(forward["guest_port"], 81);
  EXPECT_EQ(forward["protocol"], "udp");
  EXPECT_EQ(Cli({"vm", "unexpose", kVm, "18080"}).exit_code, 0);
  EXPECT_EQ(Cli({"vm", "unexpose", kVm, "127.0.0.1:18081/udp"}).exit_code, 0);
}

// vm fork: a child of the running VM and the kept snapshot, as JSON; the
// VM runs on.
TEST_F(CliTest, ForkOfARunningVm) {
  ProcResult r = Cli({"--json", "--no-progress", "vm", "fork", kVm, "--paused", "--prefix",
                      "cli-kid", "--snapshot-id", "cli-fork", "--label", "why=test"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json reply = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(reply.is_object()) << r.out;
  EXPECT_EQ(reply["snapshot_id"], "cli-fork");
  ASSERT_EQ(reply["results"].size(), 1u) << r.out;
  EXPECT_EQ(reply["results"][0]["vm_id"], "cli-kid-1");
  EXPECT_EQ(reply["results"][0]["vm"]["status"], "PAUSED");
  EXPECT_TRUE(absl::StrContains(Cli({"vm", "get", kVm}).out, "RUNNING"));
  EXPECT_EQ(Lines(Cli({"snapshot", "list", "-q", "--label", "why=test"}).out),
            std::set<std::string>{"cli-fork"});
  EXPECT_EQ(Cli({"vm", "fork", kVm, "--count", "0"}).exit_code, 2);
  EXPECT_EQ(Cli({"vm", "delete", "cli-kid-1"}).exit_code, 0);
  EXPECT_EQ(Cli({"snapshot", "delete", "cli-fork"}).exit_code, 0);
}

TEST_F(CliTest, OutputYaml) {
  ProcResult r = Cli({"--output", "yaml", "vm", "get", kVm});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "vm_id: cli-vm\n")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\nstatus: RUNNING\n")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\nconfig:\n  vm_id: cli-vm\n")) << r.out;
  r = Cli({"vm", "list", "-o", "yaml"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "- vm_id: cli-vm\n")) << r.out;
  // --json still works, and --output wins over it.
  r = daemon_->Ctl({"vm", "get", kVm});
  EXPECT_EQ(nlohmann::json::parse(r.out)["vm_id"], kVm) << r.Describe();
  r = daemon_->Ctl({"--output", "yaml", "vm", "get", kVm});
  EXPECT_TRUE(absl::StartsWith(r.out, "vm_id: cli-vm\n")) << r.out;
}

TEST_F(CliTest, SnapshotCreateSaysTheVmIsPaused) {
  ProcResult r = Cli({"snapshot", "create", kVm, "--id", "cli-snap"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << daemon_->DaemonLog();
  EXPECT_TRUE(absl::StrContains(r.err, "is left PAUSED")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "smolvmctl vm resume cli-vm")) << r.err;
  EXPECT_EQ(Cli({"vm", "resume", kVm}).exit_code, 0);
  EXPECT_EQ(Lines(Cli({"snapshot", "ls", "-q"}).out), std::set<std::string>{"cli-snap"});
  EXPECT_EQ(Cli({"snapshot", "rm", "cli-snap"}).exit_code, 0);
}

// Progress of long calls (OperationService): plain lines on a stderr that is
// not a terminal, JSON lines with --json, nothing with --no-progress; the
// operation readable by its id afterwards; a malformed id refused.
TEST_F(CliTest, LongCallsReportProgress) {
  ProcResult r = Cli({"snapshot", "create", kVm, "--id", "cli-prog", "--resume"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe() << daemon_->DaemonLog();
  EXPECT_TRUE(absl::StrContains(r.err, "] done: ")) << r.err;

  r = Cli({"snapshot", "fork", "cli-prog", "--count", "2", "--prefix", "cli-pf"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "] restoring clones")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "] done: restoring clones 100% (2 of 2 clones)\n"))
      << r.err;
  EXPECT_EQ(Lines(r.out).size(), 3u) << r.out;  // The table: header and two clones.

  r = Cli({"--json", "snapshot", "fork", "cli-prog", "--count", "1", "--prefix", "cli-pj"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NO_THROW(nlohmann::json::parse(r.out)) << r.out;  // stdout: the result alone.
  std::vector<nlohmann::json> updates;
  for (absl::string_view line : absl::StrSplit(r.err, '\n', absl::SkipEmpty())) {
    updates.push_back(nlohmann::json::parse(line));
  }
  ASSERT_FALSE(updates.empty()) << r.err;
  for (const auto& u : updates) EXPECT_EQ(u["kind"], "ForkSnapshot") << u;
  EXPECT_EQ(updates.back()["finished"], true) << r.err;
  EXPECT_EQ(updates.back()["done"], "1") << r.err;  // uint64 is a JSON string.
  EXPECT_EQ(updates.back()["total"], "1") << r.err;
  EXPECT_EQ(updates.back()["target"], "cli-prog") << r.err;

  r = Cli({"--no-progress", "snapshot", "fork", "cli-prog", "--count", "1", "--prefix",
           "cli-pn"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.err, "");

  // The library: an id of the caller's choosing, watched, then read back.
  ClientOptions options;
  options.socket_path = daemon_->socket_path();
  SmolVMManager manager(options);
  std::vector<v1::Operation> seen;
  v1::ForkSnapshotRequest fork;
  fork.set_snapshot_id("cli-prog");
  fork.set_count(1);
  fork.set_vm_id_prefix("cli-pl");
  fork.set_operation_id("cli-op-1");
  {
    OperationWatcher watch(manager.connection(), "cli-op-1",
                           [&](const v1::Operation& op) { seen.push_back(op); });
    auto forked = manager.connection().Call(&v1::SnapshotService::Stub::ForkSnapshot, fork);
    ASSERT_TRUE(forked.ok()) << forked.status();
    EXPECT_EQ(forked->results(0).error_code(), 0) << forked->results(0).error_message();
  }
  ASSERT_FALSE(seen.empty());
  EXPECT_TRUE(seen.back().finished());
  absl::StatusOr<v1::Operation> op = manager.get_operation("cli-op-1");
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->kind(), "ForkSnapshot");
  EXPECT_EQ(op->target(), "cli-prog");
  EXPECT_TRUE(op->finished());
  EXPECT_EQ(op->code(), 0);
  EXPECT_EQ(op->done(), 1u);
  EXPECT_EQ(op->unit(), "clones");
  EXPECT_EQ(manager.get_operation("cli-op-never").status().code(), absl::StatusCode::kNotFound);
  r = Cli({"--json", "operation", "get", "cli-op-1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(nlohmann::json::parse(r.out)["kind"], "ForkSnapshot") << r.out;
  EXPECT_EQ(Cli({"operation", "get", "cli-op-never"}).exit_code, 3);

  // A malformed id fails the call before it does anything.
  v1::CreateSnapshotRequest bad;
  bad.set_vm_id(kVm);
  bad.set_snapshot_id("cli-bad-op");
  bad.set_operation_id("no spaces/slashes");
  auto refused = manager.connection().Call(&v1::SnapshotService::Stub::CreateSnapshot, bad);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "operation_id"));
  EXPECT_EQ(manager.get_snapshot("cli-bad-op").status().code(), absl::StatusCode::kNotFound);

  for (const char* vm : {"cli-pf-1", "cli-pf-2", "cli-pj-1", "cli-pn-1", "cli-pl-1"}) {
    EXPECT_EQ(Cli({"vm", "delete", vm}).exit_code, 0) << vm;
  }
  EXPECT_EQ(Cli({"snapshot", "delete", "cli-prog"}).exit_code, 0);
}

TEST_F(CliTest, PermissionDeniedOnTheSocketSaysSo) {
  absl::StatusOr<std::unique_ptr<TestUsers>> users = TestUsers::Create(0, 1);
  ASSERT_TRUE(users.ok()) << users.status();
  const TestUser& outsider = (*users)->user(0);
  ProcResult r = Cli({"vm", "list"}, RunAs{outsider.uid, outsider.gid});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_TRUE(absl::StrContains(
      r.err, "permission denied on " + daemon_->socket_path() + ": join group root or use sudo"))
      << r.err;
  EXPECT_FALSE(absl::StrContains(r.err, "is smolvmd running")) << r.err;
  // doctor says the same, with a fix.
  r = Cli({"doctor"}, RunAs{outsider.uid, outsider.gid});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.out, "FAIL  socket")) << r.out;
  // And so does the Python SDK.
  std::vector<std::string> py = AsUser(RunAs{outsider.uid, outsider.gid});
  py.insert(py.end(),
            {SMOLVM_PYTHON, "-c",
             "import sys, smolvm\n"
             "try:\n"
             "    smolvm.SmolVMManager(smolvm.ClientOptions(socket_path=sys.argv[1])).list_vms()\n"
             "except smolvm.PermissionDeniedError as e:\n"
             "    print(e.message)\n",
             daemon_->socket_path()});
  r = RunProcess(py, {"PYTHONPATH=" SMOLVM_PYTHON_SDK_DIR, "PYTHONDONTWRITEBYTECODE=1"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StrContains(
      r.out, "permission denied on " + daemon_->socket_path() + ": join group root or use sudo"))
      << r.Describe();
}

TEST_F(CliTest, DoctorReports) {
  ProcResult r = Cli({"doctor"});
  EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << r.Describe();
  for (const char* check : {"kvm", "daemon", "nftables", "bridge", "disk", "cgroups"}) {
    EXPECT_TRUE(absl::StrContains(r.out, std::string("  ") + check + " ")) << check << r.out;
  }
  EXPECT_TRUE(absl::StrContains(r.out, "OK    daemon    smolvmd answers on")) << r.out;
  r = Cli({"--json", "doctor", "--state-dir", daemon_->state_dir()});
  nlohmann::json checks = nlohmann::json::parse(r.out);
  ASSERT_TRUE(checks.is_array()) << r.out;
  bool daemon_ok = false;
  for (const auto& check : checks) {
    if (check["check"] == "daemon") daemon_ok = check["status"] == "ok";
  }
  EXPECT_TRUE(daemon_ok) << r.out;
}

// fs: a relative path starts at root's home, ls names are relative to the
// listed directory, the guest's errors keep their exit codes, and watch
// prints the changes made while it runs until its --timeout (exit 0).
TEST_F(CliTest, FsCommands) {
  ProcResult r = Cli({"fs", "mkdir", kVm, "cli-fs/a/b", "-p"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "created /root/cli-fs/a/b\n");
  r = Cli({"fs", "mkdir", kVm, "cli-fs/a/b", "--parents"});  // Already there: fine with -p.
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "exists /root/cli-fs/a/b\n");

  r = Cli({"--json", "fs", "ls", kVm, "cli-fs", "--depth", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json listed = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(listed.is_object()) << r.out;
  EXPECT_EQ(listed["truncated"], false) << r.out;
  ASSERT_EQ(listed["entries"].size(), 2u) << r.out;
  EXPECT_EQ(listed["entries"][0]["path"], "/root/cli-fs/a") << r.out;
  EXPECT_EQ(listed["entries"][0]["name"], "a") << r.out;
  EXPECT_EQ(listed["entries"][0]["type"], "FILE_TYPE_DIRECTORY") << r.out;
  EXPECT_EQ(listed["entries"][1]["path"], "/root/cli-fs/a/b") << r.out;
  r = Cli({"fs", "ls", kVm, "cli-fs", "--depth", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "a\na/b\n");
  r = Cli({"fs", "stat", kVm, "/root/cli-fs/a"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "TYPE ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\ndir ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, " 0:0 ")) << r.out;

  r = Cli({"fs", "stat", kVm, "cli-fs/missing"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();  // NOT_FOUND.
  EXPECT_TRUE(absl::StrContains(r.err, "cli-fs/missing")) << r.err;

  r = Cli({"--json", "fs", "mv", kVm, "cli-fs/a", "cli-fs/c"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(nlohmann::json::parse(r.out, nullptr, false)["path"], "/root/cli-fs/c") << r.out;
  EXPECT_EQ(Cli({"fs", "stat", kVm, "cli-fs/a"}).exit_code, 3);
  EXPECT_EQ(Cli({"fs", "stat", kVm, "cli-fs/c/b"}).exit_code, 0);

  // Changes made while the watch runs; it is in place a moment after it
  // starts, so make directories until it ends.
  std::atomic<bool> watch_ended{false};
  ProcResult watched;
  std::thread watcher([&] {
    watched = Cli({"fs", "watch", kVm, "cli-fs", "--timeout", "3"});
    watch_ended = true;
  });
  for (int i = 0; !watch_ended && i < 100; ++i) {
    Cli({"fs", "mkdir", kVm, absl::StrCat("cli-fs/w", i)});
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  watcher.join();
  EXPECT_EQ(watched.exit_code, 0) << watched.Describe();
  EXPECT_TRUE(absl::StrContains(watched.err, "watching cli-fs")) << watched.err;
  EXPECT_TRUE(absl::StartsWith(watched.out, "CREATE /root/cli-fs/w")) << watched.out;
  for (const std::string& line : Lines(watched.out)) {
    EXPECT_TRUE(absl::EndsWith(line, "/")) << line;  // Each a directory.
  }

  r = Cli({"fs", "rm", kVm, "cli-fs"});
  EXPECT_EQ(r.exit_code, 5) << r.Describe();  // Not empty: FAILED_PRECONDITION.
  r = Cli({"fs", "rm", kVm, "cli-fs", "-r"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "removed cli-fs\n");
  EXPECT_EQ(Cli({"fs", "stat", kVm, "cli-fs"}).exit_code, 3);
}

// process: a background command runs on without the smolvmctl that
// started it or the one attached to it (SIGTERM detaches, exit 143); attach
// replays the earlier output and exits with the command's status; kill
// --group ends it, wait reports 128+N, and a second kill finds nothing.
TEST_F(CliTest, ProcessCommands) {
  ProcResult r = Cli({"process", "start", kVm, "--", "sh", "-c",
                      "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.2; done"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string pid(absl::StripTrailingAsciiWhitespace(r.out));
  uint32_t pid_number = 0;
  ASSERT_TRUE(absl::SimpleAtoi(pid, &pid_number)) << r.out;
  EXPECT_EQ(r.out, pid + "\n");

  // The alias, and the whole ListProcessesResponse with --json.
  r = Cli({"--json", "ps", "ls", kVm});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json listed = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(listed.is_object()) << r.out;
  int found = 0;
  for (const nlohmann::json& p : listed["processes"]) {
    if (p["pid"] != pid_number) continue;
    ++found;
    EXPECT_EQ(p["running"], true) << r.out;
    EXPECT_EQ(p["argv"].size(), 3u) << r.out;
    EXPECT_EQ(p["argv"][0], "sh") << r.out;
  }
  EXPECT_EQ(found, 1) << r.out;
  r = Cli({"process", "list", kVm});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "PID ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, " running ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "sh -c 'i=0; while")) << r.out;
  EXPECT_TRUE(Lines(Cli({"process", "list", kVm, "-q"}).out).count(pid)) << pid;

  // Attached for 1.5 s, then SIGTERM (timeout(1); --foreground so that only
  // smolvmctl gets it, --preserve-status for its exit code, -k in case it
  // hangs): everything from tick0 on, in order, and the command runs on.
  r = RunProcess({"timeout", "--foreground", "--preserve-status", "-k", "10", "1.5",
                  SmolvmctlPath(), "--socket", daemon_->socket_path(), "process", "attach", kVm,
                  pid, "--tail", "100000"},
                 {"SMOLVMD_ENDPOINT="});
  EXPECT_EQ(r.exit_code, 143) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
  std::vector<std::string> ticks = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  EXPECT_GE(ticks.size(), 5u) << r.out;
  for (size_t i = 0; i < ticks.size(); ++i) {
    EXPECT_EQ(ticks[i], absl::StrCat("tick", i)) << r.out;
  }
  r = Cli({"--json", "process", "list", kVm});
  EXPECT_TRUE(absl::StrContains(r.out, "\"running\": true")) << r.Describe();

  // A command that ends by itself; without "--" and through the alias, as
  // for vm exec: flags before the command are ours.
  r = Cli({"ps", "start", kVm, "--env", "X=out", "sh", "-c", "echo $X; echo err >&2; exit 7"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string short_pid(absl::StripTrailingAsciiWhitespace(r.out));
  r = Cli({"process", "attach", kVm, short_pid, "--tail", "1000"});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  // --json: one ConnectProcessResponse per line, the exit last.
  r = Cli({"--json", "process", "attach", kVm, short_pid, "--tail", "1000"});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
  {
    std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
    ASSERT_FALSE(lines.empty()) << r.Describe();
    for (const std::string& line : lines) {
      EXPECT_FALSE(nlohmann::json::parse(line, nullptr, false).is_discarded()) << line;
    }
    auto last = nlohmann::json::parse(lines.back(), nullptr, false);
    EXPECT_EQ(last["exit"]["exit_code"], 7) << lines.back();
  }
  r = Cli({"process", "wait", kVm, short_pid});
  EXPECT_EQ(r.exit_code, 7) << r.Describe();
  EXPECT_EQ(r.out, "exited 7\n");

  r = Cli({"process", "kill", kVm, pid, "-s", "NOPE"});
  EXPECT_EQ(r.exit_code, 2) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "--signal NOPE")) << r.err;
  r = Cli({"process", "kill", kVm, pid, "-s", "TERM", "--group"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, absl::StrCat("sent SIGTERM to process group ", pid, "\n"));
  r = Cli({"process", "wait", kVm, pid, "--timeout", "60"});
  EXPECT_EQ(r.exit_code, 143) << r.Describe();  // 128 + SIGTERM.
  EXPECT_EQ(r.out, "signal TERM\n");
  r = Cli({"--json", "process", "wait", kVm, pid});
  EXPECT_EQ(r.exit_code, 143) << r.Describe();
  nlohmann::json waited = nlohmann::json::parse(r.out, nullptr, false);
  EXPECT_EQ(waited["running"], false) << r.out;
  EXPECT_EQ(waited["signal"], 15) << r.out;
  r = Cli({"process", "kill", kVm, pid, "-s", "sigkill"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();  // NOT_FOUND: it has exited.
}

// vm exec -i/-t without a terminal of ours: stdin streamed to its end, the
// command's status, a guest terminal of the default size; the refusals.
TEST_F(CliTest, ExecInteractiveWithoutATerminal) {
  ProcResult r = RunProcess({"sh", "-c", "printf 'a\\nb\\n' | \"$@\"", "sh", SmolvmctlPath(),
                             "--socket", daemon_->socket_path(), "vm", "exec", "-i", kVm, "--",
                             "cat"},
                            {"SMOLVMD_ENDPOINT="});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "a\nb\n");

  r = Cli({"vm", "exec", "-it", kVm, "--", "sh", "-c", "exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.Describe();
  // A guest terminal though ours is none (docker exec -t): 24x80, and its
  // output has the terminal's line ends.
  r = Cli({"vm", "exec", kVm, "-t", "sh", "-c", "tty; stty size"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(absl::StartsWith(r.out, "/dev/pts/")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "24 80\r\n")) << r.out;

  r = Cli({"vm", "exec", "-i", "--stdin", kVm, "--", "cat"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "--stdin does not go with -i or -t")) << r.err;
  r = Cli({"--json", "vm", "exec", "-it", kVm, "--", "true"});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
  EXPECT_TRUE(absl::StrContains(r.err, "do not apply")) << r.err;
  r = Cli({"-o", "yaml", "vm", "shell", kVm});
  EXPECT_EQ(r.exit_code, 125) << r.Describe();
}

// vm shell as a user meets it, in a tmux pane: a prompt, a command's
// output, the pane's size and a resize of it, ^C ending the foreground job
// only, `exit` ending smolvmctl with 0, and the terminal as it was before.
TEST_F(CliTest, ShellInTmux) {
  if (RunProcess({"tmux", "-V"}).exit_code != 0) {
    GTEST_SKIP() << "needs tmux (scripts/install-deps.sh installs it)";
  }
  const std::string dir = daemon_->dir() + "/tmux";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  // The pane runs smolvmctl between two `stty -g` (the terminal's settings,
  // without its size), then says how smolvmctl exited and stays open.
  {
    std::ofstream script(dir + "/run.sh");
    script << "stty -g > " << dir << "/before\n"
           << "SMOLVMD_ENDPOINT= " << SmolvmctlPath() << " --socket " << daemon_->socket_path()
           << " vm shell " << kVm << " --env 'PS1=smol-prompt> '\n"
           << "rc=$?\n"
           << "stty -g > " << dir << "/after\n"
           << "stty -a > " << dir << "/after-a\n"
           << "echo \"shell-exited-$rc\"\n"
           << "exec sleep 600\n";
  }
  const Tmux tmux(dir + "/sock");
  absl::Cleanup kill_server = [&tmux] { tmux.Kill(); };
  ProcResult r = tmux.Run({"new-session", "-d", "-s", "t", "-x", "100", "-y", "30",
                           "sh " + dir + "/run.sh"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();

  std::string screen;
  ASSERT_TRUE(tmux.WaitFor(
      [](const std::string& s) { return absl::StrContains(s, "smol-prompt>"); },
      absl::Seconds(60), &screen))
      << screen;
  const std::string size = tmux.PaneSize();
  EXPECT_EQ(size, "30 100");
  tmux.Keys({"echo $((6*7)); stty size; tty", "Enter"});
  EXPECT_TRUE(tmux.WaitFor(
      [&](const std::string& s) {
        return HasLine(s, "42") && HasLine(s, size) && absl::StrContains(s, "\n/dev/pts/");
      },
      absl::Seconds(30), &screen))
      << screen;

  // tmux resizes the pane's terminal; smolvmctl's SIGWINCH resizes the
  // guest's.
  r = tmux.Run({"resize-window", "-t", "t", "-x", "120", "-y", "40"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  const std::string resized = tmux.PaneSize();
  EXPECT_EQ(resized, "40 120");
  tmux.Keys({"stty size", "Enter"});
  EXPECT_TRUE(tmux.WaitFor([&](const std::string& s) { return HasLine(s, resized); },
                           absl::Seconds(30), &screen))
      << screen;

  // ^C is a byte that the guest's terminal turns into SIGINT for the
  // foreground job: the shell survives and runs what was typed next at
  // once, not after the 100 s.
  tmux.Keys({"sleep 100", "Enter"});
  ASSERT_TRUE(tmux.WaitFor(
      [](const std::string& s) { return absl::StrContains(s, "smol-prompt> sleep 100"); },
      absl::Seconds(30), &screen))
      << screen;
  std::this_thread::sleep_for(std::chrono::seconds(1));  // sleep has started.
  tmux.Keys({"C-c"});
  tmux.Keys({"echo after-$((1+1))", "Enter"});
  EXPECT_TRUE(tmux.WaitFor([](const std::string& s) { return HasLine(s, "after-2"); },
                           absl::Seconds(20), &screen))
      << screen;

  tmux.Keys({"exit", "Enter"});
  ASSERT_TRUE(tmux.WaitFor(
      [](const std::string& s) { return absl::StrContains(s, "shell-exited-"); },
      absl::Seconds(30), &screen))
      << screen;
  EXPECT_TRUE(HasLine(screen, "shell-exited-0")) << screen;
  // The terminal is as it was: cooked, echoing.
  const std::string before = ReadText(dir + "/before");
  EXPECT_FALSE(before.empty());
  EXPECT_EQ(ReadText(dir + "/after"), before);
  const std::vector<std::string> flags =
      absl::StrSplit(ReadText(dir + "/after-a"), absl::ByAnyChar(" ;\n"), absl::SkipEmpty());
  for (const char* flag : {"icanon", "echo", "isig", "opost"}) {
    EXPECT_NE(std::find(flags.begin(), flags.end(), flag), flags.end()) << flag;
  }
}

// Last: it deletes the suite's VM.
// The event journal (EventService): create -> snapshot -> restore -> fork
// -> delete, in order, to a follower as they happen and to a reader after
// the fact; the same events again after a daemon restart, resumed from one
// in the middle; nothing of them for another tenant; smolvmctl events.
TEST_F(CliTest, EventsFollowALifecycleAcrossARestart) {
  ClientOptions options;
  options.socket_path = daemon_->socket_path();
  SmolVMManager manager(options);
  // Every event after `after` (no follow), as "kind vm_id snapshot_id".
  auto read_all = [](const SmolVMManager& m, int64_t after, std::vector<v1::Event>* out) {
    absl::StatusOr<std::unique_ptr<EventStream>> stream =
        m.watch_events({.after_event_id = after});
    ASSERT_TRUE(stream.ok()) << stream.status();
    for (;;) {
      absl::StatusOr<v1::Event> event = (*stream)->next();
      if (!event.ok()) {
        EXPECT_EQ(event.status().message(), "the stream ended") << event.status();
        return;
      }
      out->push_back(*std::move(event));
    }
  };
  std::vector<v1::Event> before;
  read_all(manager, 0, &before);
  const int64_t start = before.empty() ? 0 : before.back().event_id();

  // A follower from here on; it must see the create below as it happens.
  absl::StatusOr<std::unique_ptr<EventStream>> follow =
      manager.watch_events({.after_event_id = start, .follow = true, .vm_id = "ev-vm"});
  ASSERT_TRUE(follow.ok()) << follow.status();
  absl::StatusOr<v1::Event> followed = absl::UnknownError("not read");
  std::thread follower([&] { followed = (*follow)->next(); });
  absl::SleepFor(absl::Milliseconds(500));  // The follow is waiting now.

  v1::CreateVmRequest create;
  create.mutable_config()->set_vm_id("ev-vm");
  create.mutable_config()->set_memory_mib(256);
  ASSERT_TRUE(manager.connection().Call(&v1::VmService::Stub::CreateVm, create).ok());
  follower.join();
  ASSERT_TRUE(followed.ok()) << followed.status();
  EXPECT_EQ(followed->kind(), v1::VM_CREATED);
  EXPECT_EQ(followed->vm_id(), "ev-vm");
  EXPECT_EQ(followed->state(), v1::CREATED);
  EXPECT_GT(followed->event_id(), start);
  (*follow)->cancel();

  v1::CreateSnapshotRequest snap;
  snap.set_vm_id(kVm);
  snap.set_snapshot_id("ev-snap");
  snap.set_resume_source(true);
  ASSERT_TRUE(manager.connection().Call(&v1::SnapshotService::Stub::CreateSnapshot, snap).ok());
  v1::RestoreSnapshotRequest restore;
  restore.set_snapshot_id("ev-snap");
  restore.set_vm_id("ev-r");
  restore.set_resume_vm(true);
  auto restored = manager.connection().Call(&v1::SnapshotService::Stub::RestoreSnapshot, restore);
  ASSERT_TRUE(restored.ok()) << restored.status() << daemon_->DaemonLog();
  v1::ForkVmRequest fork;
  fork.set_vm_id("ev-r");
  fork.set_count(1);
  fork.set_snapshot_id("ev-fork");
  fork.set_vm_id_prefix("ev-kid");
  auto forked = manager.connection().Call(&v1::VmService::Stub::ForkVm, fork);
  ASSERT_TRUE(forked.ok()) << forked.status();
  ASSERT_EQ(forked->results(0).error_code(), 0) << forked->results(0).error_message();
  for (const char* vm : {"ev-kid-1", "ev-r", "ev-vm"}) {
    EXPECT_EQ(Cli({"vm", "delete", vm}).exit_code, 0) << vm;
  }
  for (const char* s : {"ev-fork", "ev-snap"}) {
    EXPECT_EQ(Cli({"snapshot", "delete", s}).exit_code, 0) << s;
  }

  std::vector<v1::Event> events;
  read_all(manager, start, &events);
  // Ids only grow; the milestones come in the order they happened.
  std::vector<std::string> milestones;
  for (size_t i = 0; i < events.size(); ++i) {
    const v1::Event& e = events[i];
    if (i > 0) EXPECT_GT(e.event_id(), events[i - 1].event_id());
    EXPECT_EQ(e.owner(), "uid:0");
    const std::string line = absl::StrCat(v1::EventKind_Name(e.kind()), " ", e.vm_id(), " ",
                                          e.snapshot_id());
    if (e.vm_id().rfind("ev-", 0) == 0 || e.snapshot_id().rfind("ev-", 0) == 0) {
      if (e.kind() != v1::VM_RUNNING && e.kind() != v1::VM_PAUSED &&
          e.kind() != v1::VM_STOPPED) {
        milestones.push_back(line);
      }
    }
  }
  EXPECT_EQ(milestones, (std::vector<std::string>{
                            "VM_CREATED ev-vm ", "SNAPSHOT_CREATED cli-vm ev-snap",
                            "VM_RESTORED ev-r ev-snap", "SNAPSHOT_CREATED ev-r ev-fork",
                            "VM_RESTORED ev-kid-1 ev-fork", "VM_FORKED ev-r ev-fork",
                            "VM_DELETED ev-kid-1 ", "VM_DELETED ev-r ", "VM_DELETED ev-vm ",
                            "SNAPSHOT_DELETED ev-r ev-fork", "SNAPSHOT_DELETED cli-vm ev-snap"}))
      << absl::StrJoin(milestones, "\n");
  ASSERT_GE(events.size(), 4u);
  for (const v1::Event& e : events) {
    if (e.kind() == v1::VM_FORKED) EXPECT_EQ(e.detail(), "children: ev-kid-1");
  }

  // Another tenant sees none of them.
  ClientOptions other = options;
  other.act_as_tenant = "uid:4242";
  std::vector<v1::Event> others;
  read_all(SmolVMManager(other), 0, &others);
  EXPECT_TRUE(others.empty()) << others.size() << " events, the first " << others[0].DebugString();

  // smolvmctl: one line per event, and JSON lines.
  ProcResult r = Cli({"events", "--after", absl::StrCat(start), "--vm", "ev-vm"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(absl::StrContains(lines[0], "  vm_created  ev-vm  -  created  -")) << lines[0];
  EXPECT_TRUE(absl::StrContains(lines[1], "  vm_deleted  ev-vm  -  -  -")) << lines[1];
  r = Cli({"--json", "events", "--after", absl::StrCat(start), "--kind", "vm_forked"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  nlohmann::json fork_event = nlohmann::json::parse(r.out);
  EXPECT_EQ(fork_event["kind"], "VM_FORKED") << r.out;
  EXPECT_EQ(fork_event["vm_id"], "ev-r") << r.out;
  EXPECT_EQ(Cli({"events", "--kind", "nonsense"}).exit_code, 2);

  // After a restart, resumed from an event in the middle: exactly the ones
  // after it.
  const size_t middle = events.size() / 2;
  daemon_->Stop();
  absl::Status started = daemon_->Start();
  ASSERT_TRUE(started.ok()) << started;
  std::vector<v1::Event> resumed;
  read_all(manager, events[middle].event_id(), &resumed);
  ASSERT_EQ(resumed.size(), events.size() - middle - 1);
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].SerializeAsString(), events[middle + 1 + i].SerializeAsString())
        << resumed[i].DebugString();
  }
}

TEST_F(CliTest, ZDeleteAllWithYes) {
  // Last, as it stops the suite's VM: a stopped VM's console is its last
  // run's, kept when the VMM went (and a follow ends after it).
  ASSERT_EQ(Cli({"vm", "exec", "cli-vm", "--", "sh", "-c",
                 "echo last-words-before-stop > /dev/console"})
                .exit_code,
            0);
  ASSERT_EQ(Cli({"vm", "stop", "cli-vm"}).exit_code, 0);
  ProcResult last = Cli({"vm", "logs", "-f", "cli-vm"});
  EXPECT_EQ(last.exit_code, 0) << last.Describe();
  EXPECT_TRUE(absl::StrContains(last.out, "last-words-before-stop")) << last.Describe();
  ASSERT_EQ(Cli({"vm", "create", "--id", "cli-d", "--no-start"}).exit_code, 0);
  ProcResult r = Cli({"vm", "delete", "--all", "--yes"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(Lines(r.out), (std::set<std::string>{"deleted vm cli-d", "deleted vm cli-vm"}));
  EXPECT_EQ(Cli({"vm", "list", "-q"}).out, "");
}

}  // namespace
}  // namespace smolvm::testing
