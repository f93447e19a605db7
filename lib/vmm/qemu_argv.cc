#include "lib/vmm/qemu_argv.h"

#include "absl/strings/str_cat.h"
#include "lib/base/file_util.h"

namespace smolvm::vmm {

std::string QmpSocketPath(const std::string& run_dir) { return JoinPath(run_dir, "qmp.sock"); }
std::string AgentSocketPath(const std::string& run_dir) { return JoinPath(run_dir, "agent.sock"); }
std::string ConsoleLogPath(const std::string& run_dir) { return JoinPath(run_dir, "console.log"); }
std::string ConsoleSocketPath(const std::string& run_dir) {
  return JoinPath(run_dir, "console.sock");
}
std::string PidFilePath(const std::string& run_dir) { return JoinPath(run_dir, "qemu.pid"); }
std::string VmmLogPath(const std::string& run_dir) { return JoinPath(run_dir, "qemu.log"); }
std::string QemuProcessName(const std::string& vm_id) { return "smolvm-" + vm_id; }
std::string JailMountPath(const std::string& tag) { return "/smolvm-mounts/" + tag; }

std::vector<std::string> BuildQemuArgv(const QemuSettings& settings,
                                       const LaunchSpec& spec,
                                       const std::vector<std::string>& mount_paths) {
  const bool kvm = settings.accelerator == "kvm";
  std::vector<std::string> argv = {
      settings.binary,
      "-name", QemuProcessName(spec.vm_id),
      "-machine", absl::StrCat(settings.machine, ",memory-backend=", kRamBackendId),
      "-accel", kvm ? std::string("kvm")
                    : absl::StrCat("tcg,tb-size=", settings.tcg_tb_size_mib),
      "-smp", absl::StrCat(spec.vcpu_count),
      "-m", absl::StrCat(spec.memory_mib, "M"),
      // Guest RAM lives in a named file: cold boots share it so snapshots can
      // copy it without going through the migration stream; restores map a
      // snapshot's mem.bin privately (x-ignore-shared recipe, DESIGN.md).
      "-object",
      absl::StrCat("memory-backend-file,id=", kRamBackendId, ",size=", spec.memory_mib,
                   "M,mem-path=", spec.mem_path,
                   spec.mem_shared ? ",share=on" : ",share=off"),
      "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
      // A guest reboot or panic (panic=-1) ends QEMU instead of looping.
      "-no-reboot",
      "-kernel", spec.kernel_path,
  };
  if (kvm) {
    argv.insert(argv.end(), {"-cpu", "host"});
  }
  if (!spec.initrd_path.empty()) {
    argv.insert(argv.end(), {"-initrd", spec.initrd_path});
  }
  argv.insert(argv.end(), {
      "-append", spec.kernel_cmdline,
      "-drive", absl::StrCat("file=", spec.disk_path,
                             ",if=none,id=disk0,format=raw,cache=writeback"),
      "-device", "virtio-blk-pci,drive=disk0",
      "-device", "virtio-serial-pci,id=vser0",
      "-chardev", absl::StrCat("socket,id=agent,path=", AgentSocketPath(spec.run_dir),
                               ",server=on,wait=off"),
      "-device", "virtserialport,bus=vser0.0,chardev=agent,name=org.smolvm.agent",
      "-device", "virtio-rng-pci",
      // The console goes to a socket the daemon reads into a capped log
      // (console_recorder.h); unread output is dropped, never stored.
      "-chardev", absl::StrCat("socket,id=console,path=", ConsoleSocketPath(spec.run_dir),
                               ",server=on,wait=off"),
      "-serial", "chardev:console",
      "-qmp", absl::StrCat("unix:", QmpSocketPath(spec.run_dir), ",server=on,wait=off"),
      "-pidfile", PidFilePath(spec.run_dir),
      // With a log file, a daemonized QEMU keeps its stderr (which the
      // launcher points at the same file) instead of closing it.
      "-D", VmmLogPath(spec.run_dir),
  });
  if (settings.confine) {
    // QEMU's own seccomp filter on top of the jail (vmm_jail.h), which
    // already detached it: -daemonize forks and calls setsid after the
    // filter is in place, which spawn/elevateprivileges=deny forbid.
    argv.insert(argv.end(), {"-sandbox",
                             "on,obsolete=deny,elevateprivileges=deny,spawn=deny,"
                             "resourcecontrol=deny"});
  } else {
    // Detached from the daemon so VMs survive a daemon restart; QEMU's
    // parent exits only once initialization succeeded (or failed).
    argv.push_back("-daemonize");
  }
  if (!spec.tap_device.empty()) {
    // The daemon owns the TAP (created persistent, enslaved to its bridge).
    // A confined QEMU gets it already open; otherwise QEMU opens it by name.
    // No scripts either way.
    argv.insert(argv.end(), {
        "-netdev", settings.confine
                       ? absl::StrCat("tap,id=net0,fd=", kTapFdInVmm)
                       : absl::StrCat("tap,id=net0,ifname=", spec.tap_device,
                                      ",script=no,downscript=no"),
        "-device", absl::StrCat("virtio-net-pci,netdev=net0,mac=", spec.guest_mac),
    });
  }
  for (size_t i = 0; i < spec.mounts.size(); ++i) {
    const HostMount& m = spec.mounts[i];
    const std::string& path =
        i < mount_paths.size() ? mount_paths[i] : JailMountPath(m.tag);
    // security_model=none: files are the VMM uid's; the guest's chown and
    // chmod fail quietly (passthrough would need root, mapped-xattr would
    // hide the host's modes behind xattrs).
    argv.insert(argv.end(), {
        "-fsdev", absl::StrCat("local,id=", m.tag, ",path=", path, ",security_model=none",
                               m.read_only ? ",readonly=on" : ""),
        "-device", absl::StrCat("virtio-9p-pci,fsdev=", m.tag, ",mount_tag=", m.tag),
    });
  }
  if (spec.incoming_state_path) {
    // -S keeps the restored VM paused after the state is loaded; the manager
    // decides whether to continue it.
    argv.insert(argv.end(), {"-S", "-incoming", "defer"});
  }
  return argv;
}

}  // namespace smolvm::vmm
