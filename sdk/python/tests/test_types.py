"""Unit tests of smolvm.types, smolvm.fs and smolvm.process: configs to and
from messages, SnapshotInfo, the file system's entries and watch events,
background processes."""

import unittest
from datetime import datetime, timezone

import grpc

from smolvm import (CommandResult, EgressPolicy, FileEntry, FileType, ForkOutcome,
                    InternalError, InvalidArgumentError, Lifetime, ListDirResult, Mount,
                    PortForward,
                    ProcessInfo, ProcessOutput, SnapshotInfo, VMConfig, VMInfo, VmStatus,
                    WatchEvent, WatchEventType)
from smolvm.fs import from_unix_ns
from smolvm.types import coerce_config, coerce_status
from smolvm.v1 import filesystem_service_pb2 as fs_pb2
from smolvm.v1 import process_service_pb2 as proc_pb2
from smolvm.v1 import snapshot_service_pb2, types_pb2


def snapshot_message(restored_vm_id: "str | None" = None) -> types_pb2.SnapshotInfo:
    msg = types_pb2.SnapshotInfo(
        snapshot_id="my-checkpoint", vm_id="box1",
        snapshot_path="/var/lib/smolvmd/snapshots/my-checkpoint/vmstate.bin",
        mem_file_path="/var/lib/smolvmd/snapshots/my-checkpoint/mem.bin",
        disk_path="/var/lib/smolvmd/snapshots/my-checkpoint/disk.ext4",
        vm_config=types_pb2.VMConfig(vm_id="box1", vcpu_count=2, memory_mib=512,
                                     image="minimal"),
        network_config=types_pb2.NetworkConfig(guest_ip="10.200.0.2", tap_device="smv1",
                                               guest_mac="02:53:0a:c8:00:02"),
        restored=restored_vm_id is not None, size_bytes=1234, accelerator="tcg", owner="root")
    msg.created_at.seconds = 1_700_000_000
    msg.created_at.nanos = 123_456_789
    if restored_vm_id is not None:
        msg.restored_vm_id = restored_vm_id
    return msg


class ConfigTest(unittest.TestCase):
    def test_round_trip(self) -> None:
        config = VMConfig(vm_id="box1", vcpu_count=1, memory_mib=256, image="minimal",
                          env={"A": "1"}, boot_args="quiet", disk_size_mib=2048,
                          egress=EgressPolicy("restricted", ["1.2.3.4/32"]),
                          port_forwards=[PortForward(host_port=8080, guest_port=80)],
                          labels={"team": "ci", "example.com/task-id": "t-1"})
        msg = config.to_proto()
        self.assertEqual(msg.memory_mib, 256)
        self.assertEqual(dict(msg.labels), {"team": "ci", "example.com/task-id": "t-1"})
        self.assertEqual(msg.egress.mode, types_pb2.EgressPolicy.EGRESS_RESTRICTED)
        self.assertEqual(msg.port_forwards[0].protocol, "tcp")
        self.assertEqual(VMConfig.from_proto(msg), config)

    def test_mounts_round_trip(self) -> None:
        config = VMConfig(mounts=[Mount("/srv/share/data", "/mnt/data", read_only=True),
                                  {"host_path": "/srv/share/out", "guest_path": "/out",
                                   "detach_on_snapshot": True}])
        msg = config.to_proto()
        self.assertEqual([(m.host_path, m.guest_path, m.read_only, m.detach_on_snapshot)
                          for m in msg.mounts],
                         [("/srv/share/data", "/mnt/data", True, False),
                          ("/srv/share/out", "/out", False, True)])
        back = VMConfig.from_proto(msg)
        self.assertEqual(back.mounts[1], Mount("/srv/share/out", "/out", False, True))
        with self.assertRaises(InvalidArgumentError):
            VMConfig(mounts=[{"host": "/x"}]).to_proto()

    def test_defaults_send_zero_values(self) -> None:
        msg = VMConfig().to_proto()
        self.assertEqual(msg, types_pb2.VMConfig())
        self.assertFalse(msg.HasField("egress"))

    def test_dict_and_message_configs(self) -> None:
        config = coerce_config({"memory_mib": 256, "vcpu_count": 1, "env": {"X": "y"},
                                "egress": {"mode": "off"},
                                "port_forwards": [{"host_port": 1, "guest_port": 2}]})
        msg = config.to_proto()
        self.assertEqual((msg.memory_mib, msg.vcpu_count, msg.env["X"]), (256, 1, "y"))
        self.assertEqual(msg.egress.mode, types_pb2.EgressPolicy.EGRESS_OFF)
        self.assertEqual(msg.port_forwards[0].guest_port, 2)
        self.assertEqual(coerce_config(None), VMConfig())
        self.assertEqual(coerce_config(types_pb2.VMConfig(memory_mib=128)).memory_mib, 128)

    def test_bad_configs_are_invalid_argument(self) -> None:
        with self.assertRaises(InvalidArgumentError) as ctx:
            coerce_config({"memory": 256})
        self.assertIn("memory", ctx.exception.message)
        self.assertIn("memory_mib", ctx.exception.message)  # Lists the known ones.
        with self.assertRaises(InvalidArgumentError):
            coerce_config(["not", "a", "config"])
        with self.assertRaises(InvalidArgumentError):
            VMConfig(memory_mib="lots").to_proto()  # type: ignore[arg-type]
        with self.assertRaises(InvalidArgumentError):
            VMConfig(egress=EgressPolicy(mode="sometimes")).to_proto()
        with self.assertRaises(InvalidArgumentError) as ctx:
            VMConfig(labels={"n": 1}).to_proto()  # type: ignore[dict-item]
        self.assertIn("labels", ctx.exception.message)

    def test_lifetime(self) -> None:
        config = VMConfig(lifetime=Lifetime(max_lifetime=300, idle_timeout=60,
                                            idle_action="snapshot", auto_resume=False))
        msg = config.to_proto()
        self.assertEqual(msg.lifetime.max_lifetime_seconds, 300)
        self.assertEqual(msg.lifetime.max_lifetime_action, types_pb2.LIFETIME_DELETE)
        self.assertEqual(msg.lifetime.idle_action, types_pb2.LIFETIME_SNAPSHOT)
        self.assertFalse(msg.lifetime.auto_resume)
        self.assertEqual(VMConfig.from_proto(msg), config)
        # A daemon's unset actions and auto_resume read as the defaults.
        bare = Lifetime.from_proto(types_pb2.Lifetime(idle_timeout_seconds=5))
        self.assertEqual(bare, Lifetime(idle_timeout=5))
        self.assertFalse(VMConfig().to_proto().HasField("lifetime"))
        msg = coerce_config({"lifetime": {"max_lifetime": 10, "max_lifetime_action": "stop"}})
        self.assertEqual(msg.to_proto().lifetime.max_lifetime_action, types_pb2.LIFETIME_STOP)
        with self.assertRaises(InvalidArgumentError) as ctx:
            VMConfig(lifetime=Lifetime(idle_timeout=5, idle_action="kill")).to_proto()
        self.assertIn("idle_action", ctx.exception.message)

    def test_vm_info_lifetime_fields(self) -> None:
        msg = types_pb2.Vm(vm_id="a", idle_paused=True, lifetime_snapshot_id="a-lifetime-1",
                           lifetime_action=types_pb2.LIFETIME_SNAPSHOT)
        msg.lifetime_deadline.seconds = 1_700_000_000
        info = VMInfo.from_proto(msg)
        self.assertTrue(info.idle_paused)
        self.assertEqual(info.lifetime_snapshot_id, "a-lifetime-1")
        self.assertEqual(info.lifetime_action, "snapshot")
        self.assertEqual(info.lifetime_deadline,
                         datetime.fromtimestamp(1_700_000_000, tz=timezone.utc))
        self.assertIsNone(VMInfo.from_proto(types_pb2.Vm(vm_id="b")).lifetime_deadline)

    def test_dict_config_with_labels(self) -> None:
        msg = coerce_config({"labels": {"team": "ci"}}).to_proto()
        self.assertEqual(dict(msg.labels), {"team": "ci"})
        self.assertEqual(VMConfig().labels, {})


class SnapshotInfoTest(unittest.TestCase):
    def test_seed_attributes(self) -> None:
        info = SnapshotInfo.from_proto(snapshot_message())
        self.assertEqual(info.snapshot_id, "my-checkpoint")
        self.assertEqual(info.vm_id, "box1")
        self.assertTrue(info.snapshot_path.endswith("vmstate.bin"))
        self.assertTrue(info.mem_file_path.endswith("mem.bin"))
        self.assertTrue(info.disk_path.endswith("disk.ext4"))
        self.assertEqual(info.vm_config.memory_mib, 512)
        self.assertEqual(info.vm_config.image, "minimal")
        self.assertEqual(info.network_config.guest_ip, "10.200.0.2")
        self.assertEqual(info.created_at,
                         datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc))
        self.assertIs(info.created_at.tzinfo, timezone.utc)
        self.assertFalse(info.restored)
        self.assertIsNone(info.restored_vm_id)
        self.assertEqual((info.size_bytes, info.accelerator, info.owner), (1234, "tcg", "root"))
        self.assertEqual(info.labels, {})

    def test_labels(self) -> None:
        msg = snapshot_message()
        msg.labels["stage"] = "warm"
        msg.vm_config.labels["team"] = "ci"
        info = SnapshotInfo.from_proto(msg)
        self.assertEqual(info.labels, {"stage": "warm"})
        self.assertEqual(info.vm_config.labels, {"team": "ci"})

    def test_restored(self) -> None:
        info = SnapshotInfo.from_proto(snapshot_message(restored_vm_id="box2"))
        self.assertTrue(info.restored)
        self.assertEqual(info.restored_vm_id, "box2")
        # An empty restored_vm_id that is set is not None.
        self.assertEqual(SnapshotInfo.from_proto(snapshot_message("")).restored_vm_id, "")


class VmTest(unittest.TestCase):
    def test_status_reads_like_the_seed(self) -> None:
        self.assertEqual(f"{VmStatus.RUNNING}", "running")
        self.assertEqual(str(VmStatus.PAUSED), "paused")
        self.assertEqual(VmStatus.RUNNING, "running")
        self.assertIs(VmStatus.from_proto(types_pb2.STOPPED), VmStatus.STOPPED)
        self.assertIs(VmStatus.from_proto(99), VmStatus.UNSPECIFIED)

    def test_status_to_proto_and_coercion(self) -> None:
        for status in VmStatus:
            self.assertIs(VmStatus.from_proto(status.to_proto()), status)
        self.assertEqual(VmStatus.UNSPECIFIED.to_proto(), types_pb2.VM_STATUS_UNSPECIFIED)
        self.assertEqual(coerce_status(VmStatus.PAUSED), types_pb2.PAUSED)
        self.assertEqual(coerce_status("running"), types_pb2.RUNNING)
        self.assertEqual(coerce_status("STOPPED"), types_pb2.STOPPED)
        self.assertEqual(coerce_status(types_pb2.ERROR), types_pb2.ERROR)
        for bad in ("sleeping", 99, True, None, 2.0):
            with self.assertRaises(InvalidArgumentError):
                coerce_status(bad)  # type: ignore[arg-type]

    def test_fork_outcome(self) -> None:
        ok = ForkOutcome.from_proto(snapshot_service_pb2.ForkResult(
            vm_id="c-1", vm=types_pb2.Vm(vm_id="c-1", status=types_pb2.RUNNING)), "fork x")
        self.assertTrue(ok.ok)
        self.assertEqual((ok.vm.vm_id, ok.vm.status), ("c-1", VmStatus.RUNNING))  # type: ignore[union-attr]
        failed = ForkOutcome.from_proto(snapshot_service_pb2.ForkResult(
            vm_id="c-2", error_code=5, error_message="gone"), "fork x")
        self.assertEqual((failed.error.code, failed.error.message),  # type: ignore[union-attr]
                         (grpc.StatusCode.NOT_FOUND, "gone"))
        self.assertIsNone(failed.vm)
        empty = ForkOutcome.from_proto(snapshot_service_pb2.ForkResult(vm_id="c-3"), "fork x")
        self.assertIsInstance(empty.error, InternalError)
        self.assertEqual(empty.error.message,  # type: ignore[union-attr]
                         "fork x: daemon reported clone c-3 as created but returned no VM")

    def test_vm_info(self) -> None:
        msg = types_pb2.Vm(vm_id="box1", status=types_pb2.RUNNING, vmm_pid=42,
                           config=types_pb2.VMConfig(memory_mib=256),
                           network=types_pb2.NetworkConfig(guest_ip="10.0.0.2"))
        msg.created_at.seconds = 10
        info = VMInfo.from_proto(msg)
        self.assertEqual((info.vm_id, info.status, info.vmm_pid), ("box1", VmStatus.RUNNING, 42))
        self.assertEqual(info.config.memory_mib, 256)
        self.assertEqual(info.network.guest_ip, "10.0.0.2")
        self.assertEqual(info.created_at, datetime(1970, 1, 1, 0, 0, 10, tzinfo=timezone.utc))
        self.assertIsNone(info.updated_at)

    def test_command_result(self) -> None:
        self.assertTrue(CommandResult(stdout=" 42\n").ok)
        self.assertEqual(CommandResult(stdout=" 42\n").output, "42")
        self.assertFalse(CommandResult(exit_code=1).ok)
        self.assertFalse(CommandResult(signal=9).ok)
        self.assertFalse(CommandResult(timed_out=True).ok)



class FilesystemTypesTest(unittest.TestCase):
    def test_file_type(self) -> None:
        self.assertIs(FileType.from_proto(fs_pb2.FILE_TYPE_FILE), FileType.FILE)
        self.assertIs(FileType.from_proto(fs_pb2.FILE_TYPE_DIRECTORY), FileType.DIRECTORY)
        self.assertIs(FileType.from_proto(fs_pb2.FILE_TYPE_SYMLINK), FileType.SYMLINK)
        self.assertIs(FileType.from_proto(fs_pb2.FILE_TYPE_OTHER), FileType.OTHER)
        # Unspecified, or newer than the SDK: OTHER.
        self.assertIs(FileType.from_proto(fs_pb2.FILE_TYPE_UNSPECIFIED), FileType.OTHER)
        self.assertIs(FileType.from_proto(99), FileType.OTHER)
        self.assertEqual(f"{FileType.DIRECTORY}", "directory")
        self.assertEqual(FileType.SYMLINK, "symlink")

    def test_file_entry(self) -> None:
        msg = fs_pb2.FileEntry(path="/home/alice/link", name="link",
                               type=fs_pb2.FILE_TYPE_SYMLINK, size=9, mode=0o777, uid=1000,
                               gid=1000, mtime_unix_ns=1_700_000_000_123_456_789,
                               symlink_target="/etc/hosts")
        entry = FileEntry.from_proto(msg)
        self.assertEqual(entry, FileEntry(
            path="/home/alice/link", name="link", type=FileType.SYMLINK, size=9, mode=0o777,
            uid=1000, gid=1000,
            mtime=datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc),
            symlink_target="/etc/hosts"))
        self.assertIs(entry.mtime.tzinfo, timezone.utc)
        self.assertFalse(entry.is_dir)
        empty = FileEntry.from_proto(fs_pb2.FileEntry())
        self.assertEqual((empty.type, empty.mtime),
                         (FileType.OTHER, datetime(1970, 1, 1, tzinfo=timezone.utc)))
        self.assertEqual(from_unix_ns(-1_500),
                         datetime(1969, 12, 31, 23, 59, 59, 999998, tzinfo=timezone.utc))
        self.assertEqual(from_unix_ns(2**63 - 1).year, 2262)

    def test_list_dir_result(self) -> None:
        result = ListDirResult.from_proto(fs_pb2.ListDirResponse(entries=[
            fs_pb2.FileEntry(path="/d", name="d", type=fs_pb2.FILE_TYPE_DIRECTORY),
            fs_pb2.FileEntry(path="/d/f", name="f", type=fs_pb2.FILE_TYPE_FILE, size=3)],
            truncated=True))
        self.assertTrue(result.truncated)
        self.assertEqual([(e.path, e.is_dir) for e in result], [("/d", True), ("/d/f", False)])
        self.assertEqual((len(result), result.entries[1].size), (2, 3))
        self.assertEqual(ListDirResult.from_proto(fs_pb2.ListDirResponse()), ListDirResult())

    def test_watch_events(self) -> None:
        names = {WatchEventType.CREATE: fs_pb2.WATCH_EVENT_TYPE_CREATE,
                 WatchEventType.MODIFY: fs_pb2.WATCH_EVENT_TYPE_MODIFY,
                 WatchEventType.DELETE: fs_pb2.WATCH_EVENT_TYPE_DELETE,
                 WatchEventType.RENAME: fs_pb2.WATCH_EVENT_TYPE_RENAME,
                 WatchEventType.CHMOD: fs_pb2.WATCH_EVENT_TYPE_CHMOD,
                 WatchEventType.OVERFLOW: fs_pb2.WATCH_EVENT_TYPE_OVERFLOW}
        self.assertEqual(set(names), set(WatchEventType))
        for kind, number in names.items():
            self.assertIs(WatchEventType.from_proto(number), kind)
        for skipped in (fs_pb2.WATCH_EVENT_TYPE_WATCHING, fs_pb2.WATCH_EVENT_TYPE_UNSPECIFIED, 99):
            self.assertIsNone(WatchEventType.from_proto(skipped))
            self.assertIsNone(WatchEvent.from_proto(fs_pb2.WatchDirEvent(type=skipped)))
        renamed = WatchEvent.from_proto(fs_pb2.WatchDirEvent(
            type=fs_pb2.WATCH_EVENT_TYPE_RENAME, path="/d/new", old_path="/d/old", is_dir=True))
        self.assertEqual(renamed, WatchEvent(WatchEventType.RENAME, "/d/new", "/d/old", True))
        self.assertEqual(str(WatchEventType.MODIFY), "modify")


class ProcessTypesTest(unittest.TestCase):
    def test_process_info(self) -> None:
        exited = ProcessInfo.from_proto(proc_pb2.ProcessInfo(
            pid=321, argv=["/bin/sh", "-c", "exit 3"], user="alice", cwd="/home/alice",
            running=False, exit_code=3, started_at_unix_ns=1_700_000_000_123_456_789,
            ended_at_unix_ns=1_700_000_001_000_000_000, output_bytes=42))
        self.assertEqual(exited, ProcessInfo(
            pid=321, argv=["/bin/sh", "-c", "exit 3"], user="alice", cwd="/home/alice",
            running=False, exit_code=3,
            started_at=datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=timezone.utc),
            ended_at=datetime(2023, 11, 14, 22, 13, 21, tzinfo=timezone.utc),
            output_bytes=42))
        self.assertIs(exited.started_at.tzinfo, timezone.utc)
        self.assertFalse(exited.ok)
        self.assertIsInstance(exited.argv, list)

        running = ProcessInfo.from_proto(proc_pb2.ProcessInfo(pid=5, running=True,
                                                              started_at_unix_ns=1))
        self.assertIsNone(running.ended_at)  # 0 = still running.
        self.assertFalse(running.ok)  # Not exited yet.
        killed = ProcessInfo.from_proto(proc_pb2.ProcessInfo(pid=5, signal=9,
                                                             ended_at_unix_ns=2))
        self.assertEqual((killed.signal, killed.exit_code, killed.ok), (9, 0, False))
        clean = ProcessInfo.from_proto(proc_pb2.ProcessInfo(pid=5, ended_at_unix_ns=2))
        self.assertTrue(clean.ok)
        empty = ProcessInfo.from_proto(proc_pb2.ProcessInfo())
        self.assertEqual(empty, ProcessInfo(pid=0))
        self.assertEqual(empty.started_at, datetime(1970, 1, 1, tzinfo=timezone.utc))

    def test_process_output(self) -> None:
        out = ProcessOutput("stderr", b"caf\xc3\xa9 \xff", skipped_bytes=7)
        self.assertEqual((out.stream, out.data, out.skipped_bytes),
                         ("stderr", b"caf\xc3\xa9 \xff", 7))
        self.assertEqual(out.text, "caf\u00e9 \ufffd")
        self.assertEqual(ProcessOutput("stdout", b"x").skipped_bytes, 0)


if __name__ == "__main__":
    unittest.main()
