#!/usr/bin/env bash
# Installs everything smolvmd needs to build, test and run on Debian 12, from
# Debian's archive only. Idempotent; run as root.
# --build-only: what compiling and running needs, without the tools only the
# test suite uses (docker/Dockerfile's build stage).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev libsqlite3-dev libspdlog-dev nlohmann-json3-dev libcli11-dev
  libtomlplusplus-dev libarchive-dev libxxhash-dev zlib1g-dev openssl
  libgtest-dev libgmock-dev grpc-proto python3-grpcio
  qemu-system-x86 busybox-static e2fsprogs cpio gzip kmod
  iproute2 nftables iptables
  # Links over netlink, the firewall through libnftables, the VMs' resolver's
  # DNS messages through ldns (lib/net).
  libnl-3-dev libnl-route-3-dev libnftables-dev libldns-dev
  # sd_notify for the systemd unit (Type=notify, watchdog); Prometheus metrics.
  libsystemd-dev prometheus-cpp-dev
  # Image building (lib/image/rootfs_sources.cc): Debian userlands, OCI and
  # docker-archive images, compressed rootfs tarballs.
  mmdebstrap debian-archive-keyring distro-info-data gpg mount util-linux
  umoci skopeo zstd xz-utils tar coreutils python3
  # The Python SDK (sdk/python): its runtime, and pip's offline install of it.
  python3-protobuf python3-setuptools python3-wheel python3-pip
  systemd
)
# Only the test suite: fuzzers (clang), the container image test (Docker's
# daemon and CLI, used as /usr/bin/docker whatever else is in PATH) and the
# unit under a real systemd (systemd-nspawn). Where systemd is not PID 1 (CI)
# installing docker.io starts no dockerd (invoke-rc.d finds no runlevel, and
# policy-rc.d, where present, forbids it); tests/container_test.sh runs its
# own in a network namespace. On a host run by systemd, Debian starts
# docker.service (README "Networking" says how smolvmd copes with Docker).
# tmux plays the user's terminal for `smolvmctl vm shell` (cli_test);
# dnsmasq-base is the fake internet's DNS server (network_policy_test).
TEST_PACKAGES=(
  clang libclang-rt-14-dev
  docker.io systemd-container
  tmux dnsmasq-base
)
if [ "${1:-}" != "--build-only" ]; then
  PACKAGES+=("${TEST_PACKAGES[@]}")
fi

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
