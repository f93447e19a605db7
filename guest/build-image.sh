#!/usr/bin/env bash
# build-image.sh KERNEL_DIR OUT_DIR [AGENT]
#
# Builds the smolvm default guest image from KERNEL_DIR (made by
# fetch-kernel.sh) and busybox-static, without root mounts and without network:
#
#   OUT_DIR/vmlinuz       copy of KERNEL_DIR/vmlinuz (bzImage)
#   OUT_DIR/initrd.img    gzip'd newc cpio: /init (initramfs-init.sh), busybox,
#                         the virtio modules + modules.order
#   OUT_DIR/rootfs.ext4   sparse ext4 (default 256 MiB): busybox + applet
#                         symlinks, /etc, /sbin/init (rootfs-init.sh), and
#                         /sbin/smolvm-agent if AGENT is given
#   OUT_DIR/cmdline       the kernel command line to use (one line)
#   OUT_DIR/image.env     KERNEL_VERSION=, KERNEL_PACKAGE=, BUILT_AT= (UTC), ...
#
# Kernel command line (QEMU -append):
#
#   console=ttyS0 root=/dev/vda rw quiet panic=-1
#
#   console=ttyS0  the serial console; init prints SMOLVM_READY there
#   root=/dev/vda  read by the initramfs /init (it is also the default); the
#                  rootfs must be the first virtio-blk disk
#   rw             mount the root read-write (default; `ro` also works)
#   quiet          optional: fewer kernel messages on the console
#   panic=-1       on a kernel panic reboot at once; run QEMU with -no-reboot
#                  so that a panic (or a guest reboot) ends the QEMU process.
#   Optional: rootfstype=, rootflags=, init=, smolvm.rootwait=SECONDS (default 10).
#
# The VM needs: virtio-blk-pci disk (the rootfs), and for the readiness signal a
# virtio-serial-pci bus with `virtserialport,name=org.smolvm.agent`. The guest
# writes "SMOLVM_READY\n" to that port once, when the host side is connected.
#
# AGENT (or env SMOLVM_AGENT): the guest agent binary (CMake target
# smolvm-agent), which must be a statically linked ELF executable. It is
# installed stripped as /sbin/smolvm-agent (0755); /sbin/init then runs it on
# the port instead of writing the readiness line (see rootfs-init.sh), and
# image.env records AGENT_SHA256 (of the given file) so callers can tell
# images with different agents apart. Without it the image has no agent.
#
# OUT_DIR must not exist (the caller decides about caching); the image is built
# in OUT_DIR.tmp.$$ and renamed into place.
#
# Environment:
#   BUSYBOX           statically linked busybox to use (default /bin/busybox,
#                     from Debian's busybox-static)
#   ROOTFS_SIZE_MIB   rootfs size (default 256; sparse)
set -euo pipefail

readonly PROG=build-image
readonly BOOT_ARGS="console=ttyS0 root=/dev/vda rw quiet panic=-1"
HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
BUSYBOX="${BUSYBOX:-/bin/busybox}"
ROOTFS_SIZE_MIB="${ROOTFS_SIZE_MIB:-256}"
export PATH="$PATH:/usr/sbin:/sbin"
umask 022

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

# elf_static_x86_64 FILE: a 64-bit little-endian x86-64 ELF executable with
# no program interpreter (no PT_INTERP program header), i.e. linked -static.
# Reads the headers with od, so it needs neither file(1) nor binutils.
elf_static_x86_64() {
  local f="$1" phoff phentsize phnum i
  elf_u() { od -An -t "u$2" -j "$1" -N "$2" -- "$f" | tr -d ' '; }
  [[ "$(od -An -c -N 4 -- "$f" | tr -d ' ')" == '177ELF' ]] || return 1
  # ELF64, little-endian, x86-64
  [[ "$(elf_u 4 1)" == 2 && "$(elf_u 5 1)" == 1 && "$(elf_u 18 2)" == 62 ]] || return 1
  [[ "$(elf_u 16 2)" == 2 || "$(elf_u 16 2)" == 3 ]] || return 1  # ET_EXEC or ET_DYN (static-pie)
  phoff="$(elf_u 32 8)" phentsize="$(elf_u 54 2)" phnum="$(elf_u 56 2)"
  [[ -n "$phoff" && -n "$phentsize" && -n "$phnum" && "$phnum" -gt 0 ]] || return 1
  for ((i = 0; i < phnum; i++)); do
    [[ "$(elf_u $((phoff + i * phentsize)) 4)" == 3 ]] && return 1  # PT_INTERP
  done
  return 0
}

[[ ($# -eq 2 || $# -eq 3) && -n "$1" && -n "$2" ]] ||
  die "usage: $PROG KERNEL_DIR OUT_DIR [AGENT]"
KDIR="${1%/}"
OUT="${2%/}"
AGENT="${3:-${SMOLVM_AGENT:-}}"
[[ -n "$OUT" ]] || die "OUT_DIR must not be /"

# --- checks -----------------------------------------------------------------
for tool in cpio gzip mkfs.ext4 truncate; do
  command -v "$tool" >/dev/null ||
    die "'$tool' not found; apt-get install -y cpio gzip e2fsprogs coreutils"
done
for f in vmlinuz modules.order kernel-version; do
  [[ -f "$KDIR/$f" ]] || die "$KDIR/$f missing; run guest/fetch-kernel.sh $KDIR first"
done
[[ -x "$BUSYBOX" ]] || die "$BUSYBOX not found; apt-get install -y busybox-static (or set BUSYBOX=)"
if command -v ldd >/dev/null && LC_ALL=C ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; the guest has no libc. apt-get install -y busybox-static"
fi
"$BUSYBOX" true 2>/dev/null || die "$BUSYBOX does not run"
for s in initramfs-init.sh rootfs-init.sh; do
  [[ -f "$HERE/$s" ]] || die "$HERE/$s missing"
done
AGENT_SHA256=""
if [[ -n "$AGENT" ]]; then
  [[ -f "$AGENT" && -x "$AGENT" ]] || die "agent $AGENT is not an executable file"
  elf_static_x86_64 "$AGENT" ||
    die "agent $AGENT is not a statically linked x86-64 ELF executable" \
      "(the guest has no libc; build the CMake target smolvm-agent)"
  AGENT_SHA256="$(sha256sum -- "$AGENT" | cut -d' ' -f1)"
fi
[[ "$ROOTFS_SIZE_MIB" =~ ^[0-9]+$ && "$ROOTFS_SIZE_MIB" -ge 16 ]] ||
  die "ROOTFS_SIZE_MIB must be an integer >= 16"
[[ -e "$OUT" ]] && die "$OUT already exists; remove it first (the caller decides about caching)"

KVER="$(cat "$KDIR/kernel-version")"
KPKG=""
[[ -f "$KDIR/package-version" ]] && KPKG="$(cat "$KDIR/package-version")"

mkdir -p -- "$(dirname -- "$OUT")"
STAGE="$OUT.tmp.$$"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/smolvm-build-image.XXXXXX")"
cleanup() { rm -rf -- "$WORK" "$STAGE"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -- "$STAGE"

cp -- "$KDIR/vmlinuz" "$STAGE/vmlinuz"

# --- initramfs --------------------------------------------------------------
log "building initrd.img"
IR="$WORK/initrd"
mkdir -p "$IR"/{bin,sbin,dev,proc,sys,newroot,lib/modules}
cp -- "$BUSYBOX" "$IR/bin/busybox"
chmod 0755 "$IR/bin/busybox"
BB_APPLETS=" $("$BUSYBOX" --list | tr '\n' ' ') "
# applets /init and /sbin/init use; fail early if this busybox lacks one
for a in sh mount umount insmod switch_root poweroff reboot halt sleep usleep \
         mkdir cat tr findfs ls dmesg hostname ip kill sync ln printf; do
  [[ "$BB_APPLETS" == *" $a "* ]] || die "$BUSYBOX has no '$a' applet (use Debian's busybox-static)"
done
for a in sh mount umount insmod switch_root poweroff reboot sleep \
         usleep mkdir cat tr findfs ls dmesg; do
  ln -s busybox "$IR/bin/$a"
done
while read -r ko; do
  [[ -n "$ko" ]] || continue
  [[ -f "$KDIR/modules/$ko" ]] || die "$KDIR/modules/$ko listed in modules.order but missing"
  cp -- "$KDIR/modules/$ko" "$IR/lib/modules/$ko"
done <"$KDIR/modules.order"
cp -- "$KDIR/modules.order" "$IR/lib/modules/modules.order"
install -m 0755 -- "$HERE/initramfs-init.sh" "$IR/init"
# The kernel's built-in initramfs supplies /dev/console, so no device nodes
# (and no root) are needed here; /init mounts devtmpfs first thing.
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort |
  cpio -o -H newc -R 0:0 --quiet) | gzip -9 -n >"$STAGE/initrd.img"

# --- root filesystem ---------------------------------------------------------
log "building rootfs.ext4 (${ROOTFS_SIZE_MIB} MiB, sparse)"
RD="$WORK/rootfs"
mkdir -p "$RD"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,run,tmp,root,mnt,var/log,var/tmp,home}
chmod 1777 "$RD/tmp" "$RD/var/tmp"
chmod 0700 "$RD/root"
cp -- "$BUSYBOX" "$RD/bin/busybox"
chmod 0755 "$RD/bin/busybox"
install -m 0755 -- "$HERE/rootfs-init.sh" "$RD/sbin/init"
if [[ -n "$AGENT" ]]; then
  install -m 0755 -- "$AGENT" "$RD/sbin/smolvm-agent"
  # Debug info is of no use in the guest (a third of the size).
  if command -v strip >/dev/null; then
    strip --strip-all -- "$RD/sbin/smolvm-agent" || die "strip $AGENT failed"
  fi
  log "installed agent $AGENT as /sbin/smolvm-agent"
fi
# Applet symlinks (what `busybox --install -s` would do), at the paths busybox
# itself reports; never overwrite a real file such as /sbin/init.
if applets="$("$BUSYBOX" --list-full 2>/dev/null)" && [[ -n "$applets" ]]; then :; else
  applets="$("$BUSYBOX" --list | sed 's|^|bin/|')"
fi
while read -r path; do
  [[ -n "$path" && "$path" != linuxrc ]] || continue
  [[ -e "$RD/$path" || -L "$RD/$path" ]] && continue
  mkdir -p "$RD/$(dirname -- "$path")"
  ln -s /bin/busybox "$RD/$path"
done <<<"$applets"

cat >"$RD/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$RD/etc/shadow" <<'EOF'
root:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
EOF
chmod 0600 "$RD/etc/shadow"
cat >"$RD/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
echo smolvm >"$RD/etc/hostname"
cat >"$RD/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	smolvm
::1	localhost ip6-localhost ip6-loopback
EOF
: >"$RD/etc/resolv.conf"
cat >"$RD/etc/profile" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
EOF
cat >"$RD/etc/os-release" <<EOF
ID=smolvm
NAME="smolvm guest"
PRETTY_NAME="smolvm guest (busybox, kernel $KVER)"
EOF
echo "# rootfs is mounted by the initramfs; nothing else here" >"$RD/etc/fstab"

truncate -s "${ROOTFS_SIZE_MIB}M" "$STAGE/rootfs.ext4"
# -b 4096: images < 512 MiB would otherwise get the "small" 1 KiB block size.
mkfs.ext4 -q -F -L smolvm-root -b 4096 -m 0 -E root_owner=0:0 \
  -d "$RD" "$STAGE/rootfs.ext4" >&2 ||
  die "mkfs.ext4 -d failed (needs e2fsprogs >= 1.43)"

# --- metadata + install ------------------------------------------------------
echo "$BOOT_ARGS" >"$STAGE/cmdline"
cat >"$STAGE/image.env" <<EOF
KERNEL_VERSION=$KVER
KERNEL_PACKAGE=$KPKG
BUILT_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ROOTFS_SIZE_MIB=$ROOTFS_SIZE_MIB
AGENT_SHA256=$AGENT_SHA256
EOF

[[ -e "$OUT" ]] && die "$OUT appeared while building; not replacing it"
mv -T -- "$STAGE" "$OUT"
log "image ready in $OUT (kernel $KVER)"
