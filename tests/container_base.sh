# shellcheck shell=bash
# Sourced by tests/container_test.sh and tests/systemd_unit_test.sh: one
# Debian 12 root filesystem with smolvmd's runtime packages
# (docker/runtime-packages.txt) plus systemd, built with mmdebstrap from
# Debian's archive and cached in the build tree as a zstd tarball named after
# a hash of everything that goes into it, so later runs skip the download.
# The container test imports it as its image base; the systemd test boots it
# with systemd-nspawn.

# smolvm_test_preflight NAME TOOL...: the checks both tests start with. Exits
# naming the fix unless run as root with every TOOL and a guest kernel; sets
# `kernel` (the guest kernel dir) and `run_id` (names of this run's objects).
smolvm_test_preflight() {
  local name="$1" build="$2" tool
  shift 2
  [ "$(id -u)" -eq 0 ] || { echo "$name: FAIL: run as root" >&2; exit 1; }
  for tool in "$@"; do
    command -v "$tool" >/dev/null ||
      { echo "$name: FAIL: $tool is missing: run scripts/install-deps.sh" >&2; exit 1; }
  done
  kernel="${SMOLVM_TEST_KERNEL_DIR:-$build/guest-kernel}"
  [ -f "$kernel/vmlinuz" ] || {
    echo "$name: FAIL: no guest kernel in $kernel: run $build/lib/smolvm-fetch-kernel $kernel" >&2
    exit 1
  }
  run_id="$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
}

# Packages on top of the runtime list: systemd as PID 1 for the nspawn test
# (the container image does not use them).
SMOLVM_BASE_EXTRA_PACKAGES="systemd,systemd-sysv,dbus"
SMOLVM_BASE_SOURCES=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
SMOLVM_BASE_OPTIONS=(
  --variant=apt
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
)

# smolvm_base_tarball SOURCE_DIR BUILD_DIR: prints the cached tarball's path,
# building it first when missing (~2 min, ~140 MB from the archive). Older
# tarballs (another package list) are removed.
smolvm_base_tarball() {
  local src="$1" build="$2"
  local cache="$build/container-cache"
  local packages
  packages="$(sed 's/#.*//' "$src/docker/runtime-packages.txt" | tr -s ' \n' '\n' | grep . | paste -sd, -)"
  packages="$packages,$SMOLVM_BASE_EXTRA_PACKAGES"
  local key
  key="$(printf '%s\n' "v1" "$packages" "${SMOLVM_BASE_OPTIONS[@]}" "${SMOLVM_BASE_SOURCES[@]}" \
    | sha256sum | cut -c1-16)"
  local tarball="$cache/base-$key.tar.zst"
  mkdir -p "$cache"
  (
    # Both tests are RUN_SERIAL; the lock is for a second ctest on the tree.
    flock 9
    if [ ! -s "$tarball" ]; then
      echo "base: mmdebstrap bookworm with ${packages//,/ } (cached as $tarball)" >&2
      local started=$SECONDS
      # Sources are given explicitly: without them mmdebstrap would read
      # them from stdin when stdin is not a terminal.
      if ! mmdebstrap "${SMOLVM_BASE_OPTIONS[@]}" --include="$packages" bookworm - \
          "${SMOLVM_BASE_SOURCES[@]}" </dev/null 2>"$cache/mmdebstrap.log" \
          | zstd -q -T0 -3 -o "$tarball.tmp"; then
        rm -f "$tarball.tmp"
        echo "base: mmdebstrap failed:" >&2
        tail -20 "$cache/mmdebstrap.log" >&2
        exit 1
      fi
      # A failed mmdebstrap can still leave zstd a tarball: only a complete
      # run renames it into place.
      grep -q '^I: success' "$cache/mmdebstrap.log" || { rm -f "$tarball.tmp"; exit 1; }
      mv "$tarball.tmp" "$tarball"
      echo "base: built in $((SECONDS - started)) s" >&2
      find "$cache" -maxdepth 1 -name 'base-*.tar.zst' ! -name "base-$key.tar.zst" -delete
    fi
  ) 9>"$cache/.lock" || return 1
  echo "$tarball"
}
