#include "tests/e2e/test_users.h"

#include <grp.h>
#include <pwd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/e2e/process.h"

namespace smolvm::testing {
namespace {

std::string RandomTag() {
  unsigned char bytes[3] = {0, 0, 0};
  std::ifstream("/dev/urandom", std::ios::binary).read(reinterpret_cast<char*>(bytes), 3);
  return absl::StrFormat("%02x%02x%02x", bytes[0], bytes[1], bytes[2]);
}

// useradd/groupadd/userdel fail at once when another process holds the
// /etc/passwd lock (other tests may be creating users too): retry a while.
ProcResult RunRetrying(const std::vector<std::string>& argv) {
  ProcResult r;
  for (int attempt = 0; attempt < 25; ++attempt) {
    r = RunProcess(argv);
    if (r.exit_code == 0) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return r;
}

}  // namespace

absl::StatusOr<std::unique_ptr<TestUsers>> TestUsers::Create(int members, int outsiders,
                                                             int admins) {
  std::unique_ptr<TestUsers> users(new TestUsers());
  const std::string tag = RandomTag();
  users->group_ = "svg-" + tag;
  users->admin_group_ = "sva-" + tag;
  for (const std::string& name : {users->group_, users->admin_group_}) {
    ProcResult r = RunRetrying({"groupadd", "--system", name});
    if (r.exit_code != 0) return absl::InternalError("groupadd: " + r.Describe());
    users->groups_created_.push_back(name);
  }
  if (struct group* g = getgrnam(users->group_.c_str()); g != nullptr) {
    users->group_gid_ = g->gr_gid;
  } else {
    return absl::InternalError("group " + users->group_ + " vanished");
  }
  for (int i = 0; i < members + admins + outsiders; ++i) {
    TestUser user;
    user.name = absl::StrCat("svu-", tag, "-", i);
    std::vector<std::string> argv = {"useradd", "--system", "--no-create-home", "--shell",
                                     "/usr/sbin/nologin"};
    if (i < members) {
      argv.insert(argv.end(), {"-G", users->group_});
    } else if (i < members + admins) {
      argv.insert(argv.end(), {"-G", users->group_ + "," + users->admin_group_});
    }
    argv.push_back(user.name);
    ProcResult r = RunRetrying(argv);
    if (r.exit_code != 0) return absl::InternalError("useradd: " + r.Describe());
    struct passwd* pw = getpwnam(user.name.c_str());
    if (pw == nullptr) {
      // Created but not visible: still ours to delete.
      users->users_.push_back(user);
      return absl::InternalError("user " + user.name + " vanished");
    }
    user.uid = pw->pw_uid;
    user.gid = pw->pw_gid;
    users->users_.push_back(user);
  }
  return users;
}

TestUsers::~TestUsers() {
  // userdel also removes each user's private group.
  for (const TestUser& user : users_) RunRetrying({"userdel", user.name});
  for (const std::string& group : groups_created_) RunRetrying({"groupdel", group});
}

}  // namespace smolvm::testing
