#!/usr/bin/env bash
# `cmake --install` of a build puts everything an operator needs in FHS
# places under the prefix (into a scratch DESTDIR, removed afterwards): the
# daemon, the CLI, the kernel fetcher, the guest agent and recipe, the
# systemd unit (rendered for the prefix) and sysusers file, the sample
# configuration and the docs the unit points at.
# Usage: install_test.sh BUILD_DIR
set -euo pipefail
build="$1"
prefix=/usr/local
dest="$(mktemp -d "${TMPDIR:-/tmp}/smolvm-install-test.XXXXXX")"
trap 'rm -rf -- "$dest"' EXIT
# Never without DESTDIR: the real prefix is the machine's.
if ! log="$(DESTDIR="$dest" cmake --install "$build" --prefix "$prefix" 2>&1)"; then
  echo "FAIL: cmake --install:"$'\n'"$log" >&2
  exit 1
fi
root="$dest$prefix"
failures=0
want() {  # want TEST PATH: `test TEST PATH` must hold under the prefix.
  if ! test "$1" "$root/$2"; then echo "FAIL: missing $1 $prefix/$2" >&2; failures=$((failures + 1)); fi
}
want -x sbin/smolvmd
want -x bin/smolvmctl
want -x bin/smolvm-fetch-kernel
want -x lib/smolvmd/smolvm-agent
want -f share/smolvmd/guest/rootfs-init.sh
want -f share/smolvmd/guest/initramfs-init.sh
want -f lib/systemd/system/smolvmd.service
want -f lib/sysusers.d/smolvmd.conf
want -f share/doc/smolvmd/smolvmd.toml.example
want -f share/doc/smolvmd/README.md
want -f share/doc/smolvmd/systemd-hardening.md
want -f share/doc/smolvmd/cli.md
# Every path the unit names exists in the installed tree.
unit="$root/lib/systemd/system/smolvmd.service"
for path in $(grep -oE "$prefix/[A-Za-z0-9_./-]+" "$unit" | sort -u); do
  [ -e "$dest$path" ] || { echo "FAIL: the unit names $path, which is not installed" >&2; failures=$((failures + 1)); }
done
grep -q "^ExecStart=$prefix/sbin/smolvmd " "$unit" || { echo "FAIL: ExecStart is not $prefix/sbin/smolvmd" >&2; failures=$((failures + 1)); }
[ "$failures" -eq 0 ] && echo "install_test: ok ($(find "$dest" -type f | wc -l) files)"
exit "$failures"
