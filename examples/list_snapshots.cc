// list_snapshots: the SmolVM SDK's second flow.
//
//   SmolVMManager().list_snapshots()
//
// Prints every snapshot the daemon knows, with all SnapshotInfo fields, and
// the wall-clock time of the call.
//
// The daemon socket is $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.

#include <iomanip>
#include <iostream>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/smolvm.h"

namespace {

std::string FormatTimestamp(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(ts.seconds()),
                          absl::UTCTimeZone());
}

}  // namespace

int main() {
  std::cout << std::fixed << std::setprecision(1);
  std::cout << "SmolVMManager().list_snapshots(): listing snapshots..."
            << std::endl;
  const absl::Time t = absl::Now();
  absl::StatusOr<std::vector<smolvm::v1::SnapshotInfo>> snapshots =
      smolvm::SmolVMManager().list_snapshots();
  const double ms = absl::ToDoubleMilliseconds(absl::Now() - t);
  if (!snapshots.ok()) {
    std::cerr << "list_snapshots: " << snapshots.status() << "\n";
    return 1;
  }
  std::cout << "  " << snapshots->size() << " snapshot(s) in " << ms << " ms"
            << std::endl;

  for (const smolvm::v1::SnapshotInfo& s : *snapshots) {
    std::cout << "\nsnapshot_id:    " << s.snapshot_id() << "\n"
              << "vm_id:          " << s.vm_id() << "\n"
              << "snapshot_path:  " << s.snapshot_path() << "\n"
              << "mem_file_path:  " << s.mem_file_path() << "\n"
              << "disk_path:      " << s.disk_path() << "\n"
              << "vm_config:      " << s.vm_config().ShortDebugString() << "\n"
              << "network_config: " << s.network_config().ShortDebugString()
              << "\n"
              << "created_at:     " << FormatTimestamp(s.created_at()) << "\n"
              << "restored:       " << (s.restored() ? "true" : "false") << "\n"
              << "restored_vm_id: "
              << (s.has_restored_vm_id() ? s.restored_vm_id() : "None") << "\n"
              << "size_bytes:     " << s.size_bytes() << "\n"
              << "accelerator:    " << s.accelerator() << std::endl;
  }
  return 0;
}
