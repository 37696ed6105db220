"""The last minutes of per-second records, kept in memory so that an
incident's timeline.jsonl can start before its trigger.

Memory bound: at most `max_records` records (default 600: ten minutes at
one a second). A record is what the daemon adds, typically a few counters per
port, so the ring holds about max_records x (ports of the bridge) x (counters
per port) numbers. Measured (tracemalloc), a record of 10 int counters per
port in dicts: 600 x 64 ports = 45 MB, 600 x 4 ports = 3 MB. Records
older than `seconds` before the newest are dropped too, so a daemon adding
faster than once a second cannot stretch the window, nor one adding slower
keep stale seconds.
"""

from __future__ import annotations

from collections import deque
from typing import Optional


class Timeline:
    """A bounded ring of (t, record); t is whatever clock the caller uses
    (the daemon's monotonic seconds), increasing."""

    def __init__(self, seconds: float = 600.0, max_records: Optional[int] = None):
        self.seconds = seconds
        self.max_records = max_records if max_records is not None else max(1, int(seconds))
        self._ring: deque = deque(maxlen=self.max_records)

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, t: float, record: dict) -> None:
        self._ring.append((t, record))
        while self._ring and self._ring[0][0] < t - self.seconds:
            self._ring.popleft()

    def since(self, t0: float) -> list:
        """(t, record) pairs with t >= t0, oldest first."""
        return [(t, rec) for t, rec in self._ring if t >= t0]
