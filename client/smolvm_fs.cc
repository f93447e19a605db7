// SmolVM's guest file system calls: the unary FilesystemService RPCs and
// the streaming WatchDir (proto/smolvm/v1/filesystem_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"
#include "client/status.h"

namespace smolvm {

namespace {

// GrpcDirWatch is a WatchDir call: next() reads the stream, cancel()
// cancels its context (which ends a blocked Read).
class GrpcDirWatch : public DirWatch {
 public:
  explicit GrpcDirWatch(std::unique_ptr<grpc::ClientContext> context)
      : context_(std::move(context)) {}
  ~GrpcDirWatch() override {
    cancel();
    if (reader_) (void)reader_->Finish();
  }

  // Starts the call and waits for WATCHING (or the call's error).
  // The call holds its channel: the watch may outlive the SmolVM.
  absl::Status Start(v1::FilesystemService::Stub& stub, const v1::WatchDirRequest& request) {
    reader_ = stub.WatchDir(context_.get(), request);
    v1::WatchDirEvent first;
    if (!reader_->Read(&first)) return End();
    if (first.type() != v1::WATCH_EVENT_TYPE_WATCHING) {
      return absl::InternalError(absl::StrCat(
          "watch ", request.path(), ": the daemon's first event was not WATCHING"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::WatchDirEvent> next() override {
    if (!ended_.ok()) return ended_;
    v1::WatchDirEvent event;
    if (reader_->Read(&event)) return event;
    return End();
  }

  void cancel() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!cancelled_) context_->TryCancel();
    cancelled_ = true;
  }

 private:
  // The stream is over: its status, CANCELLED if it ended with OK (the
  // daemon closed the watch) so that next() never returns OK again.
  absl::Status End() {
    grpc::Status status = reader_->Finish();
    reader_.reset();
    ended_ = status.ok() ? absl::CancelledError("the watch ended")
                         : FromGrpcStatus(status);
    return ended_;
  }

  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<v1::WatchDirEvent>> reader_;
  absl::Status ended_;
  std::mutex mu_;
  bool cancelled_ = false;
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
