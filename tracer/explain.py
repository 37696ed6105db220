"""What a drop means on a bridge, in an operator's words. Pure.

The kernel's reason stays visible beside ours: many bridge frees carry
NOT_SPECIFIED, and then the freeing function and the bridge's own state (FDB,
STP state, MTU, tap reader) are the clue. Each rule reads a DropContext and
returns a sentence, or "" when it does not apply; the first that speaks wins.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tracer.aggregate import DropGroup
from tracer.decode import is_multicast
from tracer.topology import Bridge, FdbEntry

# Where in the stack a freeing function sits (prefix match, first wins).
STAGES = (
    ("br_handle_frame_finish", "bridge forwarding"),
    ("br_handle_frame", "bridge ingress"),
    ("br_forward", "bridge forwarding"),
    ("br_flood", "bridge flooding"),
    ("br_dev_queue_push_xmit", "bridge egress"),
    ("br_pass_frame_up", "bridge local delivery"),
    ("br_nf_dev_queue_xmit", "bridge egress"),
    ("br_nf", "bridge netfilter"),
    ("br_", "bridge"),
    ("nf_hook_slow", "netfilter"),
    ("nft_", "netfilter"),
    ("tun_", "tap/tun"),
    ("veth_", "veth"),
    ("__dev_forward_skb", "veth"),
    ("dev_forward_skb", "veth"),
    ("__dev_queue_xmit", "device queue"),
    ("sch_", "qdisc"),
    ("tcf_", "tc"),
    ("ip_", "ipv4"),
    ("ip6_", "ipv6"),
    ("arp_", "arp"),
    ("ping_", "ping socket"),
)


def stage_of(function: str) -> str:
    for prefix, stage in STAGES:
        if function.startswith(prefix):
            return stage
    return "other"


@dataclass
class DropContext:
    group: DropGroup
    reason: str        # the kernel's name, e.g. NOT_SPECIFIED
    function: str      # freeing function, e.g. br_handle_frame_finish
    bridge: Bridge
    fdb: list          # FdbEntry list (may be empty)
    # MACs that moved between ports during the run: mac -> {"ports": [names],
    # "moved_at": seconds into the run it was last seen moving (or None)}.
    # An FDB read after such a move may no longer say where a frame's
    # destination was when the frame was freed.
    moved: dict = field(default_factory=dict)
    fdb_at: float | None = None   # seconds into the run the FDB was read

    @property
    def port_name(self) -> str:
        return self.bridge.port_name(self.group.ifindex)

    @property
    def port(self):
        return self.bridge.ports.get(self.group.ifindex)

    def sample_values(self, field: str) -> Counter:
        return Counter(s[field] for s in self.group.samples if field in s)


def link_up(port) -> bool:
    """What the kernel's netif_oper_up() calls up: operstate UP, or UNKNOWN
    (devices that do not report one; a tap is UNKNOWN while a reader has it
    open and goes DOWN when the reader closes it)."""
    return port.operstate.lower() in ("up", "unknown")


def _learned_elsewhere(ctx: DropContext) -> tuple:
    """For sampled unicast frames freed where br_forward() gives up: which
    destinations the FDB places on the ingress port itself (`same`), and which
    on a port that is not forwarding (`stuck`)."""
    same, stuck = Counter(), Counter()
    if not ctx.function.startswith(("br_handle_frame_finish", "br_forward")):
        return same, stuck
    learned = {e.mac: e for e in ctx.fdb if isinstance(e, FdbEntry) and not e.local}
    for s in ctx.group.samples:
        dst = s.get("dst_mac")
        entry = learned.get(dst) if dst and not is_multicast(dst) else None
        if entry is None:
            continue
        if entry.ifindex == ctx.group.ifindex:
            same[dst] += 1
        else:
            port = ctx.bridge.ports.get(entry.ifindex)
            if port and (port.stp_state != "forwarding" or not link_up(port)):
                stuck[(dst, port.name, port.stp_state, port.operstate)] += 1
    return same, stuck


def same_port_mac(ctx: DropContext) -> str:
    """The destination MAC most of this group's frames were suppressed for
    because it is learned on their ingress port ("" if none)."""
    same, stuck = _learned_elsewhere(ctx)
    if same and sum(same.values()) >= sum(stuck.values()):
        return same.most_common(1)[0][0]
    return ""


def _stale(ctx: DropContext, mac: str) -> str:
    """A note when the FDB explaining a drop was read while `mac` moves."""
    moved = ctx.moved.get(mac)
    if not moved:
        return ""
    at = f" at +{ctx.fdb_at:.1f} s" if ctx.fdb_at is not None else ""
    ports = ", ".join(moved["ports"])
    last = moved.get("moved_at")
    if last is not None and ctx.fdb_at is not None and last > ctx.fdb_at:
        return (f" (the FDB was read{at}, while {mac} moves between {ports}, seen moving "
                f"until +{last:.1f} s; it may be stale)")
    return f" (the FDB was read{at}, after {mac} moved between {ports}; it may be stale)"


def _moved_through_ingress(ctx: DropContext) -> Counter:
    """Sampled unicast destinations that the FDB now places on a port that
    forwards (or nowhere), but that moved during the run and were learned on
    the ingress port at some point: frames that arrived then were suppressed."""
    out = Counter()
    if not ctx.moved or not ctx.function.startswith(("br_handle_frame_finish", "br_forward")):
        return out
    learned = {e.mac: e for e in ctx.fdb if isinstance(e, FdbEntry) and not e.local}
    for s in ctx.group.samples:
        dst = s.get("dst_mac")
        moved = ctx.moved.get(dst) if dst and not is_multicast(dst) else None
        if not moved or ctx.port_name not in moved["ports"]:
            continue
        entry = learned.get(dst)
        if entry is not None and entry.ifindex == ctx.group.ifindex:
            continue        # the same-port rule names it already
        out[dst] += 1
    return out


def _undeliverable_unicast(ctx: DropContext) -> str:
    """br_forward() sends a known unicast frame only to the FDB's port, and only
    if should_deliver() agrees: not back out of the ingress port, and not to a
    port that is not forwarding (STP state, or a tap with no reader: DOWN,
    NO-CARRIER; a tap whose reader has it open is UNKNOWN, which is up).
    Otherwise the frame is freed; the free shows as br_handle_frame_finish()
    because br_forward() is a tail call there."""
    mac = same_port_mac(ctx)
    if mac:
        return (f"the bridge will not send a frame back out of the port it came in on: "
                f"{mac} is learned on {ctx.port_name}, the ingress port (look for a "
                f"looped or reflecting device behind {ctx.port_name}){_stale(ctx, mac)}")
    _same, stuck = _learned_elsewhere(ctx)
    if stuck:
        mac, name, stp, oper = stuck.most_common(1)[0][0]
        why = f"STP state {stp}" if stp != "forwarding" else f"link {oper.lower()}"
        port = next((p for p in ctx.bridge.ports.values() if p.name == name), None)
        tap = (" (a tap with no reader: its VM or VPN process is gone)"
               if port is not None and port.kind == "tun" and not link_up(port) else "")
        return (f"destination {mac} is learned on {name}, which is not forwarding "
                f"({why}){tap}: the bridge cannot deliver to it{_stale(ctx, mac)}")
    moved = _moved_through_ingress(ctx)
    if moved:
        mac = moved.most_common(1)[0][0]
        return (f"destination {mac} moves between {', '.join(ctx.moved[mac]['ports'])}, "
                f"{ctx.port_name} among them: while it is learned on {ctx.port_name}, the ingress "
                f"port, the bridge will not send a frame back out of the port it came in on "
                f"(look for a looped or reflecting device){_stale(ctx, mac)}")
    return ""


# STP states in which br_handle_frame() / br_handle_frame_finish() discard
# what a port receives (learning still learns the source, then drops).
NOT_FORWARDING = ("blocking", "listening", "learning", "disabled")


def _stp(ctx: DropContext) -> str:
    """Kernels >= 6.8 say BRIDGE_INGRESS_STP_STATE; older ones (6.1) say
    NOT_SPECIFIED, and then the port's current state is the clue."""
    if ctx.reason != "BRIDGE_INGRESS_STP_STATE" and not (
            ctx.reason == "NOT_SPECIFIED" and ctx.function.startswith("br_handle_frame")
            and ctx.port and ctx.port.stp_state in NOT_FORWARDING):
        return ""
    state = ctx.port.stp_state if ctx.port else "not forwarding"
    return (f"port {ctx.port_name} is in STP state {state}: the bridge discards what it "
            f"receives there (`bridge link show dev {ctx.port_name}`)")


def _invalid_source(ctx: DropContext) -> str:
    """MAC_INVALID_SOURCE on kernels that have it; before that (6.1) a
    NOT_SPECIFIED free in br_handle_frame() of frames whose sampled source MAC
    is multicast or zero."""
    srcs = ctx.sample_values("src_mac")
    bad = Counter({m: n for m, n in srcs.items() if is_multicast(m) or m == "00:00:00:00:00:00"})
    if ctx.reason != "MAC_INVALID_SOURCE" and not (
            ctx.reason == "NOT_SPECIFIED" and ctx.function == "br_handle_frame"
            and bad and sum(bad.values()) * 2 > sum(srcs.values())):
        return ""
    src = f" ({(bad or srcs).most_common(1)[0][0]})" if (bad or srcs) else ""
    return (f"source MAC{src} is not a valid unicast address (multicast or all-zero); "
            f"the bridge discards such frames on ingress; the sender behind {ctx.port_name} is broken")


def _netfilter(ctx: DropContext) -> str:
    if ctx.reason != "NETFILTER_DROP":
        return ""
    ns = f"ip netns exec {ctx.bridge.netns.name} " if ctx.bridge.netns.name else ""
    return f"a netfilter rule dropped it (bridge family or br_netfilter): see `{ns}nft list ruleset`"


def _tap_full(ctx: DropContext) -> str:
    if not (ctx.function.startswith("tun_") and ctx.reason in ("FULL_RING", "NOT_SPECIFIED")):
        return ""
    qlen = f" of {ctx.port.txqlen} frames" if ctx.port and ctx.port.txqlen else ""
    return (f"the process behind tap {ctx.port_name} (VM or VPN daemon) is not reading: "
            f"its queue{qlen} is full, so the bridge's frames for it are thrown away")


def _tap_no_reader(ctx: DropContext) -> str:
    if not (ctx.function.startswith("tun_") and ctx.reason in ("DEV_READY", "NO_TX_TARGET")):
        return ""
    return f"no process has tap {ctx.port_name} open (its VM or VPN daemon is gone or detached)"


# Where an oversized frame is freed: br_dev_queue_push_xmit() (is_skb_forwardable()
# on the egress port), br_nf_dev_queue_xmit() when br_netfilter is loaded, and
# __dev_forward_skb*() on a veth whose peer has the smaller MTU.
MTU_FUNCTIONS = ("br_dev_queue_push_xmit", "br_nf_dev_queue_xmit", "__dev_forward_skb")


def _mtu(ctx: DropContext) -> str:
    if ctx.reason != "PKT_TOO_BIG" and not (
            ctx.reason == "NOT_SPECIFIED" and ctx.function.startswith(MTU_FUNCTIONS)):
        return ""
    lens = [s["wire_len"] for s in ctx.group.samples if "wire_len" in s]
    size = f"{max(lens)}-byte " if lens else ""
    mtu = f" (MTU {ctx.port.mtu})" if ctx.port else ""
    return (f"{size}frames are larger than {ctx.port_name} can carry{mtu}: "
            f"give every port of {ctx.bridge.name} the same MTU")


def _own_mac(ctx: DropContext) -> str:
    if ctx.reason != "LOCAL_MAC":
        return ""
    return (f"frames entering {ctx.port_name} carry one of the bridge's own MACs as source: "
            f"something behind {ctx.port_name} reflects the bridge's frames back")


def _unhandled_on_bridge(ctx: DropContext) -> str:
    if ctx.reason != "UNHANDLED_PROTO" or ctx.group.ifindex != ctx.bridge.ifindex:
        return ""
    return (f"frames flooded or sent to {ctx.bridge.name} itself carry a protocol this host "
            f"does not speak; harmless when the bridge only switches")


RULES = (_stp, _invalid_source, _netfilter, _tap_no_reader, _tap_full, _own_mac, _mtu,
         _unhandled_on_bridge,
         _undeliverable_unicast)


def explain(ctx: DropContext) -> str:
    for rule in RULES:
        text = rule(ctx)
        if text:
            return text
    return ""
