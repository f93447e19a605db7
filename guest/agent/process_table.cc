#include "guest/agent/process_table.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "guest/agent/child_process.h"
#include "guest/agent/exec_op.h"
#include "lib/agent/frame_codec.h"

namespace smolvm::guest {

using agent::v1::ExecOutput;
using agent::v1::Frame;
using agent::v1::ProcInfo;
using agent::v1::ProcReply;

namespace {

int64_t UnixNowNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

ProcReply ErrorReply(uint64_t id, std::string error, int errnum) {
  ProcReply reply;
  reply.set_id(id);
  reply.set_error(std::move(error));
  reply.set_error_errno(errnum);
  return reply;
}

void SendReply(Channel* channel, ProcReply reply) {
  Frame frame;
  *frame.mutable_proc_reply() = std::move(reply);
  channel->Send(frame);
}

}  // namespace

// Everything but the constant fields is guarded by the table's mu_.
class ProcessTable::Process {
 public:
  // A run of output of one stream; data[0] is byte `offset` of the
  // process's output.
  struct Chunk {
    uint64_t offset;
    int stream;  // 1 = stdout, 2 = stderr
    std::string data;
  };

  Process(pid_t pid, const agent::v1::ProcStart& request, std::string cwd, uint64_t seq)
      : pid(pid),
        argv(request.argv().begin(), request.argv().end()),
        user(request.user()),
        cwd(std::move(cwd)),
        started_unix_ns(UnixNowNs()),
        seq(seq) {}

  // The offset of the oldest byte still buffered (total if none is).
  uint64_t oldest() const {
    return chunks.empty() ? total : chunks.front().offset + front_skip;
  }

  // Appends output, then drops the oldest bytes beyond kProcessBufferBytes.
  void Append(int stream, const char* data, size_t size) {
    if (!chunks.empty() && chunks.back().stream == stream &&
        chunks.back().data.size() + size <= agent::kMaxChunkBytes) {
      chunks.back().data.append(data, size);
    } else {
      chunks.push_back(Chunk{total, stream, std::string(data, size)});
    }
    total += size;
    buffered += size;
    // The front chunk is trimmed by moving front_skip, not by erasing its
    // head: tiny writes would otherwise move up to 64 KiB each.
    while (buffered > kProcessBufferBytes) {
      size_t excess = buffered - kProcessBufferBytes;
      size_t left = chunks.front().data.size() - front_skip;
      if (left <= excess) {
        chunks.pop_front();
        front_skip = 0;
        buffered -= left;
      } else {
        front_skip += excess;
        buffered -= excess;
      }
    }
  }

  // Fills *out with up to kMaxChunkBytes of one stream from `cursor`
  // (oldest() <= cursor < total); returns how many bytes.
  size_t Read(uint64_t cursor, ExecOutput* out) const {
    auto it = std::upper_bound(chunks.begin(), chunks.end(), cursor,
                               [](uint64_t c, const Chunk& chunk) { return c < chunk.offset; });
    --it;  // the chunk holding `cursor`: chunks are contiguous
    const int stream = it->stream;
    out->set_stream(stream == 2 ? ExecOutput::STDERR : ExecOutput::STDOUT);
    std::string* data = out->mutable_data();
    size_t from = static_cast<size_t>(cursor - it->offset);
    for (; it != chunks.end() && it->stream == stream && data->size() < agent::kMaxChunkBytes;
         ++it, from = 0) {
      size_t n = std::min(it->data.size() - from, agent::kMaxChunkBytes - data->size());
      data->append(it->data, from, n);
    }
    return data->size();
  }

  ProcInfo Info() const {
    ProcInfo info;
    info.set_pid(pid);
    for (const std::string& a : argv) info.add_argv(a);
    info.set_user(user);
    info.set_running(!reaped);
    info.set_exit_code(exit_code);
    info.set_signal(signal);
    info.set_started_unix_ns(started_unix_ns);
    info.set_ended_unix_ns(ended_unix_ns);
    info.set_output_bytes(total);
    info.set_cwd(cwd);
    return info;
  }

  const pid_t pid;
  const std::vector<std::string> argv;
  const std::string user;  // as requested
  const std::string cwd;   // as resolved
  const int64_t started_unix_ns;
  const uint64_t seq;  // start order: the smallest exited one is evicted first

  // Reaped: the pid may belong to another process now, so it is never
  // signalled again; exit_code, signal and ended_unix_ns are set.
  bool reaped = false;
  // Until its pipes are drained too (after the reap): the exit an attach
  // sends comes after all the output.
  bool running = true;
  int exit_code = 0;
  int signal = 0;
  int64_t ended_unix_ns = 0;
  std::deque<Chunk> chunks;  // contiguous, oldest first
  size_t front_skip = 0;     // bytes of chunks.front() already dropped
  size_t buffered = 0;       // bytes in chunks, without front_skip
  uint64_t total = 0;        // bytes produced
  // Notified on output, on exit and by WakeAttaches (with mu_).
  std::condition_variable changed;
};

void ProcessTable::Run(Channel* channel, const agent::v1::ProcStart& request) {
  const uint64_t id = request.id();
  ChildSpec spec;
  std::string error;
  if (!PrepareChildSpec(request.user(), request.argv(), request.env(), request.cwd(), &spec,
                        &error)) {
    return SendReply(channel, ErrorReply(id, std::move(error), EINVAL));
  }
  if (!Reserve()) {
    return SendReply(channel,
                     ErrorReply(id,
                                std::to_string(kMaxProcesses) +
                                    " processes are running; wait for or kill one",
                                EAGAIN));
  }

  std::shared_ptr<Process> process;
  ChildHooks hooks;
  hooks.on_output = [&](int stream, const char* data, size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    process->Append(stream, data, size);
    process->changed.notify_all();
  };
  hooks.on_started = [&](pid_t pid) {
    ProcReply reply;
    reply.set_id(id);
    {
      std::lock_guard<std::mutex> lock(mu_);
      process = std::make_shared<Process>(pid, request, spec.cwd, next_seq_++);
      --starting_;
      // An exited process whose pid was reused is dropped.
      processes_[pid] = process;
      *reply.add_processes() = process->Info();
    }
    SendReply(channel, std::move(reply));
  };
  hooks.on_reaped = [&](int wait_status) {
    std::lock_guard<std::mutex> lock(mu_);
    process->reaped = true;
    if (WIFSIGNALED(wait_status)) {
      process->signal = WTERMSIG(wait_status);
    } else {
      process->exit_code = WEXITSTATUS(wait_status);
    }
    process->ended_unix_ns = UnixNowNs();
  };
  ChildOutcome outcome = RunChild(spec, nullptr, 0, "", hooks);

  if (!outcome.start_error.empty()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --starting_;
    }
    return SendReply(channel, ErrorReply(id, outcome.start_error, outcome.start_errno));
  }
  std::lock_guard<std::mutex> lock(mu_);
  process->running = false;
  if (!process->reaped) {  // RunChild reaped it without the callback
    process->reaped = true;
    process->exit_code = outcome.exit_code;
    process->signal = outcome.signal;
    process->ended_unix_ns = UnixNowNs();
  }
  process->changed.notify_all();
}

bool ProcessTable::Reserve() {
  std::lock_guard<std::mutex> lock(mu_);
  if (processes_.size() + starting_ >= kMaxProcesses) {
    auto oldest = processes_.end();
    for (auto it = processes_.begin(); it != processes_.end(); ++it) {
      if (!it->second->running &&
          (oldest == processes_.end() || it->second->seq < oldest->second->seq)) {
        oldest = it;
      }
    }
    if (oldest == processes_.end()) return false;
    processes_.erase(oldest);
  }
  ++starting_;
  return true;
}

ProcReply ProcessTable::List(uint64_t id) const {
  ProcReply reply;
  reply.set_id(id);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pid, process] : processes_) *reply.add_processes() = process->Info();
  return reply;
}

ProcReply ProcessTable::Signal(const agent::v1::ProcSignal& request) {
  const uint64_t id = request.id();
  const pid_t pid = request.pid();
  const int sig = request.signal();
  if (sig < 1 || sig > 64) {
    return ErrorReply(id, "signal " + std::to_string(sig) + ": Invalid argument", EINVAL);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = processes_.find(pid);
  if (it == processes_.end()) {
    return ErrorReply(id, "no process " + std::to_string(pid), ESRCH);
  }
  Process& process = *it->second;
  // Never once reaped: the pid may be another process's by now.
  if (process.reaped) {
    return ErrorReply(id, "process " + std::to_string(pid) + " is not running", ESRCH);
  }
  if (kill(request.group() ? -pid : pid, sig) != 0) {
    int e = errno;
    return ErrorReply(id, "kill " + std::to_string(pid) + ": " + std::strerror(e), e);
  }
  ProcReply reply;
  reply.set_id(id);
  *reply.add_processes() = process.Info();
  return reply;
}

std::shared_ptr<ProcessTable::Process> ProcessTable::Find(pid_t pid) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = processes_.find(pid);
  return it == processes_.end() ? nullptr : it->second;
}

void ProcessTable::Attach(Channel* channel, const agent::v1::ProcAttach& request,
                          Process& process, OpInput* stop) {
  const uint64_t id = request.id();
  const bool output = request.output();
  uint64_t cursor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t tail = std::min<uint64_t>(request.tail_bytes(), process.total);
    cursor = std::max(process.oldest(), process.total - tail);
  }
  uint64_t skipped = 0;
  for (;;) {
    Frame frame;
    bool last = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      process.changed.wait(lock, [&] {
        return stop->cancelled() || (output && process.total > cursor) || !process.running;
      });
      if (stop->cancelled()) return;
      if (output && process.total > cursor) {
        if (cursor < process.oldest()) {
          skipped += process.oldest() - cursor;
          cursor = process.oldest();
        }
        ExecOutput* out = frame.mutable_exec_output();
        out->set_id(id);
        out->set_skipped_bytes(skipped);
        cursor += process.Read(cursor, out);
        skipped = 0;
      } else {
        agent::v1::ExecExit* exit = frame.mutable_exec_exit();
        exit->set_id(id);
        if (process.signal != 0) {
          exit->set_signal(process.signal);
        } else {
          exit->set_exit_code(process.exit_code);
        }
        last = true;
      }
    }
    // Not under mu_: Send blocks while the host is slow.
    if (stop->cancelled() || !channel->Send(frame) || last) return;
  }
}

void ProcessTable::WakeAttaches() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [pid, process] : processes_) process->changed.notify_all();
}

}  // namespace smolvm::guest
