// SmolVM::run / SmolVM::exec: commands in the guest over the server-streaming
// Exec RPC (proto/smolvm/v1/vm_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/smolvm.h"

namespace smolvm {

namespace {

// The extra time the RPC deadline allows beyond a command's own limit, for
// the guest to kill it and the result to travel back.
constexpr absl::Duration kExecDeadlineSlack = absl::Seconds(60);

// TimeoutMillis converts RunOptions::timeout to ExecRequest.timeout_ms.
absl::StatusOr<uint32_t> TimeoutMillis(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration() || timeout == absl::ZeroDuration()) {
    return 0;
  }
  if (timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("exec: negative timeout ", absl::FormatDuration(timeout)));
  }
  const int64_t ms =
      absl::ToInt64Milliseconds(absl::Ceil(timeout, absl::Milliseconds(1)));
  if (ms > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("exec: timeout ", absl::FormatDuration(timeout),
                     " is longer than the maximum of 2^32-1 ms"));
  }
  return static_cast<uint32_t>(ms);
}

// ExecDeadline is the RPC deadline of an Exec; see RunOptions::timeout.
absl::Duration ExecDeadline(absl::Duration client_timeout,
                            absl::Duration command_timeout) {
  const auto unlimited = [](absl::Duration d) {
    return d <= absl::ZeroDuration() || d == absl::InfiniteDuration();
  };
  if (unlimited(command_timeout) || unlimited(client_timeout)) {
    return absl::InfiniteDuration();
  }
  return std::max(client_timeout, command_timeout + kExecDeadlineSlack);
}

// ArgvRequest makes the argv form of ExecRequest. An empty argv is refused
// here: sent as is it would read as an empty shell command.
absl::StatusOr<v1::ExecRequest> ArgvRequest(
    const std::vector<std::string>& argv) {
  if (argv.empty()) return absl::InvalidArgumentError("exec: empty argv");
  v1::ExecRequest request;
  request.mutable_argv()->Add(argv.begin(), argv.end());
  return request;
}

}  // namespace

std::string CommandResult::output() const {
  return std::string(absl::StripAsciiWhitespace(stdout_text));
}

absl::Status SmolVM::FillExecRequest(const RunOptions& options,
                                     v1::ExecRequest* request) const {
  if (absl::Status s = CheckStarted("exec in"); !s.ok()) return s;
  absl::StatusOr<uint32_t> timeout_ms = TimeoutMillis(options.timeout);
  if (!timeout_ms.ok()) return timeout_ms.status();
  request->set_vm_id(vm_id());
  request->mutable_env()->insert(options.env.begin(), options.env.end());
  request->set_cwd(options.cwd);
  request->set_user(options.user);
  if (options.stdin_data.has_value()) {
    request->set_stdin(*options.stdin_data);
    request->set_has_stdin(true);
  }
  request->set_timeout_ms(*timeout_ms);
  return absl::OkStatus();
}

absl::StatusOr<ExecExit> SmolVM::StreamExec(
    v1::ExecRequest request, const RunOptions& options,
    const ExecOutputCallback& on_output) {
  if (absl::Status s = FillExecRequest(options, &request); !s.ok()) return s;

  grpc::ClientContext context;
  if (absl::Status s = connection_.PrepareContext(
          &context, ExecDeadline(connection_.timeout(), options.timeout));
      !s.ok()) {
    return s;
  }
  std::unique_ptr<grpc::ClientReader<v1::ExecResponse>> reader =
      connection_.vm_stub().Exec(&context, request);

  std::optional<ExecExit> exit;
  absl::Status protocol_error;
  v1::ExecResponse response;
  while (reader->Read(&response)) {
    if (exit.has_value()) {
      protocol_error = absl::InternalError(absl::StrCat(
          "exec in vm ", vm_id(), ": the daemon sent more after the exit"));
      context.TryCancel();
      while (reader->Read(&response)) {
      }
      break;
    }
    switch (response.event_case()) {
      case v1::ExecResponse::kStdout:
        if (on_output) on_output(ExecStream::kStdout, response.stdout());
        break;
      case v1::ExecResponse::kStderr:
        if (on_output) on_output(ExecStream::kStderr, response.stderr());
        break;
      case v1::ExecResponse::kExit:
        exit = ExecExit{response.exit().exit_code(), response.exit().signal(),
                        response.exit().timed_out()};
        break;
      case v1::ExecResponse::kFailing:  // ExecStream only.
      case v1::ExecResponse::EVENT_NOT_SET:
        break;  // An event this client does not know; nothing to do.
    }
  }
  grpc::Status status = reader->Finish();
  if (!protocol_error.ok()) return protocol_error;
  if (!status.ok()) return connection_.Convert(status);
  if (!exit.has_value()) {
    return absl::InternalError(
        absl::StrCat("exec in vm ", vm_id(),
                     ": the daemon ended the stream without an exit"));
  }
  return *exit;
}

absl::StatusOr<CommandResult> SmolVM::RunRequest(v1::ExecRequest request,
                                                 const RunOptions& options) {
  CommandResult result;
  absl::StatusOr<ExecExit> exit = StreamExec(
      std::move(request), options,
      [&result](ExecStream stream, absl::string_view data) {
        std::string& sink = stream == ExecStream::kStdout ? result.stdout_text
                                                          : result.stderr_text;
        sink.append(data.data(), data.size());
      });
  if (!exit.ok()) return exit.status();
  result.exit_code = exit->exit_code;
  result.signal = exit->signal;
  result.timed_out = exit->timed_out;
  return result;
}

absl::StatusOr<CommandResult> SmolVM::run(const std::string& command,
                                          const RunOptions& options) {
  v1::ExecRequest request;
  request.set_command(command);
  return RunRequest(std::move(request), options);
}

absl::StatusOr<CommandResult> SmolVM::run(const std::vector<std::string>& argv,
                                          const RunOptions& options) {
  absl::StatusOr<v1::ExecRequest> request = ArgvRequest(argv);
  if (!request.ok()) return request.status();
  return RunRequest(*std::move(request), options);
}

absl::StatusOr<CommandResult> SmolVM::run(
    std::initializer_list<std::string> argv, const RunOptions& options) {
  return run(std::vector<std::string>(argv), options);
}

absl::StatusOr<ExecExit> SmolVM::exec(const std::vector<std::string>& argv,
                                      const RunOptions& options,
                                      const ExecOutputCallback& on_output) {
  absl::StatusOr<v1::ExecRequest> request = ArgvRequest(argv);
  if (!request.ok()) return request.status();
  return StreamExec(*std::move(request), options, on_output);
}

}  // namespace smolvm
