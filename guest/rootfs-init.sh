#!/.smolvm/bin/sh
# /.smolvm/init: PID 1 of every smolvm guest, whatever its userland (the
# busybox `minimal` image, Debian, an OCI image without any shell). It runs
# on the payload's busybox (/.smolvm/bin, first in its PATH), so every tool
# it uses is busybox's; the image's own programs are never needed.
#
#  1. mounts /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm, /run, /tmp
#  2. sets the hostname from /etc/hostname, brings up lo, configures eth0
#     (smolvm.net=) and mounts the host mounts (smolvm.mount=, virtio-9p)
#  3. finds the virtio-serial port named org.smolvm.agent
#     (/sys/class/virtio-ports/vportNpM/name) and then either
#       - runs /.smolvm/agent /dev/vportNpM in the background if that file
#         exists and is executable (/sbin/smolvm-agent in older images); the
#         agent then owns the port and the readiness protocol. It gets the
#         usual PATH (not /.smolvm/bin first). It is restarted when it exits
#         (after 1 s, backing off to 5 s while it keeps dying quickly), or
#       - writes the single line "SMOLVM_READY\n" to the port. The write is
#         done by a background child: it blocks until the host side of the
#         port is connected, then completes. Nothing is ever read from the port.
#  4. prints "SMOLVM_READY" on the console (ttyS0)
#  5. stays PID 1: reaps children; SIGTERM / SIGUSR2 (busybox `poweroff`) power
#     the VM off, SIGUSR1 (`halt`) halts, SIGINT (`reboot`) reboots, after
#     stopping all processes and remounting / read-only.

PATH=/.smolvm/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
export PATH HOME

readonly PORT_NAME=org.smolvm.agent
# The agent's PATH: the image's own tools first, as in any login.
readonly AGENT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
AGENT=/.smolvm/agent
[ ! -x "$AGENT" ] && [ -x /sbin/smolvm-agent ] && AGENT=/sbin/smolvm-agent
readonly AGENT

log() { echo "smolvm-init: $*"; }
uptime_s() { read -r up _ </proc/uptime; echo "${up%%.*}"; }

if [ "$$" -ne 1 ]; then
	echo "smolvm-init: must run as PID 1 (use poweroff/reboot to control the VM)" >&2
	exit 1
fi

# is_mounted DIR (this busybox has no `mountpoint` applet)
is_mounted() {
	[ "$1" = /proc ] && { [ -e /proc/self/mounts ]; return; }
	while read -r _ dir _; do
		[ "$dir" = "$1" ] && return 0
	done </proc/self/mounts
	return 1
}

# mnt TYPE DIR OPTS: mount unless DIR already is a mount point
mnt() {
	mkdir -p "$2"
	is_mounted "$2" && return 0
	mount -t "$1" -o "$3" "$1" "$2" || log "warning: cannot mount $1 on $2"
}

mnt proc /proc nosuid,nodev,noexec
mnt sysfs /sys nosuid,nodev,noexec
mnt devtmpfs /dev mode=0755,nosuid
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
mnt devpts /dev/pts nosuid,noexec,gid=5,mode=0620,ptmxmode=0666
mnt tmpfs /dev/shm nosuid,nodev,mode=1777
mnt tmpfs /run nosuid,nodev,mode=0755
mnt tmpfs /tmp nosuid,nodev,mode=1777
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -e /dev/stdin ] || ln -s /proc/self/fd/0 /dev/stdin
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
[ -e /dev/stderr ] || ln -s /proc/self/fd/2 /dev/stderr

if [ -s /etc/hostname ]; then
	hostname -F /etc/hostname
else
	hostname smolvm
fi
ip link set lo up || log "warning: cannot bring up lo"

# Network: the daemon passes smolvm.net=IP/PREFIX,GATEWAY,DNS ("-" = no DNS)
# on the kernel command line; eth0 is the virtio NIC on the host's bridge. A
# clone restored from a snapshot is re-addressed later through the agent.
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	smolvm.net=*)
		IFS=, read -r net_addr net_gw net_dns <<EOF_NET
${arg#smolvm.net=}
EOF_NET
		if ip link set eth0 up && ip addr add "$net_addr" dev eth0 &&
			ip route add default via "$net_gw" dev eth0; then
			log "eth0 $net_addr via $net_gw"
		else
			log "warning: cannot configure eth0 as $net_addr via $net_gw"
		fi
		if [ -n "$net_dns" ] && [ "$net_dns" != "-" ]; then
			echo "nameserver $net_dns" >/etc/resolv.conf
		fi
		;;
	esac
done

# Host mounts: smolvm.mount=TAG:GUEST_PATH:ro|rw, one per mount (the daemon
# allows only [A-Za-z0-9._@+-/] in paths). A mount that fails is logged and
# skipped: the guest still boots, and the agent's remount (after a
# snapshot) or the user can retry. The agent's remount uses the same options
# (lib/core/vm_mounts.cc).
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	smolvm.mount=*)
		IFS=: read -r m_tag m_path m_mode <<EOF_MOUNT
${arg#smolvm.mount=}
EOF_MOUNT
		m_opts=trans=virtio,version=9p2000.L,msize=262144,cache=none
		[ "$m_mode" = ro ] && m_opts="$m_opts,ro"
		if mkdir -p "$m_path" && mount -t 9p -o "$m_opts" "$m_tag" "$m_path"; then
			log "mounted host share $m_tag on $m_path ($m_mode)"
		else
			log "warning: cannot mount host share $m_tag on $m_path"
		fi
		;;
	esac
done

# Find the agent port. The name arrives from the host asynchronously after
# the port is added, so poll for up to ~5 s.
port=
tries=250
while [ "$tries" -gt 0 ]; do
	for d in /sys/class/virtio-ports/*; do
		[ -r "$d/name" ] || continue
		if [ "$(cat "$d/name" 2>/dev/null)" = "$PORT_NAME" ] && [ -c "/dev/${d##*/}" ]; then
			port="/dev/${d##*/}"
			break 2
		fi
	done
	tries=$((tries - 1))
	usleep 20000
done

if [ -z "$port" ]; then
	log "warning: no virtio-serial port named $PORT_NAME; readiness is signalled on the console only"
elif [ -f "$AGENT" ] && [ -x "$AGENT" ]; then
	log "starting $AGENT $port"
	(
		trap - TERM INT USR1 USR2
		delay=1
		while :; do
			started=$(uptime_s)
			PATH=$AGENT_PATH "$AGENT" "$port"
			rc=$?
			# back off 1,2,4,5,5... s while it keeps dying quickly
			[ $(($(uptime_s) - started)) -ge 10 ] && delay=1
			log "$AGENT exited with status $rc; restarting in ${delay}s"
			sleep "$delay"
			delay=$((delay * 2))
			[ "$delay" -le 5 ] || delay=5
		done
	) &
else
	# One-shot readiness line. Blocks until the host connects to the port.
	( printf 'SMOLVM_READY\n' >"$port" || log "warning: cannot write readiness to $port" ) &
fi

# Opt-in heartbeat (kernel argument smolvm.heartbeat=1): the boot id and a
# counter on the console every second, and the boot id in /root on disk, so
# a host can see that a restored guest continues where its snapshot left off
# (same boot id, counter going on) instead of booting afresh.
case " $(cat /proc/cmdline) " in
*" smolvm.heartbeat=1 "*)
	boot_id=$(cat /proc/sys/kernel/random/boot_id)
	echo "$boot_id" >/root/smolvm-boot-id && sync
	(
		trap - TERM INT USR1 USR2
		n=0
		while :; do
			n=$((n + 1))
			echo "SMOLVM_TICK $boot_id $n"
			sleep 1
		done
	) &
	;;
esac

echo "SMOLVM_READY"

shutdown() {
	trap '' TERM INT USR1 USR2
	log "shutting down ($1)"
	kill -TERM -1 2>/dev/null
	sleep 1
	kill -KILL -1 2>/dev/null
	sync
	umount -a -r 2>/dev/null
	mount -o remount,ro / 2>/dev/null
	sync
	"$1" -f
	exit 1 # not reached
}
trap 'shutdown poweroff' TERM USR2
trap 'shutdown halt' USR1
trap 'shutdown reboot' INT

# Stay PID 1. Each `wait` blocks in waitpid(-1, ...), which also reaps any
# orphan re-parented to us; traps interrupt the wait immediately.
while :; do
	sleep 3600 &
	wait $!
done
