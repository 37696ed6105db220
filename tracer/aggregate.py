"""Folding kernel counter snapshots and sampled records into drop groups. Pure.

Kernel counters are monotonic and never cleared; this module keeps the last
snapshot to turn them into per-interval rates, and groups them by
(port, reason, location) with a per-protocol breakdown. Samples are bounded
per group, so a flood of distinct frames cannot grow memory.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

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
