#!/usr/bin/env bash
# fetch-kernel.sh DEST_DIR
#
# Fetches Debian's cloud kernel (linux-image-cloud-amd64 -> the concrete
# linux-image-6.1.0-NN-cloud-amd64 package) WITHOUT installing it on the host:
# `apt-get download` + `dpkg-deb -x` into a temp dir. Writes into DEST_DIR:
#
#   vmlinuz          the bzImage
#   modules/         exactly the virtio .ko files the initramfs needs (plain,
#                    uncompressed .ko so busybox insmod can load them)
#   modules.order    the .ko file names, one per line, in load order
#   kernel-version   the kernel release, e.g. 6.1.0-56-cloud-amd64 (uname -r)
#   package-version  the package it came from, e.g.
#                    linux-image-6.1.0-56-cloud-amd64=6.1.192-2
#   config           the kernel's build config (for reference)
#
# Idempotent: when DEST_DIR already holds the candidate package version it
# does nothing. The result is built in DEST_DIR.tmp.$$ and renamed into place.
#
# Environment:
#   SMOLVM_KERNEL_META  meta package to resolve (default linux-image-cloud-amd64)
#   SMOLVM_KERNEL_DEB   path to a local linux-image-*.deb to use instead of apt
#                       (offline builds); idempotency then keys on that .deb.
set -euo pipefail

readonly PROG=fetch-kernel
readonly META="${SMOLVM_KERNEL_META:-linux-image-cloud-amd64}"
# Load order matters: each module only depends on ones before it.
readonly MODULES=(virtio_ring virtio virtio_mmio virtio_pci_modern_dev
  virtio_pci_legacy_dev virtio_pci virtio_blk failover net_failover
  virtio_net virtio_console virtio-rng)

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

[[ $# -eq 1 && -n "$1" ]] || die "usage: $PROG DEST_DIR"
DEST="${1%/}"
[[ -n "$DEST" ]] || die "DEST_DIR must not be /"

for tool in dpkg-deb find; do
  command -v "$tool" >/dev/null || die "'$tool' not found; install it (apt-get install -y dpkg findutils)"
done

# --- resolve the concrete package and its candidate version ----------------
resolve_pkg() {
  apt-cache depends "$META" 2>/dev/null |
    awk '$1 ~ /Depends:$/ && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
candidate_of() {
  apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }'
}

PKG="" VER="" DEB=""
if [[ -n "${SMOLVM_KERNEL_DEB:-}" ]]; then
  DEB="$(readlink -f -- "$SMOLVM_KERNEL_DEB")" ||
    die "SMOLVM_KERNEL_DEB=$SMOLVM_KERNEL_DEB does not exist"
  [[ -f "$DEB" ]] || die "SMOLVM_KERNEL_DEB=$SMOLVM_KERNEL_DEB is not a file"
  PKG="$(dpkg-deb -f "$DEB" Package)" || die "$DEB is not a valid .deb"
  VER="$(dpkg-deb -f "$DEB" Version)"
else
  for tool in apt-cache apt-get; do
    command -v "$tool" >/dev/null || die "'$tool' not found: this script needs a Debian host with apt (or set SMOLVM_KERNEL_DEB=/path/to/linux-image-*.deb)"
  done
  PKG="$(resolve_pkg || true)"
  [[ -n "$PKG" ]] && VER="$(candidate_of "$PKG" || true)"
  if [[ -z "$PKG" || -z "$VER" || "$VER" == "(none)" ]]; then
    log "apt-cache cannot resolve $META; running apt-get update"
    apt-get update -qq >&2 ||
      die "apt-get update failed; run 'apt-get update' as root (network access to the Debian mirror is needed) and retry"
    PKG="$(resolve_pkg || true)"
    [[ -n "$PKG" ]] ||
      die "cannot resolve $META to a linux-image-* package; check that bookworm 'main' is in /etc/apt/sources.list and run 'apt-get update'"
    VER="$(candidate_of "$PKG" || true)"
    [[ -n "$VER" && "$VER" != "(none)" ]] ||
      die "package $PKG has no installable candidate; run 'apt-get update' and check apt sources"
  fi
fi
WANT="$PKG=$VER"

# --- idempotency ------------------------------------------------------------
if [[ -f "$DEST/kernel-version" && -f "$DEST/package-version" &&
      -f "$DEST/vmlinuz" && -f "$DEST/modules.order" ]] &&
   [[ "$(cat "$DEST/package-version")" == "$WANT" ]]; then
  log "$DEST already holds $WANT ($(cat "$DEST/kernel-version")); nothing to do"
  exit 0
fi

# --- fetch and extract ------------------------------------------------------
mkdir -p -- "$(dirname -- "$DEST")"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/smolvm-fetch-kernel.XXXXXX")"
STAGE="$DEST.tmp.$$"
OLD="$DEST.old.$$"
cleanup() { rm -rf -- "$TMP" "$STAGE" "$OLD"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "$DEB" ]]; then
  log "downloading $WANT"
  apt_opts=()
  # apt drops to the _apt user for downloads, which cannot write into our
  # private temp dir; we only extract the file, so download as ourselves.
  [[ $EUID -eq 0 ]] && apt_opts+=(-o APT::Sandbox::User=root)
  (cd "$TMP" && apt-get download -qq "${apt_opts[@]}" "$WANT" >&2) ||
    die "apt-get download $WANT failed; check network access to the Debian mirror and run 'apt-get update' (or set SMOLVM_KERNEL_DEB=/path/to/.deb)"
  DEB="$(find "$TMP" -maxdepth 1 -name '*.deb' -print -quit)"
  [[ -n "$DEB" ]] || die "apt-get download produced no .deb for $WANT"
fi

log "extracting $(basename -- "$DEB")"
dpkg-deb -x "$DEB" "$TMP/x" || die "dpkg-deb -x $DEB failed (corrupt download? delete it and retry)"

shopt -s nullglob
kernels=("$TMP"/x/boot/vmlinuz-*)
shopt -u nullglob
[[ ${#kernels[@]} -eq 1 ]] || die "expected exactly one /boot/vmlinuz-* in $PKG, found ${#kernels[@]}"
KIMG="${kernels[0]}"
REL="${KIMG##*/vmlinuz-}"
# bzImage setup header magic "HdrS" at offset 0x202
[[ "$(dd if="$KIMG" bs=1 skip=514 count=4 status=none)" == "HdrS" ]] ||
  die "$KIMG is not a bzImage (no HdrS magic)"

MODDIR=""
for d in "$TMP/x/lib/modules/$REL" "$TMP/x/usr/lib/modules/$REL"; do
  [[ -d "$d" ]] && { MODDIR="$d"; break; }
done
[[ -n "$MODDIR" ]] || die "no lib/modules/$REL in $PKG"

rm -rf -- "$STAGE"
mkdir -p -- "$STAGE/modules"
cp -- "$KIMG" "$STAGE/vmlinuz"
[[ -f "$TMP/x/boot/config-$REL" ]] && cp -- "$TMP/x/boot/config-$REL" "$STAGE/config"

: >"$STAGE/modules.order"
for m in "${MODULES[@]}"; do
  mapfile -t found < <(find "$MODDIR" \( -name "$m.ko" -o -name "$m.ko.xz" \
    -o -name "$m.ko.zst" -o -name "$m.ko.gz" \) -type f)
  [[ ${#found[@]} -eq 1 ]] ||
    die "expected one $m.ko* in $PKG, found ${#found[@]}: is $m built into this kernel or missing? (check $TMP/x/boot/config-$REL)"
  src="${found[0]}" out="$STAGE/modules/$m.ko"
  case "$src" in
    *.ko)     cp -- "$src" "$out" ;;
    *.ko.xz)  command -v xz >/dev/null || die "$m is xz-compressed; apt-get install -y xz-utils"
              xz -dc -- "$src" >"$out" ;;
    *.ko.zst) command -v zstd >/dev/null || die "$m is zstd-compressed; apt-get install -y zstd"
              zstd -qdc -- "$src" >"$out" ;;
    *.ko.gz)  gzip -dc -- "$src" >"$out" ;;
  esac
  [[ "$(dd if="$out" bs=1 skip=1 count=3 status=none)" == "ELF" ]] ||
    die "$out is not an ELF object after extraction"
  echo "$m.ko" >>"$STAGE/modules.order"
done

echo "$REL" >"$STAGE/kernel-version"
echo "$WANT" >"$STAGE/package-version"

# --- install atomically -----------------------------------------------------
if [[ -e "$DEST" ]]; then
  mv -T -- "$DEST" "$OLD"
fi
mv -T -- "$STAGE" "$DEST"
log "installed $WANT (kernel $REL) into $DEST"
