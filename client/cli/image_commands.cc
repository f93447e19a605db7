// smolvmctl image build|list|get|rm|tag.

#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli/commands.h"
#include "client/cli_format.h"
#include "client/smolvm.h"

namespace smolvm::cli {

void RegisterImageCommands(CLI::App& app, CliContext& ctx) {
  CLI::App* image = app.add_subcommand("image", "build, list and delete images");
  image->require_subcommand(1);

  auto& image_ref = ctx.Make<std::string>();
  auto& build_name = ctx.Make<std::string>();
  auto& build_suite = ctx.Make<std::string>();
  auto& build_variant = ctx.Make<std::string>();
  auto& build_oci = ctx.Make<std::string>();
  auto& build_dir = ctx.Make<std::string>();
  auto& build_tarball = ctx.Make<std::string>();
  auto& build_oci_ref = ctx.Make<std::string>();
  auto& build_packages = ctx.Make<std::vector<std::string>>();
  auto& build_minimal = ctx.Make<bool>();
  auto& build_min_disk = ctx.Make<std::uint32_t>();
  auto& build_kernel_deb = ctx.Make<std::string>();
  auto& warm_start = ctx.Make<std::string>();
  auto& warm_ready = ctx.Make<std::string>();
  auto& warm_snapshot = ctx.Make<std::string>();
  auto& warm_timeout = ctx.Make<std::uint32_t>();
  auto& warm_memory = ctx.Make<std::uint32_t>();
  CLI::App* build = image->add_subcommand(
      "build", "build an image from Debian packages, an OCI archive, a directory or a tarball");
  build->add_option("NAME", build_name, "NAME or NAME:TAG of the new image")->required();
  build->add_option("--debian", build_suite, "Debian suite to bootstrap (e.g. bookworm)")
      ->type_name("SUITE");
  build->add_option("--package", build_packages, "Debian package to include (repeatable)")
      ->type_name("PKG")
      ->allow_extra_args(false);
  build->add_option("--variant", build_variant, "mmdebstrap variant (default minbase)");
  build->add_option("--oci", build_oci,
                    "OCI layout dir, OCI archive or docker-save tarball on the daemon's host")
      ->type_name("PATH");
  build->add_option("--oci-ref", build_oci_ref, "tag inside the OCI archive (default: the only one)");
  build->add_option("--dir", build_dir, "root filesystem directory on the daemon's host")
      ->type_name("PATH");
  build->add_option("--tarball", build_tarball, "root filesystem tarball on the daemon's host")
      ->type_name("PATH");
  build->add_flag("--minimal", build_minimal, "the busybox userland");
  build->add_option("--min-disk-mib", build_min_disk, "smallest root disk in MiB");
  build->add_option("--kernel-deb", build_kernel_deb,
                    "admins: boot this linux-image-*.deb's kernel (on the daemon's host)")
      ->type_name("PATH");
  build->add_option("--warm-start", warm_start,
                    "warm template: shell line to start in a booted VM of the image and keep "
                    "running into a snapshot")
      ->type_name("CMD");
  build->add_option("--warm-ready", warm_ready,
                    "warm template: shell line run until it succeeds before the snapshot")
      ->type_name("CMD");
  build->add_option("--warm-timeout", warm_timeout, "seconds --warm-ready may take (default 120)");
  build->add_option("--warm-memory-mib", warm_memory, "the warm build VM's memory");
  build->add_option("--warm-snapshot", warm_snapshot,
                    "the warm snapshot's id (default NAME-warm)")
      ->type_name("ID");
  ctx.OnRun(build, [&]() -> absl::Status {
    v1::BuildImageRequest request;
    request.set_name(build_name);
    request.set_min_disk_mib(build_min_disk);
    int sources = (!build_suite.empty() || !build_packages.empty()) + !build_oci.empty() +
                  !build_dir.empty() + !build_tarball.empty() + build_minimal;
    if (sources != 1) {
      return absl::InvalidArgumentError(
          "image build needs exactly one source: --debian SUITE [--package PKG...], --oci "
          "PATH, --dir PATH, --tarball PATH or --minimal");
    }
    if (!build_suite.empty() || !build_packages.empty()) {
      auto* debian = request.mutable_debian();
      debian->set_suite(build_suite);
      debian->set_variant(build_variant);
      for (const auto& p : build_packages) debian->add_packages(p);
    } else if (!build_oci.empty()) {
      request.mutable_oci()->set_path(build_oci);
      request.mutable_oci()->set_reference(build_oci_ref);
    } else if (!build_dir.empty()) {
      request.set_directory(build_dir);
    } else if (!build_tarball.empty()) {
      request.set_tarball(build_tarball);
    } else {
      request.set_minimal(true);
    }
    request.set_kernel_deb(build_kernel_deb);
    if (!warm_start.empty() || !warm_ready.empty()) {
      v1::WarmStart* warm = request.mutable_warm();
      warm->set_start_command(warm_start);
      warm->set_ready_command(warm_ready);
      warm->set_ready_timeout_s(warm_timeout);
      warm->set_memory_mib(warm_memory);
      warm->set_snapshot_id(warm_snapshot);
    } else if (warm_timeout != 0 || warm_memory != 0 || !warm_snapshot.empty()) {
      return absl::InvalidArgumentError(
          "--warm-timeout, --warm-memory-mib and --warm-snapshot need --warm-start or "
          "--warm-ready");
    }
    auto built = SmolVMManager(ctx.globals.options())
                     .build_image(request, [&](const v1::BuildProgress& p) {
                       ctx.out.BuildProgress(p);
                     });
    ctx.out.EndProgress();
    if (!built.ok()) return built.status();
    return ctx.out.BuildDone(*built);
  });

  auto& quiet = ctx.Make<bool>();
  CLI::App* image_list = image->add_subcommand("list", "list the images you can use");
  image_list->alias("ls");
  AddQuietFlag(image_list, quiet)->description("print only the digests, one per line");
  ctx.OnRun(image_list, [&]() -> absl::Status {
    auto images = SmolVMManager(ctx.globals.options()).list_images();
    if (!images.ok()) return images.status();
    return quiet ? Printer::Ids(IdsOf(*images, &v1::Image::digest)) : ctx.out.Images(*images);
  });
  CLI::App* image_get = image->add_subcommand("get", "show every field of an image");
  image_get->add_option("IMAGE", image_ref, "name or digest")->required();
  ctx.OnRun(image_get, [&]() -> absl::Status {
    auto got = SmolVMManager(ctx.globals.options()).get_image(image_ref);
    if (!got.ok()) return got.status();
    return ctx.out.ImageDetails(*got);
  });
  CLI::App* image_rm = image->add_subcommand(
      "rm", "remove a name (and the image with its last name), or by digest the image");
  image_rm->alias("delete");
  image_rm->add_option("IMAGE", image_ref, "name or digest")->required();
  ctx.OnRun(image_rm, [&]() -> absl::Status {
    v1::DeleteImageRequest request;
    request.set_image(image_ref);
    auto response = Connection(ctx.globals.options()).Call(&v1::ImageService::Stub::DeleteImage,
                                                      request);
    if (!response.ok()) return response.status();
    return ctx.out.Deleted(response->image_deleted() ? "image" : "image name", image_ref,
                       *response);
  });
  auto& tag_name = ctx.Make<std::string>();
  CLI::App* image_tag = image->add_subcommand("tag", "add a name to an image");
  image_tag->add_option("IMAGE", image_ref, "name or digest")->required();
  image_tag->add_option("NAME", tag_name, "new NAME or NAME:TAG")->required();
  ctx.OnRun(image_tag, [&]() -> absl::Status {
    auto tagged = SmolVMManager(ctx.globals.options()).tag_image(image_ref, tag_name);
    if (!tagged.ok()) return tagged.status();
    return ctx.out.ImageDetails(*tagged);
  });

}

}  // namespace smolvm::cli
