"""When `brtrace watch` pays for detail. Pure: fed one sample a second.

Always on (cheap, never per flooded frame): drop counts (skb:kfree_skb), FDB
moves (bridge:br_fdb_update fires only when an entry is created or moves),
neighbour events, the interfaces' own packet counters (netlink stats64) and
the kernel log. Armed: the port programs (ports.bpf.c), which fingerprint
every flooded frame, keep the ARP/NDP tables and count echoes exactly.

A symptom arms detail at once; detail disarms after `quiet_after` seconds
without any symptom and without an active critical finding. Symptoms:

- a MAC moved between ports (a loop or a reflecting port moves the MACs of
  the frames it brings back; a VM migrating moves its own once: that arms
  detail for one quiet period, which is cheap);
- the kernel logged an own-address echo for this bridge
  (br_fdb_update(): "received packet on X with own address as source address");
- the frames the bridge device itself receives (br_pass_frame_up(): every
  broadcast reaches it) or the frames freed on the bridge and its ports run
  well above their own baseline: RATE_FACTOR times it, and at least the
  floor, so a storm that is already running when watch starts (no baseline
  yet) arms at once while a quiet bridge's small wobbles never do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

RATE_FACTOR = 8.0
BRIDGE_RX_FLOOR = 2000.0     # frames/s delivered to the bridge device
DROPS_FLOOR = 1000.0         # frames/s freed on the bridge or its ports
BASELINE_ALPHA = 0.02        # per quiet second: a time constant of ~50 s
QUIET_AFTER = 60.0


@dataclass
class Sample:
    """One second of a bridge, from the always-on tier."""

    t: float                    # monotonic seconds
    moves: int = 0              # FDB moves since the last sample
    echo_lines: int = 0         # own-address kernel log lines for this bridge since the last sample
    bridge_rx_pps: float = 0.0  # frames/s the bridge device received
    drops_pps: float = 0.0      # frames/s freed on the bridge and its ports
    critical_active: bool = False   # an active critical finding (armed detail sees more)


@dataclass
class Change:
    armed: bool
    reason: str


@dataclass
class Arming:
    quiet_after: float = QUIET_AFTER
    armed: bool = False
    armed_at: Optional[float] = None
    last_symptom: Optional[float] = None
    baseline: dict = field(default_factory=lambda: {"bridge_rx": 0.0, "drops": 0.0})
    arms: int = 0

    def symptoms(self, s: Sample) -> list:
        out = []
        if s.moves:
            out.append(f"{s.moves} MAC move{'s' if s.moves != 1 else ''} between ports")
        if s.echo_lines:
            out.append("the kernel logged own-address echoes")
        for key, value, floor, what in (("bridge_rx", s.bridge_rx_pps, BRIDGE_RX_FLOOR,
                                         "frames/s reaching the bridge device"),
                                        ("drops", s.drops_pps, DROPS_FLOOR, "frames/s dropped")):
            limit = max(floor, RATE_FACTOR * self.baseline[key])
            if value > limit:
                out.append(f"{value:.0f} {what} (baseline {self.baseline[key]:.0f})")
        return out

    def observe(self, s: Sample) -> Optional[Change]:
        """Fold one sample; the change of state it causes, if any."""
        found = self.symptoms(s)
        if found or s.critical_active:
            self.last_symptom = s.t
        else:
            # Learn the baseline from quiet seconds only: a storm must not
            # teach watch that storms are normal.
            self.baseline["bridge_rx"] += BASELINE_ALPHA * (s.bridge_rx_pps - self.baseline["bridge_rx"])
            self.baseline["drops"] += BASELINE_ALPHA * (s.drops_pps - self.baseline["drops"])
        if found and not self.armed:
            self.armed, self.armed_at = True, s.t
            self.arms += 1
            return Change(True, "; ".join(found))
        if self.armed and not found and not s.critical_active and \
                self.last_symptom is not None and s.t - self.last_symptom >= self.quiet_after:
            self.armed, self.armed_at = False, None
            return Change(False, f"no symptom for {self.quiet_after:.0f} s")
        return None
