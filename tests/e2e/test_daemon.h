// File: test_daemon.h
//
// TestDaemon runs the real smolvmd binary on a private temp dir (state dir,
// run dir, socket) for end-to-end tests, and cleans up after it: on
// destruction it stops the daemon, ends every QEMU process whose command
// line points into its temp dir (the VMs this test created, found by pid),
// and removes the temp dir. The guest kernel is shared between tests via
// $SMOLVM_TEST_KERNEL_DIR (scripts/test.sh fetches it once).
//
// Networking never touches the machine's real network: the daemon runs in
// its own network namespace ("host", NetnsHost()) whose only uplink is a
// veth (up0, 198.51.100.1/24) into a second namespace playing the internet
// (NetnsInternet(): 198.51.100.2 and 203.0.113.5, each serving HTTP on port
// 8080 from InternetWwwDir()). Both namespaces, and with them the bridge,
// TAPs and nft tables the daemon made, are deleted with the TestDaemon.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/smolvm.h"

namespace smolvm::testing {

class TestDaemon {
 public:
  TestDaemon();  // Creates the temp dir; does not start the daemon.
  ~TestDaemon();
  TestDaemon(const TestDaemon&) = delete;
  TestDaemon& operator=(const TestDaemon&) = delete;

  // Starts smolvmd with `extra_args` and waits until it answers ListVms.
  absl::Status Start(const std::vector<std::string>& extra_args = {});
  // SIGTERM, then waits for the exit (SIGKILL after 20 s). Returns the exit
  // status as waitpid reports it.
  int Stop();
  // SIGKILL: a daemon crash, with no chance to clean up.
  void Crash();
  bool running() const { return pid_ > 0; }

  ClientOptions client_options() const;
  const std::string& dir() const { return dir_; }
  std::string state_dir() const { return dir_ + "/st"; }
  std::string run_dir() const { return dir_ + "/r"; }
  std::string socket_path() const { return dir_ + "/smolvmd.sock"; }
  std::string log_path() const { return dir_ + "/smolvmd.log"; }
  std::string ConsoleLog(const std::string& vm_id) const;
  std::string DaemonLog() const;

  const std::string& NetnsHost() const { return netns_host_; }
  const std::string& NetnsInternet() const { return netns_inet_; }
  std::string InternetWwwDir() const { return dir_ + "/www"; }
  static constexpr char kInternetIp[] = "198.51.100.2";
  static constexpr char kOtherInternetIp[] = "203.0.113.5";
  static constexpr char kHostUplinkIp[] = "198.51.100.1";
  static constexpr char kSubnet[] = "10.123.0.0/24";
  // Runs a shell command inside namespace `netns`; returns its exit code and
  // output (stdout and stderr).
  std::pair<int, std::string> InNetns(const std::string& netns, const std::string& cmd) const;

  // Pids of QEMU processes belonging to this daemon's VMs.
  std::vector<pid_t> QemuPids() const;

 private:
  absl::Status SetUpNetwork();
  void TearDownNetwork();

  std::string dir_;
  std::string netns_host_, netns_inet_;
  bool network_ready_ = false;
  std::vector<pid_t> servers_;
  pid_t pid_ = -1;
  std::vector<std::string> last_args_;
};

// Reads a whole file ("" if missing).
std::string ReadAll(const std::string& path);

}  // namespace smolvm::testing
