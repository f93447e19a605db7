// File: netns_for_testing.h
//
// ScopedNetns: a throwaway network namespace ("svn-" + random hex) for tests
// of code that changes links, addresses, sysctls or nft rules, so that they
// never touch the machine's own network. The namespace (and with it every
// link and nft table inside) is deleted when the object goes away, also when
// the test fails. Needs root and iproute2.
#pragma once

#include <unistd.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "lib/base/subprocess.h"

namespace smolvm::net {

class ScopedNetns {
 public:
  // Creates the namespace and sets its loopback up.
  static absl::StatusOr<std::unique_ptr<ScopedNetns>> Create() {
    std::random_device random;
    std::string name = absl::StrFormat("svn-%08x", random());
    auto added = RunChecked({"ip", "netns", "add", name});
    if (!added.ok()) return added.status();
    auto netns = std::unique_ptr<ScopedNetns>(new ScopedNetns(name));
    if (auto up = netns->Exec({"ip", "link", "set", "lo", "up"}); !up.ok()) return up.status();
    return netns;
  }

  // Why these tests cannot run here, or "" if they can.
  static std::string MissingPrerequisite() {
    if (geteuid() != 0) return "needs root (network namespaces)";
    for (const char* tool : {"ip", "bridge", "nft", "sysctl"}) {
      auto found = RunSubprocess({"sh", "-c", absl::StrCat("command -v ", tool)});
      if (!found.ok() || found->exit_code != 0) return absl::StrCat("needs ", tool);
    }
    return "";
  }

  ~ScopedNetns() {
    auto deleted = RunChecked({"ip", "netns", "del", name_});
    EXPECT_TRUE(deleted.ok()) << "delete netns " << name_ << ": " << deleted.status();
  }
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;

  const std::string& name() const { return name_; }
  // For the backends' command_prefix.
  std::vector<std::string> prefix() const { return {"ip", "netns", "exec", name_}; }

  // Runs argv inside the namespace; returns its stdout.
  absl::StatusOr<std::string> Exec(const std::vector<std::string>& argv) const {
    std::vector<std::string> full = prefix();
    full.insert(full.end(), argv.begin(), argv.end());
    auto result = RunChecked(full);
    if (!result.ok()) return result.status();
    return result->stdout_text;
  }

 private:
  explicit ScopedNetns(std::string name) : name_(std::move(name)) {}
  std::string name_;
};

}  // namespace smolvm::net
