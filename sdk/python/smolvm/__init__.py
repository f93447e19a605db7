"""smolvm: the Python SDK of smolvmd, with the SmolVM SDK's names.

    from smolvm import SmolVM, SmolVMManager

    vm = SmolVM()
    vm.start()
    vm.snapshot(snapshot_id="my-checkpoint")
    vm.close()
    with SmolVMManager() as sdk:
        print([s.snapshot_id for s in sdk.list_snapshots()])
    vm = SmolVM.from_snapshot("my-checkpoint", resume_vm=True)
    print(f"{vm.vm_id} is {vm.status}")          # "... is running"
    print([e.name for e in vm.list_dir("/etc")])  # the guest file system
    proc = vm.start_process("python3 -m http.server 8000")  # in the background
    with vm.exec_session(["sh"], tty=True) as shell:  # interactive, on a tty
        shell.write_stdin("exit 3\\n")
        print(shell.wait().exit_code)             # 3
    vm.close()

The daemon is found through $SMOLVMD_ENDPOINT / $SMOLVMD_SOCKET, else
/run/smolvmd/smolvmd.sock (smolvm.connection). Failures raise SmolVMError
subclasses carrying the gRPC code and the daemon's message (smolvm.errors).
The generated smolvm.v1 messages and stubs are in smolvm.v1.
"""

from smolvm.connection import ClientOptions, Connection
from smolvm.errors import (AbortedError, AlreadyExistsError, CancelledError,
                           DataLossError, DeadlineExceededError,
                           FailedPreconditionError, InternalError,
                           InvalidArgumentError, NotFoundError, OutOfRangeError,
                           PermissionDeniedError, ResourceExhaustedError,
                           SmolVMError, UnauthenticatedError, UnavailableError,
                           UnimplementedError, UnknownError)
from smolvm.events import Event, EventKind, EventStream
from smolvm.exec_session import ExecSession
from smolvm.fs import (DirWatch, FileEntry, FileType, ListDirResult, WatchEvent,
                       WatchEventType)
from smolvm.manager import SmolVMManager
from smolvm.console import ConsoleStream
from smolvm.stats import StatsWatch, VmStats
from smolvm.process import ProcessConnection, ProcessInfo, ProcessOutput
from smolvm.progress import OperationProgress, ProgressCallback
from smolvm.types import (BuiltImage, CommandResult, EgressPolicy, FileCheck, Lifetime,
                          ForkOutcome, ForkVmResult, Image, Mount, NetworkConfig, Pool,
                          PortForward, SnapshotInfo, SnapshotVerification, VMConfig,
                          VMInfo, VmStatus)
from smolvm.vm import SmolVM

__version__ = "0.1.0"

__all__ = [
    "SmolVM", "SmolVMManager", "ClientOptions", "Connection",
    "VMConfig", "NetworkConfig", "EgressPolicy", "Lifetime", "PortForward", "Mount",
    "VMInfo", "VmStatus",
    "SnapshotInfo", "CommandResult", "ForkOutcome", "ForkVmResult", "Pool", "Image",
    "BuiltImage", "FileCheck", "SnapshotVerification", "OperationProgress",
    "ProgressCallback",
    "FileType", "FileEntry", "ListDirResult", "WatchEventType", "WatchEvent", "DirWatch",
    "ProcessInfo", "ProcessOutput", "ProcessConnection", "ExecSession", "ConsoleStream",
    "VmStats", "StatsWatch", "Event", "EventKind", "EventStream",
    "SmolVMError", "CancelledError", "UnknownError", "InvalidArgumentError",
    "DeadlineExceededError", "NotFoundError", "AlreadyExistsError",
    "PermissionDeniedError", "ResourceExhaustedError", "FailedPreconditionError",
    "AbortedError", "OutOfRangeError", "UnimplementedError", "InternalError",
    "UnavailableError", "DataLossError", "UnauthenticatedError",
]
