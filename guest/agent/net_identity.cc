#include "guest/agent/net_identity.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "guest/agent/log.h"
#include "lib/base/unique_fd.h"

namespace smolvm::guest {
namespace {

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }
std::string Errno(const std::string& what, int err) { return what + ": " + std::strerror(err); }

// "aa:bb:cc:dd:ee:ff", exactly.
bool ParseMac(const std::string& s, unsigned char out[ETH_ALEN]) {
  if (s.size() != 17) return false;
  auto nibble = [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10;
  };
  for (size_t i = 0; i < ETH_ALEN; ++i) {
    const char hi = s[3 * i], lo = s[3 * i + 1];
    if (!std::isxdigit(static_cast<unsigned char>(hi)) ||
        !std::isxdigit(static_cast<unsigned char>(lo)) || (i < 5 && s[3 * i + 2] != ':')) {
      return false;
    }
    out[i] = static_cast<unsigned char>(nibble(hi) << 4 | nibble(lo));
  }
  return true;
}

bool ParseIpv4(const std::string& s, in_addr* out) {
  return inet_pton(AF_INET, s.c_str(), out) == 1;
}

// A request about interface `dev` (at most IFNAMSIZ - 1 characters).
ifreq Ifreq(const std::string& dev) {
  ifreq r{};
  std::memcpy(r.ifr_name, dev.data(), std::min(dev.size(), sizeof(r.ifr_name) - 1));
  return r;
}

in_addr Netmask(uint32_t prefix) {
  in_addr mask;
  mask.s_addr = htonl(static_cast<uint32_t>(0xffffffffull << (32 - prefix)));
  return mask;
}

// The identity, parsed and checked.
struct Identity {
  std::string dev;
  unsigned ifindex = 0;
  unsigned char mac[ETH_ALEN] = {};
  in_addr address{};
  uint32_t prefix = 0;
  bool has_gateway = false;
  in_addr gateway{};
  std::string dns;
};

std::string Parse(const agent::v1::NetworkIdentity& id, Identity* out) {
  out->dev = id.interface().empty() ? "eth0" : id.interface();
  if (out->dev.size() >= IFNAMSIZ || out->dev.find_first_of("/: \t\n") != std::string::npos) {
    return "interface \"" + out->dev + "\": not an interface name";
  }
  if (!ParseMac(id.mac(), out->mac) || (out->mac[0] & 1) != 0) {
    return "mac \"" + id.mac() + "\": not a unicast aa:bb:cc:dd:ee:ff address";
  }
  if (!ParseIpv4(id.ipv4_address(), &out->address)) {
    return "address \"" + id.ipv4_address() + "\": not an IPv4 address";
  }
  out->prefix = id.prefix_length();
  if (out->prefix < 1 || out->prefix > 32) {
    return "prefix length " + std::to_string(out->prefix) + ": not 1-32";
  }
  out->has_gateway = !id.gateway().empty();
  if (out->has_gateway && !ParseIpv4(id.gateway(), &out->gateway)) {
    return "gateway \"" + id.gateway() + "\": not an IPv4 address";
  }
  in_addr dns;
  if (!id.dns_server().empty() && !ParseIpv4(id.dns_server(), &dns)) {
    return "dns server \"" + id.dns_server() + "\": not an IPv4 address";
  }
  out->dns = id.dns_server();
  return "";
}

// ---- rtnetlink: requests and their acknowledgements ----

class NlRequest {
 public:
  NlRequest(uint16_t type, uint16_t flags, const void* body, size_t len) {
    buf_.resize(NLMSG_SPACE(len));
    nlmsghdr* h = hdr();
    h->nlmsg_len = static_cast<uint32_t>(NLMSG_LENGTH(len));
    h->nlmsg_type = type;
    h->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    std::memcpy(NLMSG_DATA(h), body, len);
  }
  void AddAttr(uint16_t type, const void* data, size_t len) {
    const size_t at = NLMSG_ALIGN(hdr()->nlmsg_len);
    buf_.resize(at + RTA_SPACE(len));
    auto* rta = reinterpret_cast<rtattr*>(buf_.data() + at);
    rta->rta_type = type;
    rta->rta_len = static_cast<uint16_t>(RTA_LENGTH(len));
    std::memcpy(RTA_DATA(rta), data, len);
    hdr()->nlmsg_len = static_cast<uint32_t>(at + RTA_LENGTH(len));
  }
  nlmsghdr* hdr() { return reinterpret_cast<nlmsghdr*>(buf_.data()); }

 private:
  std::vector<char> buf_;  // operator new's alignment suits nlmsghdr
};

class Rtnetlink {
 public:
  // "" or the error. Idempotent.
  std::string Open() {
    if (fd_.valid()) return "";
    fd_.Reset(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
    if (!fd_.valid()) return Errno("socket NETLINK_ROUTE");
    // The kernel answers at once; this only bounds a surprise.
    timeval tv{2, 0};
    setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    buffer_.assign(16384, 0);  // 64 KiB, aligned for nlmsghdr; touched now
    return "";
  }

  // Sends `req` and waits for its acknowledgement: 0 or the errno.
  int Transact(NlRequest& req) {
    const uint32_t seq = ++seq_;
    req.hdr()->nlmsg_flags |= NLM_F_ACK;
    req.hdr()->nlmsg_seq = seq;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (sendto(fd_.get(), req.hdr(), req.hdr()->nlmsg_len, 0,
               reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
      return errno;
    }
    for (;;) {
      ssize_t n = recv(fd_.get(), buffer_.data(), buffer_.size() * sizeof(uint32_t), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) return EPIPE;
      size_t left = static_cast<size_t>(n);
      for (auto* h = reinterpret_cast<nlmsghdr*>(buffer_.data()); NLMSG_OK(h, left);
           h = NLMSG_NEXT(h, left)) {
        // Anything else is a late answer to an earlier, timed-out request.
        if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR) continue;
        return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;  // 0 = the ack
      }
    }
  }

 private:
  UniqueFd fd_;
  uint32_t seq_ = 0;
  std::vector<uint32_t> buffer_;
};

// The sockets the network part works through. Made at startup
// (PrepareNetworkIdentity), so every snapshot holds them and a restored
// guest does not pay for making them (tens of milliseconds of cold kernel
// code under TCG), and kept: closing an AF_PACKET socket even waits for an
// RCU grace period (synchronize_net). Used by the reader thread only.
struct NetSockets {
  UniqueFd inet;    // ioctls
  Rtnetlink nl;     // addresses, the route
  UniqueFd packet;  // the gratuitous ARP; protocol 0: receives nothing

  // "" or the error of a socket the network part cannot do without (the
  // packet socket's goes to the log: without it only the ARP is missing).
  // Idempotent: what failed before is tried again.
  std::string Open() {
    if (!packet.valid()) {
      packet.Reset(socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      if (!packet.valid()) Log("socket AF_PACKET: %s", std::strerror(errno));
    }
    if (!inet.valid()) inet.Reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!inet.valid()) return Errno("socket AF_INET");
    return nl.Open();
  }
};

NetSockets& Sockets() {
  static NetSockets* sockets = new NetSockets;  // never destroyed
  return *sockets;
}

// Makes id.address/id.prefix the only IPv4 address of the interface: the
// others are removed first (the new one would otherwise be a secondary of
// the old subnet's primary and go with it), then it is added with its
// broadcast address. The removal deletes "the first address of the
// interface" until there is none (as `ip addr del dev DEV` without an
// address does): no dump to read, which a restored guest pays for too.
std::string ReplaceAddresses(Rtnetlink& nl, const Identity& id) {
  for (int removed = 0;; ++removed) {
    if (removed == 256) return "remove the addresses of " + id.dev + ": more than 256";
    ifaddrmsg del{};
    del.ifa_family = AF_INET;
    del.ifa_index = id.ifindex;
    NlRequest req(RTM_DELADDR, 0, &del, sizeof(del));
    int err = nl.Transact(req);
    if (err == EADDRNOTAVAIL) break;  // none left
    if (err != 0) return Errno("remove the addresses of " + id.dev, err);
  }
  ifaddrmsg add{};
  add.ifa_family = AF_INET;
  add.ifa_prefixlen = static_cast<uint8_t>(id.prefix);
  add.ifa_flags = IFA_F_PERMANENT;
  add.ifa_scope = RT_SCOPE_UNIVERSE;
  add.ifa_index = id.ifindex;
  NlRequest req(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &add, sizeof(add));
  req.AddAttr(IFA_LOCAL, &id.address, sizeof(in_addr));
  req.AddAttr(IFA_ADDRESS, &id.address, sizeof(in_addr));
  if (id.prefix < 31) {
    in_addr broadcast;
    broadcast.s_addr = id.address.s_addr | ~Netmask(id.prefix).s_addr;
    req.AddAttr(IFA_BROADCAST, &broadcast, sizeof(in_addr));
  }
  if (int err = nl.Transact(req); err != 0) {
    char text[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &id.address, text, sizeof(text));
    return Errno(std::string("add ") + text + "/" + std::to_string(id.prefix) + " to " + id.dev,
                 err);
  }
  return "";
}

// `ip route replace default via GATEWAY dev DEV`.
std::string ReplaceDefaultRoute(Rtnetlink& nl, const Identity& id) {
  rtmsg rt{};
  rt.rtm_family = AF_INET;
  rt.rtm_table = RT_TABLE_MAIN;
  rt.rtm_protocol = RTPROT_BOOT;
  rt.rtm_scope = RT_SCOPE_UNIVERSE;
  rt.rtm_type = RTN_UNICAST;
  NlRequest req(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &rt, sizeof(rt));
  req.AddAttr(RTA_GATEWAY, &id.gateway, sizeof(in_addr));
  const uint32_t oif = id.ifindex;
  req.AddAttr(RTA_OIF, &oif, sizeof(oif));
  if (int err = nl.Transact(req); err != 0) {
    char text[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &id.gateway, text, sizeof(text));
    return Errno(std::string("default route via ") + text + " dev " + id.dev, err);
  }
  return "";
}

// An ARP announcement (RFC 5227): a broadcast request whose sender and
// target address are the new address, so neighbours (the host's bridge)
// update the address's MAC at once. Not waited for.
std::string SendGratuitousArp(int fd, const Identity& id) {
  struct __attribute__((packed)) {
    arphdr header;
    unsigned char sender_mac[ETH_ALEN];
    in_addr sender_ip;
    unsigned char target_mac[ETH_ALEN];
    in_addr target_ip;
  } packet{};
  packet.header.ar_hrd = htons(ARPHRD_ETHER);
  packet.header.ar_pro = htons(ETH_P_IP);
  packet.header.ar_hln = ETH_ALEN;
  packet.header.ar_pln = sizeof(in_addr);
  packet.header.ar_op = htons(ARPOP_REQUEST);
  std::memcpy(packet.sender_mac, id.mac, ETH_ALEN);
  packet.sender_ip = id.address;
  packet.target_ip = id.address;  // target_mac stays zero
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = static_cast<int>(id.ifindex);
  to.sll_halen = ETH_ALEN;
  std::memset(to.sll_addr, 0xff, ETH_ALEN);
  if (sendto(fd, &packet, sizeof(packet), 0, reinterpret_cast<sockaddr*>(&to),
             sizeof(to)) != static_cast<ssize_t>(sizeof(packet))) {
    return Errno("send a gratuitous ARP on " + id.dev);
  }
  return "";
}

// The contents of a regular file of at most 64 KiB; nullopt otherwise.
std::optional<std::string> ReadSmallFile(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 65536) {
    return std::nullopt;
  }
  std::string data(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t done = 0;
  for (;;) {
    ssize_t n = read(fd.get(), data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    done += static_cast<size_t>(n);
    if (done == data.size()) return std::nullopt;  // grew meanwhile
  }
  data.resize(done);
  return data;
}

}  // namespace

void PrepareNetworkIdentity() {
  if (std::string e = Sockets().Open(); !e.empty()) Log("%s (tried again when needed)", e.c_str());
}

std::string ReplaceFileAtomically(const std::string& path, const std::string& contents) {
  // Unchanged (a clone of a snapshot taken with the same DNS server): not
  // rewritten. Creating and renaming a file costs a freshly restored guest
  // tens of milliseconds of disk and journal work.
  if (ReadSmallFile(path) == contents) return "";
  std::string target = path;
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    char resolved[PATH_MAX];
    struct stat target_st;
    if (realpath(path.c_str(), resolved) != nullptr && stat(resolved, &target_st) == 0 &&
        S_ISREG(target_st.st_mode)) {
      target = resolved;
      if (ReadSmallFile(target) == contents) return "";
    }
  }
  const size_t slash = target.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : target.substr(0, slash);
  const std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  std::string tmp = dir + "/." + base + ".smolvm-XXXXXX";
  UniqueFd fd(mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return Errno("create a temp file in " + dir);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = write(fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string error = Errno("write " + tmp);
      unlink(tmp.c_str());
      return error;
    }
    done += static_cast<size_t>(n);
  }
  if (fchmod(fd.get(), 0644) != 0 || rename(tmp.c_str(), target.c_str()) != 0) {
    std::string error = Errno("replace " + target);
    unlink(tmp.c_str());
    return error;
  }
  return "";
}

std::string ApplyNetworkIdentity(const agent::v1::NetworkIdentity& request,
                                 const std::string& resolv_conf) {
  Identity id;
  if (std::string e = Parse(request, &id); !e.empty()) return e;
  NetSockets& sockets = Sockets();
  if (std::string e = sockets.Open(); !e.empty()) return e;
  const int sock = sockets.inet.get();
  Rtnetlink& nl = sockets.nl;
  ifreq req = Ifreq(id.dev);
  if (ioctl(sock, SIOCGIFINDEX, &req) != 0) return Errno("interface " + id.dev);
  id.ifindex = static_cast<unsigned>(req.ifr_ifindex);
  req = Ifreq(id.dev);
  if (ioctl(sock, SIOCGIFFLAGS, &req) != 0) return Errno("read the flags of " + id.dev);
  const short flags = req.ifr_flags;
  req = Ifreq(id.dev);
  if (ioctl(sock, SIOCGIFHWADDR, &req) != 0) return Errno("read the MAC of " + id.dev);
  const bool new_mac = std::memcmp(req.ifr_hwaddr.sa_data, id.mac, ETH_ALEN) != 0;

  // The MAC is changed live where the driver allows it (virtio-net, veth):
  // taking the interface down and up again would tear down and rebuild its
  // whole state (routes, neighbours, IPv6, the queues), which in a guest
  // restored under TCG, its translation cache empty, costs more than all
  // the rest. Other drivers (EBUSY) get it down for the change.
  bool is_up = (flags & IFF_UP) != 0;
  auto set_up = [&](bool up) -> std::string {
    ifreq r = Ifreq(id.dev);
    r.ifr_flags = static_cast<short>(up ? (flags | IFF_UP) : (flags & ~IFF_UP));
    if (ioctl(sock, SIOCSIFFLAGS, &r) != 0) {
      return Errno("set " + id.dev + (up ? " up" : " down"));
    }
    is_up = up;
    return "";
  };
  std::string error = [&]() -> std::string {
    if (new_mac) {
      ifreq r = Ifreq(id.dev);
      r.ifr_hwaddr.sa_family = ARPHRD_ETHER;
      std::memcpy(r.ifr_hwaddr.sa_data, id.mac, ETH_ALEN);
      if (ioctl(sock, SIOCSIFHWADDR, &r) != 0) {
        if (errno != EBUSY || !is_up) return Errno("set " + id.dev + " address " + request.mac());
        if (std::string e = set_up(false); !e.empty()) return e;
        if (ioctl(sock, SIOCSIFHWADDR, &r) != 0) {
          return Errno("set " + id.dev + " address " + request.mac());
        }
      }
    }
    return ReplaceAddresses(nl, id);
  }();
  // Up at the end; after a failure, as it was.
  const bool want_up = error.empty() || (flags & IFF_UP) != 0;
  if (want_up != is_up) {
    if (std::string e = set_up(want_up); !e.empty() && error.empty()) return e;
  }
  if (!error.empty()) return error;

  if (id.has_gateway) {
    if (std::string e = ReplaceDefaultRoute(nl, id); !e.empty()) return e;
  }
  const std::string resolv = id.dns.empty() ? "" : "nameserver " + id.dns + "\n";
  if (std::string e = ReplaceFileAtomically(resolv_conf, resolv); !e.empty()) {
    return "resolv.conf: " + e;
  }
  if (sockets.packet.valid()) {
    if (std::string e = SendGratuitousArp(sockets.packet.get(), id); !e.empty()) {
      Log("%s", e.c_str());
    }
  }
  return "";
}

}  // namespace smolvm::guest
