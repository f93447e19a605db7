#include "daemon/exec_session.h"

#include <atomic>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "daemon/proto_convert.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {
namespace {

constexpr size_t kMaxStdinMessageBytes = size_t{1} << 20;
constexpr size_t kMaxTermBytes = 64;
constexpr char kDefaultTerm[] = "xterm-256color";
// How often a waiting side looks at the other side's state.
constexpr absl::Duration kPoll = absl::Milliseconds(200);

absl::Status CheckSize(const v1::TerminalSize& size, const char* what) {
  if ((size.rows() == 0) != (size.cols() == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": a terminal of ", size.rows(), "x", size.cols(),
        " cells; give both rows and cols, or neither (24x80)"));
  }
  if (size.rows() > agent::kMaxTerminalCells || size.cols() > agent::kMaxTerminalCells) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": a terminal of ", size.rows(), "x",
                                                   size.cols(), " cells; at most ",
                                                   agent::kMaxTerminalCells, " rows and columns"));
  }
  return absl::OkStatus();
}

// TERM is looked up in the guest's terminfo: a name, not a path or a line.
bool ValidTerm(const std::string& term) {
  if (term.empty() || term.size() > kMaxTermBytes) return false;
  for (char c : term) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '+';
    if (!ok) return false;
  }
  return true;
}

// The client's requests after `start`, forwarded until the client ends its
// stream (= close_stdin), `stop` (the command exited), or a bad request
// (returned; the session then ends with it).
absl::Status ForwardInput(agent::ExecHandle& handle, bool tty, ExecSessionStream* stream,
                          const std::atomic<bool>& stop) {
  bool stdin_closed = false;
  v1::ExecStreamRequest req;
  while (!stop && stream->Read(&req)) {
    switch (req.event_case()) {
      case v1::ExecStreamRequest::kStdin: {
        if (stdin_closed) {
          return absl::InvalidArgumentError("exec stream: stdin data after close_stdin");
        }
        if (req.stdin().size() > kMaxStdinMessageBytes) {
          return absl::InvalidArgumentError(
              "exec stream: a stdin message is larger than 1 MiB; split it");
        }
        absl::string_view rest = req.stdin();
        // Waits while the command is not reading (the window is full):
        // gRPC's flow control then holds the client back.
        while (!rest.empty() && !stop) {
          absl::StatusOr<size_t> sent = handle.WriteStdin(rest, absl::Now() + kPoll);
          if (!sent.ok()) return absl::OkStatus();  // exited or broke: the output side says
          rest.remove_prefix(*sent);
        }
        break;
      }
      case v1::ExecStreamRequest::kCloseStdin:
        stdin_closed = true;
        if (!handle.CloseStdin().ok()) return absl::OkStatus();
        break;
      case v1::ExecStreamRequest::kSignal:
        if (req.signal() < 1 || req.signal() > 64) {
          return absl::InvalidArgumentError(
              absl::StrCat("exec stream: signal ", req.signal(), " is not 1-64"));
        }
        if (!handle.Signal(req.signal()).ok()) return absl::OkStatus();
        break;
      case v1::ExecStreamRequest::kResize:
        if (!tty) {
          return absl::InvalidArgumentError(
              "exec stream: resize needs a tty (start.tty = true)");
        }
        if (absl::Status st = CheckSize(req.resize(), "exec stream resize"); !st.ok()) {
          return st;
        }
        if (!handle.Resize({req.resize().rows(), req.resize().cols()}).ok()) {
          return absl::OkStatus();
        }
        break;
      case v1::ExecStreamRequest::kStart:
        return absl::InvalidArgumentError("exec stream: only the first request may be start");
      case v1::ExecStreamRequest::EVENT_NOT_SET:
        return absl::InvalidArgumentError(
            "exec stream: an empty request; set stdin, close_stdin, signal or resize");
    }
  }
  // The client ended its requests before the exit: that is the end of stdin.
  if (!stop && !stdin_closed) (void)handle.CloseStdin();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<agent::ExecSpec> ExecSessionSpecFromProto(const v1::ExecStreamStart& start) {
  const v1::ExecRequest& req = start.exec();
  if (req.has_stdin() || !req.stdin().empty()) {
    return absl::InvalidArgumentError(
        "exec stream: send stdin as `stdin` requests, not in start.exec.stdin");
  }
  absl::StatusOr<agent::ExecSpec> spec = ExecSpecFromProto(req);
  if (!spec.ok()) return spec.status();
  spec->interactive = true;
  if (start.tty()) {
    SMOLVM_RETURN_IF_ERROR(CheckSize(start.size(), "exec stream"));
    spec->tty = agent::TerminalSize{start.size().rows(), start.size().cols()};
    const std::string term = start.term().empty() ? kDefaultTerm : start.term();
    if (!ValidTerm(term)) {
      return absl::InvalidArgumentError(
          "exec stream: term must be a terminal name of letters, digits and -_.+ "
          "(e.g. xterm-256color), at most 64 bytes");
    }
    spec->env.emplace("TERM", term);  // The request's env wins.
  } else if (start.size().rows() != 0 || start.size().cols() != 0 || !start.term().empty()) {
    return absl::InvalidArgumentError("exec stream: size and term need tty = true");
  }
  return spec;
}

absl::Status RunExecSession(agent::ExecHandle& handle, bool tty, grpc::ServerContext* ctx,
                            ExecSessionStream* stream) {
  std::atomic<bool> stop{false};
  std::atomic<bool> input_failed{false};
  absl::Status input_error;  // written before input_failed is set
  absl::Notification input_done;
  std::thread input([&] {
    input_error = ForwardInput(handle, tty, stream, stop);
    if (!input_error.ok()) input_failed = true;
    input_done.Notify();
  });

  absl::Status result;
  while (true) {
    auto event = handle.Next(absl::Now() + kPoll);
    if (input_failed) break;
    if (absl::IsDeadlineExceeded(event.status())) {
      if (ctx->IsCancelled()) {
        result = absl::CancelledError("exec stream: the client went away");
        break;
      }
      continue;
    }
    if (!event.ok()) {
      result = event.status();
      break;
    }
    v1::ExecResponse msg;
    ToProto(*event, &msg);
    if (!stream->Write(msg)) {
      result = absl::CancelledError("exec stream: the client went away");
      break;
    }
    if (event->kind == agent::ExecEvent::Kind::kExit) break;
  }

  // The reader must be done before the handler returns (gRPC's rule). A
  // client ends its stream after the exit, or after `failing` when the call
  // ends with an error (else its status would wait for the linger and then
  // read CANCELLED); one that does not is cut off.
  stop = true;
  if ((!result.ok() && !absl::IsCancelled(result)) || input_failed) {
    v1::ExecResponse failing;
    failing.set_failing(true);
    (void)stream->Write(failing);
  }
  if (!input_done.WaitForNotificationWithTimeout(kExecSessionLinger)) ctx->TryCancel();
  input.join();
  if (!input_error.ok()) return input_error;
  return result;
}

}  // namespace smolvm::daemon
