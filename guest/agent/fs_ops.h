// File: fs_ops.h
//
// FsRequest (agent protocol 4): one filesystem call (stat, list, mkdir,
// remove, rename), run as the request's user on its own agent thread and
// answered by exactly one FsReply.
//
// Paths are absolute or relative to the user's home (PathFromHome). STAT,
// LIST and REMOVE never follow a symlink: a link is reported or removed,
// not its target. Errors name the call and the path ("lstat /x/y: No such
// file or directory") and carry the errno (FsReply.error_errno).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "guest/agent/channel.h"
#include "guest/agent/guest_user.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// LIST limits: the reply must fit in one frame (at most 1 MiB).
inline constexpr uint32_t kMaxListDepth = 32;
inline constexpr size_t kMaxListEntries = 10000;
inline constexpr size_t kMaxListBytes = size_t{768} << 10;  // summed FsEntry sizes
// Levels a recursive REMOVE descends (one open fd each): deeper is ELOOP.
inline constexpr int kMaxRemoveDepth = 256;

// Runs `request` on the calling thread (which it switches to the request's
// user for good: call it on a thread of its own) and sends one FsReply.
void RunFsRequest(Channel* channel, const agent::v1::FsRequest& request);

// Why a filesystem call failed: text naming the call and the path, and the
// errno of the call (EINVAL for a request that can never work).
struct FsError {
  std::string text;  // "" = success.
  int errnum = 0;
  bool failed() const { return !text.empty(); }
};

// "OP PATH: strerror(error)", error.
FsError FsErrnoError(const std::string& op, const std::string& path, int error);

// Resolves `user_spec` (ExecStart.user's rules) into *user and switches the
// calling thread to it for good. An unknown user is EINVAL.
FsError BecomeFsUser(const std::string& user_spec, GuestUser* user);

// The absolute, normalized path `path` names for `user` (PathFromHome) in
// *out; EINVAL (error "OP PATH: ...") for a path containing a NUL byte.
FsError ResolveFsPath(const GuestUser& user, const std::string& op, const std::string& path,
                      std::string* out);

}  // namespace smolvm::guest
