// File: policy.h
//
// What the operator allows tenants to name on the host: files (kernels,
// initrds, root disks) and host ports for forwards, and where guests may
// not go even with open egress. Filled from smolvmd.toml and flags;
// enforced by lib/core (paths, ports) and lib/net (egress).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace smolvm {

// Host files a VMConfig may name (kernel_path, initrd_path, rootfs_path).
// Empty paths mean the default image, which the daemon manages. A named
// path must resolve, without following symlinks or "..", to a regular file
// inside one of `allowed_dirs` (absolute, none of them overlapping the
// daemon's state or run dir).
struct HostPathPolicy {
  std::vector<std::string> allowed_dirs;
};

// Host addresses and ports a port forward may use. A port a host process
// already holds is refused too.
struct PortPolicy {
  std::vector<std::string> host_ips = {"127.0.0.1"};  // IPv4; "0.0.0.0" only if listed.
  uint32_t min_port = 10000;
  uint32_t max_port = 59999;
};

// Destinations no guest reaches, whatever its egress mode: link-local
// (cloud metadata), plus the host's directly connected LAN subnets unless
// `allow_lan`. The VM subnet and the host's own addresses are always closed.
struct EgressDenyPolicy {
  std::vector<std::string> deny_cidrs = {"169.254.0.0/16"};
  bool allow_lan = false;
};

}  // namespace smolvm
