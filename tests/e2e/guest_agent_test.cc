// The guest agent end to end: real daemon, real guest, real agent. One cold
// boot for the suite; clones come from one snapshot of it.
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/smolvm.h"
#include "gtest/gtest.h"
#include "tests/e2e/test_daemon.h"

namespace smolvm::testing {
namespace {

std::string Sha256Of(const std::string& data) {
  // The host's sha256sum, fed through a temp file (no crypto library needed).
  char path[] = "/tmp/svt-sha-XXXXXX";
  int fd = mkstemp(path);
  (void)!write(fd, data.data(), data.size());
  close(fd);
  std::string out;
  FILE* p = popen(absl::StrCat("sha256sum ", path).c_str(), "r");
  std::array<char, 256> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  pclose(p);
  unlink(path);
  return out.substr(0, 64);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class GuestAgentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new TestDaemon();
    // A small console cap, so that the console flood below passes it many
    // times over.
    auto s = daemon_->Start({"--console-log-max-bytes", std::to_string(kConsoleCap)});
    ASSERT_TRUE(s.ok()) << s;
    v1::VMConfig config;
    config.set_vm_id("agent-vm");
    config.set_memory_mib(256);
    config.set_vcpu_count(2);
    (*config.mutable_env())["GREETING"] = "hello from config";
    (*config.mutable_env())["OVERRIDE_ME"] = "config";
    (*config.mutable_labels())["suite"] = "guest-agent";
    vm_ = new SmolVM(config, daemon_->client_options());
    s = vm_->start();
    ASSERT_TRUE(s.ok()) << s << daemon_->DaemonLog();
  }
  static void TearDownTestSuite() {
    delete vm_;
    delete daemon_;
  }
  static CommandResult Run(const std::string& cmd, const RunOptions& opts = {}) {
    auto r = vm_->run(cmd, opts);
    EXPECT_TRUE(r.ok()) << cmd << ": " << r.status();
    return r.ok() ? *r : CommandResult{};
  }
  static constexpr uint64_t kConsoleCap = 64 << 10;
  static TestDaemon* daemon_;
  static SmolVM* vm_;
};
TestDaemon* GuestAgentTest::daemon_ = nullptr;
SmolVM* GuestAgentTest::vm_ = nullptr;

TEST_F(GuestAgentTest, ExitCodesAndSeparateStreams) {
  auto r = Run("echo to-out; echo to-err >&2; exit 3");
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.stdout_text, "to-out\n");
  EXPECT_EQ(r.stderr_text, "to-err\n");
  EXPECT_FALSE(r.timed_out);
  auto argv = vm_->run(std::vector<std::string>{"printf", "%s|", "a b", "c"});
  ASSERT_TRUE(argv.ok()) << argv.status();
  EXPECT_EQ(argv->stdout_text, "a b|c|");
  EXPECT_EQ(argv->exit_code, 0);
  auto killed = Run("kill -9 $$");
  EXPECT_EQ(killed.signal, 9);
  // A program that does not exist is an error the caller can read, with
  // the guest's meaning: NOT_FOUND; one that is not executable
  // PERMISSION_DENIED.
  auto missing = vm_->run(std::vector<std::string>{"/no/such/program"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("/no/such/program"), std::string::npos)
      << missing.status();
  auto not_executable = vm_->run(std::vector<std::string>{"/etc/passwd"});
  EXPECT_EQ(not_executable.status().code(), absl::StatusCode::kPermissionDenied)
      << not_executable.status();
}

// Exec and files as a user the guest knows: its ids, groups, environment
// and home; what it writes is its own; root's files stay closed to it.
TEST_F(GuestAgentTest, ExecAndFilesAsAGuestUser) {
  TestDaemon& d = *daemon_;
  auto setup = Run(
      "grep -q '^alice:' /etc/passwd || {"
      " echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd;"
      " echo 'alice:x:1000:' >> /etc/group; echo 'dev:x:2000:alice' >> /etc/group; };"
      " mkdir -p /home/alice && chown 1000:1000 /home/alice;"
      " echo top-secret > /root/secret && chmod 600 /root/secret && chmod 700 /root");
  ASSERT_EQ(setup.exit_code, 0) << setup.stderr_text;
  RunOptions alice;
  alice.user = "alice";
  auto who = Run("id -u; id -g; id -G; echo $USER/$LOGNAME/$HOME; pwd", alice);
  EXPECT_EQ(who.stdout_text, "1000\n1000\n1000 2000\nalice/alice//home/alice\n/home/alice\n")
      << who.stderr_text;
  RunOptions by_uid;
  by_uid.user = "1000";
  EXPECT_EQ(Run("id -un", by_uid).stdout_text, "alice\n");
  EXPECT_EQ(Run("id -u; echo $USER").stdout_text, "0\nroot\n");  // default: root

  const std::string local = d.dir() + "/alice.txt";
  std::ofstream(local) << "from alice";
  ASSERT_TRUE(vm_->upload_file(local, "/home/alice/notes/a.txt", 0, "alice").ok());
  EXPECT_EQ(Run("stat -c '%u:%g %a' /home/alice/notes /home/alice/notes/a.txt").stdout_text,
            "1000:1000 755\n1000:1000 644\n");
  ASSERT_TRUE(vm_->download_file("/home/alice/notes/a.txt", d.dir() + "/back.txt", "alice").ok());
  EXPECT_EQ(ReadAll(d.dir() + "/back.txt"), "from alice");

  // Permission denied as a non-root user, with the code that says so.
  auto read_root = vm_->download_file("/root/secret", d.dir() + "/x", "alice");
  EXPECT_EQ(read_root.code(), absl::StatusCode::kPermissionDenied) << read_root;
  EXPECT_NE(read_root.message().find("/root/secret"), std::string::npos) << read_root;
  auto write_root = vm_->upload_file(local, "/root/from-alice.txt", 0, "alice");
  EXPECT_EQ(write_root.code(), absl::StatusCode::kPermissionDenied) << write_root;
  EXPECT_EQ(Run("cat /root/secret 2>&1; echo rc=$?", alice).stdout_text,
            "cat: can't open '/root/secret': Permission denied\nrc=1\n");

  RunOptions nobody;
  nobody.user = "no-such-user";
  auto unknown = vm_->run("true", nobody);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument) << unknown.status();
  nobody.user = "bad:name";
  EXPECT_EQ(vm_->run("true", nobody).status().code(), absl::StatusCode::kInvalidArgument);
}

// The filesystem API (FilesystemService) in a real guest: round trips, the
// guest's errors with their codes, relative paths as a user, and a watch
// through the daemon seeing the guest's changes.
TEST_F(GuestAgentTest, FilesystemCallsAndWatch) {
  ASSERT_EQ(Run("rm -rf /root/fs && mkdir -p /root/fs/sub && echo hi > /root/fs/sub/f && "
                "ln -s /etc /root/fs/link")
                .exit_code,
            0);
  auto file = vm_->stat_path("/root/fs/sub/f");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->type(), v1::FILE_TYPE_FILE);
  EXPECT_EQ(file->size(), 3u);
  EXPECT_EQ(file->name(), "f");
  EXPECT_EQ(file->mode(), 0644u);
  auto link = vm_->stat_path("/root/fs/link");
  ASSERT_TRUE(link.ok()) << link.status();
  EXPECT_EQ(link->type(), v1::FILE_TYPE_SYMLINK);
  EXPECT_EQ(link->symlink_target(), "/etc");

  auto made = vm_->make_dir("/root/fs/a/b/c", /*parents=*/true, 0750);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(made->created());
  EXPECT_EQ(made->entry().type(), v1::FILE_TYPE_DIRECTORY);
  EXPECT_EQ(made->entry().mode(), 0750u);
  auto again = vm_->make_dir("/root/fs/a/b/c", /*parents=*/true);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created());
  EXPECT_EQ(vm_->make_dir("/root/fs/a").status().code(), absl::StatusCode::kAlreadyExists);

  auto listed = vm_->list_dir("/root/fs", 2);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::vector<std::string> paths;
  for (const auto& e : listed->entries()) paths.push_back(e.path());
  EXPECT_EQ(paths, (std::vector<std::string>{"/root/fs/a", "/root/fs/link", "/root/fs/sub",
                                             "/root/fs/a/b", "/root/fs/sub/f"}));
  EXPECT_FALSE(listed->truncated());

  auto moved = vm_->rename_path("/root/fs/sub/f", "/root/fs/a/g");
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->path(), "/root/fs/a/g");
  ASSERT_EQ(Run("echo x > /root/fs/sub/f").exit_code, 0);
  EXPECT_EQ(vm_->rename_path("/root/fs/sub/f", "/root/fs/a/g").status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(vm_->rename_path("/root/fs/sub/f", "/root/fs/a/g", /*overwrite=*/true).ok());

  // The guest's errors, with the path named.
  auto missing = vm_->stat_path("/root/fs/nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_NE(missing.status().message().find("/root/fs/nope"), std::string::npos);
  EXPECT_EQ(vm_->list_dir("/root/fs/a/g").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vm_->remove_path("/root/fs/a").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(vm_->list_dir("/root/fs", 33).status().code(), absl::StatusCode::kInvalidArgument);
  // A recursive remove takes the link, not what it points to.
  EXPECT_TRUE(vm_->remove_path("/root/fs/link").ok());
  EXPECT_EQ(Run("test -f /etc/passwd && echo kept").stdout_text, "kept\n");
  EXPECT_TRUE(vm_->remove_path("/root/fs/a", /*recursive=*/true).ok());
  EXPECT_EQ(vm_->stat_path("/root/fs/a").status().code(), absl::StatusCode::kNotFound);

  // As a user: relative paths are in its home, made things are its own,
  // and root's files are out of reach.
  ASSERT_EQ(Run("grep -q '^fsuser:' /etc/passwd || "
                "echo 'fsuser:x:1500:1500::/home/fsuser:/bin/sh' >> /etc/passwd; "
                "mkdir -p /home/fsuser && chown 1500:1500 /home/fsuser")
                .exit_code,
            0);
  auto mine = vm_->make_dir("work/out", /*parents=*/true, 0, "fsuser");
  ASSERT_TRUE(mine.ok()) << mine.status();
  EXPECT_EQ(mine->entry().path(), "/home/fsuser/work/out");
  EXPECT_EQ(mine->entry().uid(), 1500u);
  EXPECT_EQ(vm_->list_dir("/root", 1, "fsuser").status().code(),
            absl::StatusCode::kPermissionDenied);

  // A recursive watch through the daemon, as the guest changes the tree.
  auto watch = vm_->watch_dir("/root/fs", /*recursive=*/true);
  ASSERT_TRUE(watch.ok()) << watch.status();
  // Each event as "TYPE [old -> ]path[/]", metadata changes left out.
  auto next_changes = [&](size_t n) {
    std::vector<std::string> seen;
    while (seen.size() < n) {
      auto ev = (*watch)->next();
      if (!ev.ok()) {
        seen.push_back(ev.status().ToString());
        break;
      }
      if (ev->type() == v1::WATCH_EVENT_TYPE_CHMOD) continue;
      seen.push_back(absl::StrCat(v1::WatchEventType_Name(ev->type()).substr(17), " ",
                                  ev->old_path().empty() ? "" : ev->old_path() + " -> ",
                                  ev->path(), ev->is_dir() ? "/" : ""));
    }
    return seen;
  };
  ASSERT_EQ(Run("echo 1 > /root/fs/new; mkdir /root/fs/d").exit_code, 0);
  EXPECT_EQ(next_changes(3), (std::vector<std::string>{"CREATE /root/fs/new",
                                                       "MODIFY /root/fs/new", "CREATE /root/fs/d/"}));
  // The new directory is watched once its CREATE was reported.
  ASSERT_EQ(Run("echo 2 > /root/fs/d/inner; mv /root/fs/new /root/fs/renamed; "
                "rm /root/fs/renamed")
                .exit_code,
            0);
  EXPECT_EQ(next_changes(4),
            (std::vector<std::string>{"CREATE /root/fs/d/inner", "MODIFY /root/fs/d/inner",
                                      "RENAME /root/fs/new -> /root/fs/renamed",
                                      "DELETE /root/fs/renamed"}));
  (*watch)->cancel();
  EXPECT_EQ((*watch)->next().status().code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(Run("rm -rf /root/fs").exit_code, 0);
}

// Background processes (ProcessService): a loop started by a client that
// then goes away is listed, reattached with its buffered tail, detached
// without harm, signalled as a group and waited for.
TEST_F(GuestAgentTest, BackgroundProcessesOutliveTheirClient) {
  uint32_t pid = 0;
  {
    auto starter = SmolVM::attach(vm_->vm_id(), daemon_->client_options());
    ASSERT_TRUE(starter.ok()) << starter.status();
    auto started = starter->start_process(
        "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.2; done");
    ASSERT_TRUE(started.ok()) << started.status();
    EXPECT_TRUE(started->running());
    pid = started->pid();
  }  // The starting client is gone.
  auto find = [&](uint32_t want) -> std::optional<v1::ProcessInfo> {
    auto listed = vm_->list_processes();
    EXPECT_TRUE(listed.ok()) << listed.status();
    if (!listed.ok()) return std::nullopt;
    for (const auto& p : *listed) {
      if (p.pid() == want) return p;
    }
    return std::nullopt;
  };
  auto listed = find(pid);
  ASSERT_TRUE(listed.has_value());
  EXPECT_TRUE(listed->running());
  EXPECT_EQ(listed->argv(0), "/bin/sh");

  // Reattached with the tail: the first lines, then live ones.
  std::string out;
  {
    auto conn = vm_->connect_process(pid, 100000);
    ASSERT_TRUE(conn.ok()) << conn.status();
    while (out.find("tick3\n") == std::string::npos) {
      auto r = (*conn)->next();
      ASSERT_TRUE(r.ok()) << r.status() << " after " << out;
      ASSERT_FALSE(r->has_exit());
      out += r->stdout();
    }
  }  // Detached.
  EXPECT_TRUE(absl::StartsWith(out, "tick0\ntick1\n")) << out;
  const uint64_t bytes_then = find(pid)->output_bytes();
  absl::SleepFor(absl::Milliseconds(600));
  auto still = find(pid);
  ASSERT_TRUE(still.has_value());
  EXPECT_TRUE(still->running()) << "a detach must not end the process";
  EXPECT_GT(still->output_bytes(), bytes_then);
  {
    // From now on only: no replay of the first line.
    auto live = vm_->connect_process(pid);
    ASSERT_TRUE(live.ok()) << live.status();
    auto r = (*live)->next();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(absl::StartsWith(r->stdout(), "tick")) << r->stdout();
    EXPECT_FALSE(absl::StartsWith(r->stdout(), "tick0\n")) << r->stdout();
  }

  auto too_soon = vm_->wait_process(pid, absl::Milliseconds(300));
  EXPECT_EQ(too_soon.status().code(), absl::StatusCode::kDeadlineExceeded) << too_soon.status();
  auto signalled = vm_->signal_process(pid, SIGTERM, /*group=*/true);
  ASSERT_TRUE(signalled.ok()) << signalled.status();
  auto waited = vm_->wait_process(pid, absl::Seconds(20));
  ASSERT_TRUE(waited.ok()) << waited.status();
  EXPECT_FALSE(waited->running());
  EXPECT_EQ(waited->signal(), SIGTERM);
  EXPECT_EQ(vm_->signal_process(pid).status().code(), absl::StatusCode::kNotFound);

  // A process that ends by itself: its exit code, and its whole output
  // before the exit for a late attach.
  auto quick = vm_->start_process({"sh", "-c", "echo out; echo err >&2; exit 3"});
  ASSERT_TRUE(quick.ok()) << quick.status();
  auto quick_exit = vm_->wait_process(quick->pid(), absl::Seconds(20));
  ASSERT_TRUE(quick_exit.ok()) << quick_exit.status();
  EXPECT_EQ(quick_exit->exit_code(), 3);
  auto replay = vm_->connect_process(quick->pid(), 1000);
  ASSERT_TRUE(replay.ok()) << replay.status();
  std::string replay_out, replay_err;
  while (true) {
    auto r = (*replay)->next();
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->has_exit()) {
      EXPECT_EQ(r->exit().exit_code(), 3);
      break;
    }
    replay_out += r->stdout();
    replay_err += r->stderr();
  }
  EXPECT_EQ(replay_out, "out\n");
  EXPECT_EQ(replay_err, "err\n");

  EXPECT_EQ(vm_->start_process({"/no/such/program"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(vm_->wait_process(4000000, absl::Seconds(5)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(vm_->signal_process(pid, 99).status().code(), absl::StatusCode::kInvalidArgument);
}

// ForkVm (E2B's fork): children inherit the source's files and running
// processes, then diverge; the source keeps running; the kept snapshot and
// the children carry labels a listing filters by.
// Reads a session's output until `want` appears (or the exit, an error, or
// 30 s); returns everything read.
std::string ReadUntil(ExecSession& session, const std::string& want,
                      std::optional<v1::ExecResult>* exit = nullptr) {
  std::string out;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (out.find(want) == std::string::npos && absl::Now() < deadline) {
    auto r = session.next();
    if (!r.ok()) {
      ADD_FAILURE() << r.status() << " waiting for \"" << want << "\" after: " << out;
      break;
    }
    out += r->stdout();
    out += r->stderr();
    if (r->has_exit()) {
      if (exit != nullptr) *exit = r->exit();
      break;
    }
  }
  return out;
}

// The exit of a session, reading (and returning in *out) the rest.
v1::ExecResult WaitExit(ExecSession& session, std::string* out = nullptr) {
  std::optional<v1::ExecResult> exit;
  std::string rest = ReadUntil(session, "\x01never\x02", &exit);
  if (out != nullptr) *out += rest;
  EXPECT_TRUE(exit.has_value()) << rest;
  return exit.value_or(v1::ExecResult());
}

TEST_F(GuestAgentTest, InteractiveExecSessions) {
  // Stdin streamed in chunks and closed; 3 MiB crosses the 1 MiB window
  // many times (the daemon waits for the guest's acknowledgements).
  {
    auto session = vm_->exec_session({"sh", "-c", "wc -c; echo done"});
    ASSERT_TRUE(session.ok()) << session.status();
    const std::string chunk(256 << 10, 'x');
    for (int i = 0; i < 12; ++i) ASSERT_TRUE((*session)->write_stdin(chunk).ok());
    ASSERT_TRUE((*session)->close_stdin().ok());
    std::string out;
    v1::ExecResult exit = WaitExit(**session, &out);
    EXPECT_EQ(exit.exit_code(), 0);
    EXPECT_EQ(out, "3145728\ndone\n");
    EXPECT_EQ((*session)->write_stdin("late").code(), absl::StatusCode::kFailedPrecondition);
  }
  // Keystrokes one by one to cat, which answers each line as it comes.
  {
    auto session = vm_->exec_session({"cat"});
    ASSERT_TRUE(session.ok()) << session.status();
    ASSERT_TRUE((*session)->write_stdin("ping\n").ok());
    EXPECT_EQ(ReadUntil(**session, "ping\n"), "ping\n");
    ASSERT_TRUE((*session)->write_stdin("pong\n").ok());
    EXPECT_EQ(ReadUntil(**session, "pong\n"), "pong\n");
    ASSERT_TRUE((*session)->close_stdin().ok());
    EXPECT_EQ(WaitExit(**session).exit_code(), 0);
  }
  // SIGINT ends `sleep 100` at once.
  {
    auto session = vm_->exec_session({"sleep", "100"});
    ASSERT_TRUE(session.ok()) << session.status();
    // (A signal that reaches the guest before the command runs is queued
    // for it: the agent applies it right after the start.)
    const absl::Time sent = absl::Now();
    ASSERT_TRUE((*session)->signal(SIGINT).ok());
    v1::ExecResult exit = WaitExit(**session);
    EXPECT_EQ(exit.signal(), SIGINT);
    EXPECT_LT(absl::Now() - sent, absl::Seconds(5));
    EXPECT_EQ((*session)->signal(0).code(), absl::StatusCode::kInvalidArgument);
  }
  // A shell on a terminal: its tty, its size, a resize, ^C to the
  // foreground job only, and stderr on the same terminal.
  {
    ExecSessionOptions tty;
    tty.tty = true;
    RunOptions opts;
    opts.env["PS1"] = "$ ";
    auto session = vm_->exec_session({"/bin/sh", "-i"}, opts, tty);
    ASSERT_TRUE(session.ok()) << session.status();
    ExecSession& sh = **session;
    // The terminal echoes what is typed: markers are split by "" there.
    ASSERT_TRUE(sh.write_stdin(
                      "tty; stty size; echo term=$TERM; echo e\"\"rr >&2; echo D\"\"ONE1\n")
                    .ok());
    std::string out = ReadUntil(sh, "DONE1");
    EXPECT_TRUE(absl::StrContains(out, "err\r\n")) << out;
    EXPECT_TRUE(absl::StrContains(out, "/dev/pts/")) << out;
    EXPECT_TRUE(absl::StrContains(out, "24 80")) << out;
    EXPECT_TRUE(absl::StrContains(out, "term=xterm-256color")) << out;
    ASSERT_TRUE(sh.resize(40, 120).ok());
    ASSERT_TRUE(sh.write_stdin("stty size\n").ok());
    out = ReadUntil(sh, "40 120");
    EXPECT_TRUE(absl::StrContains(out, "40 120")) << out;
    ASSERT_TRUE(sh.write_stdin("sleep 100; echo after-$?\n").ok());
    absl::SleepFor(absl::Milliseconds(500));
    ASSERT_TRUE(sh.signal(SIGINT).ok());
    ASSERT_TRUE(sh.write_stdin("echo al\"\"ive\n").ok());
    out = ReadUntil(sh, "alive\r\n");
    EXPECT_TRUE(absl::StrContains(out, "alive\r\n")) << "the shell must survive ^C: " << out;
    ASSERT_TRUE(sh.write_stdin("exit 7\n").ok());
    EXPECT_EQ(WaitExit(sh).exit_code(), 7);
  }
  // Cancelling a session kills its command in the guest, and every job it
  // started on its terminal, also one in a process group of its own (job
  // control, `set -m`).
  {
    ExecSessionOptions tty;
    tty.tty = true;
    auto session = vm_->exec_session(
        {"sh", "-c",
         "set -m; sleep 1000 & echo $! > /tmp/session-job.pid; echo $$ > /tmp/session.pid;"
         " echo started; exec sleep 1000"},
        {}, tty);
    ASSERT_TRUE(session.ok()) << session.status();
    ReadUntil(**session, "started");
    // Field 5 of /proc/PID/stat is the process group (comm is "sleep").
    auto groups = Run(
        "cut -d' ' -f5 /proc/$(cat /tmp/session.pid)/stat /proc/$(cat /tmp/session-job.pid)/stat"
        " | sort -u | wc -l");
    EXPECT_EQ(groups.stdout_text, "2\n") << "the job must be in a group of its own";
    (*session)->cancel();
    session->reset();
    auto gone = Run(
        "for i in $(seq 50); do kill -0 $(cat /tmp/session.pid) 2>/dev/null ||"
        " kill -0 $(cat /tmp/session-job.pid) 2>/dev/null || { echo gone; exit 0; };"
        " sleep 0.1; done; echo alive");
    EXPECT_EQ(gone.stdout_text, "gone\n");
  }
  // A command that cannot start: the guest's meaning, at once (the daemon
  // says `failing` and the client ends its requests; no 10 s linger).
  {
    const absl::Time started = absl::Now();
    auto session = vm_->exec_session({"no-such-program"});
    ASSERT_TRUE(session.ok()) << session.status();
    auto r = (*session)->next();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
    EXPECT_LT(absl::Now() - started, absl::Seconds(5));
  }
  // Refused at the edge, naming the fix.
  {
    ExecSessionOptions huge;
    huge.tty = true;
    huge.rows = 5000;
    auto session = vm_->exec_session({"sh"}, {}, huge);
    ASSERT_TRUE(session.ok()) << session.status();
    auto r = (*session)->next();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    RunOptions with_stdin;
    with_stdin.stdin_data = "x";
    EXPECT_EQ(vm_->exec_session({"cat"}, with_stdin).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(GuestAgentTest, ForkVmCopiesARunningVm) {
  ClientOptions opts = daemon_->client_options();
  SmolVMManager manager(opts);
  // $! is the loop itself: setsid in a background job is no group leader,
  // so it does not fork.
  const std::string loop_pid =
      Run("echo inherited > /root/fork.txt; "
          "setsid sh -c 'while :; do sleep 1; done' </dev/null >/dev/null 2>&1 & echo $!")
          .stdout_text;
  ASSERT_FALSE(loop_pid.empty());
  EXPECT_EQ(vm_->fork(0).status().code(), absl::StatusCode::kInvalidArgument);

  ForkVmOptions fork_options;
  fork_options.vm_id_prefix = "kid";
  fork_options.labels = {{"purpose", "fork-test"}};
  auto fork = vm_->fork(2, fork_options);
  ASSERT_TRUE(fork.ok()) << fork.status() << daemon_->DaemonLog();
  ASSERT_EQ(fork->children.size(), 2u);
  EXPECT_EQ(manager.get_vm("agent-vm")->status(), v1::RUNNING);
  std::vector<SmolVM> kids;
  for (size_t i = 0; i < fork->children.size(); ++i) {
    const ForkOutcome& kid = fork->children[i];
    ASSERT_TRUE(kid.ok()) << kid.vm_id << ": " << kid.vm.status();
    EXPECT_EQ(kid.vm_id, absl::StrCat("kid-", i + 1));
    EXPECT_EQ(kid.vm->status(), v1::RUNNING);
    auto handle = SmolVM::attach(kid.vm_id, opts);
    ASSERT_TRUE(handle.ok()) << handle.status();
    auto seen = handle->run("cat /root/fork.txt; ps | grep -c '[w]hile :'");
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(seen->stdout_text, "inherited\n1\n") << kid.vm_id;
    kids.push_back(*std::move(handle));
  }
  // They diverge: a write in one child is nowhere else.
  ASSERT_TRUE(kids[0].run("echo mine > /root/fork.txt").ok());
  EXPECT_EQ(kids[1].run("cat /root/fork.txt")->stdout_text, "inherited\n");
  EXPECT_EQ(Run(absl::StrCat("cat /root/fork.txt; kill ", loop_pid)).stdout_text,
            "inherited\n");

  // Labels: the source's go to the children; the request's to the snapshot.
  ListFilter by_suite;
  by_suite.labels = {{"suite", "guest-agent"}};
  auto vms = manager.list_vms(by_suite);
  ASSERT_TRUE(vms.ok()) << vms.status();
  std::vector<std::string> ids;
  for (const v1::Vm& vm : *vms) ids.push_back(vm.vm_id());
  EXPECT_EQ(ids, (std::vector<std::string>{"agent-vm", "kid-1", "kid-2"}));
  ASSERT_TRUE(kids[1].pause().ok());
  ListFilter paused = by_suite;
  paused.statuses = {v1::PAUSED};
  vms = manager.list_vms(paused);
  ASSERT_TRUE(vms.ok());
  ASSERT_EQ(vms->size(), 1u);
  EXPECT_EQ((*vms)[0].vm_id(), "kid-2");
  ListFilter by_purpose;
  by_purpose.labels = {{"purpose", "fork-test"}};
  auto snaps = manager.list_snapshots("", by_purpose);
  ASSERT_TRUE(snaps.ok()) << snaps.status();
  ASSERT_EQ(snaps->size(), 1u);
  EXPECT_EQ((*snaps)[0].snapshot_id(), fork->snapshot_id);
  EXPECT_EQ((*snaps)[0].labels().at("purpose"), "fork-test");

  for (SmolVM& kid : kids) EXPECT_TRUE(kid.close().ok());
  EXPECT_TRUE(manager.delete_snapshot(fork->snapshot_id).ok());
  // A source that is gone is NOT_FOUND.
  auto gone = SmolVM::attach("kid-1", opts);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  v1::ForkVmRequest request;
  request.set_vm_id("kid-1");
  request.set_count(1);
  EXPECT_EQ(Connection(opts).Call(&v1::VmService::Stub::ForkVm, request).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(GuestAgentTest, EnvFromConfigAndRequestAndCwd) {
  RunOptions opts;
  opts.env["OVERRIDE_ME"] = "request";
  opts.cwd = "/tmp";
  auto r = Run("echo \"$GREETING|$OVERRIDE_ME|$(pwd)\"", opts);
  EXPECT_EQ(r.stdout_text, "hello from config|request|/tmp\n");
}

TEST_F(GuestAgentTest, StdinIsDelivered) {
  RunOptions opts;
  std::string data = RandomBytes(3 << 20, 7);
  opts.stdin_data = data;
  auto r = vm_->run(std::vector<std::string>{"sha256sum"}, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stdout_text.substr(0, 64), Sha256Of(data));
}

TEST_F(GuestAgentTest, LargeOutputIsStreamedWithoutLoss) {
  // ~20 MB, produced in the guest; compared with the same text made here.
  const int n = 2500000;
  std::string expected;
  expected.reserve(20 << 20);
  for (int i = 1; i <= n; ++i) absl::StrAppend(&expected, i, "\n");
  size_t chunks = 0;
  std::string got;
  auto exit = vm_->exec({"seq", "1", std::to_string(n)}, {},
                        [&](ExecStream stream, absl::string_view data) {
                          if (stream == ExecStream::kStdout) {
                            got.append(data.data(), data.size());
                            ++chunks;
                          }
                        });
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected) << "output differs";
  EXPECT_GT(chunks, 100u) << "output should arrive as a stream of chunks";
}

TEST_F(GuestAgentTest, TimeoutKillsTheWholeProcessGroup) {
  RunOptions opts;
  opts.timeout = absl::Seconds(2);
  absl::Time t0 = absl::Now();
  auto r = Run("sleep 101 & sleep 102; echo not-reached", opts);
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(15));
  EXPECT_EQ(r.stdout_text.find("not-reached"), std::string::npos);
  auto ps = Run("ps -o args | grep -c '^sleep 10[12]' || true");
  EXPECT_EQ(ps.stdout_text, "0\n") << "the background child survived";
}

TEST_F(GuestAgentTest, ConcurrentExecs) {
  constexpr int kExecs = 6;
  std::array<std::string, kExecs> outputs;
  std::array<absl::Status, kExecs> statuses;
  absl::Time t0 = absl::Now();
  std::vector<std::thread> threads;
  for (int i = 0; i < kExecs; ++i) {
    threads.emplace_back([&, i] {
      auto h = SmolVM::attach("agent-vm", daemon_->client_options());
      if (!h.ok()) {
        statuses[i] = h.status();
        return;
      }
      auto r = h->run(absl::StrCat("sleep 2; echo ", i));
      statuses[i] = r.status();
      if (r.ok()) outputs[i] = r->stdout_text;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kExecs; ++i) {
    EXPECT_TRUE(statuses[i].ok()) << statuses[i];
    EXPECT_EQ(outputs[i], absl::StrCat(i, "\n"));
  }
  // Serially this would take 12 s or more.
  EXPECT_LT(absl::Now() - t0, absl::Seconds(9));
}

TEST_F(GuestAgentTest, FileRoundTripsWithChecksumsAndMode) {
  TestDaemon& d = *daemon_;
  std::string data = RandomBytes(5 << 20, 42);
  std::string local = d.dir() + "/up.bin";
  std::ofstream(local, std::ios::binary) << data;
  ASSERT_TRUE(vm_->upload_file(local, "/root/dir/data.bin", 0600).ok());
  auto sum = Run("sha256sum /root/dir/data.bin; stat -c %a /root/dir/data.bin; "
                 "ls -a /root/dir | grep -vc '^\\.\\.\\?$'");
  std::istringstream lines(sum.stdout_text);
  std::string hash_line, mode, count;
  std::getline(lines, hash_line);
  std::getline(lines, mode);
  std::getline(lines, count);
  EXPECT_EQ(hash_line.substr(0, 64), Sha256Of(data));
  EXPECT_EQ(mode, "600");
  EXPECT_EQ(count, "1") << "a temp file was left next to the upload";
  std::string back = d.dir() + "/down.bin";
  ASSERT_TRUE(vm_->download_file("/root/dir/data.bin", back).ok());
  EXPECT_TRUE(ReadAll(back) == data);
  // Errors name the path, and the guest's errno sets the code.
  auto missing = vm_->download_file("/root/nope.txt", d.dir() + "/x");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_NE(missing.message().find("/root/nope.txt"), std::string::npos) << missing;
  auto is_dir = vm_->download_file("/root", d.dir() + "/x");
  EXPECT_EQ(is_dir.code(), absl::StatusCode::kInvalidArgument) << is_dir;
  std::ofstream(d.dir() + "/up.bin") << "x";
  auto under_a_file = vm_->upload_file(d.dir() + "/up.bin", "/root/dir/data.bin/x");
  EXPECT_EQ(under_a_file.code(), absl::StatusCode::kInvalidArgument) << under_a_file;
  EXPECT_NE(under_a_file.message().find("/root/dir/data.bin/x"), std::string::npos)
      << under_a_file;
  // Directories travel as tar streams.
  std::filesystem::create_directories(d.dir() + "/tree/sub");
  std::ofstream(d.dir() + "/tree/a.txt") << "alpha";
  std::ofstream(d.dir() + "/tree/sub/b.txt") << "beta";
  ASSERT_TRUE(vm_->upload_dir(d.dir() + "/tree", "/root/tree").ok());
  EXPECT_EQ(Run("cat /root/tree/a.txt /root/tree/sub/b.txt").stdout_text, "alphabeta");
  ASSERT_TRUE(vm_->download_dir("/root/tree", d.dir() + "/tree-back").ok());
  EXPECT_EQ(ReadAll(d.dir() + "/tree-back/sub/b.txt"), "beta");
}

TEST_F(GuestAgentTest, GarbageFromTheGuestDoesNotHurtTheDaemon) {
  // A guest program floods binary garbage on stdout: it arrives intact
  // and the daemon and the agent carry on. (A guest that takes over the
  // agent's own port and floods it is in confinement_test: the agent must be
  // killed first, the kernel lets one process hold the port.)
  RunOptions opts;
  opts.timeout = absl::Seconds(30);
  auto flood = vm_->run("head -c 8000000 /dev/urandom", opts);
  ASSERT_TRUE(flood.ok()) << flood.status();
  EXPECT_EQ(flood->exit_code, 0) << flood->stderr_text;
  EXPECT_EQ(flood->stdout_text.size(), 8000000u);
  auto alive = vm_->run("echo alive");
  ASSERT_TRUE(alive.ok()) << alive.status() << daemon_->DaemonLog();
  EXPECT_EQ(alive->stdout_text, "alive\n");
  EXPECT_TRUE(daemon_->running());
  EXPECT_TRUE(SmolVMManager(daemon_->client_options()).list_vms().ok());
}

// A guest writing to its serial console without end: the console log on
// the host stays within its cap (the run dir is tmpfs, shared with every
// guest's RAM), its newest output is kept, and the VM and daemon carry on.
TEST_F(GuestAgentTest, ConsoleFloodStaysWithinTheCap) {
  const std::string log = daemon_->run_dir() + "/vms/agent-vm/console.log";
  auto size = [](const std::string& path) -> uint64_t {
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? st.st_size : 0;
  };
  RunOptions opts;
  opts.timeout = absl::Seconds(60);
  // About 800 KiB, 12 times the cap, then a marker.
  auto flood = vm_->run(
      "i=0; while [ $i -lt 200 ]; do head -c 4000 /dev/zero | tr '\\0' x > /dev/console; "
      "i=$((i+1)); done; echo CONSOLE-FLOOD-END > /dev/console",
      opts);
  ASSERT_TRUE(flood.ok()) << flood.status();
  EXPECT_EQ(flood->exit_code, 0) << flood->stderr_text;
  // The recorder writes what it read; give it a moment for the last bytes.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (daemon_->ConsoleLog("agent-vm").find("CONSOLE-FLOOD-END") == std::string::npos &&
         absl::Now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(daemon_->ConsoleLog("agent-vm").find("CONSOLE-FLOOD-END"), std::string::npos);
  EXPECT_LE(size(log) + size(log + ".1"), kConsoleCap);
  EXPECT_GT(size(log + ".1"), 0u) << "the log never rotated";
  auto alive = vm_->run("echo alive");
  ASSERT_TRUE(alive.ok()) << alive.status();
  EXPECT_EQ(alive->stdout_text, "alive\n");
}

// Clones of one snapshot: each gets its clock set to the host's and fresh
// entropy before it is handed out, and `smolvmctl vm exec` works on them.
TEST_F(GuestAgentTest, ClonesGetFreshEntropyAndTheHostClock) {
  ClientOptions opts = daemon_->client_options();
  auto snap = vm_->snapshot("agent-snap", /*resume_source=*/true);
  ASSERT_TRUE(snap.ok()) << snap.status();
  // Let the snapshot's clock fall behind, so an unfixed clone would show it.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  absl::Time t0 = absl::Now();
  auto a = SmolVM::from_snapshot("agent-snap", true, "clone-one", opts);
  ASSERT_TRUE(a.ok()) << a.status() << daemon_->DaemonLog();
  std::cout << "restore to ready (agent answered, clock and entropy fixed): "
            << absl::FormatDuration(absl::Now() - t0) << "\n";
  auto first = a->run("true");
  ASSERT_TRUE(first.ok()) << first.status();
  std::cout << "restore to first exec completed: " << absl::FormatDuration(absl::Now() - t0)
            << "\n";
  auto b = SmolVM::from_snapshot("agent-snap", true, "clone-two", opts);
  ASSERT_TRUE(b.ok()) << b.status();

  const std::string probe =
      "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; "
      "echo; date +%s";
  auto ra = a->run(probe);
  auto rb = b->run(probe);
  ASSERT_TRUE(ra.ok() && rb.ok());
  std::istringstream la(ra->stdout_text), lb(rb->stdout_text);
  std::string uuid_a, uuid_b, rand_a, rand_b, time_a, time_b;
  std::getline(la, uuid_a);
  std::getline(la, rand_a);
  std::getline(la, time_a);
  std::getline(lb, uuid_b);
  std::getline(lb, rand_b);
  std::getline(lb, time_b);
  EXPECT_NE(uuid_a, uuid_b);
  EXPECT_EQ(rand_a.size(), 32u);
  EXPECT_NE(rand_a, rand_b) << "clones share their random stream";
  for (const auto& t : {time_a, time_b}) {
    int64_t guest = 0;
    ASSERT_TRUE(absl::SimpleAtoi(t, &guest)) << t;
    EXPECT_LE(std::abs(guest - absl::ToUnixSeconds(absl::Now())), 2) << "guest clock " << t;
  }

  // The CLI against a restored VM: output streamed, exit code passed on.
  std::string cmd = absl::StrCat(SMOLVMCTL_BINARY, " --socket ", daemon_->socket_path(),
                                 " vm exec clone-one -- sh -c 'echo from-clone; exit 7' 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 256> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  int status = pclose(p);
  EXPECT_EQ(out, "from-clone\n");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7) << status;

  EXPECT_TRUE(a->close().ok());
  EXPECT_TRUE(b->close().ok());
  EXPECT_TRUE(SmolVMManager(opts).delete_snapshot("agent-snap").ok());
}

}  // namespace
}  // namespace smolvm::testing
