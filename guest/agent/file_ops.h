// File: file_ops.h
//
// FileWriteStart / FileReadStart: uploads and downloads of one file, or of a
// directory as a tar stream (busybox `tar -x` / `tar -c`).
//
// Uploads are atomic: the data goes to a temp file ".NAME.smolvm-XXXXXX" in
// the target's directory, which is fsynced and renamed over the target on
// eof (then the directory is fsynced). On any error or abort the temp file
// is removed and the target is untouched. Errors name the operation and the
// path: "open /x/y: Permission denied".
#pragma once

#include "guest/agent/channel.h"
#include "guest/agent/op_input.h"
#include "smolvm/agent/v1/agent.pb.h"

namespace smolvm::guest {

// Consumes FileData from `input` until eof (or abort) and sends one OpResult.
// An error is reported as soon as it happens; later data is then dropped.
void RunUpload(Channel* channel, const agent::v1::FileWriteStart& request, OpInput* input);

// Sends FileData chunks (<= 64 KiB, the last with eof) and then
// OpResult{bytes, mode}; on error only OpResult{error}.
void RunDownload(Channel* channel, const agent::v1::FileReadStart& request);

}  // namespace smolvm::guest
