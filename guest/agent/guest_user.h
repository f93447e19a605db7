// File: guest_user.h
//
// The guest user an exec or file operation runs as (agent protocol 3,
// ExecStart.user): resolved from the guest's own /etc/passwd and /etc/group
// (the agent is static; glibc's NSS cannot be used), then applied with raw
// system calls.
//
// Why raw calls: glibc's setuid()/setgroups() change every thread of the
// process, while a file operation runs on its own agent thread and must
// change only that thread (the kernel keeps credentials per thread). The
// same calls are async-signal-safe, so a forked child uses them too before
// execve.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace smolvm::guest {

struct GuestUser {
  std::string name;   // "" for a uid without a passwd entry
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary, from /etc/group (with gid)
  std::string home = "/root";

  bool is_root() const { return uid == 0; }
};

// Resolves `spec`: "" (root), a user name, or a decimal uid, from
// `etc_dir`/passwd and `etc_dir`/group. A uid without an entry gets gid =
// uid, no name and home "/". False with `error` ("user \"bob\": no such user
// in /etc/passwd") for an unknown name or a malformed spec.
bool ResolveUser(const std::string& spec, GuestUser* out, std::string* error,
                 const std::string& etc_dir = "/etc");

// Switches the calling thread to `user` for good: supplementary groups,
// then gid, then uid (real, effective and saved). Returns 0 or the errno of
// the call that failed. Async-signal-safe. A no-op for root.
int SwitchThreadToUser(const GuestUser& user);

// The absolute path `path` names for `user` (agent protocol 4, FsRequest
// and FsWatch): an absolute path as is, a relative one under the user's
// home, "" the home itself. Normalized lexically: no empty or "."
// components and no trailing slash ("/" stays "/"). ".." is kept, as it
// cannot be resolved lexically across symlinks.
std::string PathFromHome(const GuestUser& user, const std::string& path);

// USER, LOGNAME (when the user has a name) and HOME of `user`, as
// "KEY=VALUE" overrides for BuildEnv.
std::vector<std::pair<std::string, std::string>> UserEnv(const GuestUser& user);

}  // namespace smolvm::guest
