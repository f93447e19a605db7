// File: test_users.h
//
// TestUsers creates real local users for end-to-end tests of the daemon's
// identity checks (SO_PEERCRED): one group with a unique per-run name
// ("svg-<6 hex>") and users "svu-<6 hex>-<n>" (system users, no home, no
// login shell), some of them members of the group and some not. Its
// destructor deletes exactly those users and the group, also when the test
// failed. It never touches any other user or group.
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
  // `members` users in the new group, then `outsiders` users that are not.
  static absl::StatusOr<std::unique_ptr<TestUsers>> Create(int members, int outsiders);
  ~TestUsers();
  TestUsers(const TestUsers&) = delete;
  TestUsers& operator=(const TestUsers&) = delete;

  const std::string& group() const { return group_; }
  gid_t group_gid() const { return group_gid_; }
  // Members first (0 .. members-1), then outsiders.
  const TestUser& user(size_t i) const { return users_.at(i); }
  size_t size() const { return users_.size(); }

 private:
  TestUsers() = default;
  std::string group_;
  gid_t group_gid_ = 0;
  bool group_created_ = false;
  std::vector<TestUser> users_;  // Only users this object created.
};

}  // namespace smolvm::testing
