// File: test_daemon.h
//
// TestDaemon runs the real smolvmd binary on a private temp dir (state dir,
// run dir, socket) for end-to-end tests, and cleans up after it: on
// destruction it stops the daemon, ends every QEMU process whose command
// line points into its temp dir (the VMs this test created, found by pid),
// and removes the temp dir. The guest kernel is shared between tests via
// $SMOLVM_TEST_KERNEL_DIR (scripts/test.sh fetches it once).
// $SMOLVM_TEST_SMOLVMD, if set, is the smolvmd binary to run instead of the
// one built with the tests (scripts/sanitize.sh: a sanitizer build's).
//
// Access: the daemon gets `--socket-group root` unless the test names its
// own group, and the temp dir is traversable (0711) so that users a test
// creates (test_users.h) can reach the socket; the daemon makes its state
// dir 0700 itself. Ctl() runs smolvmctl, as root or as such a user.
//
// Networking never touches the machine's real network: the daemon runs in
// its own network namespace ("host", NetnsHost()) whose only uplink is a
// veth (up0, 198.51.100.1/24) into a second namespace playing the internet
// (NetnsInternet()). That namespace answers HTTP on port 8080 (files from
// InternetWwwDir()) on every address it has:
//   - 203.0.113.5 and 203.0.113.6 (kInternetIp, kOtherInternetIp): the
//     internet, routed through the host's default route;
//   - 198.51.100.2 (kLanHostIp): a host on the host namespace's LAN (the
//     uplink's directly connected subnet), also its default gateway;
//   - 169.254.169.254 (kMetadataIp): a cloud metadata service, routed.
// Guests with default (open) egress reach only the first kind. Both
// namespaces, and with them the bridge, TAPs, nft tables and iptables rules
// made inside, are deleted with the TestDaemon.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/smolvm.h"
#include "tests/e2e/process.h"

namespace smolvm::testing {

// A local user to run a command as (setpriv --reuid/--regid --init-groups:
// the user's supplementary groups from /etc/group).
struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
};

class TestDaemon {
 public:
  TestDaemon();  // Creates the temp dir; does not start the daemon.
  ~TestDaemon();
  TestDaemon(const TestDaemon&) = delete;
  TestDaemon& operator=(const TestDaemon&) = delete;

  // Starts smolvmd with `extra_args` and waits until it answers ListVms.
  // A non-empty `config_toml` is written to config_path() and passed with
  // --config. "--socket-group root" is added unless `extra_args` has a
  // --socket-group.
  absl::Status Start(const std::vector<std::string>& extra_args = {},
                     const std::string& config_toml = "");
  // SIGTERM, then waits for the exit (SIGKILL after 20 s). Returns the exit
  // status as waitpid reports it.
  int Stop();
  // SIGKILL: a daemon crash, with no chance to clean up.
  void Crash();
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  // Creates the two namespaces now (Start does it otherwise), e.g. to put
  // firewall rules into the host namespace before the daemon starts.
  absl::Status PrepareNetwork();

  ClientOptions client_options() const;
  const std::string& dir() const { return dir_; }
  // A short unique tag of this run (the temp dir's suffix).
  std::string tag() const { return dir_.substr(dir_.size() - 6); }
  std::string state_dir() const { return dir_ + "/st"; }
  std::string run_dir() const { return dir_ + "/r"; }
  std::string socket_path() const { return dir_ + "/smolvmd.sock"; }
  std::string log_path() const { return dir_ + "/smolvmd.log"; }
  std::string config_path() const { return dir_ + "/smolvmd.toml"; }
  std::string ConsoleLog(const std::string& vm_id) const;
  std::string DaemonLog() const;

  const std::string& NetnsHost() const { return netns_host_; }
  const std::string& NetnsInternet() const { return netns_inet_; }
  std::string InternetWwwDir() const { return dir_ + "/www"; }
  static constexpr char kInternetIp[] = "203.0.113.5";
  static constexpr char kOtherInternetIp[] = "203.0.113.6";
  static constexpr char kLanHostIp[] = "198.51.100.2";
  static constexpr char kMetadataIp[] = "169.254.169.254";
  static constexpr char kHostUplinkIp[] = "198.51.100.1";
  static constexpr char kSubnet[] = "10.123.0.0/24";
  // Runs a shell command inside namespace `netns`; returns its exit code and
  // output (stdout and stderr).
  std::pair<int, std::string> InNetns(const std::string& netns, const std::string& cmd) const;

  // Runs smolvmctl --socket <ours> --json `args`, as root or as `as`.
  ProcResult Ctl(const std::vector<std::string>& args,
                 std::optional<RunAs> as = std::nullopt) const;
  // Runs smolvmctl `args` (no --socket, no --json added) inside the host
  // namespace, as root or as `as`, with `env` added to the environment:
  // for TCP endpoints, which live in that namespace.
  ProcResult CtlInHostNetns(const std::vector<std::string>& args,
                            std::optional<RunAs> as = std::nullopt,
                            const std::vector<std::string>& env = {}) const;
  // Runs any program `argv` in the host namespace, as root or as `as`.
  ProcResult RunInHostNetns(const std::vector<std::string>& argv,
                            std::optional<RunAs> as = std::nullopt,
                            const std::vector<std::string>& env = {}) const;

  // Runs this daemon in `other`'s namespaces, as a second smolvmd on the
  // same host: Start it with its own --instance and --subnet. `other` owns
  // the namespaces and must outlive this one.
  void ShareNetworkOf(const TestDaemon& other);
  // The daemon's --cgroup-parent (one per test daemon) and its directories
  // in the host's cgroup hierarchies.
  std::string CgroupParent() const;
  std::vector<std::string> CgroupDirs() const;
  // Pids of QEMU processes belonging to this daemon's VMs.
  std::vector<pid_t> QemuPids() const;

 private:
  void RemoveCgroups() const;
  absl::Status SetUpNetwork();
  void TearDownNetwork();

  std::string dir_;
  std::string netns_host_, netns_inet_;
  bool network_ready_ = false;
  bool shared_network_ = false;  // Another TestDaemon's namespaces (it owns them).
  std::vector<pid_t> servers_;
  pid_t pid_ = -1;
  std::vector<std::string> last_args_;
};

// The smolvmctl binary the harness runs.
std::string SmolvmctlPath();

// The argv prefix that runs a command as `as` ({} for root).
std::vector<std::string> AsUser(std::optional<RunAs> as);

// Reads a whole file ("" if missing).
std::string ReadAll(const std::string& path);

}  // namespace smolvm::testing
