// File: exec_op.h
//
// ExecStart: runs one program (see child_process.h) and streams its life to
// the host as ExecOutput chunks (<= 64 KiB, in the order produced per stream)
// followed by exactly one ExecExit.
#pragma once

#include "guest/agent/channel.h"
#include "guest/agent/op_input.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// Blocks until the exec is over and ExecExit is sent. `input` carries the
// ExecStdin data (used if request.stdin_follows()) and ExecCancel.
void RunExec(Channel* channel, const agent::v1::ExecStart& request, OpInput* input);

}  // namespace smolvm::guest
