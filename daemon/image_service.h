// File: image_service.h
//
// smolvm.v1.ImageService: each RPC is one call into image::ImageStore
// (BuildImage: into core::BuildImage, which also makes warm templates).
#pragma once

#include "daemon/caller_resolver.h"
#include "lib/core/vm_manager.h"
#include "lib/image/image_store.h"
#include "smolvm/v1/image_service.grpc.pb.h"

namespace smolvm::daemon {

class ImageServiceImpl final : public v1::ImageService::Service {
 public:
  ImageServiceImpl(image::ImageStore* images, core::VmManager* vms,
                   const CallerResolver* callers)
      : images_(images), vms_(vms), callers_(callers) {}

  grpc::Status BuildImage(grpc::ServerContext* ctx, const v1::BuildImageRequest* req,
                          grpc::ServerWriter<v1::BuildImageEvent>* writer) override;
  grpc::Status ListImages(grpc::ServerContext* ctx, const v1::ListImagesRequest* req,
                          v1::ListImagesResponse* resp) override;
  grpc::Status GetImage(grpc::ServerContext* ctx, const v1::GetImageRequest* req,
                        v1::Image* resp) override;
  grpc::Status DeleteImage(grpc::ServerContext* ctx, const v1::DeleteImageRequest* req,
                           v1::DeleteImageResponse* resp) override;
  grpc::Status TagImage(grpc::ServerContext* ctx, const v1::TagImageRequest* req,
                        v1::Image* resp) override;

 private:
  // The record as the API shows it, with its manifest and users.
  absl::Status Describe(const ImageRecord& image, v1::Image* out);

  image::ImageStore* const images_;
  core::VmManager* const vms_;
  const CallerResolver* const callers_;
};

}  // namespace smolvm::daemon
