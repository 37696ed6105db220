"""The bridge as netlink sees it: its ports, their states, its FDB.

The only module that talks to pyroute2. Everything it returns is plain frozen
data, so the rest of brtrace (and its unit tests) never needs netlink.
"""

from __future__ import annotations

import ctypes
import os
import socket
from dataclasses import dataclass, field

from tracer.errors import UsageError

CLONE_NEWNET = 0x40000000
RTMGRP_LINK = 1   # include/uapi/linux/rtnetlink.h: link events' multicast group


def _pyroute2():
    """(IPRoute, NetlinkError), imported on first use: pyroute2's import takes
    ~0.1 s, which then overlaps the BPF compile BridgeRun.open() has started."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - see above
    from pyroute2.netlink.exceptions import NetlinkError  # noqa: PLC0415 - see above
    return IPRoute, NetlinkError

NETNS_DIR = "/run/netns"
NUD_PERMANENT = 0x80

# IFLA_BRPORT_STATE values (include/uapi/linux/if_bridge.h: BR_STATE_*).
STP_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}


@dataclass(frozen=True)
class Netns:
    """A network namespace: its name for humans, its path, and its nsfs inode
    (what the kernel calls net->ns.inum, which the BPF side compares)."""

    name: str
    path: str
    inode: int


@dataclass(frozen=True)
class Port:
    ifindex: int
    name: str
    kind: str          # veth, tun, vxlan, ... ("" for plain devices)
    mac: str
    mtu: int
    operstate: str
    txqlen: int
    stp_state: str     # forwarding, blocking, ... (STP_STATES)
    rx_dropped: int = 0   # the interface's own counters (netlink stats64)
    tx_dropped: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class FdbEntry:
    mac: str
    ifindex: int       # the port the MAC is learned or installed on
    vlan: int
    local: bool        # one of the bridge's own addresses


@dataclass(frozen=True)
class Bridge:
    ifindex: int
    name: str
    mac: str
    mtu: int
    netns: Netns
    ports: dict = field(default_factory=dict)   # ifindex -> Port
    # the bridge device's own stats64 (IFACE_COUNTERS): its rx is what
    # br_pass_frame_up() delivers to the host, every broadcast included
    counters: dict = field(default_factory=dict)

    def port_name(self, ifindex: int) -> str:
        if ifindex == self.ifindex:
            return self.name
        port = self.ports.get(ifindex)
        return port.name if port else f"ifindex {ifindex}"


def resolve_netns(name: str | None) -> Netns:
    """`None` is brtrace's own namespace; a bare name is one of `ip netns`'s;
    a path is taken as is (e.g. /proc/PID/ns/net)."""
    if name == "":
        raise UsageError("--netns is empty", "name a namespace from `ip netns list`, or omit --netns")
    if name is None:
        path = "/proc/self/ns/net"
    elif "/" in name:
        path = name
    else:
        path = os.path.join(NETNS_DIR, name)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"network namespace {name!r} not found",
                         "list them with `ip netns list`, or pass a path like /proc/PID/ns/net") from exc
    own = os.stat("/proc/self/ns/net")
    if st.st_dev != own.st_dev:  # every namespace file lives on nsfs
        raise UsageError(f"{path} is not a network namespace",
                         "pass a name from `ip netns list` or /proc/PID/ns/net")
    return Netns(name or "", path, st.st_ino)


class Topology:
    """A netlink session inside one namespace."""

    def __init__(self, netns: Netns):
        self.netns = netns
        IPRoute, NetlinkError = _pyroute2()
        try:
            self._ipr = _iproute_in(netns.path) if netns.name else IPRoute()
        except (OSError, NetlinkError) as exc:
            raise UsageError(f"cannot enter network namespace {netns.name!r}: {exc}",
                             "run as root; check `ip netns list`") from exc
        self._links = None   # link-event subscription, opened on first use

    def close(self) -> None:
        self._ipr.close()
        if self._links is not None:
            self._links.close()
            self._links = None

    def links_changed(self) -> bool:
        """True if any link in the namespace was added, removed or changed
        since the last call (netlink RTMGRP_LINK, read without blocking), so
        ports that join or leave are followed within one poll, not one interval.
        A plain netlink socket: pyroute2 0.9 reads its own sockets from an
        asyncio loop, which does not mix with polling their fd from outside."""
        if self._links is None:
            self._links = _link_events_socket(self.netns.path if self.netns.name else None)
            return True
        changed = False
        while True:
            try:
                changed |= bool(self._links.recv(65536))
            except BlockingIOError:
                return changed
            except OSError:      # ENOBUFS: events were lost, so assume a change
                return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def onward_veths(self, bridge: Bridge) -> dict:
        """Veth port name -> whether its other end is itself enslaved (a port
        of another bridge, a bond): a link onward to another switch, which can
        close a loop, where a veth to a guest or container cannot. None when
        the other end lives in a namespace without an `ip netns` name."""
        NetlinkError = _pyroute2()[1]
        veths = [p for p in bridge.ports.values() if p.kind == "veth"]
        if not veths:
            return {}
        try:
            links = {link["index"]: link for link in self._ipr.get_links()}
        except NetlinkError:
            return {}
        out, others = {}, {}
        for p in veths:
            link = links.get(p.ifindex)
            if link is None or link.get_attr("IFLA_LINK") is None:
                continue
            nsid = link.get_attr("IFLA_LINK_NETNSID")
            if nsid is None:       # both ends in this namespace
                peer = links.get(link.get_attr("IFLA_LINK"))
                out[p.name] = bool(peer and peer.get_attr("IFLA_MASTER"))
            else:
                others.setdefault(nsid, []).append((p.name, link.get_attr("IFLA_LINK")))
        for nsid, ends in others.items():
            path = self._netns_of_nsid(nsid)
            for name, peer_index in ends:
                out[name] = None if path is None else _enslaved(path, peer_index)
        return out

    def _netns_of_nsid(self, nsid: int) -> str | None:
        """The /run/netns path this namespace knows by `nsid`."""
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            return None
        for name in names:
            path = os.path.join(NETNS_DIR, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if self._ipr.get_netnsid(fd=fd).get("nsid") == nsid:
                    return path
            except (_pyroute2()[1], OSError):
                continue
            finally:
                os.close(fd)
        return None

    def bridge(self, name: str) -> Bridge:
        """The bridge `name` with its current ports; UsageError if it is missing
        or is not a bridge."""
        where = f" in netns {self.netns.name}" if self.netns.name else ""
        if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
            raise UsageError(f"{name!r} is not a valid interface name",
                             "interface names are 1-15 characters without '/' or spaces")
        links = self._ipr.get_links()
        by_name = {link.get_attr("IFLA_IFNAME"): link for link in links}
        link = by_name.get(name)
        if link is None:
            raise UsageError(f"no device {name!r}{where}",
                             "list bridges with `ip -br link show type bridge`"
                             + (" in that namespace" if where else "; use --netns if it lives in another namespace"))
        if _kind(link) != "bridge":
            master = link.get_attr("IFLA_MASTER")
            master_name = next((d.get_attr("IFLA_IFNAME") for d in links if d["index"] == master), None)
            hint = (f"it is a port of {master_name}: use --bridge {master_name}" if master_name
                    else "list bridges with `ip -br link show type bridge`")
            raise UsageError(f"{name!r}{where} is a {_kind(link) or 'plain'} device, not a bridge",
                             hint)
        ifindex = link["index"]
        states = self._stp_states()
        ports = {}
        for dev in links:
            if dev.get_attr("IFLA_MASTER") == ifindex:
                ports[dev["index"]] = Port(
                    ifindex=dev["index"], name=dev.get_attr("IFLA_IFNAME"), kind=_kind(dev),
                    mac=dev.get_attr("IFLA_ADDRESS") or "", mtu=dev.get_attr("IFLA_MTU") or 0,
                    operstate=dev.get_attr("IFLA_OPERSTATE") or "", txqlen=dev.get_attr("IFLA_TXQLEN") or 0,
                    stp_state=STP_STATES.get(states.get(dev["index"], -1), "unknown"),
                    **_iface_counters(dev))
        return Bridge(ifindex=ifindex, name=name, mac=link.get_attr("IFLA_ADDRESS") or "",
                      mtu=link.get_attr("IFLA_MTU") or 0, netns=self.netns, ports=ports,
                      counters=_iface_counters(link))

    def _stp_states(self) -> dict[int, int]:
        out = {}
        for dev in self._ipr.get_links(family=socket.AF_BRIDGE):
            info = dev.get_attr("IFLA_PROTINFO")
            if info is not None and info.get_attr("IFLA_BRPORT_STATE") is not None:
                out[dev["index"]] = info.get_attr("IFLA_BRPORT_STATE")
        return out

    def fdb(self, bridge: Bridge) -> list[FdbEntry]:
        """The bridge's forwarding database (entries mastered by the bridge)."""
        out = []
        try:
            entries = list(self._ipr.fdb("dump"))
        except _pyroute2()[1]:
            return out  # the bridge went away mid-dump; callers treat it as empty
        for e in entries:
            if e.get_attr("NDA_MASTER") != bridge.ifindex and e["ifindex"] != bridge.ifindex:
                continue
            if e.get_attr("NDA_MASTER") is None and e["ifindex"] == bridge.ifindex:
                continue  # the bridge device's own multicast list, not the FDB
            out.append(FdbEntry(mac=(e.get_attr("NDA_LLADDR") or "").lower(), ifindex=e["ifindex"],
                                vlan=e.get_attr("NDA_VLAN") or 0,
                                local=bool(e["state"] & NUD_PERMANENT)))
        return out


def _link_events_socket(netns_path: str | None) -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to link events, created inside
    `netns_path` (a socket stays in the namespace it was created in). Only this
    thread enters the namespace, and only for the socket() call."""
    if netns_path is None:
        return _bound_link_socket()
    return _inside(netns_path, _bound_link_socket)


def _inside(netns_path: str, make):
    """make() called with this thread in namespace `netns_path`: the sockets it
    opens stay there. Only this thread enters the namespace, and only for the call."""
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise UsageError(f"cannot enter network namespace {netns_path}: "
                             f"{os.strerror(ctypes.get_errno())}", "run as root")
        try:
            return make()
        finally:
            libc.setns(own, CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)


def _iproute_in(netns_path: str):
    """An IPRoute whose socket lives in namespace `netns_path`, never creating it.
    pyroute2 0.9 enters it itself (netns=, flags=0: its default O_CREAT would make
    a new empty namespace if this one vanished since resolve_netns()); 0.7 (Debian
    12's) has no netns= on IPRoute, and opens its socket in the constructor, so
    it is constructed inside the namespace."""
    IPRoute = _pyroute2()[0]
    try:
        return IPRoute(netns=netns_path, flags=0)
    except TypeError:  # pyroute2 < 0.8: "unexpected keyword argument 'netns'"
        return _inside(netns_path, IPRoute)


def _bound_link_socket() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    s.bind((0, RTMGRP_LINK))
    return s


# The interface counters kept from stats64: what the driver itself counts,
# free to read and complete whether or not a BPF program is attached.
IFACE_COUNTERS = ("rx_dropped", "tx_dropped", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes")


def _iface_counters(link) -> dict:
    stats = link.get_attr("IFLA_STATS64")
    if stats is None:
        return {}
    return {k: stats.get(k) or 0 for k in IFACE_COUNTERS}


def _enslaved(netns_path: str, ifindex: int) -> bool | None:
    """Whether device `ifindex` of that namespace has a master."""
    NetlinkError = _pyroute2()[1]
    try:
        with _iproute_in(netns_path) as ipr:
            links = ipr.get_links(ifindex)
    except (OSError, NetlinkError):
        return None
    return bool(links and links[0].get_attr("IFLA_MASTER"))


def _kind(link) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def oper_up(operstate: str) -> bool:
    """A link the kernel counts as up (netif_oper_up()): UP, or UNKNOWN, which
    is what a tap reports while its reader (VM, VPN daemon) has it open."""
    return operstate.lower() in ("up", "unknown")


def port_changes(before: Bridge, after: Bridge, fdb_before: list, fdb_after: list) -> list[dict]:
    """What happened to the ports between two looks at the bridge: ports that
    joined or left, went down or up, changed STP state; and how many learned
    FDB entries each port lost (the kernel flushes them when a port leaves or
    loses carrier, and the bridge floods until it relearns). Pure."""
    events = []
    learned = lambda fdb: {(e.mac, e.vlan): e.ifindex for e in fdb if not e.local}  # noqa: E731
    old, new = learned(fdb_before), learned(fdb_after)
    lost: dict = {}
    for key, ifindex in old.items():
        if new.get(key) != ifindex:
            lost[ifindex] = lost.get(ifindex, 0) + 1

    def event(kind, port, **extra):
        events.append({"kind": "port_event", "event": kind, "bridge": after.name, "port": port.name,
                       "fdb_entries_removed": lost.get(port.ifindex, 0), **extra})

    for ifindex, port in after.ports.items():
        prev = before.ports.get(ifindex)
        if prev is None:
            event("added", port, kind_of_port=port.kind)
            continue
        # UNKNOWN is up: a tap's state while its reader has it open.
        if oper_up(prev.operstate) != oper_up(port.operstate):
            event("up" if oper_up(port.operstate) else "down", port,
                  operstate=port.operstate,
                  note="a tap goes down when its reader (VM, VPN) closes it" if port.kind == "tun" else "")
        if prev.stp_state != port.stp_state:
            event("stp_state", port, stp_state=port.stp_state, previous=prev.stp_state)
    for ifindex, port in before.ports.items():
        if ifindex not in after.ports:
            event("removed", port)
    return events
