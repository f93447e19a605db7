// create_and_snapshot: the SmolVM SDK's first flow.
//
//   SmolVM vm; vm.start(); vm.snapshot("my-checkpoint"); vm.close();
//
// Boots a VM from the daemon's default image, checkpoints it, and deletes the
// VM (the snapshot is kept; see restore_snapshot). Prints each step and its
// wall-clock time.
//
// Usage: create_and_snapshot [SNAPSHOT_ID]   (default "my-checkpoint")
// The daemon socket is $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.

#include <iomanip>
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/smolvm.h"

namespace {

double MsSince(absl::Time start) {
  return absl::ToDoubleMilliseconds(absl::Now() - start);
}

int Fail(const char* step, const absl::Status& status) {
  std::cerr << "create_and_snapshot: " << step << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string snapshot_id = argc > 1 ? argv[1] : "my-checkpoint";
  std::cout << std::fixed << std::setprecision(1);
  const absl::Time begin = absl::Now();

  smolvm::SmolVM vm;  // Default image and shape; the daemon picks the id.

  std::cout << "vm.start(): creating and booting a VM..." << std::endl;
  absl::Time t = absl::Now();
  if (absl::Status s = vm.start(); !s.ok()) return Fail("vm.start()", s);
  std::cout << "  vm " << vm.vm_id() << " is "
            << smolvm::v1::VmStatus_Name(vm.status()) << " (ip "
            << (vm.info().network().guest_ip().empty()
                    ? "none"
                    : vm.info().network().guest_ip())
            << ") in " << MsSince(t) << " ms" << std::endl;

  std::cout << "vm.snapshot(\"" << snapshot_id << "\"): checkpointing..."
            << std::endl;
  t = absl::Now();
  absl::StatusOr<smolvm::v1::SnapshotInfo> snap = vm.snapshot(snapshot_id);
  if (!snap.ok()) {
    // Don't leave the VM behind.
    if (absl::Status s = vm.close(); !s.ok()) Fail("vm.close()", s);
    return Fail("vm.snapshot()", snap.status());
  }
  std::cout << "  snapshot " << snap->snapshot_id() << " of vm "
            << snap->vm_id() << " in " << MsSince(t) << " ms\n"
            << "    snapshot_path: " << snap->snapshot_path() << "\n"
            << "    mem_file_path: " << snap->mem_file_path() << "\n"
            << "    disk_path:     " << snap->disk_path() << "\n"
            << "    size_bytes:    " << snap->size_bytes() << std::endl;

  std::cout << "vm.close(): deleting the VM (the snapshot is kept)..."
            << std::endl;
  t = absl::Now();
  if (absl::Status s = vm.close(); !s.ok()) return Fail("vm.close()", s);
  std::cout << "  closed in " << MsSince(t) << " ms" << std::endl;

  std::cout << "total " << MsSince(begin) << " ms" << std::endl;
  return 0;
}
