// SmolVM's guest file system calls: the unary FilesystemService RPCs and
// the streaming WatchDir (proto/smolvm/v1/filesystem_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "client/stream_call.h"

namespace smolvm {

namespace {

// GrpcDirWatch is a WatchDir call that has seen its WATCHING event.
class GrpcDirWatch : public DirWatch {
 public:
  explicit GrpcDirWatch(std::unique_ptr<grpc::ClientContext> context)
      : call_(std::move(context)) {}

  // Starts the call and waits for WATCHING (or the call's error).
  absl::Status Start(v1::FilesystemService::Stub& stub, const v1::WatchDirRequest& request) {
    call_.Begin([&](grpc::ClientContext* c) { return stub.WatchDir(c, request); });
    auto first = call_.Next();
    if (!first.ok()) return first.status();
    if (first->type() != v1::WATCH_EVENT_TYPE_WATCHING) {
      return absl::InternalError(absl::StrCat(
          "watch ", request.path(), ": the daemon's first event was not WATCHING"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::WatchDirEvent> next() override { return call_.Next(); }
  void cancel() override { call_.Cancel(); }

 private:
  StreamCall<v1::WatchDirEvent> call_;
};

}  // namespace

absl::StatusOr<v1::FileEntry> SmolVM::stat_path(const std::string& path,
                                                const std::string& user) {
  if (absl::Status s = CheckStarted("stat"); !s.ok()) return s;
  v1::StatPathRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_user(user);
  auto response = connection_.Call(&v1::FilesystemService::Stub::StatPath, request);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_entry());
}

absl::StatusOr<v1::ListDirResponse> SmolVM::list_dir(const std::string& path, uint32_t depth,
                                                     const std::string& user) {
  if (absl::Status s = CheckStarted("list"); !s.ok()) return s;
  v1::ListDirRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_user(user);
  request.set_depth(depth);
  return connection_.Call(&v1::FilesystemService::Stub::ListDir, request);
}

absl::StatusOr<v1::MakeDirResponse> SmolVM::make_dir(const std::string& path, bool parents,
                                                     uint32_t mode, const std::string& user) {
  if (absl::Status s = CheckStarted("mkdir"); !s.ok()) return s;
  v1::MakeDirRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_user(user);
  request.set_parents(parents);
  request.set_mode(mode);
  return connection_.Call(&v1::FilesystemService::Stub::MakeDir, request);
}

absl::Status SmolVM::remove_path(const std::string& path, bool recursive,
                                 const std::string& user) {
  if (absl::Status s = CheckStarted("remove"); !s.ok()) return s;
  v1::RemovePathRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_user(user);
  request.set_recursive(recursive);
  return connection_.Call(&v1::FilesystemService::Stub::RemovePath, request).status();
}

absl::StatusOr<v1::FileEntry> SmolVM::rename_path(const std::string& path,
                                                  const std::string& new_path, bool overwrite,
                                                  const std::string& user) {
  if (absl::Status s = CheckStarted("rename"); !s.ok()) return s;
  v1::RenamePathRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_new_path(new_path);
  request.set_user(user);
  request.set_overwrite(overwrite);
  auto response = connection_.Call(&v1::FilesystemService::Stub::RenamePath, request);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_entry());
}

absl::StatusOr<std::unique_ptr<DirWatch>> SmolVM::watch_dir(const std::string& path,
                                                            bool recursive,
                                                            const std::string& user) {
  if (absl::Status s = CheckStarted("watch"); !s.ok()) return s;
  auto context = std::make_unique<grpc::ClientContext>();
  // No deadline: a watch lasts until it is cancelled.
  if (absl::Status s = connection_.PrepareContext(context.get(), absl::InfiniteDuration());
      !s.ok()) {
    return s;
  }
  v1::WatchDirRequest request;
  request.set_vm_id(vm_id());
  request.set_path(path);
  request.set_user(user);
  request.set_recursive(recursive);
  auto watch = std::make_unique<GrpcDirWatch>(std::move(context));
  if (absl::Status s = watch->Start(connection_.filesystem_stub(), request); !s.ok()) return s;
  return std::unique_ptr<DirWatch>(std::move(watch));
}

}  // namespace smolvm
