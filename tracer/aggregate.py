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
MAX_MACS = CONST["FDB_KEYS_MAX"]   # MACs tracked for moves, as many as the kernel's LRU
FDB_PORTS_PER_MAC = 8   # distinct ports remembered per MAC


@dataclass
class MacMoves:
    mac: str
    vlan: int
    count: int = 0                  # creations + moves since load (kernel LRU)
    interval_moves: int = 0         # during the last interval
    peak_rate: float = 0.0          # highest moves/s over any interval
    ports: list = field(default_factory=list)   # port names it was learned on, in order seen


class BridgeState:
    """Per-port counters and FDB moves, folded from kernel
    snapshots keyed by port *name* (slots are an implementation detail of the
    BPF side), plus bounded echo and loop samples."""

    def __init__(self):
        self.totals: dict = {}          # port -> {counter: value since load}
        self.rates: dict = {}           # port -> {counter: per second, last interval}
        self.peaks: dict = {}           # port -> {counter: highest per-second rate seen}
        self.macs: dict = {}            # (mac, vlan) -> MacMoves
        self.echoes: deque = deque(maxlen=RECENT_EVENTS)
        self.loops: deque = deque(maxlen=RECENT_EVENTS)
        self.fdb_events = 0
        self.arp: list = []             # arp_targets snapshot (latest)
        self.neigh: list = []           # neigh_entries snapshot (latest)
        self.neigh_events: deque = deque(maxlen=RECENT_EVENTS)
        self.interval = 0.0
        self._last_t: float | None = None

    def fold(self, counters: dict, moves: list, now: float) -> None:
        """counters: port -> {name: value}; moves: [{mac, vlan, count, port,
        prev_port}] from the FDB hook.
        Ports absent from `counters` have left the bridge: their last totals
        stay, so a loop through a link that was since removed is still shown."""
        dt = (now - self._last_t) if self._last_t is not None else 0.0
        self.interval = dt
        rates = {}
        for port, values in counters.items():
            before = self.totals.get(port, {})
            rates[port] = {k: (max(0, v - before.get(k, 0)) / dt if dt > 0 else 0.0)
                           for k, v in values.items()}
            peak = self.peaks.setdefault(port, {})
            for k, r in rates[port].items():
                peak[k] = max(peak.get(k, 0.0), r)
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
            if dt > 0:
                entry.peak_rate = max(entry.peak_rate, entry.interval_moves / dt)
            entry.count = m["count"]
            for port in (m.get("prev_port"), m.get("port")):
                _remember_port(entry, port)
        self._last_t = now

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
            self.loops.append({**rec, "port": port_name(rec["ifindex"]),
                               "first_port": port_name(rec["first_ifindex"]) if rec["first_ifindex"] else None})

    def total(self, port: str, counter: str) -> int:
        return self.totals.get(port, {}).get(counter, 0)

    def rate(self, port: str, counter: str) -> float:
        return self.rates.get(port, {}).get(counter, 0.0)

    def peak(self, port: str, counter: str) -> float:
        return self.peaks.get(port, {}).get(counter, 0.0)


def _remember_port(entry: MacMoves, port) -> None:
    """Distinct ports a MAC was learned on, in first-seen order, bounded."""
    if port and port not in entry.ports:
        entry.ports.append(port)
        del entry.ports[:-FDB_PORTS_PER_MAC]
