#include "guest/agent/fs_watch.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "guest/agent/fs_ops.h"
#include "guest/agent/guest_user.h"
#include "lib/base/unique_fd.h"

namespace smolvm::guest {
namespace {

using agent::v1::Frame;
using agent::v1::FsEvent;

constexpr uint32_t kDirMask = IN_CREATE | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM |
                              IN_MOVED_TO | IN_ATTRIB | IN_ONLYDIR | IN_DONT_FOLLOW |
                              IN_EXCL_UNLINK;

// How long an IN_MOVED_FROM waits for its IN_MOVED_TO. The kernel queues
// the two back to back, so the partner is normally already there (possibly
// in the next read); after this the move counts as out of the tree.
constexpr int kMovePairWaitMs = 10;

std::string JoinPath(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

// Whether `path` is `dir` or under it (both normalized absolute paths).
bool IsUnder(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path.size() >= dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         (path.size() == dir.size() || path[dir.size()] == '/');
}

FsEvent MakeEvent(FsEvent::Type type, const std::string& path, bool is_dir) {
  FsEvent event;
  event.set_type(type);
  event.set_path(path);
  event.set_is_dir(is_dir);
  return event;
}

class Watcher {
 public:
  Watcher(Channel* channel, const agent::v1::FsWatch& request, OpInput* stop)
      : channel_(channel), request_(request), stop_(stop) {}
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  void Run();

 private:
  struct PendingMove {
    uint32_t cookie;
    std::string path;
    bool is_dir;
  };

  // Sends `event` with this watch's id, unless the watch was stopped.
  void Send(FsEvent event);
  // Appends `event` to *deferred, or sends it if that is null.
  void Emit(FsEvent event, std::vector<FsEvent>* deferred);
  void SendError(std::string text, int errnum);
  // Adds a watch on directory `path`; false (with an OVERFLOW emitted at a
  // limit) if it cannot be watched: gone, no longer a directory,
  // unreadable, or a limit reached.
  bool AddWatch(const std::string& path, std::vector<FsEvent>* deferred);
  // Watches every directory under the watched directory `top`; with
  // `report_contents`, what is under `top` is emitted as CREATE.
  void AddSubdirs(const std::string& top, bool report_contents, std::vector<FsEvent>* deferred);
  // Stops watching `top` and what is under it (never the root).
  void RemoveTree(const std::string& top);
  // Follows a directory renamed inside the tree.
  void RenameTree(const std::string& from, const std::string& to);
  void ReportCreated(const std::string& path, bool is_dir);
  // A pending IN_MOVED_FROM without its partner: moved out, a DELETE.
  void FlushPendingMove();
  // Reads and handles what is queued; false if the watch ended.
  bool ReadEvents(char* buffer, size_t size);
  // False if the watch ended (its root is gone).
  bool HandleEvent(const struct inotify_event& ev);

  Channel* const channel_;
  const agent::v1::FsWatch& request_;
  OpInput* const stop_;
  std::string root_;
  UniqueFd inotify_;
  int root_wd_ = -1;
  std::unordered_map<int, std::string> dirs_;  // watch descriptor → directory
  bool limit_reported_ = false;  // an OVERFLOW for a directory left out was sent
  std::optional<PendingMove> pending_move_;
};

void Watcher::Send(FsEvent event) {
  if (stop_->cancelled()) return;
  Frame frame;
  *frame.mutable_fs_event() = std::move(event);
  frame.mutable_fs_event()->set_id(request_.id());
  channel_->Send(frame);
}

void Watcher::Emit(FsEvent event, std::vector<FsEvent>* deferred) {
  if (deferred != nullptr) {
    deferred->push_back(std::move(event));
  } else {
    Send(std::move(event));
  }
}

void Watcher::SendError(std::string text, int errnum) {
  FsEvent event;
  event.set_type(FsEvent::ERROR);
  event.set_path(root_.empty() ? request_.path() : root_);
  event.set_error(std::move(text));
  event.set_error_errno(errnum);
  Send(std::move(event));
}

bool Watcher::AddWatch(const std::string& path, std::vector<FsEvent>* deferred) {
  int error = ENOSPC;
  int wd = -1;
  if (dirs_.size() < kMaxWatchedDirs) {
    wd = inotify_add_watch(inotify_.get(), path.c_str(), kDirMask);
    if (wd >= 0) {
      dirs_[wd] = path;
      return true;
    }
    error = errno;
    if (error != ENOSPC) return false;  // gone, not a directory, unreadable: not watched
  }
  if (!limit_reported_) {
    limit_reported_ = true;
    FsEvent event = MakeEvent(FsEvent::OVERFLOW, path, true);
    event.set_error(dirs_.size() >= kMaxWatchedDirs
                        ? "more than " + std::to_string(kMaxWatchedDirs) +
                              " directories: " + path + " and what is under it is not watched"
                        : "inotify_add_watch " + path + ": " + std::strerror(error));
    event.set_error_errno(error);
    Emit(std::move(event), deferred);
  }
  return false;
}

void Watcher::AddSubdirs(const std::string& top, bool report_contents,
                         std::vector<FsEvent>* deferred) {
  std::deque<std::string> queue = {top};
  while (!queue.empty() && !stop_->cancelled()) {
    const std::string dir_path = std::move(queue.front());
    queue.pop_front();
    int fd = open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) continue;
    DIR* dir = fdopendir(fd);
    if (dir == nullptr) {
      close(fd);
      continue;
    }
    std::vector<std::pair<std::string, bool>> children;  // name, is a directory
    while (struct dirent* d = readdir(dir)) {
      if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
      bool is_dir = d->d_type == DT_DIR;
      if (d->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      children.emplace_back(d->d_name, is_dir);
    }
    closedir(dir);
    std::sort(children.begin(), children.end());
    for (const auto& [name, is_dir] : children) {
      const std::string path = JoinPath(dir_path, name);
      // Watched before it is listed: what is made in it from here on is
      // reported by its watch.
      const bool watched = is_dir && AddWatch(path, deferred);
      if (report_contents) Emit(MakeEvent(FsEvent::CREATE, path, is_dir), deferred);
      if (watched) queue.push_back(path);
    }
  }
}

void Watcher::RemoveTree(const std::string& top) {
  for (auto it = dirs_.begin(); it != dirs_.end();) {
    if (it->first != root_wd_ && IsUnder(it->second, top)) {
      inotify_rm_watch(inotify_.get(), it->first);
      it = dirs_.erase(it);
      limit_reported_ = false;
    } else {
      ++it;
    }
  }
}

void Watcher::RenameTree(const std::string& from, const std::string& to) {
  for (auto& [wd, path] : dirs_) {
    if (wd != root_wd_ && IsUnder(path, from)) path = to + path.substr(from.size());
  }
}

void Watcher::ReportCreated(const std::string& path, bool is_dir) {
  // The new directory is watched before its CREATE is sent (so a host
  // that waits for it can rely on that), then what is already in it is
  // reported.
  std::vector<FsEvent> overflow;
  const bool watched = is_dir && request_.recursive() && AddWatch(path, &overflow);
  Send(MakeEvent(FsEvent::CREATE, path, is_dir));
  for (FsEvent& event : overflow) Send(std::move(event));
  if (watched) AddSubdirs(path, /*report_contents=*/true, nullptr);
}

void Watcher::FlushPendingMove() {
  if (!pending_move_) return;
  PendingMove from = std::move(*pending_move_);
  pending_move_.reset();
  if (from.is_dir) RemoveTree(from.path);
  Send(MakeEvent(FsEvent::DELETE, from.path, from.is_dir));
}

bool Watcher::HandleEvent(const struct inotify_event& ev) {
  if (ev.mask & IN_Q_OVERFLOW) {
    FlushPendingMove();
    Send(MakeEvent(FsEvent::OVERFLOW, root_, true));
    return true;
  }
  auto it = dirs_.find(ev.wd);
  if (ev.mask & IN_IGNORED) {
    // The directory was deleted (or its file system unmounted), or we
    // removed the watch ourselves (then it is no longer in dirs_).
    if (ev.wd == root_wd_) {
      FlushPendingMove();
      SendError("watch " + root_ + ": the directory is gone", ENOENT);
      return false;
    }
    if (it != dirs_.end()) {
      dirs_.erase(it);
      limit_reported_ = false;
    }
    return true;
  }
  if (it == dirs_.end()) return true;  // from a watch removed meanwhile
  if (ev.len == 0) {
    // About a watched directory itself: its parent's watch reports the
    // same change, except for the root's.
    if (ev.wd == root_wd_ && (ev.mask & IN_ATTRIB)) {
      FlushPendingMove();
      Send(MakeEvent(FsEvent::CHMOD, root_, true));
    }
    return true;
  }
  const std::string path = JoinPath(it->second, ev.name);
  const bool is_dir = (ev.mask & IN_ISDIR) != 0;
  if (pending_move_ && !((ev.mask & IN_MOVED_TO) && ev.cookie == pending_move_->cookie)) {
    FlushPendingMove();
  }
  if (ev.mask & IN_MOVED_FROM) {
    pending_move_ = PendingMove{ev.cookie, path, is_dir};
    return true;
  }
  if (ev.mask & IN_MOVED_TO) {
    if (pending_move_) {  // its partner: a rename inside the tree
      const std::string old_path = std::move(pending_move_->path);
      pending_move_.reset();
      if (is_dir) RenameTree(old_path, path);
      FsEvent event = MakeEvent(FsEvent::RENAME, path, is_dir);
      event.set_old_path(old_path);
      Send(std::move(event));
    } else {
      ReportCreated(path, is_dir);  // moved in from outside the tree
    }
    return true;
  }
  if (ev.mask & IN_CREATE) ReportCreated(path, is_dir);
  if (ev.mask & IN_CLOSE_WRITE) Send(MakeEvent(FsEvent::MODIFY, path, is_dir));
  // A deleted directory's own watch ends with its IN_IGNORED.
  if (ev.mask & IN_DELETE) Send(MakeEvent(FsEvent::DELETE, path, is_dir));
  if (ev.mask & IN_ATTRIB) Send(MakeEvent(FsEvent::CHMOD, path, is_dir));
  return true;
}

bool Watcher::ReadEvents(char* buffer, size_t size) {
  for (;;) {
    ssize_t n = read(inotify_.get(), buffer, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      SendError("read inotify (watch " + root_ + "): " + std::strerror(e), e);
      return false;
    }
    for (size_t offset = 0; offset + sizeof(struct inotify_event) <= static_cast<size_t>(n);) {
      const auto* ev = reinterpret_cast<const struct inotify_event*>(buffer + offset);
      offset += sizeof(struct inotify_event) + ev->len;
      if (!HandleEvent(*ev)) return false;
      if (stop_->cancelled()) return true;
    }
  }
}

void Watcher::Run() {
  GuestUser user;
  if (FsError e = BecomeFsUser(request_.user(), &user); e.failed()) {
    return SendError(std::move(e.text), e.errnum);
  }
  if (FsError e = ResolveFsPath(user, "inotify_add_watch", request_.path(), &root_);
      e.failed()) {
    return SendError(std::move(e.text), e.errnum);
  }
  inotify_.Reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_.valid()) {
    int e = errno;
    return SendError("inotify_init1 (watch " + root_ + "): " + std::strerror(e), e);
  }
  root_wd_ = inotify_add_watch(inotify_.get(), root_.c_str(), kDirMask);
  if (root_wd_ < 0) {
    int e = errno;
    return SendError("inotify_add_watch " + root_ + ": " + std::strerror(e), e);
  }
  dirs_[root_wd_] = root_;
  // The root is watched: everything below it (recursive) now, and the rest
  // of the events after WATCHING.
  std::vector<FsEvent> events;
  if (request_.recursive()) AddSubdirs(root_, /*report_contents=*/false, &events);
  Send(MakeEvent(FsEvent::WATCHING, root_, true));
  for (FsEvent& event : events) Send(std::move(event));

  alignas(struct inotify_event) char buffer[64 << 10];
  struct pollfd fds[2] = {{inotify_.get(), POLLIN, 0}, {stop_->wake_fd(), POLLIN, 0}};
  while (!stop_->cancelled()) {
    int n = poll(fds, 2, pending_move_ ? kMovePairWaitMs : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      return SendError("poll (watch " + root_ + "): " + std::strerror(e), e);
    }
    if (n == 0) {
      FlushPendingMove();
      continue;
    }
    if (fds[1].revents != 0) stop_->ClearWake();  // the loop condition checks for a stop
    if (fds[0].revents != 0 && !ReadEvents(buffer, sizeof buffer)) return;
  }
}

}  // namespace

void RunWatch(Channel* channel, const agent::v1::FsWatch& request, OpInput* stop) {
  Watcher(channel, request, stop).Run();
}

}  // namespace smolvm::guest
