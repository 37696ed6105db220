"""`brtrace top` as text: a pure function from a TopState to the lines of one
screen, within a given width and height. No curses here: the curses loop
(tracer/views/top.py) draws these lines and picks attributes with
`line_style()`; without a terminal the same lines are printed as a table.

Line conventions the loop relies on (and the tests pin):
  * line 0 is the header, the last line of a full screen the footer;
  * a port row starts with two marks: ">" for the selected port, then "!"
    for a port some finding names;
  * a finding starts with "!!".
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace

# Sort keys, in the order `s` cycles through them.
SORT_KEYS = ("rx", "drops", "bcast", "name")
SORT_LABELS = {"rx": "rx pps", "drops": "drops/s", "bcast": "broadcast/s", "name": "name"}

# Short names for finding types on the findings strip.
FINDING_LABELS = {"own_address_echo": "echo", "l2_loop": "loop", "mac_flap": "flapping",
                  "storm": "storm", "not_forwarded": "not-forwarded", "dad_looped": "dad-looped"}

# Counters in drill-down order (the kernel's PORT_COUNTERS, then decisions).
COUNTER_ORDER = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_broadcast", "rx_multicast",
                 "rx_arp", "ndp_ns", "ndp_na", "echoes", "returns", "reentries", "arp_duplicates",
                 "ndp_duplicates", "fdb_learned",
                 "decided_forward", "decided_flood", "decided_local", "decided_same_port",
                 "decided_not_forwarding")

NAME_MAX = 15        # IFNAMSIZ - 1
# IPv6 neighbour discovery counters, added into the ARP/s column.
NDP_COUNTERS = ("ndp_ns", "ndp_na", "ndp_rs", "ndp_ra")


@dataclass(frozen=True)
class DropLine:
    """One drop group of a port (a DropRow without the bridge context)."""
    reason: str
    function: str
    location: str
    count: int
    rate: float
    explanation: str = ""


@dataclass(frozen=True)
class PortStats:
    """One row of the port table, plus what the drill-down shows."""
    name: str
    rx_pps: float = 0.0
    tx_pps: float = 0.0
    bcast_pps: float = 0.0          # broadcast + multicast received
    arp_pps: float = 0.0
    drops_pps: float = 0.0
    top_reason: str = ""            # the reason with the highest drop rate now
    moves_pps: float = 0.0          # MAC moves onto this port per second
    echoes_pps: float = 0.0
    info: str = ""                  # kind, STP state, MTU (drill-down title)
    counters: tuple = ()            # ((name, total, rate, peak), ...) in COUNTER_ORDER
    drops: tuple = ()               # DropLines, most frames first


@dataclass(frozen=True)
class FindingLine:
    type: str
    severity: str
    ports: tuple
    message: str


@dataclass(frozen=True)
class TopState:
    """Everything one screen shows: data (refreshed each interval unless
    paused) and the view's own settings (sort, selection, drill-down)."""
    bridge: str
    netns: str = ""
    mode: str = ""                  # kprobe, tracepoint, or "" without a forward hook
    elapsed: float = 0.0
    interval: float = 0.0
    events_lost: int = 0
    probes_missing: tuple = ()
    ports: tuple = ()               # PortStats
    findings: tuple = ()            # FindingLines, most severe first
    sort_key: str = "rx"
    paused: bool = False
    selected: str | None = None     # port name; None: the first row
    drill_port: str | None = None   # port name shown in detail, or None


# -- building a state from plain data -------------------------------------------

def build_state(*, bridge: str, netns: str = "", mode: str = "", elapsed: float = 0.0,
                events_lost: int = 0, probes_missing=(), ports: dict | None = None,
                bridge_state=None, drop_rows=(), findings=(), fdb_ports: dict | None = None,
                sort_key: str = "rx", paused: bool = False, selected: str | None = None,
                drill_port: str | None = None) -> TopState:
    """A TopState from a BridgeState (tracer.aggregate), DropRows, Findings and
    `ports` (name -> description, the bridge's current ports and the bridge
    itself). `fdb_ports` maps (mac, vlan) to the port the FDB has it on now:
    a MAC's moves in the last interval count for that port (matched on the
    MAC alone when the VLANs differ)."""
    ports = dict(ports or {})
    st = bridge_state
    interval = st.interval if st is not None else 0.0
    by_port: dict = {}
    for row in drop_rows:
        by_port.setdefault(row.port, []).append(row)
    # A port that left the bridge still shows while its drops go on.
    for name, rows in by_port.items():
        if name not in ports and any(r.rate > 0 for r in rows):
            ports[name] = "left the bridge"
    moves: dict = {}
    if st is not None and interval > 0:
        fdb_ports = fdb_ports or {}
        by_mac = {mac: port for (mac, _vlan), port in sorted(fdb_ports.items())}
        for (mac, vlan), m in st.macs.items():
            # A MAC the FDB no longer has (aged out, flushed) is not counted:
            # the ports it was seen on do not say where it is now.
            port = fdb_ports.get((mac, vlan)) or by_mac.get(mac)
            if m.interval_moves and port:
                moves[port] = moves.get(port, 0) + m.interval_moves
    out = []
    for name, info in ports.items():
        rate = (lambda c, n=name: st.rate(n, c)) if st is not None else (lambda c: 0.0)
        rows = sorted(by_port.get(name, []), key=lambda r: (-r.count, r.reason, r.location))
        active = sorted((r for r in rows if r.rate > 0), key=lambda r: (-r.rate, r.reason))
        out.append(PortStats(
            name=name, rx_pps=rate("rx_packets"), tx_pps=rate("tx_packets"),
            bcast_pps=rate("rx_broadcast") + rate("rx_multicast"),
            arp_pps=rate("rx_arp") + sum(rate(k) for k in NDP_COUNTERS),
            drops_pps=sum(r.rate for r in rows), top_reason=active[0].reason if active else "",
            moves_pps=moves.get(name, 0) / interval if interval > 0 else 0.0,
            echoes_pps=rate("echoes"), info=info, counters=_counters(st, name),
            drops=tuple(DropLine(r.reason, r.function, r.location, r.count, r.rate, r.explanation)
                        for r in rows)))
    severity = {"critical": 0, "warning": 1}
    type_order = list(FINDING_LABELS)
    fl = sorted(findings, key=lambda f: (severity.get(f.severity, 2),
                                         type_order.index(f.type) if f.type in type_order else 99))
    return TopState(bridge=bridge, netns=netns or "", mode=mode or "", elapsed=elapsed,
                    interval=interval, events_lost=events_lost,
                    probes_missing=tuple(probes_missing), ports=tuple(out),
                    findings=tuple(FindingLine(f.type, f.severity, tuple(f.ports), f.message)
                                   for f in fl),
                    sort_key=sort_key, paused=paused, selected=selected, drill_port=drill_port)


def _counters(st, port: str) -> tuple:
    if st is None or port not in st.totals:
        return ()
    totals = st.totals[port]
    names = [c for c in COUNTER_ORDER if c in totals] + sorted(c for c in totals if c not in COUNTER_ORDER)
    return tuple((c, totals[c], st.rate(port, c), st.peak(port, c)) for c in names)


# -- order, selection, keys -----------------------------------------------------

def ordered(state: TopState) -> list:
    """The port rows in the current sort order (ties by name)."""
    key = {
        "rx": lambda p: (-p.rx_pps, p.name),
        "drops": lambda p: (-p.drops_pps, p.name),
        "bcast": lambda p: (-p.bcast_pps, p.name),
        "name": lambda p: p.name,
    }.get(state.sort_key, lambda p: p.name)
    return sorted(state.ports, key=key)


def selected_index(state: TopState, rows: list) -> int:
    for i, p in enumerate(rows):
        if p.name == state.selected:
            return i
    return 0


def apply_key(state: TopState, key: str) -> TopState | None:
    """The view's settings after a key: q quits (None), s cycles the sort,
    p pauses, up/down (or k/j) move the selection, d or enter toggle the
    drill-down of the selected port (in it, up/down show the next port)."""
    if key == "q":
        return None
    if key == "s":
        nxt = SORT_KEYS[(SORT_KEYS.index(state.sort_key) + 1) % len(SORT_KEYS)] \
            if state.sort_key in SORT_KEYS else SORT_KEYS[0]
        return replace(state, sort_key=nxt)
    if key == "p":
        return replace(state, paused=not state.paused)
    rows = ordered(state)
    if not rows:
        return state
    i = selected_index(state, rows)
    if key in ("up", "k", "down", "j"):
        i = max(0, min(len(rows) - 1, i + (-1 if key in ("up", "k") else 1)))
        name = rows[i].name
        return replace(state, selected=name, drill_port=name if state.drill_port else None)
    if key in ("d", "enter"):
        return replace(state, selected=rows[i].name,
                       drill_port=None if state.drill_port else rows[i].name)
    return state


def with_data(view: TopState, data: TopState) -> TopState:
    """`data`'s numbers with `view`'s settings (sort, pause, selection, drill)."""
    return replace(data, sort_key=view.sort_key, paused=view.paused, selected=view.selected,
                   drill_port=view.drill_port)


# -- text -----------------------------------------------------------------------

def cut(text: str, width: int) -> str:
    """At most `width` characters; a cut line ends with '~'."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: width - 1] + "~"


def num(v: float) -> str:
    """A rate in at most 6 characters: 0, 0.5, 12, 1234, 120k, 1.2M."""
    if v <= 0:
        return "0"
    if v < 10:
        return f"{v:.1f}"
    if v < 99999.5:
        return f"{v:.0f}"
    if v < 999500:
        return f"{v / 1e3:.0f}k"
    return f"{v / 1e6:.1f}M"


def total(v: int) -> str:
    """A count in at most 8 characters: exact below 100 million."""
    if v < 100_000_000:
        return str(v)
    if v < 100_000_000_000:
        return f"{v / 1e6:.0f}M"
    return f"{v / 1e9:.0f}G"


def duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def header_line(state: TopState) -> str:
    ns = f" (netns {state.netns})" if state.netns else ""
    missing = ",".join(state.probes_missing) or "none"
    line = (f"brtrace top: {state.bridge}{ns}  {state.mode or 'no forward hook'}  "
            f"up {duration(state.elapsed)}  lost {state.events_lost}  missing {missing}")
    return line + ("  PAUSED" if state.paused else "")


def footer_line(state: TopState) -> str:
    pause = "p resume" if state.paused else "p pause"
    if state.drill_port:
        return f"q quit  d/Enter back  j/k other port  {pause}"
    return f"q quit  s sort ({SORT_LABELS.get(state.sort_key, state.sort_key)})  {pause}  " \
           f"j/k select  d/Enter drill"


# (title, width, sort key, value) of the numeric columns; width includes the gap.
_COLUMNS = (
    ("RX/s", 7, "rx", lambda p: p.rx_pps),
    ("TX/s", 7, None, lambda p: p.tx_pps),
    ("BCAST/s", 9, "bcast", lambda p: p.bcast_pps),
    ("ARP/s", 7, None, lambda p: p.arp_pps),   # ARP and IPv6 neighbour discovery
    ("MOVE/s", 7, None, lambda p: p.moves_pps),
    ("ECHO/s", 7, None, lambda p: p.echoes_pps),
    ("DROP/s", 8, "drops", lambda p: p.drops_pps),
)


def _name_width(state: TopState) -> int:
    longest = max((len(p.name) for p in state.ports), default=4)
    return max(4, min(NAME_MAX, longest))


def table_lines(state: TopState, width: int) -> tuple[str, list]:
    """The column header and one line per port, in sort order."""
    nw = _name_width(state)
    mark = lambda k: "*" if state.sort_key == k else ""   # noqa: E731
    head = "  " + f"{'PORT' + mark('name'):<{nw}}"
    for title, w, key, _ in _COLUMNS:
        head += f"{title + mark(key):>{w}}"
    head += "  TOP DROP REASON"
    flagged = {p for f in state.findings for p in f.ports}
    rows = ordered(state)
    sel = selected_index(state, rows)
    lines = []
    for i, p in enumerate(rows):
        line = (">" if i == sel else " ") + ("!" if p.name in flagged else " ")
        line += f"{cut(p.name, nw):<{nw}}"
        for _title, w, _key, value in _COLUMNS:
            line += f"{num(value(p)):>{w}}"
        if p.top_reason:
            line += "  " + p.top_reason
        lines.append(cut(line, width))
    return cut(head, width), lines


def finding_lines(state: TopState, width: int) -> list:
    if not state.findings:
        return [cut("  no loop, echo, flapping or storm seen", width)]
    out = [cut(f"findings ({len(state.findings)}):", width)]
    for f in state.findings:
        label = FINDING_LABELS.get(f.type, f.type)
        sev = "" if f.severity == "critical" else f" ({f.severity})"
        out.append(cut(f"!! {label}{sev} {','.join(f.ports)}: {f.message}", width))
    return out


def drill_lines(state: TopState, width: int) -> list:
    port = next((p for p in state.ports if p.name == state.drill_port), None)
    if port is None:
        return [cut(f"  {state.drill_port}: not on the bridge", width)]
    out = [cut(f"  {port.name}: {port.info}" + (f"  MAC moves {num(port.moves_pps)}/s"
                                                 if port.moves_pps else ""), width)]
    cells = [f"{cut(c, 16):<16}{total(t):>8}{num(r):>7}{num(pk):>7}" for c, t, r, pk in port.counters]
    head = f"{'COUNTER':<16}{'TOTAL':>8}{'/s':>7}{'PEAK/s':>7}"
    if not cells:
        out.append(cut("  no counters yet", width))
    elif width >= 2 * (2 + len(head)):
        half = (len(cells) + 1) // 2
        out.append(cut(f"  {head}  {head}", width))
        for i in range(half):
            right = cells[half + i] if half + i < len(cells) else ""
            out.append(cut(f"  {cells[i]}  {right}".rstrip(), width))
    else:
        out.append(cut("  " + head, width))
        out.extend(cut("  " + c, width) for c in cells)
    if not port.drops:
        out.append(cut(f"  no drops on {port.name}", width))
        return out
    rw = max(len(d.reason) for d in port.drops)
    lw = max(8, min(40, max(len(d.location) for d in port.drops)))
    out.append(cut(f"  {'DROP REASON':<{rw}}  {'LOCATION':<{lw}}{'COUNT':>9}{'/s':>7}", width))
    notes: list = []
    for d in port.drops:
        mark = ""
        if d.explanation:
            if d.explanation not in notes:
                notes.append(d.explanation)
            mark = f" [{notes.index(d.explanation) + 1}]"
        out.append(cut(f"  {d.reason:<{rw}}  {cut(d.location, lw):<{lw}}{d.count:>9}{num(d.rate):>7}{mark}",
                       width))
    for i, note in enumerate(notes, 1):
        if width > 12:
            out.extend(textwrap.wrap(f"[{i}] {note}", width=width, initial_indent="  ",
                                     subsequent_indent="      "))
    return out


def _window(lines: list, keep: int, n: int) -> list:
    """`n` of `lines`, scrolled so that index `keep` stays visible."""
    if n <= 0:
        return []
    if len(lines) <= n:
        return lines
    start = max(0, min(keep - n + 1, len(lines) - n)) if keep >= n else 0
    return lines[start:start + n]


def render(state: TopState, width: int, height: int) -> list:
    """One screen: header, port table (or the drill-down of one port), the
    findings strip, footer. Every line fits `width`; at most `height` lines,
    the footer on the last one. When the screen is too small, the port rows
    and findings are cut (the selected port stays visible), never the header
    or footer."""
    if height <= 0 or width <= 0:
        return []
    header = cut(header_line(state), width)
    if height == 1:
        return [header]
    footer = cut(footer_line(state), width)
    avail = height - 2
    if state.drill_port:
        body, keep = drill_lines(state, width), 0
    else:
        head, rows = table_lines(state, width)
        body, keep = [head] + rows, 1 + selected_index(state, ordered(state))
    found = finding_lines(state, width)
    gap = 1
    if len(body) + gap + len(found) > avail:
        gap = 0
    if len(body) + gap + len(found) > avail:
        f_give = min(len(found), max(1, avail // 3))
        b_give = avail - f_give
        if b_give > len(body):
            f_give, b_give = f_give + b_give - len(body), len(body)
        if f_give < len(found):
            # keep the most severe findings; the title goes first when space is short
            found = found[1:f_give + 1] if state.findings else found[:f_give]
        if state.drill_port or b_give < 2:
            body = body[:b_give]
        else:
            body = [body[0]] + _window(body[1:], keep - 1, b_give - 1)
    lines = [header] + body + [""] * gap + found
    lines += [""] * (height - 1 - len(lines))
    return lines[:height - 1] + [footer]


def plain(state: TopState, width: int) -> list:
    """The whole state as text, no footer and no selection: what `brtrace top`
    prints per interval when stdout is not a terminal, and when it ends."""
    st = replace(state, selected=None, drill_port=None)
    head, rows = table_lines(st, width)
    rows = [" " + r[1:] for r in rows]      # no selection mark
    return [cut(header_line(st), width), head] + rows + [""] + finding_lines(st, width)


def line_style(lines: list, index: int) -> str:
    """How the curses loop draws line `index` of a rendered screen: header,
    footer, finding, selected, flagged, "selected flagged", or plain ("")."""
    line = lines[index]
    if index == 0:
        return "header"
    if index == len(lines) - 1 and len(lines) > 1:
        return "footer"
    if line.startswith("!!"):
        return "finding"
    if line.startswith(">"):
        return "selected flagged" if line[1:2] == "!" else "selected"
    if line[1:2] == "!" and line[:1] == " ":
        return "flagged"
    return ""
