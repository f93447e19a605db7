#include "daemon/image_service.h"

#include "absl/time/clock.h"
#include "daemon/proto_convert.h"
#include "daemon/rpc_reply.h"
#include "lib/core/warm_template.h"
#include "lib/base/status_macros.h"

namespace smolvm::daemon {
namespace {

absl::StatusOr<image::BuildRequest> BuildRequestFromProto(const v1::BuildImageRequest& req) {
  image::BuildRequest out;
  out.name = req.name();
  out.min_disk_mib = req.min_disk_mib();
  using Kind = image::ImageSource::Kind;
  switch (req.source_case()) {
    case v1::BuildImageRequest::kDebian:
      out.source.kind = Kind::kDebian;
      if (!req.debian().suite().empty()) out.source.debian.suite = req.debian().suite();
      if (!req.debian().variant().empty()) out.source.debian.variant = req.debian().variant();
      out.source.debian.packages.assign(req.debian().packages().begin(),
                                        req.debian().packages().end());
      break;
    case v1::BuildImageRequest::kOci:
      out.source.kind = Kind::kOci;
      out.source.oci.path = req.oci().path();
      out.source.oci.reference = req.oci().reference();
      break;
    case v1::BuildImageRequest::kDirectory:
      out.source.kind = Kind::kDirectory;
      out.source.path = req.directory();
      break;
    case v1::BuildImageRequest::kTarball:
      out.source.kind = Kind::kTarball;
      out.source.path = req.tarball();
      break;
    case v1::BuildImageRequest::kMinimal:
      out.source.kind = Kind::kMinimal;
      break;
    case v1::BuildImageRequest::SOURCE_NOT_SET:
      return absl::InvalidArgumentError(
          "BuildImage needs a source: debian, oci, directory, tarball or minimal");
  }
  out.kernel_deb = req.kernel_deb();
  if (out.min_disk_mib > kMaxDiskMib) {
    return absl::InvalidArgumentError(
        absl::StrCat("min_disk_mib is at most ", kMaxDiskMib, " (256 GiB)"));
  }
  return out;
}

std::optional<core::WarmStartSpec> WarmStartFromProto(const v1::BuildImageRequest& req) {
  if (!req.has_warm()) return std::nullopt;
  const v1::WarmStart& warm = req.warm();
  core::WarmStartSpec spec;
  spec.start_command = warm.start_command();
  spec.ready_command = warm.ready_command();
  spec.ready_timeout = absl::Seconds(warm.ready_timeout_s());
  spec.settle = absl::Milliseconds(warm.settle_ms());
  spec.snapshot_id = warm.snapshot_id();
  spec.memory_mib = warm.memory_mib();
  spec.vcpu_count = warm.vcpu_count();
  return spec;
}

}  // namespace

absl::Status ImageServiceImpl::Describe(const ImageRecord& image, v1::Image* out) {
  out->set_digest(image.digest);
  for (const auto& name : image.names) out->add_names(name);
  out->set_owner(image.owner);
  out->set_source(image.source);
  out->set_size_bytes(image.size_bytes);
  out->set_created_at_unix_ms(absl::ToUnixMillis(image.created_at));
  out->set_source_kind(image::SourceKindOf(image));
  SMOLVM_ASSIGN_OR_RETURN(image::ImageManifest m, images_->ManifestOf(image));
  out->set_disk_size_bytes(m.disk_size_bytes);
  out->set_kernel_version(m.kernel_version);
  out->set_kernel_package(m.kernel_package);
  out->set_build_ms(m.build_ms);
  auto* exec = out->mutable_exec_defaults();
  for (const auto& [name, value] : image::EnvMap(m.exec)) (*exec->mutable_env())[name] = value;
  exec->set_working_dir(m.exec.working_dir);
  exec->set_user(m.exec.user);
  SMOLVM_ASSIGN_OR_RETURN(std::vector<std::string> users, images_->UsersOf(image.digest));
  for (const auto& user : users) out->add_used_by(user);
  return absl::OkStatus();
}

grpc::Status ImageServiceImpl::BuildImage(grpc::ServerContext* ctx,
                                          const v1::BuildImageRequest* req,
                                          grpc::ServerWriter<v1::BuildImageEvent>* writer) {
  return Serve(*callers_, *ctx, "BuildImage", Access::kMutateLong, req->name(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(image::BuildRequest request, BuildRequestFromProto(*req));
                 const absl::Time started = absl::Now();
                 image::BuildContext build;
                 build.cancelled = [ctx] { return ctx->IsCancelled(); };
                 build.progress = [&](const std::string& step, uint64_t bytes) {
                   v1::BuildImageEvent event;
                   event.mutable_progress()->set_step(step);
                   event.mutable_progress()->set_bytes(bytes);
                   event.mutable_progress()->set_elapsed_ms(
                       absl::ToInt64Milliseconds(absl::Now() - started));
                   writer->Write(event);  // A gone client shows as cancelled.
                 };
                 SMOLVM_ASSIGN_OR_RETURN(
                     core::BuiltImage built,
                     core::BuildImage(*images_, *vms_, c, request, WarmStartFromProto(*req),
                                      build));
                 v1::BuildImageEvent done;
                 SMOLVM_RETURN_IF_ERROR(Describe(built.image, done.mutable_done()));
                 if (built.warm_snapshot) {
                   ToProto(*built.warm_snapshot, done.mutable_warm_snapshot());
                 }
                 writer->Write(done);
                 return absl::OkStatus();
               });
}

grpc::Status ImageServiceImpl::ListImages(grpc::ServerContext* ctx, const v1::ListImagesRequest*,
                                          v1::ListImagesResponse* resp) {
  return Serve(*callers_, *ctx, "ListImages", Access::kRead, "",
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(std::vector<ImageRecord> images, images_->List(c));
                 for (const auto& image : images) {
                   SMOLVM_RETURN_IF_ERROR(Describe(image, resp->add_images()));
                 }
                 return absl::OkStatus();
               });
}

grpc::Status ImageServiceImpl::GetImage(grpc::ServerContext* ctx, const v1::GetImageRequest* req,
                                        v1::Image* resp) {
  return Serve(*callers_, *ctx, "GetImage", Access::kRead, req->image(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(ImageRecord image, images_->Get(c, req->image()));
                 return Describe(image, resp);
               });
}

grpc::Status ImageServiceImpl::DeleteImage(grpc::ServerContext* ctx,
                                           const v1::DeleteImageRequest* req,
                                           v1::DeleteImageResponse* resp) {
  return Serve(*callers_, *ctx, "DeleteImage", Access::kMutate, req->image(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(bool deleted, images_->Delete(c, req->image()));
                 resp->set_image_deleted(deleted);
                 return absl::OkStatus();
               });
}

grpc::Status ImageServiceImpl::TagImage(grpc::ServerContext* ctx, const v1::TagImageRequest* req,
                                        v1::Image* resp) {
  return Serve(*callers_, *ctx, "TagImage", Access::kMutate, req->image(),
               [&](const Caller& c) -> absl::Status {
                 SMOLVM_ASSIGN_OR_RETURN(ImageRecord image,
                                         images_->Tag(c, req->image(), req->name()));
                 return Describe(image, resp);
               });
}

}  // namespace smolvm::daemon
