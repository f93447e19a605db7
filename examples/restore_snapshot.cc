// restore_snapshot: the SmolVM SDK's third flow.
//
//   vm = SmolVM::from_snapshot("my-checkpoint", /*resume_vm=*/true);
//   vm.vm_id(); vm.status(); vm.close();
//
// Restores a VM from a snapshot into the snapshot's own VM identity (run
// create_and_snapshot first; it deletes its VM, so the identity is free),
// prints it, and deletes it again. Prints each step and its wall-clock time.
//
// Usage: restore_snapshot [SNAPSHOT_ID]   (default "my-checkpoint")
// The daemon socket is $SMOLVMD_SOCKET, else /run/smolvmd/smolvmd.sock.

#include <iomanip>
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/smolvm.h"

namespace {

double MsSince(absl::Time start) {
  return absl::ToDoubleMilliseconds(absl::Now() - start);
}

int Fail(const char* step, const absl::Status& status) {
  std::cerr << "restore_snapshot: " << step << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string snapshot_id = argc > 1 ? argv[1] : "my-checkpoint";
  std::cout << std::fixed << std::setprecision(1);
  const absl::Time begin = absl::Now();

  std::cout << "SmolVM::from_snapshot(\"" << snapshot_id
            << "\", resume_vm=true): restoring..." << std::endl;
  absl::Time t = absl::Now();
  absl::StatusOr<smolvm::SmolVM> vm =
      smolvm::SmolVM::from_snapshot(snapshot_id, /*resume_vm=*/true);
  if (!vm.ok()) return Fail("SmolVM::from_snapshot()", vm.status());
  std::cout << "  restored in " << MsSince(t) << " ms\n"
            << "  vm_id():  " << vm->vm_id() << "\n"
            << "  status(): " << smolvm::v1::VmStatus_Name(vm->status())
            << std::endl;

  std::cout << "vm.close(): deleting the restored VM..." << std::endl;
  t = absl::Now();
  if (absl::Status s = vm->close(); !s.ok()) return Fail("vm.close()", s);
  std::cout << "  closed in " << MsSince(t) << " ms" << std::endl;

  std::cout << "total " << MsSince(begin) << " ms" << std::endl;
  return 0;
}
