#include "guest/agent/exec_op.h"

#include <string>
#include <utility>
#include <vector>

#include "guest/agent/child_process.h"

namespace smolvm::guest {

using agent::v1::ExecOutput;
using agent::v1::Frame;

void RunExec(Channel* channel, const agent::v1::ExecStart& request, OpInput* input) {
  const uint64_t id = request.id();
  ChildSpec spec;
  spec.argv.assign(request.argv().begin(), request.argv().end());
  std::vector<std::pair<std::string, std::string>> overrides(request.env().begin(),
                                                             request.env().end());
  spec.env = BuildEnv(overrides);
  spec.cwd = request.cwd().empty() ? "/root" : request.cwd();
  spec.stdin_from_input = request.stdin_follows();

  ChildOutcome outcome = RunChild(
      spec, input, request.timeout_ms(), "stdin of exec " + std::to_string(id),
      [&](int stream, const char* data, size_t size) {
        Frame frame;
        ExecOutput* out = frame.mutable_exec_output();
        out->set_id(id);
        out->set_stream(stream == 2 ? ExecOutput::STDERR : ExecOutput::STDOUT);
        out->set_data(data, size);
        channel->Send(frame);
      });

  Frame frame;
  agent::v1::ExecExit* exit = frame.mutable_exec_exit();
  exit->set_id(id);
  if (!outcome.start_error.empty()) {
    exit->set_start_error(outcome.start_error);
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
