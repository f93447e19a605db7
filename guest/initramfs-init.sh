#!/bin/sh
# /init of the smolvm initramfs (PID 1, busybox sh).
#
# Loads the virtio modules listed in /lib/modules/modules.order (in order),
# waits for the root device, mounts it and switch_roots into its init.
# On any failure it prints one "smolvm-initramfs: FATAL: ..." line on the
# console and powers the VM off, so the host sees QEMU exit.
#
# Kernel command line parameters read from /proc/cmdline:
#   root=DEV          root device (default /dev/vda); LABEL=/UUID= also work
#   rootfstype=TYPE   default ext4
#   rootflags=OPTS    extra mount options
#   ro | rw           mount root read-only / read-write (default rw)
#   init=PATH         init inside the root fs (default /.smolvm/init, the
#                     daemon's payload; /sbin/init in images without it)
#   smolvm.rootwait=S seconds to wait for the root device (default 10)

PATH=/bin:/sbin
export PATH

fail() {
	echo "smolvm-initramfs: FATAL: $*"
	# give the serial console time to drain before the VM disappears
	sleep 1
	poweroff -f
	# not reached unless poweroff itself failed; PID 1 exiting panics the
	# kernel, which with panic=-1 (+ QEMU -no-reboot) also ends the VM.
	exit 1
}

mkdir -p /dev /proc /sys /newroot
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "cannot mount /sys"

root=/dev/vda
rootfstype=ext4
rootflags=
mode=rw
init=
rootwait=10
# shellcheck disable=SC2013 # word splitting is intended
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	root=*) root="${arg#root=}" ;;
	rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
	rootflags=*) rootflags="${arg#rootflags=}" ;;
	ro) mode=ro ;;
	rw) mode=rw ;;
	init=*) init="${arg#init=}" ;;
	smolvm.rootwait=*) rootwait="${arg#smolvm.rootwait=}" ;;
	esac
done

# Load the modules in the order given. A module that is already present
# (built in, or loaded) is skipped.
[ -r /lib/modules/modules.order ] || fail "/lib/modules/modules.order missing from initramfs"
while read -r ko; do
	[ -n "$ko" ] || continue
	name="${ko%.ko}"
	sysname=$(echo "$name" | tr - _)
	[ -d "/sys/module/$sysname" ] && continue
	insmod "/lib/modules/$ko" || fail "insmod $ko failed"
done </lib/modules/modules.order

# Wait (bounded) for the root device.
case "$rootwait" in '' | *[!0-9]*) rootwait=10 ;; esac
tries=$((rootwait * 50))
dev=
while :; do
	case "$root" in
	LABEL=* | UUID=*) dev=$(findfs "$root" 2>/dev/null) ;;
	*) [ -b "$root" ] && dev="$root" ;;
	esac
	[ -n "$dev" ] && break
	tries=$((tries - 1))
	[ "$tries" -gt 0 ] || fail "root device $root did not appear within ${rootwait}s (is a virtio-blk disk attached?)"
	usleep 20000
done

opts="$mode"
[ -n "$rootflags" ] && opts="$opts,$rootflags"
mount -t "$rootfstype" -o "$opts" "$dev" /newroot ||
	fail "cannot mount $dev ($rootfstype, $opts) on /newroot"
# Without init=: the daemon's payload, or /sbin/init in images made before
# the payload existed.
if [ -z "$init" ]; then
	if [ -f /newroot/.smolvm/init ] && [ -x /newroot/.smolvm/init ]; then
		init=/.smolvm/init
	else
		init=/sbin/init
	fi
fi
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] ||
	{ umount /newroot; fail "no executable $init in the root filesystem on $dev"; }

# Hand /dev over to the real root (keeps the console fds valid); the real
# init mounts its own /proc and /sys.
if [ -d /newroot/dev ]; then
	mount --move /dev /newroot/dev || fail "cannot move /dev into the root filesystem"
fi
umount /proc /sys 2>/dev/null

exec switch_root /newroot "$init"
# exec failing kills PID 1 -> kernel panic -> VM ends (panic=-1, -no-reboot)
