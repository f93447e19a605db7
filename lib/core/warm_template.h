// File: warm_template.h
//
// Warm templates: an image build that also boots a VM of the new image,
// starts a command in it, waits until the guest says it is ready, and
// snapshots the running VM. Restoring or forking that snapshot starts from
// a warm process (a server already listening, modules already imported)
// instead of a cold boot — the trick that cuts a peer's first-command
// latency about tenfold.
//
// The flow spans two owners (image::ImageStore builds and names images,
// VmManager runs VMs and takes snapshots), so it lives here rather than in
// either. It is all-or-nothing: on any failure the build VM, the snapshot
// and the image's new name are removed again.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "lib/core/vm_manager.h"
#include "lib/image/build_context.h"
#include "lib/image/image_store.h"
#include "lib/model/tenant.h"

namespace smolvm::core {

// See WarmStart in proto/smolvm/v1/image_service.proto.
struct WarmStartSpec {
  std::string start_command;
  std::string ready_command;
  absl::Duration ready_timeout = absl::ZeroDuration();  // Zero = 120 s.
  absl::Duration settle = absl::ZeroDuration();          // Zero = 1 s.
  std::string snapshot_id;                               // "" = from the image name.
  uint32_t memory_mib = 0;                               // 0 = default.
  uint32_t vcpu_count = 0;                               // 0 = default.
};

struct BuiltImage {
  ImageRecord image;
  std::optional<SnapshotRecord> warm_snapshot;
};

// INVALID_ARGUMENT naming the field for a spec that cannot work; fills in
// the defaults (timeouts, and the snapshot id derived from `image_name`).
absl::Status NormalizeWarmStart(const std::string& image_name, WarmStartSpec& spec);

// Builds `request` (image::ImageStore::Build) and, with `warm`, makes its
// warm snapshot. The snapshot id is checked before the build starts, so a
// clash costs nothing.
absl::StatusOr<BuiltImage> BuildImage(image::ImageStore& images, VmManager& vms,
                                      const Caller& caller, const image::BuildRequest& request,
                                      std::optional<WarmStartSpec> warm,
                                      const image::BuildContext& ctx);

}  // namespace smolvm::core
