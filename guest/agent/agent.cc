#include "guest/agent/agent.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "guest/agent/exec_op.h"
#include "guest/agent/file_ops.h"
#include "guest/agent/fs_ops.h"
#include "guest/agent/fs_watch.h"
#include "guest/agent/log.h"
#include "guest/agent/process_table.h"
#include "guest/agent/system_ops.h"
#include "lib/agent/frame_codec.h"

#ifndef SMOLVM_AGENT_VERSION
#define SMOLVM_AGENT_VERSION "dev"
#endif

namespace smolvm::guest {

using agent::FrameDecoder;
using agent::v1::Frame;

namespace {

void SendExecStartError(Channel* channel, uint64_t id, std::string error) {
  Frame frame;
  frame.mutable_exec_exit()->set_id(id);
  frame.mutable_exec_exit()->set_start_error(std::move(error));
  channel->Send(frame);
}

void SendOpError(Channel* channel, uint64_t id, std::string error) {
  Frame frame;
  frame.mutable_op_result()->set_id(id);
  frame.mutable_op_result()->set_error(std::move(error));
  channel->Send(frame);
}

void SendWatchError(Channel* channel, const agent::v1::FsWatch& request, std::string error,
                    int errnum) {
  Frame frame;
  agent::v1::FsEvent* event = frame.mutable_fs_event();
  event->set_id(request.id());
  event->set_type(agent::v1::FsEvent::ERROR);
  event->set_path(request.path());
  event->set_error(std::move(error));
  event->set_error_errno(errnum);
  channel->Send(frame);
}

void SendProcReply(Channel* channel, agent::v1::ProcReply reply) {
  Frame frame;
  *frame.mutable_proc_reply() = std::move(reply);
  channel->Send(frame);
}

void SendProcError(Channel* channel, uint64_t id, std::string error, int errnum) {
  agent::v1::ProcReply reply;
  reply.set_id(id);
  reply.set_error(std::move(error));
  reply.set_error_errno(errnum);
  SendProcReply(channel, std::move(reply));
}

// Runs `body` on a detached thread; false if no thread could be created.
template <typename F>
bool Spawn(F&& body) {
  try {
    std::thread(std::forward<F>(body)).detach();
    return true;
  } catch (const std::system_error& e) {
    Log("cannot start a thread: %s", e.what());
    return false;
  }
}

}  // namespace

void Agent::Run() {
  FrameDecoder decoder;
  std::vector<char> buffer(256 << 10);
  bool connected = false;  // read data since the last end of stream
  for (;;) {
    ssize_t n = channel_->Read(buffer.data(), buffer.size());
    if (n <= 0) {
      if (n < 0) Log("read: %s", std::strerror(errno));
      if (connected) Log("host disconnected");
      connected = false;
      decoder = FrameDecoder();  // a partial frame will never be completed
      CancelOnDisconnect();
      std::this_thread::sleep_for(kReconnectPoll);
      continue;
    }
    connected = true;
    DecodeFrames(decoder, buffer.data(), static_cast<size_t>(n),
                 [this](Frame* frame) { Dispatch(frame); });
  }
}

void Agent::Dispatch(Frame* frame) {
  switch (frame->msg_case()) {
    case Frame::kHelloRequest: {
      Frame reply;
      agent::v1::Hello* hello = reply.mutable_hello();
      hello->set_protocol_version(agent::v1::PROTOCOL_VERSION);
      hello->set_agent_version(SMOLVM_AGENT_VERSION);
      hello->set_agent_pid(static_cast<int32_t>(getpid()));
      channel_->Send(reply);
      break;
    }
    case Frame::kExecStart:
      StartExec(frame->exec_start());
      break;
    case Frame::kExecStdin: {
      agent::v1::ExecStdin* in = frame->mutable_exec_stdin();
      PushInput(in->id(), Kind::kExec, std::move(*in->mutable_data()), in->eof());
      break;
    }
    case Frame::kExecSignal: {
      const agent::v1::ExecSignal& sig = frame->exec_signal();
      if (sig.signal() >= 1 && sig.signal() <= 64) {
        PushControl(sig.id(), OpInput::Control{.signal = sig.signal()});
      }
      break;
    }
    case Frame::kExecResize: {
      const agent::v1::TerminalSize& size = frame->exec_resize().size();
      PushControl(frame->exec_resize().id(),
                  OpInput::Control{.rows = size.rows(), .cols = size.cols()});
      break;
    }
    case Frame::kExecCancel: {
      std::lock_guard<std::mutex> lock(ops_mu_);
      auto it = ops_.find(frame->exec_cancel().id());
      // An exec's process group is killed; an upload is abandoned (its temp
      // file removed, nothing committed); a watch stops (no event follows);
      // an attach detaches (its process goes on).
      if (it != ops_.end()) CancelOp(*it->second);
      break;
    }
    case Frame::kFileWriteStart:
      StartUpload(frame->file_write_start());
      break;
    case Frame::kFileReadStart:
      StartDownload(frame->file_read_start());
      break;
    case Frame::kFileData: {
      agent::v1::FileData* data = frame->mutable_file_data();
      PushInput(data->id(), Kind::kUpload, std::move(*data->mutable_data()), data->eof());
      break;
    }
    case Frame::kFsRequest:
      StartFsRequest(frame->fs_request());
      break;
    case Frame::kFsWatch:
      StartWatch(frame->fs_watch());
      break;
    case Frame::kProcStart:
      StartProcess(frame->proc_start());
      break;
    case Frame::kProcList:
      SendProcReply(channel_, processes_.List(frame->proc_list().id()));
      break;
    case Frame::kProcSignal:
      // On the reader thread: one kill().
      SendProcReply(channel_, processes_.Signal(frame->proc_signal()));
      break;
    case Frame::kProcAttach:
      StartAttach(frame->proc_attach());
      break;
    case Frame::kSetClock: {
      Frame reply;
      *reply.mutable_op_result() = SetClock(frame->set_clock());
      channel_->Send(reply);
      break;
    }
    case Frame::kAddEntropy: {
      Frame reply;
      *reply.mutable_op_result() = AddEntropy(frame->add_entropy());
      channel_->Send(reply);
      break;
    }
    case Frame::kReidentify: {
      // On the reader thread, like the clock: a handful of syscalls, and
      // nothing else is asked of a guest while it is being restored.
      Frame reply;
      *reply.mutable_op_result() = Reidentify(frame->reidentify(), options_.resolv_conf);
      if (!reply.op_result().error().empty()) {
        Log("reidentify: %s", reply.op_result().error().c_str());
      }
      channel_->Send(reply);
      break;
    }
    case Frame::MSG_NOT_SET:
      Log("ignoring an empty or unknown frame");
      break;
    default:
      Log("ignoring a guest-to-host message (frame field %d) sent by the host",
          static_cast<int>(frame->msg_case()));
      break;
  }
}

void Agent::StartExec(const agent::v1::ExecStart& request) {
  const uint64_t id = request.id();
  std::shared_ptr<Op> op = Register(id, Kind::kExec, request.interactive());
  if (op == nullptr) {
    return SendExecStartError(channel_, id, "exec id " + std::to_string(id) + " is already in use");
  }
  if (!op->input.ok()) {
    Unregister(id, op.get());
    return SendExecStartError(channel_, id, std::string("eventfd: ") + std::strerror(errno));
  }
  if (!Spawn([this, op, request] {
        RunExec(channel_, request, &op->input);
        Unregister(request.id(), op.get());
      })) {
    Unregister(id, op.get());
    SendExecStartError(channel_, id, "start exec thread: Resource temporarily unavailable");
  }
}

void Agent::StartUpload(const agent::v1::FileWriteStart& request) {
  const uint64_t id = request.id();
  std::shared_ptr<Op> op = Register(id, Kind::kUpload);
  if (op == nullptr) {
    return SendOpError(channel_, id, "upload id " + std::to_string(id) + " is already in use");
  }
  if (!op->input.ok()) {
    Unregister(id, op.get());
    return SendOpError(channel_, id, std::string("eventfd: ") + std::strerror(errno));
  }
  if (!Spawn([this, op, request] {
        RunUpload(channel_, request, &op->input);
        Unregister(request.id(), op.get());
      })) {
    Unregister(id, op.get());
    SendOpError(channel_, id, "start upload thread: Resource temporarily unavailable");
  }
}

void Agent::StartDownload(const agent::v1::FileReadStart& request) {
  if (!Spawn([this, request] { RunDownload(channel_, request); })) {
    SendOpError(channel_, request.id(), "start download thread: Resource temporarily unavailable");
  }
}

void Agent::StartFsRequest(const agent::v1::FsRequest& request) {
  if (!Spawn([this, request] { RunFsRequest(channel_, request); })) {
    Frame frame;
    frame.mutable_fs_reply()->set_id(request.id());
    frame.mutable_fs_reply()->set_error("start fs thread: Resource temporarily unavailable");
    frame.mutable_fs_reply()->set_error_errno(EAGAIN);
    channel_->Send(frame);
  }
}

void Agent::StartWatch(const agent::v1::FsWatch& request) {
  const uint64_t id = request.id();
  std::shared_ptr<Op> op = Register(id, Kind::kWatch);
  if (op == nullptr) {
    return SendWatchError(channel_, request, "watch id " + std::to_string(id) + " is already in use",
                          EINVAL);
  }
  if (!op->input.ok()) {
    int e = errno;
    Unregister(id, op.get());
    return SendWatchError(channel_, request, std::string("eventfd: ") + std::strerror(e), e);
  }
  if (!Spawn([this, op, request] {
        RunWatch(channel_, request, &op->input);
        Unregister(request.id(), op.get());
      })) {
    Unregister(id, op.get());
    SendWatchError(channel_, request, "start watch thread: Resource temporarily unavailable",
                   EAGAIN);
  }
}

void Agent::StartProcess(const agent::v1::ProcStart& request) {
  // Not registered as an operation: no ExecCancel or disconnect ends it.
  if (!Spawn([this, request] { processes_.Run(channel_, request); })) {
    SendProcError(channel_, request.id(), "start process thread: Resource temporarily unavailable",
                  EAGAIN);
  }
}

void Agent::StartAttach(const agent::v1::ProcAttach& request) {
  const uint64_t id = request.id();
  std::shared_ptr<ProcessTable::Process> process = processes_.Find(request.pid());
  if (process == nullptr) {
    return SendProcError(channel_, id, "no process " + std::to_string(request.pid()), ESRCH);
  }
  std::shared_ptr<Op> op = Register(id, Kind::kAttach);
  if (op == nullptr) {
    return SendProcError(channel_, id, "attach id " + std::to_string(id) + " is already in use",
                         EINVAL);
  }
  if (!Spawn([this, op, process, request] {
        processes_.Attach(channel_, request, *process, &op->input);
        Unregister(request.id(), op.get());
      })) {
    Unregister(id, op.get());
    SendProcError(channel_, id, "start attach thread: Resource temporarily unavailable", EAGAIN);
  }
}

void Agent::CancelOp(Op& op) {
  op.input.Cancel();
  if (op.kind == Kind::kAttach) processes_.WakeAttaches();
}

void Agent::PushInput(uint64_t id, Kind kind, std::string data, bool eof) {
  std::shared_ptr<Op> op;
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    auto it = ops_.find(id);
    if (it == ops_.end() || it->second->kind != kind) return;  // finished or failed
    op = it->second;
  }
  op->input.Push(std::move(data), eof);
}

void Agent::PushControl(uint64_t id, const OpInput::Control& control) {
  std::shared_ptr<Op> op;
  {
    std::lock_guard<std::mutex> lock(ops_mu_);
    auto it = ops_.find(id);
    if (it == ops_.end() || it->second->kind != Kind::kExec) return;
    op = it->second;
  }
  op->input.PushControl(control);
}

void Agent::CancelOnDisconnect() {
  std::lock_guard<std::mutex> lock(ops_mu_);
  for (auto& [id, op] : ops_) {
    if (op->ends_with_host) CancelOp(*op);
  }
}

std::shared_ptr<Agent::Op> Agent::Register(uint64_t id, Kind kind, bool ends_with_host) {
  std::lock_guard<std::mutex> lock(ops_mu_);
  auto [it, inserted] = ops_.try_emplace(id, nullptr);
  if (!inserted) return nullptr;
  it->second = std::make_shared<Op>(kind, ends_with_host);
  return it->second;
}

void Agent::Unregister(uint64_t id, const Op* op) {
  std::lock_guard<std::mutex> lock(ops_mu_);
  auto it = ops_.find(id);
  if (it != ops_.end() && it->second.get() == op) ops_.erase(it);
}

}  // namespace smolvm::guest
