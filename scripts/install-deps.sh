#!/usr/bin/env bash
# Installs everything smolvmd needs to build, test and run on Debian 12, from
# Debian's archive only. Idempotent; run as root.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev libsqlite3-dev libspdlog-dev nlohmann-json3-dev libcli11-dev
  libtomlplusplus-dev libarchive-dev libxxhash-dev zlib1g-dev openssl
  libgtest-dev libgmock-dev grpc-proto python3-grpcio
  qemu-system-x86 busybox-static e2fsprogs cpio gzip kmod
  iproute2 nftables iptables
  # Links over netlink, the firewall through libnftables (lib/net).
  libnl-3-dev libnl-route-3-dev libnftables-dev
  # sd_notify for the systemd unit (Type=notify, watchdog); Prometheus metrics.
  libsystemd-dev prometheus-cpp-dev
  # Image building (lib/image/rootfs_sources.cc): Debian userlands, OCI and
  # docker-archive images, compressed rootfs tarballs.
  mmdebstrap debian-archive-keyring distro-info-data gpg mount util-linux
  umoci skopeo zstd xz-utils tar coreutils python3
  # The Python SDK (sdk/python): its runtime, and pip's offline install of it.
  python3-protobuf python3-setuptools python3-wheel python3-pip
  systemd
  clang libclang-rt-14-dev
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (it uses apt-get)" >&2
  exit 1
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
