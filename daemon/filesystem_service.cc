#include "daemon/filesystem_service.h"

#include <utility>

#include "daemon/rpc_reply.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {
namespace {

using agent::FsCall;

v1::FileType ToProto(agent::FsEntry::Type type) {
  switch (type) {
    case agent::FsEntry::Type::kFile: return v1::FILE_TYPE_FILE;
    case agent::FsEntry::Type::kDirectory: return v1::FILE_TYPE_DIRECTORY;
    case agent::FsEntry::Type::kSymlink: return v1::FILE_TYPE_SYMLINK;
    case agent::FsEntry::Type::kOther: return v1::FILE_TYPE_OTHER;
    case agent::FsEntry::Type::kUnknown: break;
  }
  return v1::FILE_TYPE_UNSPECIFIED;
}

void ToProto(const agent::FsEntry& e, v1::FileEntry* out) {
  out->set_path(e.path);
  out->set_name(e.name);
  out->set_type(ToProto(e.type));
  out->set_size(e.size);
  out->set_mode(e.mode);
  out->set_uid(e.uid);
  out->set_gid(e.gid);
  out->set_mtime_unix_ns(e.mtime_ns);
  out->set_symlink_target(e.symlink_target);
}

v1::WatchEventType ToProto(agent::FsChange::Kind kind) {
  switch (kind) {
    case agent::FsChange::Kind::kCreate: return v1::WATCH_EVENT_TYPE_CREATE;
    case agent::FsChange::Kind::kModify: return v1::WATCH_EVENT_TYPE_MODIFY;
    case agent::FsChange::Kind::kDelete: return v1::WATCH_EVENT_TYPE_DELETE;
    case agent::FsChange::Kind::kRename: return v1::WATCH_EVENT_TYPE_RENAME;
    case agent::FsChange::Kind::kChmod: return v1::WATCH_EVENT_TYPE_CHMOD;
    case agent::FsChange::Kind::kOverflow: return v1::WATCH_EVENT_TYPE_OVERFLOW;
  }
  return v1::WATCH_EVENT_TYPE_UNSPECIFIED;
}

// The one entry of a stat, mkdir or rename.
absl::Status FirstEntry(const agent::FsResult& result, v1::FileEntry* out) {
  if (result.entries.empty()) {
    return absl::InternalError("the guest agent answered without the entry");
  }
  ToProto(result.entries.front(), out);
  return absl::OkStatus();
}

}  // namespace

grpc::Status FilesystemServiceImpl::StatPath(grpc::ServerContext* ctx,
                                             const v1::StatPathRequest* req,
                                             v1::StatPathResponse* resp) {
  return Serve(*callers_, *ctx, "StatPath", Access::kRead, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 FsCall call{.op = FsCall::Op::kStat, .path = req->path(), .user = req->user()};
                 SMOLVM_ASSIGN_OR_RETURN(auto result,
                                         manager_->FileSystem(c, req->vm_id(), std::move(call)));
                 return FirstEntry(result, resp->mutable_entry());
               });
}

grpc::Status FilesystemServiceImpl::ListDir(grpc::ServerContext* ctx,
                                            const v1::ListDirRequest* req,
                                            v1::ListDirResponse* resp) {
  return Serve(*callers_, *ctx, "ListDir", Access::kRead, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 FsCall call{.op = FsCall::Op::kList,
                             .path = req->path(),
                             .user = req->user(),
                             .depth = req->depth()};
                 SMOLVM_ASSIGN_OR_RETURN(auto result,
                                         manager_->FileSystem(c, req->vm_id(), std::move(call)));
                 for (const auto& e : result.entries) ToProto(e, resp->add_entries());
                 resp->set_truncated(result.truncated);
                 return absl::OkStatus();
               });
}

grpc::Status FilesystemServiceImpl::MakeDir(grpc::ServerContext* ctx,
                                            const v1::MakeDirRequest* req,
                                            v1::MakeDirResponse* resp) {
  return Serve(*callers_, *ctx, "MakeDir", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 FsCall call{.op = FsCall::Op::kMakeDir,
                             .path = req->path(),
                             .user = req->user(),
                             .parents = req->parents(),
                             .mode = req->mode()};
                 SMOLVM_ASSIGN_OR_RETURN(auto result,
                                         manager_->FileSystem(c, req->vm_id(), std::move(call)));
                 resp->set_created(result.created);
                 return FirstEntry(result, resp->mutable_entry());
               });
}

grpc::Status FilesystemServiceImpl::RemovePath(grpc::ServerContext* ctx,
                                               const v1::RemovePathRequest* req,
                                               v1::RemovePathResponse*) {
  return Serve(*callers_, *ctx, "RemovePath", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 FsCall call{.op = FsCall::Op::kRemove,
                             .path = req->path(),
                             .user = req->user(),
                             .recursive = req->recursive()};
                 return manager_->FileSystem(c, req->vm_id(), std::move(call)).status();
               });
}

grpc::Status FilesystemServiceImpl::RenamePath(grpc::ServerContext* ctx,
                                               const v1::RenamePathRequest* req,
                                               v1::RenamePathResponse* resp) {
  return Serve(*callers_, *ctx, "RenamePath", Access::kMutate, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 FsCall call{.op = FsCall::Op::kRename,
                             .path = req->path(),
                             .user = req->user(),
                             .new_path = req->new_path(),
                             .overwrite = req->overwrite()};
                 SMOLVM_ASSIGN_OR_RETURN(auto result,
                                         manager_->FileSystem(c, req->vm_id(), std::move(call)));
                 return FirstEntry(result, resp->mutable_entry());
               });
}

grpc::Status FilesystemServiceImpl::WatchDir(grpc::ServerContext* ctx,
                                             const v1::WatchDirRequest* req,
                                             grpc::ServerWriter<v1::WatchDirEvent>* writer) {
  return Serve(*callers_, *ctx, "WatchDir", Access::kLong, req->vm_id(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(
                     auto watch, manager_->WatchDir(c, req->vm_id(), req->path(), req->user(),
                                                    req->recursive()));
                 v1::WatchDirEvent watching;
                 watching.set_type(v1::WATCH_EVENT_TYPE_WATCHING);
                 watching.set_path(req->path());
                 if (!writer->Write(watching)) {
                   return absl::CancelledError("watch: the client went away");
                 }
                 // Until the client cancels (checked at least once a
                 // second) or the watch ends in the guest. A slow client
                 // holds up this loop; once 4 MiB of events wait for it,
                 // the watch fails (RESOURCE_EXHAUSTED) rather than stall
                 // the VM's agent connection or grow.
                 while (true) {
                   if (ctx->IsCancelled()) return absl::OkStatus();
                   auto change = watch->Next(absl::Now() + absl::Seconds(1));
                   if (absl::IsDeadlineExceeded(change.status())) continue;
                   if (!change.ok()) return change.status();
                   v1::WatchDirEvent ev;
                   ev.set_type(ToProto(change->kind));
                   ev.set_path(change->path);
                   ev.set_old_path(change->old_path);
                   ev.set_is_dir(change->is_dir);
                   if (!writer->Write(ev)) return absl::OkStatus();
                 }
               });
}

}  // namespace smolvm::daemon
