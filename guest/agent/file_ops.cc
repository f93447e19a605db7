#include "guest/agent/file_ops.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "guest/agent/child_process.h"
#include "guest/agent/guest_user.h"
#include "lib/agent/frame_codec.h"
#include "lib/base/unique_fd.h"

namespace smolvm::guest {
namespace {

using agent::v1::Frame;
using agent::v1::OpResult;

constexpr size_t kMaxTarStderr = 4096;

// Why a file operation failed: the text names the step and the path, and
// `errnum` is the errno of the failing call (0 if none, e.g. tar's own
// failure), so the host can tell "no such file" from other failures
// (OpResult.error_errno).
struct FileError {
  std::string text;  // "" = success.
  int errnum = 0;
  bool failed() const { return !text.empty(); }
};

FileError ErrnoError(const std::string& op, const std::string& path, int error) {
  return {op + " " + path + ": " + std::strerror(error), error};
}

std::string DirName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == 0 || slash == std::string::npos) return "/";
  return path.substr(0, slash);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// mkdir -p. Returns success or an error naming the directory that failed.
FileError MakeDirs(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    return S_ISDIR(st.st_mode) ? FileError{} : ErrnoError("mkdir", path, ENOTDIR);
  }
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (prefix.empty() || prefix.back() == '/') continue;
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir", prefix, errno);
    }
  }
  if (stat(path.c_str(), &st) != 0) return ErrnoError("mkdir", path, errno);
  return S_ISDIR(st.st_mode) ? FileError{} : ErrnoError("mkdir", path, ENOTDIR);
}

// Runs the rest of this (the operation's own) thread as `user`: its
// permissions apply, what it creates is its own, and a tar child inherits
// it. The thread ends with the operation, so there is no way back to root.
FileError BecomeUser(const std::string& user_spec) {
  GuestUser user;
  std::string error;
  if (!ResolveUser(user_spec, &user, &error)) return {error, EINVAL};
  if (int e = SwitchThreadToUser(user); e != 0) {
    return {"switch to user " + user_spec + ": " + std::strerror(e), e};
  }
  return {};
}

FileError CheckPath(const std::string& op, const std::string& path) {
  if (path.empty() || path[0] != '/') return {op + " " + path + ": path must be absolute", EINVAL};
  return {};
}

// "tar -x -C /dst: <tar's stderr>" for a tar child that did not succeed.
FileError TarError(const std::string& what, const ChildOutcome& outcome,
                   const std::string& stderr_text) {
  if (!outcome.start_error.empty()) return {what + ": " + outcome.start_error};
  if (!outcome.abort_error.empty()) return {what + ": " + outcome.abort_error};
  if (outcome.signal == 0 && outcome.exit_code == 0) return {};
  std::string cause = stderr_text;
  while (!cause.empty() && (cause.back() == '\n' || cause.back() == ' ')) cause.pop_back();
  if (cause.empty()) {
    cause = outcome.signal != 0 ? "killed by signal " + std::to_string(outcome.signal)
                                : "exit status " + std::to_string(outcome.exit_code);
  }
  return {what + ": " + cause};
}

void SendResult(Channel* channel, OpResult result) {
  Frame frame;
  *frame.mutable_op_result() = std::move(result);
  channel->Send(frame);
}

void SendData(Channel* channel, uint64_t id, const char* data, size_t size, bool eof) {
  Frame frame;
  agent::v1::FileData* chunk = frame.mutable_file_data();
  chunk->set_id(id);
  chunk->set_data(data, size);
  chunk->set_eof(eof);
  channel->Send(frame);
}

std::string AbortReason(OpInput* input) {
  return input->overflowed() ? "more than 16 MiB queued" : "cancelled (host disconnected)";
}

// Plain upload; returns success and sets *bytes, or the error.
FileError WriteFile(const agent::v1::FileWriteStart& request, OpInput* input, uint64_t* bytes) {
  const std::string& path = request.path();
  if (FileError e = CheckPath("open", path); e.failed()) return e;
  if (path.back() == '/') return ErrnoError("open", path, EISDIR);
  const std::string dir = DirName(path);
  if (request.make_parents()) {
    if (FileError e = MakeDirs(dir); e.failed()) return e;
  }
  std::string tmp = (dir == "/" ? "" : dir) + "/." + BaseName(path) + ".smolvm-XXXXXX";
  UniqueFd fd(mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return ErrnoError("open", path, errno);
  bool keep = false;
  struct Unlinker {
    const std::string& tmp;
    bool& keep;
    ~Unlinker() {
      if (!keep) unlink(tmp.c_str());
    }
  } unlinker{tmp, keep};

  mode_t mode = request.mode() != 0 ? static_cast<mode_t>(request.mode() & 07777) : 0644;
  if (fchmod(fd.get(), mode) != 0) return ErrnoError("chmod", path, errno);
  std::string chunk;
  for (;;) {
    OpInput::Pop pop = input->WaitPop(&chunk);
    if (pop == OpInput::Pop::kAborted) return {"write " + path + ": " + AbortReason(input)};
    if (pop == OpInput::Pop::kEof) break;
    size_t done = 0;
    while (done < chunk.size()) {
      ssize_t n = write(fd.get(), chunk.data() + done, chunk.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("write", path, errno);
      done += static_cast<size_t>(n);
    }
    *bytes += chunk.size();
  }
  if (fsync(fd.get()) != 0) return ErrnoError("fsync", path, errno);
  if (close(fd.Release()) != 0) return ErrnoError("close", path, errno);
  if (rename(tmp.c_str(), path.c_str()) != 0) return ErrnoError("rename", path, errno);
  keep = true;
  // Make the rename itself durable.
  UniqueFd dir_fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid() || fsync(dir_fd.get()) != 0) return ErrnoError("fsync", dir, errno);
  return {};
}

FileError ExtractTar(const agent::v1::FileWriteStart& request, OpInput* input,
                     uint64_t* bytes) {
  const std::string& path = request.path();
  if (FileError e = CheckPath("tar -x -C", path); e.failed()) return e;
  if (FileError e = MakeDirs(path); e.failed()) return e;
  ChildSpec spec;
  spec.argv = {"tar", "-x", "-C", path};
  spec.env = BuildEnv({});
  spec.stdin_from_input = true;
  std::string stderr_text;
  auto collect = [&](int stream, const char* d, size_t n) {
    if (stream == 2 && stderr_text.size() < kMaxTarStderr) {
      stderr_text.append(d, std::min(n, kMaxTarStderr - stderr_text.size()));
    }
  };
  ChildOutcome outcome = RunChild(spec, input, 0, "tar data", {.on_output = collect});
  *bytes = outcome.stdin_bytes;
  if (outcome.abort_error.empty() && input->cancelled()) {
    return {"tar -x -C " + path + ": " + AbortReason(input)};
  }
  return TarError("tar -x -C " + path, outcome, stderr_text);
}

// Streams a regular file. One chunk of look-ahead so that the last data chunk
// carries eof (an empty file is one empty chunk with eof).
void ReadFile(Channel* channel, const agent::v1::FileReadStart& request) {
  const std::string& path = request.path();
  OpResult result;
  result.set_id(request.id());
  auto fail = [&](FileError error) {
    result.set_error(std::move(error.text));
    result.set_error_errno(error.errnum);
    SendResult(channel, std::move(result));
  };
  if (FileError e = CheckPath("open", path); e.failed()) return fail(e);
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!fd.valid()) return fail(ErrnoError("open", path, errno));
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return fail(ErrnoError("stat", path, errno));
  if (S_ISDIR(st.st_mode)) return fail(ErrnoError("read", path, EISDIR));

  std::vector<char> pending(agent::kMaxChunkBytes), next(agent::kMaxChunkBytes);
  size_t pending_size = 0;
  bool have_pending = false;
  uint64_t total = 0;
  for (;;) {
    ssize_t n = read(fd.get(), next.data(), next.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrnoError("read", path, errno));
    if (n == 0) break;
    if (have_pending) SendData(channel, request.id(), pending.data(), pending_size, false);
    std::swap(pending, next);
    pending_size = static_cast<size_t>(n);
    have_pending = true;
    total += static_cast<uint64_t>(n);
  }
  SendData(channel, request.id(), pending.data(), have_pending ? pending_size : 0, true);
  result.set_bytes(total);
  result.set_mode(st.st_mode & 07777);
  SendResult(channel, std::move(result));
}

void CreateTar(Channel* channel, const agent::v1::FileReadStart& request) {
  const std::string& path = request.path();
  const std::string what = "tar -c -C " + path;
  OpResult result;
  result.set_id(request.id());
  auto fail = [&](FileError error) {
    result.set_error(std::move(error.text));
    result.set_error_errno(error.errnum);
    SendResult(channel, std::move(result));
  };
  if (FileError e = CheckPath(what, path); e.failed()) return fail(e);
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return fail(ErrnoError("stat", path, errno));
  if (!S_ISDIR(st.st_mode)) return fail({what + ": " + std::strerror(ENOTDIR), ENOTDIR});
  ChildSpec spec;
  spec.argv = {"tar", "-c", "-C", path, "."};
  spec.env = BuildEnv({});
  std::string stderr_text;
  uint64_t total = 0;
  auto stream_out = [&](int stream, const char* d, size_t n) {
    if (stream == 1) {
      SendData(channel, request.id(), d, n, false);
      total += n;
    } else if (stderr_text.size() < kMaxTarStderr) {
      stderr_text.append(d, std::min(n, kMaxTarStderr - stderr_text.size()));
    }
  };
  ChildOutcome outcome = RunChild(spec, nullptr, 0, "tar output", {.on_output = stream_out});
  if (FileError e = TarError(what, outcome, stderr_text); e.failed()) return fail(e);
  SendData(channel, request.id(), "", 0, true);
  result.set_bytes(total);
  result.set_mode(st.st_mode & 07777);
  SendResult(channel, std::move(result));
}

}  // namespace

void RunUpload(Channel* channel, const agent::v1::FileWriteStart& request, OpInput* input) {
  uint64_t bytes = 0;
  FileError error = BecomeUser(request.user());
  if (!error.failed()) {
    error = request.tar() ? ExtractTar(request, input, &bytes) : WriteFile(request, input, &bytes);
  }
  OpResult result;
  result.set_id(request.id());
  if (!error.failed()) {
    result.set_bytes(bytes);
  } else {
    result.set_error(std::move(error.text));
    result.set_error_errno(error.errnum);
  }
  SendResult(channel, std::move(result));
}

void RunDownload(Channel* channel, const agent::v1::FileReadStart& request) {
  if (FileError error = BecomeUser(request.user()); error.failed()) {
    OpResult result;
    result.set_id(request.id());
    result.set_error(std::move(error.text));
    result.set_error_errno(error.errnum);
    SendResult(channel, std::move(result));
    return;
  }
  if (request.tar()) {
    CreateTar(channel, request);
  } else {
    ReadFile(channel, request);
  }
}

}  // namespace smolvm::guest
