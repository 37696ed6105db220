"""Folding kernel counter snapshots and sampled records into drop groups. Pure.

Kernel counters are monotonic and never cleared; this module keeps the last
snapshot to turn them into per-interval rates, and groups them by
(port, reason, location) with a per-protocol breakdown. Samples are bounded
per group, so a flood of distinct frames cannot grow memory.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from tracer.abi import CONST

SAMPLES_PER_GROUP = 32

# (ifindex, reason, location, ethertype): the key of the kernel's drop_counts.
CountKey = tuple


@dataclass
class DropGroup:
    ifindex: int
    reason: int
    location: int
    count: int = 0
    rate: float = 0.0                           # frames/s over the last interval
    by_ethertype: Counter = field(default_factory=Counter)
    samples: deque = field(default_factory=lambda: deque(maxlen=SAMPLES_PER_GROUP))

    @property
    def key(self) -> tuple:
        return (self.ifindex, self.reason, self.location)


class DropState:
    """Everything `brtrace drops` knows, updated from snapshots and samples."""

    def __init__(self):
        self.counts: dict = {}                  # CountKey -> frames since load
        self.rates: dict = {}                   # CountKey -> frames/s last interval
        self.samples: dict = {}                 # group key -> deque of records
        self.sample_count = 0
        self._last_t: float | None = None

    def fold_counts(self, snapshot: dict, now: float) -> None:
        """Take a new snapshot of the kernel's drop_counts (absolute values)."""
        if self._last_t is not None and now > self._last_t:
            dt = now - self._last_t
            self.rates = {k: max(0, v - self.counts.get(k, 0)) / dt for k, v in snapshot.items()}
        self.counts = dict(snapshot)
        self._last_t = now

    def add_sample(self, rec: dict) -> None:
        key = (rec["ifindex"], rec["reason"], rec["location"])
        self.samples.setdefault(key, deque(maxlen=SAMPLES_PER_GROUP)).append(rec)
        self.sample_count += 1

    def groups(self) -> list[DropGroup]:
        """Drop groups, most frames first."""
        out: dict = {}
        for (ifindex, reason, location, ethertype), n in self.counts.items():
            g = out.get((ifindex, reason, location))
            if g is None:
                g = out[(ifindex, reason, location)] = DropGroup(ifindex, reason, location)
                g.samples = self.samples.get(g.key, deque())
            g.count += n
            g.rate += self.rates.get((ifindex, reason, location, ethertype), 0.0)
            g.by_ethertype[ethertype] += n
        return sorted(out.values(), key=lambda g: (-g.count, g.key))

    def total(self) -> int:
        return sum(self.counts.values())


RECENT_EVENTS = 256     # echo / loop records kept for evidence
ROUND_TRIPS_KEPT = 512  # round-trip samples kept per port
MAX_MACS = CONST["FDB_KEYS_MAX"]   # MACs tracked for moves, as many as the kernel's LRU
FDB_PORTS_PER_MAC = 8   # distinct ports remembered per MAC
# "Now" rates (and `active`) are taken over a trailing window of at least one
# interval and at least RATE_WINDOW_MIN s, so a short last interval (the tail
# folded at exit) cannot decide them; HISTORY_MAX snapshots bound the window's
# memory when the interval is tiny.
RATE_WINDOW_MIN = 1.0
RATE_WINDOW_SLACK = 0.05   # a tick a few ms early still closes a window
HISTORY_MAX = 32
# ndp_targets counts whose rates the NDP findings' `active` follows.
NDP_RATE_COUNTS = ("solicits", "adverts", "routers", "conflicts", "elsewhere", "dad_answered", "copies")
# The same for arp_targets: what says whether an ARP finding still happens.
ARP_RATE_COUNTS = ("requests", "replies", "conflicts")
_TABLES = (("ndp", NDP_RATE_COUNTS), ("arp", ARP_RATE_COUNTS))


@dataclass
class MacMoves:
    mac: str
    vlan: int
    count: int = 0                  # creations + moves since load (kernel LRU)
    interval_moves: int = 0         # during the last interval
    peak_rate: float = 0.0          # highest moves/s over any full-length interval
    ports: list = field(default_factory=list)   # port names it was learned on, in order seen
    moves_per_second: float = 0.0   # over the trailing rate window (BridgeState.window)
    # (time, count) when the count changed, bounded: the count at the window's start
    # (one entry per fold at most; one more than the folds a window can span)
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_MAX + 1), repr=False)

    def count_at(self, t: float) -> int:
        """The count as of time t (1 if it was first seen after t: the
        creation is not a move)."""
        at = 1
        for when, n in self.history:
            if when > t:
                break
            at = n
        return at


class BridgeState:
    """Per-port counters and FDB moves, folded from kernel
    snapshots keyed by port *name* (slots are an implementation detail of the
    BPF side), plus bounded echo and loop samples."""

    def __init__(self, interval: float | None = None):
        self.totals: dict = {}          # port -> {counter: value since load}
        self.rates: dict = {}           # port -> {counter: per second over the rate window}
        self.peaks: dict = {}           # port -> {counter: highest rate of a full-length interval}
        # The configured interval (None: the median of the recent ones).
        self.configured_interval = interval
        self.window = 0.0               # seconds the current rates span
        self._history: deque = deque(maxlen=HISTORY_MAX)   # (time, totals) at each fold
        self._dts: deque = deque(maxlen=8)                 # recent interval lengths
        self.macs: dict = {}            # (mac, vlan) -> MacMoves
        self.echoes: deque = deque(maxlen=RECENT_EVENTS)
        self.loops: deque = deque(maxlen=RECENT_EVENTS)
        # From the sampled loop records: jiffies from a pass to its copy, per
        # port (ROUND_TRIPS_KEPT each); when the first copy was seen (kernel
        # clock, ns).
        self.round_trips: dict = {}
        self.first_loop_ns: int | None = None
        self.fdb_events = 0
        self.arp: list = []             # arp_targets snapshot (latest)
        self.ndp: list = []             # ndp_targets snapshot (latest)
        # arp_targets' and ndp_targets' counts per address over the trailing
        # window, per second (arp_rate(), ndp_rate()): what says whether an
        # address finding is still happening.
        self.addr_rates: dict = {}
        self.neigh: list = []           # neigh_entries snapshot (latest)
        self.neigh_events: deque = deque(maxlen=RECENT_EVENTS)
        self.interval = 0.0
        self._last_t: float | None = None

    def fold(self, counters: dict, moves: list, now: float, ndp: list | None = None,
             arp: list | None = None) -> None:
        """counters: port -> {name: value}; moves: [{mac, vlan, count, port,
        prev_port}] from the FDB hook; ndp, arp: the ndp_targets and
        arp_targets rows, if read.
        Ports absent from `counters` have left the bridge: their last totals
        stay, so a loop through a link that was since removed is still shown.
        `rates` (and MacMoves.moves_per_second) span the trailing window
        (rate_window()); `peaks` are the highest per-interval rates, from
        intervals at least half the nominal length."""
        dt = (now - self._last_t) if self._last_t is not None else 0.0
        self.interval = dt
        if dt > 0:
            self._dts.append(dt)
        full = dt > 0 and dt >= self.nominal_interval() / 2
        base_t, base, addr_base = self._window_base(now)
        span = now - base_t if base_t is not None else 0.0
        self.window = span
        rates = {}
        for port, values in counters.items():
            before = self.totals.get(port, {})
            start = base.get(port, {})
            rates[port] = {k: (max(0, v - start.get(k, 0)) / span if span > 0 else 0.0)
                           for k, v in values.items()}
            if full:
                peak = self.peaks.setdefault(port, {})
                for k, v in values.items():
                    peak[k] = max(peak.get(k, 0.0), max(0, v - before.get(k, 0)) / dt)
        self.rates = rates
        self.totals.update({p: dict(v) for p, v in counters.items()})
        for m in moves:
            key = (m["mac"], m["vlan"])
            entry = self.macs.get(key)
            if entry is None:
                if len(self.macs) >= MAX_MACS:
                    continue    # bounded: a random-MAC flood must not grow this
                entry = self.macs[key] = MacMoves(m["mac"], m["vlan"])
            entry.interval_moves = max(0, m["count"] - entry.count) if entry.count else max(0, m["count"] - 1)
            if full:
                entry.peak_rate = max(entry.peak_rate, entry.interval_moves / dt)
            if m["count"] != entry.count:
                entry.history.append((now, m["count"]))
            entry.count = m["count"]
            for port in (m.get("prev_port"), m.get("port")):
                _remember_port(entry, port)
        for entry in self.macs.values():
            moved = entry.count - entry.count_at(base_t) if base_t is not None else 0
            entry.moves_per_second = max(0, moved) / span if span > 0 else 0.0
            _keep_from(entry.history, base_t)
        if ndp is not None:
            self.ndp = ndp
        if arp is not None:
            self.arp = arp
        addr_now = {(table, t["ip"]): tuple(t[k] for k in names)
                    for table, names in _TABLES for t in getattr(self, table)}
        self.addr_rates = {}
        for table, names in _TABLES:
            unseen = (0,) * len(names)
            for t in getattr(self, table):
                key = (table, t["ip"])
                self.addr_rates[key] = {k: max(0, v - b) / span if span > 0 else 0.0
                                        for k, v, b in zip(names, addr_now[key], addr_base.get(key, unseen))}
        self._history.append((now, {p: dict(v) for p, v in self.totals.items()}, addr_now))
        _keep_from(self._history, base_t)
        self._last_t = now

    def nominal_interval(self) -> float:
        """The configured interval, or the median of the recent ones."""
        if self.configured_interval:
            return self.configured_interval
        dts = sorted(self._dts)
        return dts[len(dts) // 2] if dts else 0.0

    def rate_window(self) -> float:
        """Rates span at least this long once the run has lasted that long."""
        return max(self.nominal_interval(), RATE_WINDOW_MIN)

    def _window_base(self, now: float) -> tuple:
        """(time, totals, address-table counts) of the newest snapshot at least
        rate_window() old; early in the run, the oldest there is; (None, {},
        {}) before any."""
        if not self._history:
            return None, {}, {}
        limit = now - self.rate_window() * (1 - RATE_WINDOW_SLACK)
        base = self._history[0]
        for snap in self._history:
            if snap[0] > limit:
                break
            base = snap
        return base

    def add_event(self, rec: dict, port_name) -> None:
        """A decoded fdb / echo / loop record (ifindex resolved by port_name)."""
        kind = rec["kind"]
        if kind == "fdb":
            self.fdb_events += 1
            key = (rec["mac"], rec["vlan"])
            entry = self.macs.get(key)
            if entry is not None:
                _remember_port(entry, port_name(rec["ifindex"]))
        elif kind == "echo":
            self.echoes.append({**rec, "port": port_name(rec["ifindex"])})
        elif kind == "loop":
            port = port_name(rec["ifindex"])
            prev = port_name(rec["prev_ifindex"]) if rec["prev_ifindex"] else None
            self.loops.append({**rec, "port": port, "prev_port": prev})
            # Round trips per port, for the loop's evidence (bounded).
            self.round_trips.setdefault(port, deque(maxlen=ROUND_TRIPS_KEPT)).append(rec["gap_ticks"])
            if self.first_loop_ns is None:
                self.first_loop_ns = rec["ts_ns"]

    def total(self, port: str, counter: str) -> int:
        return self.totals.get(port, {}).get(counter, 0)

    def rate(self, port: str, counter: str) -> float:
        return self.rates.get(port, {}).get(counter, 0.0)

    def peak(self, port: str, counter: str) -> float:
        return self.peaks.get(port, {}).get(counter, 0.0)

    def ndp_rate(self, ip: str, counter: str) -> float:
        """An ndp_targets count of address `ip`, per second over the rate window."""
        return self.addr_rates.get(("ndp", ip), {}).get(counter, 0.0)

    def arp_rate(self, ip: str, counter: str) -> float:
        """An arp_targets count of address `ip`, per second over the rate window."""
        return self.addr_rates.get(("arp", ip), {}).get(counter, 0.0)


def _keep_from(history: deque, t) -> None:
    """Forget (time, ...) entries older than the last one at or before t:
    the next window starts at t or later."""
    if t is None:
        return
    while len(history) > 1 and history[1][0] <= t:
        history.popleft()


def _remember_port(entry: MacMoves, port) -> None:
    """Distinct ports a MAC was learned on, in first-seen order, bounded."""
    if port and port not in entry.ports:
        entry.ports.append(port)
        del entry.ports[:-FDB_PORTS_PER_MAC]
