// Unit tests of smolvmctl's pure parts (client/cli/): exit codes, "did you
// mean", the `vm exec` rewrite, YAML, completion scripts, doctor's checks
// and the egress flags.

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "client/cli/args.h"
#include "client/cli/cli_rules.h"
#include "client/cli/completion.h"
#include "client/cli/doctor.h"
#include "client/cli/yaml.h"

namespace smolvm::cli {
namespace {

using Args = std::vector<std::string>;

TEST(ExecErrorExitCodeTest, StartFailuresOfTheGuestAgentAreDistinguished) {
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError(
                "exec in guest: exec no-such: No such file or directory")),
            127);
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError(
                "exec vm box: exec in guest: exec /etc/x/y: Not a directory")),
            127);
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError(
                "exec in guest: exec /etc/passwd: Permission denied")),
            126);
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError(
                "exec in guest: chdir /nope: No such file or directory")),
            126);
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError(
                "exec in guest: exec bad: Exec format error")),
            126);
  // Agents since protocol 3 send the errno, which sets the code.
  EXPECT_EQ(ExecErrorExitCode(absl::NotFoundError(
                "exec in guest: exec no-such: No such file or directory")),
            127);
  EXPECT_EQ(ExecErrorExitCode(absl::PermissionDeniedError(
                "exec in guest: exec /etc/passwd: Permission denied")),
            126);
  EXPECT_EQ(ExecErrorExitCode(absl::InvalidArgumentError(
                "exec in guest: user \"bob\": no such user in the guest's /etc/passwd")),
            126);
}

TEST(ExecErrorExitCodeTest, EverythingElseIs125) {
  EXPECT_EQ(ExecErrorExitCode(absl::NotFoundError("get vm nope: not found")), 125);
  EXPECT_EQ(ExecErrorExitCode(absl::FailedPreconditionError("vm box is STOPPED")), 125);
  EXPECT_EQ(ExecErrorExitCode(absl::InvalidArgumentError("--env X: want NAME=VALUE")), 125);
  EXPECT_EQ(ExecErrorExitCode(absl::UnavailableError("is smolvmd running?")), 125);
  // The start-error text under another code is not the agent's.
  EXPECT_EQ(ExecErrorExitCode(absl::InternalError("exec in guest: exec x: No such file or directory")),
            125);
}

TEST(ParseEgressTest, ListsImplyTheModeAndWrongPairsAreRefused) {
  EXPECT_FALSE(ParseEgress({}).value().has_value()) << "nothing given: the daemon's default";
  auto names = ParseEgress({.allow_domains = {"pypi.org"}, .deny_domains = {"x.pypi.org"}});
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ((*names)->mode(), v1::EgressPolicy::EGRESS_RESTRICTED);
  EXPECT_EQ((*names)->allow_domains(0), "pypi.org");
  EXPECT_EQ((*names)->deny_domains(0), "x.pypi.org");
  auto deny = ParseEgress({.deny_domains = {"evil.example"}});
  ASSERT_TRUE(deny.ok());
  EXPECT_EQ((*deny)->mode(), v1::EgressPolicy::EGRESS_OPEN);
  auto open_allow = ParseEgress({.mode = "open", .allow_domains = {"pypi.org"}});
  EXPECT_TRUE(absl::StrContains(open_allow.status().message(), "--allow-domain needs"))
      << open_allow.status();
  auto off_deny = ParseEgress({.mode = "off", .deny_domains = {"a.example"}});
  EXPECT_TRUE(absl::StrContains(off_deny.status().message(), "--deny-domain does not go"))
      << off_deny.status();
  auto cidrs = ParseEgress({.mode = "restricted", .allow = {"1.2.3.4"}, .deny = {"1.2.3.4"}});
  ASSERT_TRUE(cidrs.ok());
  EXPECT_EQ((*cidrs)->allow_cidrs(0), "1.2.3.4");
  EXPECT_EQ((*cidrs)->deny_cidrs(0), "1.2.3.4");
}

TEST(ParseMountTest, HostGuestAndOptions) {
  auto plain = ParseMount("/srv/share/a:/mnt/a");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->host_path(), "/srv/share/a");
  EXPECT_EQ(plain->guest_path(), "/mnt/a");
  EXPECT_FALSE(plain->read_only());
  EXPECT_FALSE(plain->detach_on_snapshot());
  auto opts = ParseMount("/srv/b:/b:ro,detach");
  ASSERT_TRUE(opts.ok()) << opts.status();
  EXPECT_TRUE(opts->read_only());
  EXPECT_TRUE(opts->detach_on_snapshot());
  for (const char* bad : {"/srv/b", ":/b", "/srv/b:", "/a:/b:c:d", "/a:/b:rx"}) {
    auto r = ParseMount(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(absl::StrContains(r.status().message(), "HOST_DIR:GUEST_DIR")) << r.status();
  }
}

TEST(SuggestTest, NearestCloseCandidate) {
  const std::vector<std::string> vm = {"create", "start", "stop", "delete", "rm", "list", "ls",
                                       "exec"};
  EXPECT_EQ(Suggest("lst", vm), "list");
  EXPECT_EQ(Suggest("delet", vm), "delete");
  EXPECT_EQ(Suggest("exce", vm), "exec");  // A transposition is one edit.
  EXPECT_EQ(Suggest("remove", vm), "");
  EXPECT_EQ(Suggest("", vm), "");
  const std::vector<std::string> top = {"vm", "snapshot", "file", "image", "pool", "--version"};
  EXPECT_EQ(Suggest("version", top), "--version");
  EXPECT_EQ(Suggest("snap", top), "snapshot");  // A unique prefix.
  EXPECT_EQ(Suggest("snapshots", top), "snapshot");
  EXPECT_EQ(Suggest("x", top), "");  // One letter is never "close".
}

TEST(EditDistanceTest, Basics) {
  EXPECT_EQ(EditDistance("", "abc"), 3u);
  EXPECT_EQ(EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(EditDistance("ab", "ba"), 1u);
}

bool TakesValue(const std::string& flag) {
  return flag == "--env" || flag == "-e" || flag == "--socket" || flag == "--cwd" ||
         flag == "--timeout";
}

Args Rewrite(const Args& args) {
  return InsertCommandSeparator(args, {"vm", "exec"}, 1, TakesValue);
}

TEST(InsertCommandSeparatorTest, CommandAfterTheIdGetsItsSeparator) {
  EXPECT_EQ(Rewrite({"vm", "exec", "box", "uname", "-a"}),
            (Args{"vm", "exec", "box", "--", "uname", "-a"}));
  EXPECT_EQ(Rewrite({"--socket", "/s", "vm", "exec", "--env", "A=1", "box", "--cwd", "/tmp", "ls",
                     "--json"}),
            (Args{"--socket", "/s", "vm", "exec", "--env", "A=1", "box", "--cwd", "/tmp", "--",
                  "ls", "--json"}));
  EXPECT_EQ(Rewrite({"vm", "exec", "--env=A=1", "-eB=2", "--stdin", "box", "cat"}),
            (Args{"vm", "exec", "--env=A=1", "-eB=2", "--stdin", "box", "--", "cat"}));
}

TEST(InsertCommandSeparatorTest, LeavesOtherCommandLinesAlone) {
  const std::vector<Args> unchanged = {
      {"vm", "exec", "box", "--", "uname", "-a"},
      {"vm", "exec", "box"},
      {"vm", "list"},
      {"snapshot", "create", "exec", "x"},
      {"vm", "exec", "--", "box", "ls"},
  };
  for (const Args& args : unchanged) EXPECT_EQ(Rewrite(args), args);
}

TEST(ToYamlTest, ObjectsArraysAndScalars) {
  const auto value = nlohmann::ordered_json::parse(R"({
    "vm_id": "box", "vcpus": 2, "ok": true, "none": null,
    "config": {"env": {"A": "1"}, "forwards": [], "egress": {}},
    "list": [{"a": "x", "b": [1, 2]}, "plain", ["nested"]]
  })");
  EXPECT_EQ(ToYaml(value),
            "vm_id: box\n"
            "vcpus: 2\n"
            "ok: true\n"
            "none: null\n"
            "config:\n"
            "  env:\n"
            "    A: \"1\"\n"
            "  forwards: []\n"
            "  egress: {}\n"
            "list:\n"
            "  - a: x\n"
            "    b:\n"
            "      - 1\n"
            "      - 2\n"
            "  - plain\n"
            "  - - nested\n");
}

TEST(ToYamlTest, QuotesWhatWouldReadAsSomethingElse) {
  for (const std::string& s : {"", "true", "no", "null", "12", "1.5", "-x", "a: b", "# c",
                               "x #y", "line\nbreak", "tab\there", " lead", "trail:", "*ref",
                               "\x1b[31m"}) {
    const std::string yaml = ToYaml(nlohmann::ordered_json{{"k", s}});
    EXPECT_TRUE(absl::StartsWith(yaml, "k: \"")) << s << " -> " << yaml;
  }
  for (const std::string& s : {"box", "RUNNING", "10.0.0.2", "2024-05-01T12:00:00Z",
                               "/var/lib/smolvmd", "sha256:abc", "héllo"}) {
    EXPECT_EQ(ToYaml(nlohmann::ordered_json{{"k", s}}), "k: " + s + "\n") << s;
  }
  EXPECT_EQ(ToYaml(nlohmann::ordered_json::array()), "[]\n");
  EXPECT_EQ(ToYaml(nlohmann::ordered_json::object()), "{}\n");
}

TEST(CompletionTest, ListsSubcommandsAliasesAndFlagsPerLevel) {
  CLI::App app("test", "smolvmctl");
  std::string socket, id;
  bool quiet = false;
  app.add_option("--socket", socket);
  CLI::App* vm = app.add_subcommand("vm");
  vm->add_subcommand("list")->alias("ls")->add_flag("-q,--quiet", quiet);
  vm->add_subcommand("get")->add_option("ID", id);
  const std::string bash = BashCompletion(app);
  EXPECT_TRUE(absl::StrContains(bash, "complete -o default -F _smolvmctl smolvmctl\n")) << bash;
  EXPECT_TRUE(absl::StrContains(bash, "\"\") words=\"vm --help --socket\"")) << bash;
  EXPECT_TRUE(absl::StrContains(bash, "\" vm\") words=\"list ls get --help --socket\"")) << bash;
  EXPECT_TRUE(absl::StrContains(bash, "\" vm ls\") words=\"--help --socket --quiet\""))
      << bash;
  EXPECT_TRUE(absl::StrContains(bash, "\" vm\"|\" vm list\"|\" vm ls\"|\" vm get\")")) << bash;
  const std::string zsh = ZshCompletion(app);
  EXPECT_TRUE(absl::StrContains(zsh, "bashcompinit")) << zsh;
  EXPECT_TRUE(absl::StrContains(zsh, bash));
  // bash itself accepts the script.
  const std::string path = ::testing::TempDir() + "/completion.bash";
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs(bash.c_str(), f);
  fclose(f);
  EXPECT_EQ(std::system(("bash -n " + path).c_str()), 0);
}

TEST(DoctorTest, ReportsWhatIsMissingWithAFix) {
  const std::string root = ::testing::TempDir() + "/doctor-" + std::to_string(getpid());
  ASSERT_EQ(mkdir(root.c_str(), 0700), 0);
  DoctorPaths paths;
  paths.dev_kvm = root + "/kvm";  // Missing.
  paths.sys_module = root + "/module";
  paths.cgroup_root = root;  // Not a cgroup2 mount.
  paths.state_dir = root + "/state/not/yet";
  paths.socket = root + "/smolvmd.sock";  // Missing.
  bool pinged = false;
  const std::vector<CheckResult> checks = RunDoctorChecks(paths, [&] {
    pinged = true;
    return absl::OkStatus();
  });
  EXPECT_FALSE(pinged);  // No socket, no call.
  std::map<std::string, CheckResult> by_name;
  for (const CheckResult& c : checks) by_name[c.name] = c;
  EXPECT_EQ(by_name["kvm"].level, CheckLevel::kWarn);
  EXPECT_TRUE(absl::StrContains(by_name["kvm"].detail, "tcg")) << by_name["kvm"].detail;
  EXPECT_EQ(by_name["socket"].level, CheckLevel::kFail);
  EXPECT_TRUE(absl::StrContains(by_name["socket"].fix, "start smolvmd"));
  EXPECT_EQ(by_name["bridge"].level, CheckLevel::kWarn);
  EXPECT_EQ(by_name["cgroups"].level, CheckLevel::kWarn);
  EXPECT_TRUE(absl::StrContains(by_name["disk"].detail, "free for " + paths.state_dir));
  ASSERT_TRUE(by_name.count("nftables"));

  const std::string text = RenderChecks(checks);
  EXPECT_TRUE(absl::StrContains(text, "FAIL  socket")) << text;
  EXPECT_TRUE(absl::StrContains(text, "      fix: start smolvmd")) << text;
  const nlohmann::ordered_json json = ChecksToJson(checks);
  ASSERT_EQ(json.size(), checks.size());
  EXPECT_EQ(json[1]["check"], "socket");
  EXPECT_EQ(json[1]["status"], "fail");
  rmdir(root.c_str());
}

}  // namespace
}  // namespace smolvm::cli
