#include "lib/vmm/qemu_argv.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace smolvm::vmm {
namespace {

using ::testing::Contains;
using ::testing::Not;

using Argv = std::vector<std::string>;

constexpr char kRunDir[] = "/var/lib/smolvmd/run/vm-3f2a9c01";

LaunchSpec ColdBootSpec() {
  LaunchSpec spec;
  spec.vm_id = "vm-3f2a9c01";
  spec.vcpu_count = 4;
  spec.memory_mib = 1024;
  spec.kernel_path = "/var/lib/smolvmd/images/default/vmlinuz";
  spec.initrd_path = "/var/lib/smolvmd/images/default/initrd.img";
  spec.disk_path = "/var/lib/smolvmd/vms/vm-3f2a9c01/disk.ext4";
  spec.kernel_cmdline = "console=ttyS0 root=/dev/vda rw panic=-1";
  spec.run_dir = kRunDir;
  spec.mem_path = "/var/lib/smolvmd/vms/vm-3f2a9c01/mem.bin";
  spec.mem_shared = true;
  return spec;
}

// The same VM restored from a snapshot: RAM from the snapshot's mem.bin,
// mapped privately, and device state loaded later via -incoming defer.
LaunchSpec RestoreSpec() {
  LaunchSpec spec = ColdBootSpec();
  spec.mem_path = "/var/lib/smolvmd/snapshots/snap-0badc0de/mem.bin";
  spec.mem_shared = false;
  spec.incoming_state_path = "/var/lib/smolvmd/snapshots/snap-0badc0de/vmstate.bin";
  return spec;
}

// The value following the first occurrence of `flag`, or "<absent>".
std::string ValueOf(const Argv& argv, const std::string& flag) {
  auto it = std::find(argv.begin(), argv.end(), flag);
  if (it == argv.end() || it + 1 == argv.end()) return "<absent>";
  return *(it + 1);
}

// All values of a repeated flag (-device, -object, ...).
std::vector<std::string> ValuesOf(const Argv& argv, const std::string& flag) {
  std::vector<std::string> values;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) values.push_back(argv[i + 1]);
  }
  return values;
}

bool HasSequence(const Argv& argv, const Argv& seq) {
  return std::search(argv.begin(), argv.end(), seq.begin(), seq.end()) != argv.end();
}

// `argv` without the parts that legitimately differ between a cold boot and
// a restore: the guest RAM backend object and "-S -incoming defer".
Argv DeviceModelOf(Argv argv) {
  Argv out;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (argv[i] == "-object" && i + 1 < argv.size() &&
        absl::StartsWith(argv[i + 1], "memory-backend-file,")) {
      ++i;
      continue;
    }
    if (argv[i] == "-S") continue;
    if (argv[i] == "-incoming" && i + 1 < argv.size()) {
      ++i;
      continue;
    }
    out.push_back(argv[i]);
  }
  return out;
}

struct ArgvCase {
  const char* label;
  std::string accelerator;
  bool mem_shared;
  bool with_initrd;
  bool incoming;
};

class BuildQemuArgvTest : public ::testing::TestWithParam<ArgvCase> {};

TEST_P(BuildQemuArgvTest, BuildsTheCommandLine) {
  const ArgvCase& c = GetParam();
  QemuSettings settings;
  settings.accelerator = c.accelerator;
  LaunchSpec spec = ColdBootSpec();
  spec.mem_shared = c.mem_shared;
  if (!c.with_initrd) spec.initrd_path.clear();
  if (c.incoming) spec.incoming_state_path = "/snapshots/snap-1/vmstate.bin";

  const Argv argv = BuildQemuArgv(settings, spec);
  SCOPED_TRACE(absl::StrJoin(argv, " "));

  EXPECT_EQ(argv.front(), "qemu-system-x86_64");
  EXPECT_EQ(ValueOf(argv, "-name"), "smolvm-vm-3f2a9c01");
  EXPECT_EQ(ValueOf(argv, "-machine"), "q35,memory-backend=ram");
  EXPECT_EQ(ValueOf(argv, "-smp"), "4");
  EXPECT_EQ(ValueOf(argv, "-m"), "1024M");

  // Accelerator.
  if (c.accelerator == "kvm") {
    EXPECT_EQ(ValueOf(argv, "-accel"), "kvm");
    EXPECT_TRUE(HasSequence(argv, {"-cpu", "host"}));
  } else {
    EXPECT_EQ(ValueOf(argv, "-accel"), "tcg,tb-size=64");
    EXPECT_THAT(argv, Not(Contains("-cpu")));
    EXPECT_THAT(argv, Not(Contains("host")));
  }

  // Guest RAM backend.
  EXPECT_THAT(ValuesOf(argv, "-object"),
              ::testing::ElementsAre(std::string(
                  "memory-backend-file,id=ram,size=1024M,mem-path=/var/lib/smolvmd/vms/"
                  "vm-3f2a9c01/mem.bin") +
                  (c.mem_shared ? ",share=on" : ",share=off")));

  // Kernel, initrd, command line, disk.
  EXPECT_EQ(ValueOf(argv, "-kernel"), spec.kernel_path);
  if (c.with_initrd) {
    EXPECT_EQ(ValueOf(argv, "-initrd"), spec.initrd_path);
  } else {
    EXPECT_THAT(argv, Not(Contains("-initrd")));
  }
  EXPECT_EQ(ValueOf(argv, "-append"), spec.kernel_cmdline);
  EXPECT_EQ(ValueOf(argv, "-drive"),
            "file=/var/lib/smolvmd/vms/vm-3f2a9c01/disk.ext4,if=none,id=disk0,"
            "format=raw,cache=writeback");
  EXPECT_THAT(ValuesOf(argv, "-device"),
              ::testing::ElementsAre(
                  "virtio-blk-pci,drive=disk0", "virtio-serial-pci,id=vser0",
                  "virtserialport,bus=vser0.0,chardev=agent,name=org.smolvm.agent",
                  "virtio-rng-pci"));

  // Process and control files, all inside run_dir.
  const std::string run_dir = kRunDir;
  EXPECT_EQ(ValueOf(argv, "-qmp"), "unix:" + run_dir + "/qmp.sock,server=on,wait=off");
  EXPECT_EQ(ValueOf(argv, "-chardev"),
            "socket,id=agent,path=" + run_dir + "/agent.sock,server=on,wait=off");
  EXPECT_EQ(ValueOf(argv, "-serial"), "chardev:console");
  EXPECT_THAT(argv, Contains("socket,id=console,path=" + run_dir + "/console.sock,server=on,"
                             "wait=off"));
  EXPECT_EQ(ValueOf(argv, "-pidfile"), run_dir + "/qemu.pid");
  EXPECT_EQ(ValueOf(argv, "-pidfile"), PidFilePath(run_dir));
  // Confined by default: QEMU's seccomp filter with every option, and not
  // self-daemonizing (its fork and setsid would break that filter).
  EXPECT_EQ(ValueOf(argv, "-sandbox"),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
  EXPECT_THAT(argv, Not(Contains("-daemonize")));
  EXPECT_THAT(argv, Contains("-no-reboot"));
  EXPECT_TRUE(HasSequence(argv, {"-nodefaults", "-no-user-config"}));
  EXPECT_TRUE(HasSequence(argv, {"-display", "none"}));

  // Restore.
  if (c.incoming) {
    EXPECT_TRUE(HasSequence(argv, {"-S", "-incoming", "defer"}));
    // The state file is loaded over QMP, never put on the command line.
    EXPECT_THAT(argv, Not(Contains(::testing::HasSubstr("vmstate.bin"))));
  } else {
    EXPECT_THAT(argv, Not(Contains("-S")));
    EXPECT_THAT(argv, Not(Contains("-incoming")));
  }
  // Every flag appears once, except the repeatable ones.
  for (const std::string flag : {"-name", "-machine", "-accel", "-smp", "-m", "-kernel",
                                 "-append", "-drive", "-qmp", "-serial", "-pidfile",
                                 "-daemonize", "-no-reboot", "-incoming", "-initrd"}) {
    EXPECT_LE(std::count(argv.begin(), argv.end(), flag), 1) << flag;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BuildQemuArgvTest,
    ::testing::Values(ArgvCase{"tcg_cold_boot", "tcg", true, true, false},
                      ArgvCase{"kvm_cold_boot", "kvm", true, true, false},
                      ArgvCase{"tcg_no_initrd", "tcg", true, false, false},
                      ArgvCase{"kvm_no_initrd", "kvm", true, false, false},
                      ArgvCase{"tcg_private_ram", "tcg", false, true, false},
                      ArgvCase{"tcg_restore", "tcg", false, true, true},
                      ArgvCase{"kvm_restore", "kvm", false, true, true},
                      ArgvCase{"kvm_restore_no_initrd", "kvm", false, false, true}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(BuildQemuArgvNetworkTest, ConfinedVmmGetsTheTapAsADescriptor) {
  LaunchSpec spec = ColdBootSpec();
  spec.tap_device = "smolvm-tap1";
  spec.guest_mac = "02:00:0a:c8:00:02";
  QemuSettings settings;
  Argv argv = BuildQemuArgv(settings, spec);
  EXPECT_EQ(ValueOf(argv, "-netdev"), "tap,id=net0,fd=3");
  EXPECT_THAT(argv, Contains("virtio-net-pci,netdev=net0,mac=02:00:0a:c8:00:02"));
  // Unconfined (measurement only): QEMU opens the TAP by name, daemonizes,
  // and has no seccomp filter.
  settings.confine = false;
  argv = BuildQemuArgv(settings, spec);
  EXPECT_EQ(ValueOf(argv, "-netdev"), "tap,id=net0,ifname=smolvm-tap1,script=no,downscript=no");
  EXPECT_THAT(argv, Contains("-daemonize"));
  EXPECT_THAT(argv, Not(Contains("-sandbox")));
}

TEST(BuildQemuArgvMountsTest, EachMountIsAFsdevAndA9pDevice) {
  LaunchSpec spec = ColdBootSpec();
  spec.mounts = {HostMount{"smolvm-m0", 7, /*read_only=*/true},
                 HostMount{"smolvm-m1", 8, /*read_only=*/false}};
  QemuSettings settings;
  Argv argv = BuildQemuArgv(settings, spec);
  EXPECT_THAT(argv, Contains("local,id=smolvm-m0,path=/smolvm-mounts/smolvm-m0,"
                             "security_model=none,readonly=on"));
  EXPECT_THAT(argv, Contains("virtio-9p-pci,fsdev=smolvm-m0,mount_tag=smolvm-m0"));
  EXPECT_THAT(argv, Contains("local,id=smolvm-m1,path=/smolvm-mounts/smolvm-m1,"
                             "security_model=none"));
  // Unconfined: the paths the backend found for the descriptors.
  argv = BuildQemuArgv(settings, spec, {"/srv/a", "/srv/b"});
  EXPECT_THAT(argv, Contains("local,id=smolvm-m1,path=/srv/b,security_model=none"));
  // A restore gets the same devices (the device model must match).
  LaunchSpec restore = RestoreSpec();
  restore.mounts = spec.mounts;
  Argv restored = BuildQemuArgv(settings, restore);
  EXPECT_THAT(restored, Contains("virtio-9p-pci,fsdev=smolvm-m1,mount_tag=smolvm-m1"));
}

TEST(BuildQemuArgvInvariantTest, RestoreHasTheColdBootDeviceModel) {
  // QEMU migration requires the destination to be started with the same
  // device model as the source; only the RAM backend and -incoming differ.
  for (const std::string accel : {"tcg", "kvm"}) {
    QemuSettings settings;
    settings.accelerator = accel;
    const Argv cold = BuildQemuArgv(settings, ColdBootSpec());
    const Argv restore = BuildQemuArgv(settings, RestoreSpec());
    EXPECT_EQ(DeviceModelOf(cold), DeviceModelOf(restore))
        << "cold:    " << absl::StrJoin(cold, " ") << "\n"
        << "restore: " << absl::StrJoin(restore, " ");
    // The only differences are the ones DeviceModelOf removes.
    EXPECT_EQ(restore.size(), cold.size() + 3);
    EXPECT_NE(ValuesOf(cold, "-object"), ValuesOf(restore, "-object"));
    EXPECT_TRUE(absl::EndsWith(ValuesOf(restore, "-object").at(0),
                               "snap-0badc0de/mem.bin,share=off"));
  }
}

TEST(BuildQemuArgvInvariantTest, RestoreWithoutInitrdMatchesColdBootWithoutInitrd) {
  QemuSettings settings;
  LaunchSpec cold = ColdBootSpec();
  LaunchSpec restore = RestoreSpec();
  cold.initrd_path.clear();
  restore.initrd_path.clear();
  EXPECT_EQ(DeviceModelOf(BuildQemuArgv(settings, cold)),
            DeviceModelOf(BuildQemuArgv(settings, restore)));
}

TEST(BuildQemuArgvSettingsTest, HonoursTheSettings) {
  QemuSettings settings;
  settings.binary = "/opt/qemu/bin/qemu-system-x86_64";
  settings.machine = "microvm";
  settings.tcg_tb_size_mib = 256;
  const Argv argv = BuildQemuArgv(settings, ColdBootSpec());
  EXPECT_EQ(argv.front(), "/opt/qemu/bin/qemu-system-x86_64");
  EXPECT_EQ(ValueOf(argv, "-machine"), "microvm,memory-backend=ram");
  EXPECT_EQ(ValueOf(argv, "-accel"), "tcg,tb-size=256");
}

TEST(BuildQemuArgvSettingsTest, KernelCmdlineIsOneArgument) {
  // No shell is involved: spaces and quotes stay inside one argv element.
  LaunchSpec spec = ColdBootSpec();
  spec.kernel_cmdline = "console=ttyS0 init=\"/sbin/my init\" a='b c'";
  const Argv argv = BuildQemuArgv(QemuSettings{}, spec);
  EXPECT_EQ(ValueOf(argv, "-append"), spec.kernel_cmdline);
}

TEST(RunDirPathsTest, AreInsideTheRunDir) {
  EXPECT_EQ(QmpSocketPath("/run/x"), "/run/x/qmp.sock");
  EXPECT_EQ(AgentSocketPath("/run/x"), "/run/x/agent.sock");
  EXPECT_EQ(ConsoleLogPath("/run/x"), "/run/x/console.log");
  EXPECT_EQ(PidFilePath("/run/x/"), "/run/x/qemu.pid");
  EXPECT_EQ(QemuProcessName("vm-1"), "smolvm-vm-1");
}

}  // namespace
}  // namespace smolvm::vmm
