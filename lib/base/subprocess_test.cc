#include "lib/base/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/base/unique_fd.h"
#include "tests/testing/status_matchers.h"

namespace smolvm {
namespace {

using ::smolvm_testing::IsOk;
using ::smolvm_testing::StatusIs;
using ::testing::Contains;
using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Processes in process group `pgid` that are not zombies (a killed orphan
// stays a zombie until whoever adopted it reaps it; it no longer runs).
std::vector<pid_t> LiveMembersOfGroup(pid_t pgid) {
  std::vector<pid_t> members;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return members;
  while (dirent* e = readdir(proc)) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    FILE* f = fopen(absl::StrCat("/proc/", pid, "/stat").c_str(), "re");
    if (f == nullptr) continue;
    char line[1024] = {};
    size_t n = fread(line, 1, sizeof(line) - 1, f);
    fclose(f);
    // "pid (comm) state ppid pgrp ...": comm may contain spaces, so parse
    // after the last ')'.
    std::string stat(line, n);
    auto paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::vector<std::string> fields =
        absl::StrSplit(stat.substr(paren + 2), ' ', absl::SkipEmpty());
    pid_t pgrp = 0;
    if (fields.size() < 3 || !absl::SimpleAtoi(fields[2], &pgrp)) continue;
    if (pgrp == pgid && fields[0] != "Z" && fields[0] != "X") members.push_back(pid);
  }
  closedir(proc);
  return members;
}

TEST(RunSubprocessTest, ReportsZeroExit) {
  auto r = RunSubprocess({"true"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->term_signal, 0);
  EXPECT_EQ(r->stdout_text, "");
  EXPECT_EQ(r->stderr_text, "");
}

TEST(RunSubprocessTest, ReportsNonZeroExitWithoutError) {
  auto r = RunSubprocess({"sh", "-c", "exit 3"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->term_signal, 0);
}

TEST(RunSubprocessTest, ReportsTerminatingSignal) {
  auto r = RunSubprocess({"sh", "-c", "kill -TERM $$"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, -1);
  EXPECT_EQ(r->term_signal, SIGTERM);
}

TEST(RunSubprocessTest, CapturesStdoutAndStderrSeparately) {
  auto r = RunSubprocess(
      {"sh", "-c", "echo to-out; echo to-err >&2; echo more-out; echo more-err >&2"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stdout_text, "to-out\nmore-out\n");
  EXPECT_EQ(r->stderr_text, "to-err\nmore-err\n");
}

TEST(RunSubprocessTest, PassesArgvVerbatimWithoutAShell) {
  // Each element is one argument: no word splitting, globbing or expansion.
  auto r = RunSubprocess({"printf", "%s|", "a b", "*", "$HOME", "'q'"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stdout_text, "a b|*|$HOME|'q'|");
}

TEST(RunSubprocessTest, StdinIsEmpty) {
  // The child must not read the daemon's stdin; cat sees EOF at once.
  auto r = RunSubprocess({"cat"}, {.timeout = absl::Seconds(5)});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_text, "");
}

TEST(RunSubprocessTest, OutputBoundKeepsTheTail) {
  SubprocessOptions opts;
  opts.max_output_bytes = 1000;
  // ~590 KB on each stream, written in many chunks.
  auto r = RunSubprocess(
      {"sh", "-c", "seq 1 100000; seq 1 100000 >&2"}, opts);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->stdout_text.size(), 1000u);
  EXPECT_EQ(r->stderr_text.size(), 1000u);
  EXPECT_THAT(r->stdout_text, EndsWith("\n99999\n100000\n"));
  EXPECT_THAT(r->stderr_text, EndsWith("\n99999\n100000\n"));
  EXPECT_THAT(r->stdout_text, Not(HasSubstr("\n1\n")));
}

TEST(RunSubprocessTest, OutputUnderTheBoundIsKeptWhole) {
  SubprocessOptions opts;
  opts.max_output_bytes = 1000;
  auto r = RunSubprocess({"seq", "1", "10"}, opts);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stdout_text, "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
}

TEST(RunSubprocessTest, TimeoutKillsTheWholeProcessGroupQuickly) {
  SubprocessOptions opts;
  opts.timeout = absl::Milliseconds(700);
  // The shell reports its pid (= the group id, the child calls setpgid) and
  // leaves a background grandchild in the same group.
  absl::Time start = absl::Now();
  auto r = RunSubprocess(
      {"sh", "-c", "echo pgid=$$ >&2; sleep 30 & sleep 30; echo never >&2"}, opts);
  absl::Duration took = absl::Now() - start;

  ASSERT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded, "was killed"));
  EXPECT_LT(took, absl::Seconds(3));
  EXPECT_GE(took, absl::Milliseconds(650));
  std::string message(r.status().message());
  EXPECT_THAT(message, HasSubstr("sh did not finish within 700ms"));
  EXPECT_THAT(message, Not(HasSubstr("never")));

  auto at = message.find("pgid=");
  ASSERT_NE(at, std::string::npos) << message;
  std::string digits = message.substr(at + 5);
  digits = digits.substr(0, digits.find_first_not_of("0123456789"));
  pid_t pgid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(digits, &pgid)) << message;
  ASSERT_GT(pgid, 1);
  // SIGKILL is delivered asynchronously to the orphaned grandchild.
  absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (!LiveMembersOfGroup(pgid).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(LiveMembersOfGroup(pgid), ::testing::IsEmpty())
      << "processes of the timed-out child's group survived";
}

// Regression: The timeout also bounds the wait for a child that closed its output.
TEST(RunSubprocessTest, TimeoutAppliesAfterTheChildClosesItsOutput) {
  SubprocessOptions opts;
  opts.timeout = absl::Milliseconds(300);
  absl::Time start = absl::Now();
  auto r = RunSubprocess({"sh", "-c", "exec >/dev/null 2>&1; sleep 3"}, opts);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// Regression: A timeout that fires before the child ran setpgid still kills it.
TEST(RunSubprocessTest, TinyTimeoutStillKillsTheChild) {
  SubprocessOptions opts;
  opts.timeout = absl::Microseconds(1);
  for (int i = 0; i < 20; ++i) {
    absl::Time start = absl::Now();
    auto r = RunSubprocess({"sleep", "1"}, opts);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded));
    EXPECT_LT(absl::Now() - start, absl::Milliseconds(500)) << "attempt " << i;
  }
}

// The cancel check stops a running child, its whole process group, soon.
TEST(RunSubprocessTest, CancelKillsTheProcessGroupAndReturnsCancelled) {
  SubprocessOptions opts;
  opts.timeout = absl::Seconds(30);
  absl::Time cancel_at = absl::Now() + absl::Milliseconds(300);
  int checks = 0;
  opts.cancelled = [&] {
    ++checks;
    return absl::Now() >= cancel_at;
  };
  absl::Time start = absl::Now();
  auto r = RunSubprocess(
      {"sh", "-c", "echo pgid=$$ >&2; sleep 30 & sleep 30; echo never >&2"}, opts);
  absl::Duration took = absl::Now() - start;

  ASSERT_THAT(r, StatusIs(absl::StatusCode::kCancelled, "sh was cancelled and killed"));
  EXPECT_GE(took, absl::Milliseconds(290));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_GT(checks, 1);
  std::string message(r.status().message());
  EXPECT_THAT(message, Not(HasSubstr("never")));
  auto at = message.find("pgid=");
  ASSERT_NE(at, std::string::npos) << message;
  std::string digits = message.substr(at + 5);
  digits = digits.substr(0, digits.find_first_not_of("0123456789"));
  pid_t pgid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(digits, &pgid)) << message;
  ASSERT_GT(pgid, 1);
  absl::Time deadline = absl::Now() + absl::Seconds(2);
  while (!LiveMembersOfGroup(pgid).empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(LiveMembersOfGroup(pgid), ::testing::IsEmpty())
      << "processes of the cancelled child's group survived";
}

TEST(RunSubprocessTest, AlreadyCancelledStartsNothing) {
  SubprocessOptions opts;
  opts.cancelled = [] { return true; };
  std::string marker = absl::StrCat("/tmp/smolvm-cancel-marker-", getpid());
  auto r = RunSubprocess({"touch", marker}, opts);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kCancelled, "not started"));
  EXPECT_NE(access(marker.c_str(), F_OK), 0) << "the program ran";
  unlink(marker.c_str());
}

TEST(RunSubprocessTest, CancelCheckThatStaysFalseChangesNothing) {
  SubprocessOptions opts;
  opts.cancelled = [] { return false; };
  auto r = RunSubprocess({"sh", "-c", "sleep 0.2; echo done; exit 3"}, opts);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->stdout_text, "done\n");
}

TEST(RunSubprocessTest, MissingProgramIsNotFound) {
  EXPECT_THAT(RunSubprocess({"/nonexistent/smolvm-no-such-program"}),
              StatusIs(absl::StatusCode::kNotFound, "smolvm-no-such-program"));
  // Looked up in PATH.
  EXPECT_THAT(RunSubprocess({"smolvm-no-such-program-in-path"}),
              StatusIs(absl::StatusCode::kNotFound, "smolvm-no-such-program-in-path"));
}

TEST(RunSubprocessTest, EmptyArgvIsInvalid) {
  EXPECT_THAT(RunSubprocess({}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RunSubprocessTest, DaemonDescriptorsAreNotInherited) {
  // Descriptors opened without O_CLOEXEC, as a careless library might. High
  // numbers so they cannot coincide with ls's own fd for /proc/self/fd.
  UniqueFd plain(open("/dev/null", O_RDONLY));
  ASSERT_TRUE(plain.valid());
  UniqueFd high(fcntl(plain.get(), F_DUPFD, 200));
  ASSERT_TRUE(high.valid());
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  UniqueFd pipe_r(pipe_fds[0]), pipe_w(pipe_fds[1]);

  auto r = RunSubprocess({"ls", "/proc/self/fd"});
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->exit_code, 0) << r->stderr_text;
  std::vector<std::string> fds =
      absl::StrSplit(r->stdout_text, '\n', absl::SkipEmpty());
  EXPECT_THAT(fds, Contains("0"));
  EXPECT_THAT(fds, Contains("1"));
  EXPECT_THAT(fds, Contains("2"));
  for (int fd : {plain.get(), high.get(), pipe_r.get(), pipe_w.get()}) {
    if (fd <= 3) continue;  // 3 is ls's own directory fd.
    EXPECT_THAT(fds, Not(Contains(absl::StrCat(fd)))) << "fd " << fd << " leaked";
  }
  // Only stdio and ls's own directory descriptor.
  EXPECT_LE(fds.size(), 4u) << r->stdout_text;
}

TEST(RunSubprocessTest, ExtraEnvIsPassedAlongWithTheDaemonsEnvironment) {
  ASSERT_EQ(setenv("SMOLVM_TEST_INHERITED", "from-daemon", 1), 0);
  SubprocessOptions opts;
  opts.extra_env = {"SMOLVM_TEST_EXTRA=hello world", "SMOLVM_TEST_EMPTY="};
  auto r = RunSubprocess(
      {"sh", "-c",
       "printf '%s|%s|%s' \"$SMOLVM_TEST_EXTRA\" \"$SMOLVM_TEST_INHERITED\" "
       "\"${SMOLVM_TEST_EMPTY-unset}\""},
      opts);
  unsetenv("SMOLVM_TEST_INHERITED");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stdout_text, "hello world|from-daemon|");
}

// Regression: extra_env wins over the daemon's own value of a variable.
TEST(RunSubprocessTest, ExtraEnvOverridesTheDaemonsValue) {
  ASSERT_EQ(setenv("SMOLVM_TEST_OVERRIDE", "from-daemon", 1), 0);
  SubprocessOptions opts;
  opts.extra_env = {"SMOLVM_TEST_OVERRIDE=from-extra"};
  auto printenv = RunSubprocess({"printenv", "SMOLVM_TEST_OVERRIDE"}, opts);
  auto env = RunSubprocess({"env"}, opts);
  unsetenv("SMOLVM_TEST_OVERRIDE");
  ASSERT_THAT(printenv, IsOk());
  EXPECT_EQ(printenv->stdout_text, "from-extra\n");
  ASSERT_THAT(env, IsOk());
  EXPECT_THAT(env->stdout_text, Not(HasSubstr("SMOLVM_TEST_OVERRIDE=from-daemon")));
}

TEST(RunCheckedTest, SucceedsOnZeroExit) {
  auto r = RunChecked({"sh", "-c", "echo fine"});
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stdout_text, "fine\n");
}

TEST(RunCheckedTest, NonZeroExitIsInternalWithTheStderrTail) {
  auto r = RunChecked({"sh", "-c", "echo first-line >&2; echo the-real-cause >&2; exit 4"});
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInternal, "exited with 4"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInternal, "the-real-cause"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kInternal, "sh -c"));
}

TEST(RunCheckedTest, LongStderrKeepsOnlyTheTailInTheMessage) {
  auto r = RunChecked(
      {"sh", "-c", "echo head-$((6*7)) >&2; seq 1 5000 >&2; echo tail-$((6*7)) >&2; exit 1"});
  // The markers are computed by the shell so that the message's copy of the
  // command line cannot match them.
  ASSERT_THAT(r, StatusIs(absl::StatusCode::kInternal, "tail-42"));
  EXPECT_THAT(std::string(r.status().message()), Not(HasSubstr("head-42")));
  EXPECT_LT(r.status().message().size(), 2500u);
}

TEST(RunCheckedTest, SignalIsReported) {
  EXPECT_THAT(RunChecked({"sh", "-c", "kill -KILL $$"}),
              StatusIs(absl::StatusCode::kInternal, "killed by signal 9"));
}

TEST(RunCheckedTest, PassesStartErrorsThrough) {
  EXPECT_THAT(RunChecked({"/nonexistent/smolvm-no-such-program"}),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(TailOfTest, ShortTextIsUnchanged) {
  EXPECT_EQ(TailOf("abc\ndef\n", 100), "abc\ndef\n");
  EXPECT_EQ(TailOf("", 10), "");
}

TEST(TailOfTest, StartsAtALineBoundaryWhenPossible) {
  // The last 7 bytes are "ne2\nl3\n"; the cut partial line is dropped.
  EXPECT_EQ(TailOf("line1\nline2\nl3\n", 7), "l3\n");
  // No newline to cut at: the raw tail.
  EXPECT_EQ(TailOf("abcdefghij", 4), "ghij");
  EXPECT_THAT(TailOf(std::string(100, 'x') + "\nend", 10), StartsWith("end"));
}

}  // namespace
}  // namespace smolvm
