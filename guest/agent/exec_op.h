// File: exec_op.h
//
// ExecStart: runs one program (see child_process.h) and streams its life to
// the host as ExecOutput chunks (<= 64 KiB, in the order produced per stream)
// followed by exactly one ExecExit.
#pragma once

#include <string>

#include "guest/agent/channel.h"
#include "guest/agent/child_process.h"
#include "guest/agent/op_input.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// Blocks until the exec is over and ExecExit is sent. `input` carries the
// ExecStdin data (used if request.stdin_follows()) and ExecCancel.
void RunExec(Channel* channel, const agent::v1::ExecStart& request, OpInput* input);

// ExecStart's rules for what a child runs as, shared with ProcStart: `user`
// resolved (ResolveUser), argv as given, the environment built from the
// user's HOME, USER and LOGNAME overridden by `env`, and cwd "" = the
// user's home ("/" if it is not a directory). False with *error for an
// unknown user (a start error with errno EINVAL); the rest of *spec is
// then unset.
bool PrepareChildSpec(const std::string& user,
                      const google::protobuf::RepeatedPtrField<std::string>& argv,
                      const google::protobuf::Map<std::string, std::string>& env,
                      const std::string& cwd, ChildSpec* spec, std::string* error);

}  // namespace smolvm::guest
