// File: fs_watch.h
//
// FsWatch (agent protocol 4): reports changes under a directory as FsEvents,
// with inotify, as the watch's user, on the watch's own agent thread.
//
// Events: CREATE (IN_CREATE; also moved in from outside the watched tree),
// MODIFY (IN_CLOSE_WRITE: a file written and closed), DELETE (IN_DELETE;
// also moved out), RENAME (IN_MOVED_FROM + IN_MOVED_TO with one cookie, both
// in the tree), CHMOD (IN_ATTRIB), OVERFLOW (IN_Q_OVERFLOW, or the directory
// limit below). Events about a watched directory itself are reported by its
// parent's watch; the root's own metadata changes are CHMOD of the root, and
// the root disappearing ends the watch with ERROR (ENOENT). A moved root
// keeps being watched under its old path.
//
// Recursive watches cover every directory under the root, also those made
// or moved in later, up to kMaxWatchedDirs. When a directory appears, its
// watch is added and then its contents are scanned and reported as CREATE,
// since they may have been made before the watch was in place; a CREATE may
// therefore be reported twice. At the limit (or at the kernel's
// max_user_watches) the watch goes on with what is watched and reports one
// OVERFLOW naming the first directory left out (again once some watched
// directory has gone): changes there are lost, as in a queue overflow.
//
// Events are sent as they come. A slow host blocks Channel::Send; the
// kernel's inotify queue then fills and overflows (an OVERFLOW event), which
// bounds the memory used.
#pragma once

#include <cstddef>

#include "guest/agent/channel.h"
#include "guest/agent/op_input.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

inline constexpr size_t kMaxWatchedDirs = 4096;

// Runs the watch until `stop` is cancelled (ExecCancel, host disconnected)
// or the watch fails. Sends WATCHING once the watch is in place, or one
// ERROR and nothing else if it cannot be set up. Once `stop` is cancelled no
// further event is sent. Only stop->cancelled() and stop->wake_fd() are
// used. Switches the calling thread to the watch's user for good: call it
// on a thread of its own.
void RunWatch(Channel* channel, const agent::v1::FsWatch& request, OpInput* stop);

}  // namespace smolvm::guest
