#include "lib/net/netlink_link_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/link/bridge.h>
#include <netlink/route/route.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "lib/base/status_macros.h"
#include "lib/net/in_netns.h"
#include "lib/net/ip_pool.h"

namespace smolvm::net {
namespace {

// Owners of libnl objects.
struct SockFree {
  void operator()(nl_sock* s) const { nl_socket_free(s); }
};
struct CacheFree {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};
struct AddrPut {
  void operator()(nl_addr* a) const { nl_addr_put(a); }
};
struct RtAddrPut {
  void operator()(rtnl_addr* a) const { rtnl_addr_put(a); }
};
using Sock = std::unique_ptr<nl_sock, SockFree>;
using Cache = std::unique_ptr<nl_cache, CacheFree>;
using Link = std::unique_ptr<rtnl_link, LinkPut>;

// "<operation>: <cause>" for a libnl error (negative NLE_* code).
absl::Status NlError(int err, absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", nl_geterror(err)));
}

absl::Status Annotate(const absl::Status& status, absl::string_view operation) {
  return absl::Status(status.code(), absl::StrCat(operation, ": ", status.message()));
}

absl::StatusOr<Sock> Connect() {
  Sock sock(nl_socket_alloc());
  if (!sock) return absl::ResourceExhaustedError("allocate a netlink socket");
  if (int err = nl_connect(sock.get(), NETLINK_ROUTE); err < 0) {
    return NlError(err, "connect to rtnetlink");
  }
  nl_socket_disable_seq_check(sock.get());  // See GetLink.
  return sock;
}

// A link as the checks need it.
struct LinkInfo {
  int index = 0;
  std::string kind;      // IFLA_INFO_KIND: "bridge", "tun", "veth", "" ...
  std::string tun_type;  // For "tun": "tap" or "tun".
  int master = 0;        // 0 when not enslaved.
};

int ParseLink(nl_msg* msg, void* arg) {
  auto* info = static_cast<LinkInfo*>(arg);
  nlmsghdr* hdr = nlmsg_hdr(msg);
  if (hdr->nlmsg_type != RTM_NEWLINK) return NL_SKIP;
  nlattr* tb[IFLA_MAX + 1];
  if (nlmsg_parse(hdr, sizeof(ifinfomsg), tb, IFLA_MAX, nullptr) < 0) return NL_SKIP;
  info->index = static_cast<ifinfomsg*>(nlmsg_data(hdr))->ifi_index;
  if (tb[IFLA_MASTER] != nullptr) info->master = static_cast<int>(nla_get_u32(tb[IFLA_MASTER]));
  nlattr* li[IFLA_INFO_MAX + 1];
  if (tb[IFLA_LINKINFO] == nullptr ||
      nla_parse_nested(li, IFLA_INFO_MAX, tb[IFLA_LINKINFO], nullptr) < 0) {
    return NL_OK;
  }
  if (li[IFLA_INFO_KIND] != nullptr) info->kind = nla_get_string(li[IFLA_INFO_KIND]);
  nlattr* tun[IFLA_TUN_MAX + 1];
  if (info->kind == "tun" && li[IFLA_INFO_DATA] != nullptr &&
      nla_parse_nested(tun, IFLA_TUN_MAX, li[IFLA_INFO_DATA], nullptr) >= 0 &&
      tun[IFLA_TUN_TYPE] != nullptr) {
    info->tun_type = nla_get_u8(tun[IFLA_TUN_TYPE]) == IFF_TAP ? "tap" : "tun";
  }
  return NL_OK;
}

// The link's details, or NOT_FOUND. (libnl parses no tun details, so the
// request and its answer are handled here.)
absl::StatusOr<LinkInfo> GetLink(nl_sock* sock, const std::string& name) {
  LinkInfo info;
  nl_msg* msg = nlmsg_alloc_simple(RTM_GETLINK, NLM_F_REQUEST);
  if (msg == nullptr) return absl::ResourceExhaustedError("allocate a netlink message");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  if (nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 ||
      nla_put_string(msg, IFLA_IFNAME, name.c_str()) < 0) {
    nlmsg_free(msg);
    return absl::InternalError(absl::StrCat("build the request for link ", name));
  }
  // No ACK: the kernel answers with the link or an error, in one message
  // (an ACK after the answer would arrive separately and be left unread
  // for the next request).
  nl_socket_disable_auto_ack(sock);
  int err = nl_send_auto(sock, msg);
  nl_socket_enable_auto_ack(sock);
  nlmsg_free(msg);
  // (The socket checks no sequence numbers: libnl expects an ACK to move
  // on to the next one. Every request here reads its whole answer.)
  if (err >= 0) {
    // nl_socket_get_cb takes a reference on the socket's callbacks: given
    // back at once, or the socket's callbacks outlive it (LeakSanitizer).
    nl_cb* socket_cb = nl_socket_get_cb(sock);
    nl_cb* cb = nl_cb_clone(socket_cb);
    nl_cb_put(socket_cb);
    if (cb == nullptr) return absl::ResourceExhaustedError("allocate a netlink callback");
    nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, ParseLink, &info);
    err = nl_recvmsgs(sock, cb);
    nl_cb_put(cb);
  }
  if (err == -NLE_OBJ_NOTFOUND || err == -NLE_NODEV || (err >= 0 && info.index == 0)) {
    return absl::NotFoundError(absl::StrCat("link ", name, " does not exist"));
  }
  if (err < 0) return NlError(err, absl::StrCat("get link ", name));
  return info;
}

// RTM_SETLINK for link `index`: IFF_UP when `up`, IFLA_MASTER when
// `master` != 0, IFLA_ADDRESS when `mac` is set. (Plain SETLINK: libnl's
// rtnl_link_change sends NEWLINK first, which a kernel may answer with
// "exists".)
absl::Status SetLink(nl_sock* sock, int index, bool up, int master, const std::string& mac,
                     absl::string_view what) {
  nl_msg* msg = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST);
  if (msg == nullptr) return absl::ResourceExhaustedError("allocate a netlink message");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_UNSPEC;
  ifi.ifi_index = index;
  if (up) ifi.ifi_flags = ifi.ifi_change = IFF_UP;
  bool ok = nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO) >= 0 &&
            (master == 0 || nla_put_u32(msg, IFLA_MASTER, static_cast<uint32_t>(master)) >= 0);
  if (ok && !mac.empty()) {
    unsigned char bytes[6];
    ok = std::sscanf(mac.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &bytes[0], &bytes[1],
                     &bytes[2], &bytes[3], &bytes[4], &bytes[5]) == 6 &&
         nla_put(msg, IFLA_ADDRESS, sizeof(bytes), bytes) >= 0;
  }
  if (!ok) {
    nlmsg_free(msg);
    return absl::InternalError(absl::StrCat(what, ": cannot build the request"));
  }
  if (int err = nl_send_sync(sock, msg); err < 0) return NlError(err, what);
  return absl::OkStatus();
}

// Makes bridge port `index` isolated: RTM_SETLINK for family AF_BRIDGE
// with IFLA_BRPORT_ISOLATED in IFLA_PROTINFO (what `bridge link set
// isolated on` sends; libnl 3.7 has no setter for this flag).
absl::Status SetIsolated(nl_sock* sock, int index, const std::string& name) {
  nl_msg* msg = nlmsg_alloc_simple(RTM_SETLINK, NLM_F_REQUEST);
  if (msg == nullptr) return absl::ResourceExhaustedError("allocate a netlink message");
  ifinfomsg ifi = {};
  ifi.ifi_family = AF_BRIDGE;
  ifi.ifi_index = index;
  nlattr* protinfo = nullptr;
  if (nlmsg_append(msg, &ifi, sizeof(ifi), NLMSG_ALIGNTO) < 0 ||
      (protinfo = nla_nest_start(msg, IFLA_PROTINFO | NLA_F_NESTED)) == nullptr ||
      nla_put_u8(msg, IFLA_BRPORT_ISOLATED, 1) < 0 || nla_nest_end(msg, protinfo) < 0) {
    nlmsg_free(msg);
    return absl::InternalError(absl::StrCat("build the isolation request for ", name));
  }
  if (int err = nl_send_sync(sock, msg); err < 0) {
    return NlError(err, absl::StrCat("isolate bridge port ", name));
  }
  return absl::OkStatus();
}

absl::Status WriteProcSys(const std::string& key) {
  std::string path = absl::StrCat("/proc/sys/", key);
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", path));
  ssize_t n = write(fd, "1\n", 2);
  int saved = errno;
  close(fd);
  if (n != 2) return absl::ErrnoToStatus(n < 0 ? saved : EIO, absl::StrCat("write 1 to ", path));
  return absl::OkStatus();
}

// A persistent TAP (no packet info, one queue), as `ip tuntap add mode
// tap` makes it.
absl::Status AddTap(const std::string& name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, "open /dev/net/tun");
  ifreq ifr = {};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  absl::Status status = absl::OkStatus();
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("ioctl TUNSETIFF ", name));
  } else if (ioctl(fd, TUNSETPERSIST, 1) != 0) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("ioctl TUNSETPERSIST ", name));
  }
  close(fd);
  return status;
}

absl::Status DeleteByName(nl_sock* sock, const std::string& name) {
  Link link(rtnl_link_alloc());
  if (!link) return absl::ResourceExhaustedError("allocate a link");
  rtnl_link_set_name(link.get(), name.c_str());
  int err = rtnl_link_delete(sock, link.get());
  if (err < 0 && err != -NLE_OBJ_NOTFOUND && err != -NLE_NODEV) {
    return NlError(err, absl::StrCat("delete link ", name));
  }
  return absl::OkStatus();
}

absl::StatusOr<Cache> LinkCache(nl_sock* sock) {
  nl_cache* cache = nullptr;
  if (int err = rtnl_link_alloc_cache(sock, AF_UNSPEC, &cache); err < 0) {
    return NlError(err, "list links");
  }
  return Cache(cache);
}

std::string NameOf(nl_cache* links, int index) {
  char name[IFNAMSIZ] = {};
  return rtnl_link_i2name(links, index, name, sizeof(name)) != nullptr ? name : "";
}

uint32_t Ipv4Of(nl_addr* addr) {
  uint32_t be = 0;
  std::memcpy(&be, nl_addr_get_binary_addr(addr), sizeof(be));
  return ntohl(be);
}

}  // namespace

NetlinkLinkBackend::NetlinkLinkBackend(std::string netns) : netns_(std::move(netns)) {}

absl::Status NetlinkLinkBackend::EnsureBridge(const std::string& name, uint32_t gateway_ip,
                                              int prefix) {
  const std::string op = absl::StrCat("ensure bridge ", name);
  SMOLVM_RETURN_IF_ERROR(CheckBridgeArguments(name, prefix));
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    auto link = GetLink(sock.get(), name);
    if (absl::IsNotFound(link.status())) {
      Link bridge(rtnl_link_bridge_alloc());
      if (!bridge) return absl::ResourceExhaustedError("allocate a link");
      rtnl_link_set_name(bridge.get(), name.c_str());
      // Exists: someone else created it meanwhile; checked below.
      int err = rtnl_link_add(sock.get(), bridge.get(), NLM_F_CREATE | NLM_F_EXCL);
      if (err < 0 && err != -NLE_EXIST) return NlError(err, "add a bridge");
      link = GetLink(sock.get(), name);
    }
    if (!link.ok()) return link.status();
    if (link->kind != "bridge") {
      return absl::FailedPreconditionError(absl::StrCat(
          "link exists and is a \"", link->kind, "\", not a bridge; delete it or choose "
          "another bridge name"));
    }
    // A fixed MAC: by default a bridge takes the lowest MAC of its ports, so
    // it would change as VMs come and go, and guests (restored ones above
    // all, whose ARP caches come from the snapshot) would keep sending to a
    // stale gateway MAC. Derived from the gateway address, like guests' MACs.
    SMOLVM_RETURN_IF_ERROR(SetLink(sock.get(), link->index, /*up=*/false, 0,
                                   MacFor(gateway_ip), "set the bridge's mac"));
    // The address, unless the bridge has it already (the kernel says
    // "exists" for the same address and prefix; others are left alone).
    {
      std::unique_ptr<rtnl_addr, RtAddrPut> addr(rtnl_addr_alloc());
      uint32_t be = htonl(gateway_ip);
      std::unique_ptr<nl_addr, AddrPut> local(nl_addr_build(AF_INET, &be, sizeof(be)));
      if (!addr || !local) return absl::ResourceExhaustedError("allocate an address");
      nl_addr_set_prefixlen(local.get(), prefix);
      rtnl_addr_set_ifindex(addr.get(), link->index);
      rtnl_addr_set_family(addr.get(), AF_INET);
      if (int err = rtnl_addr_set_local(addr.get(), local.get()); err < 0) {
        return NlError(err, "set the gateway address");
      }
      rtnl_addr_set_prefixlen(addr.get(), prefix);
      int err = rtnl_addr_add(sock.get(), addr.get(), 0);
      if (err < 0 && err != -NLE_EXIST) {
        return NlError(err, absl::StrCat("add address ", IpToString(gateway_ip), "/", prefix));
      }
    }
    SMOLVM_RETURN_IF_ERROR(
        SetLink(sock.get(), link->index, /*up=*/true, 0, "", absl::StrCat("set ", name, " up")));
    SMOLVM_RETURN_IF_ERROR(WriteProcSys("net/ipv4/ip_forward"));
    // Lets 127.0.0.1-sourced connections DNATed to a guest leave via the
    // bridge (they are masqueraded on the way out).
    return WriteProcSys(absl::StrCat("net/ipv4/conf/", name, "/route_localnet"));
  });
  return status.ok() ? status : Annotate(status, op);
}

absl::Status NetlinkLinkBackend::CreateTap(const std::string& name, const std::string& bridge) {
  const std::string op = absl::StrCat("create tap ", name);
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "tap name"));
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(bridge, "bridge name"));
  return InNetns(netns_, [&]() -> absl::Status {
    auto sock = Connect();
    if (!sock.ok()) return Annotate(sock.status(), op);
    auto link = GetLink(sock->get(), name);
    bool created = false;
    if (absl::IsNotFound(link.status())) {
      if (absl::Status added = AddTap(name); !added.ok()) return Annotate(added, op);
      created = true;
      link = GetLink(sock->get(), name);
    }
    if (!link.ok()) return Annotate(link.status(), op);
    if (link->kind != "tun" || link->tun_type != "tap") {
      return absl::FailedPreconditionError(absl::StrCat(
          op, ": link exists and is not a tap (kind \"", link->kind, "\" ", link->tun_type,
          "); delete it first"));
    }
    absl::Status configured = [&]() -> absl::Status {
      auto master = GetLink(sock->get(), bridge);
      // A missing bridge is not the caller's input: the network is broken.
      if (!master.ok()) return absl::InternalError(master.status().message());
      if (master->kind != "bridge") {
        return absl::FailedPreconditionError(absl::StrCat(bridge, " is not a bridge"));
      }
      SMOLVM_RETURN_IF_ERROR(SetLink(sock->get(), link->index, /*up=*/false, master->index, "",
                                     absl::StrCat("enslave ", name)));
      // Isolated ports talk to the bridge (the gateway) only, never to
      // each other.
      SMOLVM_RETURN_IF_ERROR(SetIsolated(sock->get(), link->index, name));
      return SetLink(sock->get(), link->index, /*up=*/true, 0, "", absl::StrCat("set ", name, " up"));
    }();
    if (!configured.ok()) {
      if (created) (void)DeleteByName(sock->get(), name);  // Best effort; the first error matters.
      return Annotate(configured, absl::StrCat(op, " on bridge ", bridge));
    }
    return absl::OkStatus();
  });
}

absl::Status NetlinkLinkBackend::DeleteLink(const std::string& name) {
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "link name"));
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    return DeleteByName(sock.get(), name);
  });
  return status.ok() || absl::StartsWith(status.message(), "delete link")
             ? status
             : Annotate(status, absl::StrCat("delete link ", name));
}

absl::StatusOr<std::vector<std::string>> NetlinkLinkBackend::ListLinks(
    const std::string& prefix) {
  std::vector<std::string> names;
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    SMOLVM_ASSIGN_OR_RETURN(Cache links, LinkCache(sock.get()));
    for (nl_object* o = nl_cache_get_first(links.get()); o != nullptr; o = nl_cache_get_next(o)) {
      const char* name = rtnl_link_get_name(reinterpret_cast<rtnl_link*>(o));
      if (name != nullptr && absl::StartsWith(name, prefix)) names.emplace_back(name);
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return Annotate(status, "list links");
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<LinkBackend::Counters> NetlinkLinkBackend::LinkCounters(const std::string& name) {
  SMOLVM_RETURN_IF_ERROR(ValidateInterfaceName(name, "link name"));
  Counters counters;
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    rtnl_link* link = nullptr;
    if (int err = rtnl_link_get_kernel(sock.get(), 0, name.c_str(), &link); err < 0) {
      return NlError(err, absl::StrCat("read link ", name));
    }
    counters.rx_bytes = rtnl_link_get_stat(link, RTNL_LINK_RX_BYTES);
    counters.rx_packets = rtnl_link_get_stat(link, RTNL_LINK_RX_PACKETS);
    counters.tx_bytes = rtnl_link_get_stat(link, RTNL_LINK_TX_BYTES);
    counters.tx_packets = rtnl_link_get_stat(link, RTNL_LINK_TX_PACKETS);
    rtnl_link_put(link);
    return absl::OkStatus();
  });
  if (!status.ok()) return Annotate(status, "link counters");
  return counters;
}

absl::StatusOr<std::string> NetlinkLinkBackend::DefaultRouteInterface() {
  DefaultRouteChooser chooser;
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    SMOLVM_ASSIGN_OR_RETURN(Cache links, LinkCache(sock.get()));
    nl_cache* raw = nullptr;
    if (int err = rtnl_route_alloc_cache(sock.get(), AF_INET, 0, &raw); err < 0) {
      return NlError(err, "list routes");
    }
    Cache routes(raw);
    for (nl_object* o = nl_cache_get_first(routes.get()); o != nullptr; o = nl_cache_get_next(o)) {
      auto* route = reinterpret_cast<rtnl_route*>(o);
      nl_addr* dst = rtnl_route_get_dst(route);
      if (rtnl_route_get_table(route) != RT_TABLE_MAIN ||
          rtnl_route_get_type(route) != RTN_UNICAST ||
          (dst != nullptr && nl_addr_get_prefixlen(dst) != 0) ||
          rtnl_route_get_nnexthops(route) < 1) {
        continue;
      }
      // Multipath: the first next hop's device.
      chooser.Offer(NameOf(links.get(), rtnl_route_nh_get_ifindex(rtnl_route_nexthop_n(route, 0))),
                    rtnl_route_get_priority(route));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return Annotate(status, "find default route");
  return chooser.Result();
}

absl::StatusOr<std::vector<std::string>> NetlinkLinkBackend::ConnectedSubnets(
    const std::string& exclude_bridge) {
  ConnectedSubnetSet subnets(exclude_bridge);
  absl::Status status = InNetns(netns_, [&]() -> absl::Status {
    SMOLVM_ASSIGN_OR_RETURN(Sock sock, Connect());
    nl_cache* raw = nullptr;
    // Names by index one by one (if_indextoname, in this thread's
    // namespace): a dump of all links would grow with the TAPs.
    if (int err = rtnl_addr_alloc_cache(sock.get(), &raw); err < 0) {
      return NlError(err, "list addresses");
    }
    Cache addrs(raw);
    for (nl_object* o = nl_cache_get_first(addrs.get()); o != nullptr; o = nl_cache_get_next(o)) {
      auto* addr = reinterpret_cast<rtnl_addr*>(o);
      nl_addr* local = rtnl_addr_get_local(addr);
      if (rtnl_addr_get_family(addr) != AF_INET || local == nullptr ||
          nl_addr_get_len(local) != 4) {
        continue;
      }
      char name[IF_NAMESIZE] = {};
      if (if_indextoname(static_cast<unsigned>(rtnl_addr_get_ifindex(addr)), name) == nullptr ||
          !subnets.Counts(name)) {
        continue;
      }
      subnets.Offer(Ipv4Of(local), rtnl_addr_get_prefixlen(addr));
    }
    return absl::OkStatus();
  });
  if (!status.ok()) return Annotate(status, "list connected subnets");
  return subnets.List();
}

}  // namespace smolvm::net
