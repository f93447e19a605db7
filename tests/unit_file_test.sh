#!/usr/bin/env bash
# Checks systemd/smolvmd.service without a running systemd (CI runs in a
# container whose PID 1 is not systemd; systemd-analyze works offline):
#   1. `systemd-analyze verify` reports nothing (unknown or misspelt keys,
#      bad values, missing dependencies);
#   2. the sandbox is not weakened: `systemd-analyze security --offline`
#      stays at or below the exposure measured for the committed unit, and
#      no check that passes today fails;
#   3. the sandbox still lets smolvmd work: the settings it depends on (see
#      docs/systemd-hardening.md) are present, the capability set is exactly
#      the documented one, and every system call measured under strace for
#      smolvmd, QEMU 7.2 and the helpers is allowed by SystemCallFilter=.
# Usage: unit_file_test.sh [path/to/smolvmd.service]
# Needs systemd-analyze (Debian package systemd, see scripts/install-deps.sh).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
unit="${1:-$here/../systemd/smolvmd.service}"
unit="$(cd "$(dirname "$unit")" && pwd)/$(basename "$unit")"

# The exposure of the committed unit under systemd 252 (Debian 12), x10:
# "4.0 OK". Lower it when the unit gets stricter; never raise it to let a
# weaker unit pass.
threshold=40

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

command -v systemd-analyze >/dev/null || {
  echo "unit_file_test: systemd-analyze not found: install Debian's systemd package (scripts/install-deps.sh)" >&2
  exit 1
}
[ -f "$unit" ] || { echo "unit_file_test: no unit file at $unit" >&2; exit 1; }
version="$(systemd-analyze --version | awk 'NR==1 {print $2}')"
echo "unit_file_test: $unit, systemd $version"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/smolvm-unit-test.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT

# --- 1. verify ---------------------------------------------------------------
# verify insists that ExecStart= exists and loads the unit's dependencies, so
# it runs against a scratch root holding the host's system units, a stub
# /usr/local/sbin/smolvmd and the unit where `cmake --install` puts it.
root="$tmp/root"
mkdir -p "$root/usr/lib/systemd" "$root/usr/local/sbin" "$root/usr/local/lib/systemd/system"
for d in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$d" ]; then cp -a "$d" "$root/usr/lib/systemd/"; break; fi
done
printf '#!/bin/sh\nexit 0\n' >"$root/usr/local/sbin/smolvmd"
chmod 0755 "$root/usr/local/sbin/smolvmd"
cp "$unit" "$root/usr/local/lib/systemd/system/smolvmd.service"
if ! out="$(systemd-analyze verify --root="$root" --man=no --generators=no smolvmd.service 2>&1)"; then
  fail "systemd-analyze verify failed:"$'\n'"$out"
elif [ -n "$out" ]; then
  # Any message is about this unit (the only one loaded besides systemd's own).
  fail "systemd-analyze verify complained:"$'\n'"$out"
else
  echo "ok: systemd-analyze verify"
fi

# --- 2. security exposure ----------------------------------------------------
report="$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1 || true)"
echo "$report" | tail -n 1
if [ "$version" = 252 ]; then
  if ! systemd-analyze security --offline=true --threshold="$threshold" --no-pager "$unit" >/dev/null 2>&1; then
    fail "exposure is above $((threshold / 10)).$((threshold % 10)) (the committed unit's): a setting was weakened"
  else
    echo "ok: exposure <= $((threshold / 10)).$((threshold % 10))"
  fi
else
  # Other versions add or rescore checks; the threshold is systemd 252's.
  echo "note: exposure threshold not applied (measured with systemd 252, this is $version)"
fi
# Checks that pass for the committed unit (names as systemd 252 prints them;
# checks a version lacks are ignored). A failing one is a weakened setting,
# even when another change keeps the total under the threshold.
must_pass=(
  "SystemCallFilter=~@swap" "SystemCallFilter=~@reboot" "SystemCallFilter=~@raw-io"
  "SystemCallFilter=~@obsolete" "SystemCallFilter=~@module" "SystemCallFilter=~@debug"
  "SystemCallFilter=~@cpu-emulation" "SystemCallFilter=~@clock"
  "RestrictRealtime=" "NoNewPrivileges=" "AmbientCapabilities=" "SystemCallArchitectures="
  "ProtectSystem=" "PrivateTmp=" "ProtectHome=" "KeyringMode=" "NotifyAccess=" "ProtectClock="
  "ProtectKernelLogs=" "ProtectKernelModules=" "ProtectKernelTunables=" "PrivateMounts="
  "ProtectHostname=" "LockPersonality=" "RestrictSUIDSGID="
  "RestrictNamespaces=~user" "RestrictNamespaces=~pid" "RestrictNamespaces=~net"
  "RestrictNamespaces=~cgroup"
  "RestrictAddressFamilies=~AF_PACKET" "RestrictAddressFamilies=~…"
  "CapabilityBoundingSet=~CAP_SYS_TIME" "CapabilityBoundingSet=~CAP_BPF"
  "CapabilityBoundingSet=~CAP_SYS_RAWIO" "CapabilityBoundingSet=~CAP_SYS_PTRACE"
  "CapabilityBoundingSet=~CAP_SYS_(NICE|RESOURCE)" "CapabilityBoundingSet=~CAP_AUDIT_*"
  "CapabilityBoundingSet=~CAP_SYSLOG" "CapabilityBoundingSet=~CAP_SYS_PACCT"
  "CapabilityBoundingSet=~CAP_WAKE_ALARM" "CapabilityBoundingSet=~CAP_LINUX_IMMUTABLE"
  "CapabilityBoundingSet=~CAP_IPC_LOCK" "CapabilityBoundingSet=~CAP_SYS_MODULE"
  "CapabilityBoundingSet=~CAP_SYS_TTY_CONFIG" "CapabilityBoundingSet=~CAP_SYS_BOOT"
  "CapabilityBoundingSet=~CAP_SYS_CHROOT" "CapabilityBoundingSet=~CAP_BLOCK_SUSPEND"
  "CapabilityBoundingSet=~CAP_LEASE" "CapabilityBoundingSet=~CAP_MKNOD"
  "CapabilityBoundingSet=~CAP_MAC_*"
)
declare -A row
while IFS= read -r line; do
  name="$(echo "$line" | awk '{print $2}')"
  row["$name"]="$(echo "$line" | awk '{print $1}')"
done < <(echo "$report" | grep -E '^(✓|✗) ')
for check in "${must_pass[@]}"; do
  if [ "${row[$check]:-absent}" = "✗" ]; then
    fail "security check $check no longer passes: $(echo "$report" | grep -F -- "$check" | head -n 1)"
  fi
done
echo "ok: ${#must_pass[@]} security checks still pass"

# --- 3. what smolvmd needs ----------------------------------------------------
# Non-comment assignments of [Service] (and [Unit]), "Key=value".
assignments="$(sed -e 's/^[[:space:]]*//' "$unit" | grep -E '^[A-Za-z]+=' || true)"
last() { echo "$assignments" | grep -E "^$1=" | tail -n 1 | cut -d= -f2- || true; }
all() { echo "$assignments" | grep -E "^$1=" | cut -d= -f2- | tr '\n' ' ' || true; }
want() {  # KEY VALUE: the last assignment of KEY is VALUE
  [ "$(last "$1")" = "$2" ] || fail "$1 must be $2 (is '$(last "$1")'): see docs/systemd-hardening.md"
}
want_not() {  # KEY VALUE: KEY is not VALUE (unset is fine)
  [ "$(last "$1")" != "$2" ] || fail "$1=$2 breaks smolvmd: see docs/systemd-hardening.md"
}
want_words() {  # KEY WORD...: every WORD appears in KEY's assignments
  local key=$1 have w
  shift
  have=" $(all "$key") "
  for w in "$@"; do
    [[ "$have" == *" $w "* ]] || fail "$key lacks $w: see docs/systemd-hardening.md"
  done
}
want KillMode process                 # VMs survive a daemon restart
want Delegate yes                     # per-VM cgroups below the unit's (v2)
want RuntimeDirectoryPreserve yes     # guest RAM files survive a restart
want_not ProtectControlGroups yes     # the VMs' cgroups are created at runtime
want_not PrivateDevices yes           # /dev/kvm, /dev/net/tun
want_not MemoryDenyWriteExecute yes   # QEMU TCG writes and runs generated code
want_not PrivateUsers yes             # VMMs run as real per-VM uids
want_not PrivateNetwork yes           # TAPs, the bridge, NAT are the host's
want_not ProtectProc invisible        # the VMMs (other uids) stay visible
want_not ProtectProc noaccess
want_not ProcSubset pid               # /proc/sys, /proc/net
[ -z "$(last User)" ] || fail "User= must stay unset: smolvmd runs as root"
[ -z "$(last DynamicUser)" ] || [ "$(last DynamicUser)" = no ] || fail "DynamicUser= must stay off"
want_words RestrictNamespaces mnt ipc uts
want_words ReadWritePaths /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf
want_words DeviceAllow /dev/char/10:232 /dev/char/10:200
want_words RestrictAddressFamilies AF_UNIX AF_NETLINK AF_INET AF_INET6

# The capability set is exactly the documented one: fewer breaks smolvmd,
# more is a privilege nothing needs (update the doc and this list together).
caps_expected="CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_KILL CAP_NET_ADMIN CAP_NET_RAW CAP_SETGID CAP_SETPCAP CAP_SETUID CAP_SYS_ADMIN"
caps_have="$(all CapabilityBoundingSet | tr ' ' '\n' | grep -v '^$' | sort -u | tr '\n' ' ' | sed 's/ $//')"
[ "$caps_have" = "$caps_expected" ] ||
  fail "CapabilityBoundingSet is '$caps_have', expected '$caps_expected'"

# Every system call seen under strace -f (docs/systemd-hardening.md, "System
# calls"): smolvmd, its VMM jail, QEMU 7.2 (TCG boot, snapshot to an fd,
# restore; KVM start) and ip, bridge, sysctl, nft, iptables(-legacy),
# the image builders (mmdebstrap: chroot; mkfs.ext4, umoci, skopeo).
measured="
accept4 access alarm arch_prctl bind brk chdir chmod chown chroot clock_nanosleep clone clone3 close
close_range connect copy_file_range dup dup2 epoll_create1 epoll_ctl epoll_wait eventfd2 execve
exit exit_group faccessat2 fadvise64 fallocate fchdir fchmod fchmodat fchown fcntl fdatasync flock
fsetxattr fstatfs fsync ftruncate futex get_mempolicy getdents64 getegid geteuid getgid getpeername
getpgrp getpid getppid getrandom getsockname getsockopt gettid getuid io_uring_setup ioctl listen
llistxattr lseek madvise memfd_create mkdir mmap mount mprotect munmap newfstatat openat pipe2
pivot_root poll ppoll prctl pread64 preadv prlimit64 pselect6 pwrite64 pwritev read readlink
readlinkat readv recvmsg rename renameat2 rmdir rseq rt_sigaction rt_sigprocmask rt_sigreturn
rt_sigtimedwait sched_getaffinity sched_getparam sched_getscheduler sched_yield seccomp sendmsg
sendto set_mempolicy set_robust_list set_tid_address setgroups setpgid setresgid setresuid setsid
setsockopt shutdown signalfd4 socket statfs symlink symlinkat sysinfo tgkill umask umount2 uname
unlink unlinkat unshare wait4 write writev
"
declare -A allowed=() denied=() expanded=()
expand_filter() {  # TARGET NAME...: adds the system calls of NAMEs and @groups to TARGET
  local target=$1 t
  shift
  for t in "$@"; do
    if [[ "$t" == @* ]]; then
      [ -n "${expanded[$target$t]:-}" ] && continue
      expanded["$target$t"]=1
      # shellcheck disable=SC2046  # one word per member
      expand_filter "$target" $(systemd-analyze syscall-filter --no-pager "$t" 2>/dev/null |
        tail -n +2 | sed 's/#.*//' | tr -s ' \t' '\n' | grep -v '^$' || true)
    elif [ "$target" = allow ]; then
      allowed["$t"]=1
    else
      denied["$t"]=1
    fi
  done
}
filter_lines="$(echo "$assignments" | grep -E '^SystemCallFilter=' | cut -d= -f2- || true)"
[ -n "$filter_lines" ] || fail "SystemCallFilter= is gone"
[[ "$(echo "$filter_lines" | head -n 1)" != "~"* ]] ||
  fail "SystemCallFilter must start with an allow list (it is a deny list now)"
while IFS= read -r line; do
  [ -n "$line" ] || continue
  if [[ "$line" == "~"* ]]; then
    # shellcheck disable=SC2086
    expand_filter deny ${line#\~}
  else
    # shellcheck disable=SC2086
    expand_filter allow $line
  fi
done <<<"$filter_lines"
missing=""
for s in $measured; do
  [ -n "${allowed[$s]:-}" ] && [ -z "${denied[$s]:-}" ] || missing="$missing $s"
done
if [ -n "$missing" ]; then
  fail "SystemCallFilter no longer allows:$missing"
else
  echo "ok: SystemCallFilter allows all $(echo "$measured" | wc -w) measured system calls"
fi

if [ "$failures" -gt 0 ]; then
  echo "unit_file_test: $failures failure(s)" >&2
  exit 1
fi
echo "unit_file_test: ok"
