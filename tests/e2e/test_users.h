// File: test_users.h
//
// TestUsers creates real local users for end-to-end tests of the daemon's
// identity checks (SO_PEERCRED): a group with a unique per-run name
// ("svg-<6 hex>", for the socket), a second one ("sva-<6 hex>", for
// admins) and users "svu-<6 hex>-<n>" (system users, no home, no login
// shell): members of the first group, admins (members of both) and
// outsiders (of neither). Its destructor deletes exactly those users and
// groups, also when the test failed. It never touches any other user or
// group.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace smolvm::testing {

struct TestUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;  // Its primary (private) group.
};

class TestUsers {
 public:
  // `members` users in group(), then `admins` users in group() and
  // admin_group(), then `outsiders` users in neither.
  static absl::StatusOr<std::unique_ptr<TestUsers>> Create(int members, int outsiders,
                                                           int admins = 0);
  ~TestUsers();
  TestUsers(const TestUsers&) = delete;
  TestUsers& operator=(const TestUsers&) = delete;

  const std::string& group() const { return group_; }
  gid_t group_gid() const { return group_gid_; }
  const std::string& admin_group() const { return admin_group_; }
  // Members first (0 .. members-1), then admins, then outsiders.
  const TestUser& user(size_t i) const { return users_.at(i); }
  size_t size() const { return users_.size(); }

 private:
  TestUsers() = default;
  std::string group_, admin_group_;
  gid_t group_gid_ = 0;
  std::vector<std::string> groups_created_;  // Only groups this object created.
  std::vector<TestUser> users_;              // Only users this object created.
};

}  // namespace smolvm::testing
