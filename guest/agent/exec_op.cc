#include "guest/agent/exec_op.h"

#include <sys/stat.h>

#include <cerrno>
#include <string>
#include <utility>
#include <vector>

namespace smolvm::guest {

using agent::v1::ExecOutput;
using agent::v1::Frame;

bool PrepareChildSpec(const std::string& user,
                      const google::protobuf::RepeatedPtrField<std::string>& argv,
                      const google::protobuf::Map<std::string, std::string>& env,
                      const std::string& cwd, ChildSpec* spec, std::string* error) {
  if (!ResolveUser(user, &spec->user, error)) return false;
  spec->argv.assign(argv.begin(), argv.end());
  // The user's HOME, USER and LOGNAME first: the request's env wins.
  std::vector<std::pair<std::string, std::string>> overrides = UserEnv(spec->user);
  overrides.insert(overrides.end(), env.begin(), env.end());
  spec->env = BuildEnv(overrides);
  // No cwd asked for: the user's home, or "/" when the image has none (as
  // login does; "nobody" is /nonexistent on Debian).
  struct stat st;
  spec->cwd = !cwd.empty() ? cwd
              : stat(spec->user.home.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? spec->user.home
                                                                               : "/";
  return true;
}

void RunExec(Channel* channel, const agent::v1::ExecStart& request, OpInput* input) {
  const uint64_t id = request.id();
  ChildSpec spec;
  std::string user_error;
  if (!PrepareChildSpec(request.user(), request.argv(), request.env(), request.cwd(), &spec,
                        &user_error)) {
    Frame frame;
    agent::v1::ExecExit* exit = frame.mutable_exec_exit();
    exit->set_id(id);
    exit->set_start_error(user_error);
    exit->set_start_errno(EINVAL);
    channel->Send(frame);
    return;
  }
  spec.stdin_from_input = request.stdin_follows();
  if (request.has_tty()) {
    spec.tty = true;
    spec.tty_rows = request.tty().rows();
    spec.tty_cols = request.tty().cols();
  }

  ChildHooks hooks;
  hooks.on_output = [&](int stream, const char* data, size_t size) {
    Frame frame;
    ExecOutput* out = frame.mutable_exec_output();
    out->set_id(id);
    out->set_stream(stream == 2 ? ExecOutput::STDERR : ExecOutput::STDOUT);
    out->set_data(data, size);
    channel->Send(frame);
  };
  if (request.ack_stdin()) {
    hooks.on_stdin = [&](uint64_t consumed) {
      Frame frame;
      agent::v1::ExecStdinAck* ack = frame.mutable_exec_stdin_ack();
      ack->set_id(id);
      ack->set_consumed_bytes(consumed);
      channel->Send(frame);
    };
  }
  ChildOutcome outcome =
      RunChild(spec, input, request.timeout_ms(), "stdin of exec " + std::to_string(id), hooks);

  Frame frame;
  agent::v1::ExecExit* exit = frame.mutable_exec_exit();
  exit->set_id(id);
  if (!outcome.start_error.empty()) {
    exit->set_start_error(outcome.start_error);
    exit->set_start_errno(outcome.start_errno);
  } else if (!outcome.abort_error.empty()) {
    exit->set_start_error(outcome.abort_error);
  } else if (outcome.timed_out) {
    exit->set_timed_out(true);
  } else if (outcome.signal != 0) {
    exit->set_signal(outcome.signal);
  } else {
    exit->set_exit_code(outcome.exit_code);
  }
  channel->Send(frame);
}

}  // namespace smolvm::guest
