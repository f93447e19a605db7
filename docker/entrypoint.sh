#!/bin/sh
# The container's main program, started by tini (PID 1, which reaps the VMMs:
# smolvmd double-forks each QEMU away from itself, so they are reparented to
# PID 1). Prepares what Docker leaves read-only, picks the guest kernel baked
# into the image when there is one, then becomes smolvmd with the container's
# arguments (`docker run IMAGE --flag ...`); flags and SMOLVMD_* variables
# override everything here.
set -eu

say() { echo "docker-entrypoint: $*" >&2; }

# Docker mounts /proc/sys and the container's cgroups read-only. smolvmd
# writes two settings below /proc/sys/net (net.ipv4.ip_forward and its
# bridge's route_localnet), which belong to the container's own network
# namespace, and puts each VM's QEMU into cgroups of its own (memory, CPU,
# pids limits) below the container's group. With CAP_SYS_ADMIN (which the
# VMM jail needs anyway) both are made writable here, and only those: the
# rest of /proc/sys stays read-only and the cgroup mounts are the container's
# own subtree. Without it nothing is changed (one line says so) and smolvmd
# stops at its first write, naming it.
read_only=
writable() {  # DIR PROBE: DIR made writable in place, unless PROBE is already
  [ -w "$2" ] && return 0
  mount -o remount,bind,rw "$1" 2>/dev/null \
    || { mount --bind "$1" "$1" && mount -o remount,bind,rw "$1"; } 2>/dev/null \
    || read_only="$read_only $1"
}
writable /proc/sys/net /proc/sys/net/ipv4/ip_forward
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2 (private cgroup namespace): only leaves may hold processes once
  # controllers are enabled, so everything here moves to init/ and the
  # controllers are offered to the groups smolvmd makes (as docker:dind does).
  writable /sys/fs/cgroup /sys/fs/cgroup/cgroup.procs
  if [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
      >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || say "could not enable cgroup controllers"
  fi
else
  # cgroup v1: one bind mount of the container's own group per controller.
  for dir in /sys/fs/cgroup/*/; do
    dir=${dir%/}
    if [ -f "$dir/cgroup.procs" ]; then writable "$dir" "$dir/cgroup.procs"; fi
  done
fi

if [ -n "$read_only" ]; then
  say "left read-only (no CAP_SYS_ADMIN, or an AppArmor profile forbids mount):$read_only"
fi

baked=/usr/local/share/smolvmd/kernel
if [ -z "${SMOLVMD_GUEST_KERNEL_DIR:-}" ] && [ -f "$baked/vmlinuz" ]; then
  SMOLVMD_GUEST_KERNEL_DIR=$baked
  export SMOLVMD_GUEST_KERNEL_DIR
fi
# Without a baked-in kernel the default applies: <state-dir>/kernel, in the
# state volume, fetched from Debian's archive (apt) on the first image build
# and kept with the volume.
exec /usr/local/sbin/smolvmd "$@"
