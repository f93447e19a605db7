// SmolVMManager's images: ImageService (proto/smolvm/v1/image_service.proto).

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "client/smolvm.h"

namespace smolvm {

absl::StatusOr<SmolVMManager::BuiltImage> SmolVMManager::build_image(
    const v1::BuildImageRequest& request,
    const std::function<void(const v1::BuildProgress&)>& on_progress) const {
  grpc::ClientContext context;
  if (absl::Status s = connection_.PrepareContext(&context); !s.ok()) return s;
  std::unique_ptr<grpc::ClientReader<v1::BuildImageEvent>> reader =
      connection_.image_stub().BuildImage(&context, request);
  std::optional<BuiltImage> done;
  v1::BuildImageEvent event;
  while (reader->Read(&event)) {
    if (event.has_progress() && on_progress) on_progress(event.progress());
    if (event.has_done()) {
      done = BuiltImage{event.done(), std::nullopt};
      if (event.has_warm_snapshot()) done->warm_snapshot = event.warm_snapshot();
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return connection_.Convert(status);
  if (!done) {
    return absl::InternalError(
        absl::StrCat("build image ", request.name(), ": the daemon ended the stream without "
                     "the image"));
  }
  return *std::move(done);
}

absl::StatusOr<std::vector<v1::Image>> SmolVMManager::list_images() const {
  auto response =
      connection_.Call(&v1::ImageService::Stub::ListImages, v1::ListImagesRequest());
  if (!response.ok()) return response.status();
  return std::vector<v1::Image>(response->images().begin(), response->images().end());
}

absl::StatusOr<v1::Image> SmolVMManager::get_image(const std::string& image) const {
  v1::GetImageRequest request;
  request.set_image(image);
  return connection_.Call(&v1::ImageService::Stub::GetImage, request);
}

absl::StatusOr<bool> SmolVMManager::delete_image(const std::string& image) const {
  v1::DeleteImageRequest request;
  request.set_image(image);
  auto response = connection_.Call(&v1::ImageService::Stub::DeleteImage, request);
  if (!response.ok()) return response.status();
  return response->image_deleted();
}

absl::StatusOr<v1::Image> SmolVMManager::tag_image(const std::string& image,
                                                  const std::string& name) const {
  v1::TagImageRequest request;
  request.set_image(image);
  request.set_name(name);
  return connection_.Call(&v1::ImageService::Stub::TagImage, request);
}

}  // namespace smolvm
