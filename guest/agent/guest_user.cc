#include "guest/agent/guest_user.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>

namespace smolvm::guest {
namespace {

std::vector<std::string> SplitFields(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t colon = line.find(':', start);
    out.push_back(line.substr(start, colon == std::string::npos ? std::string::npos
                                                                 : colon - start));
    if (colon == std::string::npos) return out;
    start = colon + 1;
  }
}

// A decimal id below 2^31 (uid_t values the kernel accepts from anyone).
bool ParseId(const std::string& text, uint32_t* out) {
  if (text.empty() || text.size() > 10) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > 0x7fffffff) return false;
  *out = static_cast<uint32_t>(value);
  return true;
}

// The passwd entry whose name (by_name) or uid matches; false if none.
bool FindPasswd(const std::string& etc_dir, const std::string& name, bool by_name, uint32_t uid,
                GuestUser* out) {
  std::ifstream in(etc_dir + "/passwd");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = SplitFields(line);
    if (f.size() < 7) continue;
    uint32_t entry_uid, entry_gid;
    if (!ParseId(f[2], &entry_uid) || !ParseId(f[3], &entry_gid)) continue;
    if (by_name ? f[0] != name : entry_uid != uid) continue;
    out->name = f[0];
    out->uid = entry_uid;
    out->gid = entry_gid;
    out->home = f[5].empty() ? "/" : f[5];
    return true;
  }
  return false;
}

// The user's primary group and every group of /etc/group listing its name.
void FindGroups(const std::string& etc_dir, GuestUser* user) {
  user->groups = {user->gid};
  if (user->name.empty()) return;
  std::ifstream in(etc_dir + "/group");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = SplitFields(line);
    uint32_t gid;
    if (f.size() < 4 || !ParseId(f[2], &gid)) continue;
    if (gid == user->gid) continue;
    std::istringstream members(f[3]);
    std::string member;
    while (std::getline(members, member, ',')) {
      if (member == user->name) {
        user->groups.push_back(gid);
        break;
      }
    }
  }
}

}  // namespace

bool ResolveUser(const std::string& spec, GuestUser* out, std::string* error,
                 const std::string& etc_dir) {
  GuestUser user;
  if (spec.empty() || spec == "root" || spec == "0") {
    user.name = "root";
    FindPasswd(etc_dir, "", false, 0, &user);  // root's home as the image says
    user.groups = {0};
    *out = user;
    return true;
  }
  uint32_t uid;
  if (ParseId(spec, &uid)) {
    if (!FindPasswd(etc_dir, "", false, uid, &user)) {
      user.uid = uid;
      user.gid = uid;
      user.home = "/";
    }
  } else if (!FindPasswd(etc_dir, spec, true, 0, &user)) {
    *error = "user \"" + spec + "\": no such user in the guest's /etc/passwd";
    return false;
  }
  FindGroups(etc_dir, &user);
  *out = std::move(user);
  return true;
}

int SwitchThreadToUser(const GuestUser& user) {
  if (user.is_root()) return 0;
  if (syscall(SYS_setgroups, user.groups.size(), user.groups.data()) != 0) return errno;
  if (syscall(SYS_setresgid, user.gid, user.gid, user.gid) != 0) return errno;
  if (syscall(SYS_setresuid, user.uid, user.uid, user.uid) != 0) return errno;
  return 0;
}

std::string PathFromHome(const GuestUser& user, const std::string& path) {
  std::string joined;
  if (!path.empty() && path[0] == '/') {
    joined = path;
  } else if (path.empty()) {
    joined = user.home;
  } else {
    joined = user.home + "/" + path;
  }
  std::string out;
  size_t start = 0;
  while (start <= joined.size()) {
    size_t slash = joined.find('/', start);
    if (slash == std::string::npos) slash = joined.size();
    std::string_view part(joined.data() + start, slash - start);
    if (!part.empty() && part != ".") {
      out += '/';
      out += part;
    }
    start = slash + 1;
  }
  return out.empty() ? "/" : out;
}

std::vector<std::pair<std::string, std::string>> UserEnv(const GuestUser& user) {
  std::vector<std::pair<std::string, std::string>> env = {{"HOME", user.home}};
  if (!user.name.empty()) {
    env.emplace_back("USER", user.name);
    env.emplace_back("LOGNAME", user.name);
  }
  return env;
}

}  // namespace smolvm::guest
