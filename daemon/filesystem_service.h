// File: filesystem_service.h
//
// smolvm.v1.FilesystemService: a RUNNING VM's guest file system, each RPC
// one call into core::VmManager (FileSystem, WatchDir), which goes through
// the guest agent (protocol 4).
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/vm_manager.h"
#include "smolvm/v1/filesystem_service.grpc.pb.h"

namespace smolvm::daemon {

class FilesystemServiceImpl final : public v1::FilesystemService::Service {
 public:
  FilesystemServiceImpl(core::VmManager* manager, const CallerResolver* callers)
      : manager_(manager), callers_(callers) {}

  grpc::Status StatPath(grpc::ServerContext* ctx, const v1::StatPathRequest* req,
                        v1::StatPathResponse* resp) override;
  grpc::Status ListDir(grpc::ServerContext* ctx, const v1::ListDirRequest* req,
                       v1::ListDirResponse* resp) override;
  grpc::Status MakeDir(grpc::ServerContext* ctx, const v1::MakeDirRequest* req,
                       v1::MakeDirResponse* resp) override;
  grpc::Status RemovePath(grpc::ServerContext* ctx, const v1::RemovePathRequest* req,
                          v1::RemovePathResponse* resp) override;
  grpc::Status RenamePath(grpc::ServerContext* ctx, const v1::RenamePathRequest* req,
                          v1::RenamePathResponse* resp) override;
  grpc::Status WatchDir(grpc::ServerContext* ctx, const v1::WatchDirRequest* req,
                        grpc::ServerWriter<v1::WatchDirEvent>* writer) override;

 private:
  core::VmManager* const manager_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
