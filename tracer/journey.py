"""Steps -> journeys: what happened to each frame on its way through a bridge. Pure.

A step is a dict (tracer/views/trace.py builds it from a ring-buffer record):

    step      "entered" | "originated" | "delivered" | "left" | "freed"
    ts_ns     kernel monotonic time
    skb       sk_buff address; head: its data buffer's address
    port      device name (a port, or the bridge for originated/delivered)
    data      the first bytes of the frame (for the fingerprint and the dst MAC)
    reason, function, location   for "freed" (names, resolved by the caller)

How steps are tied together, strongest first:
  * the same skb: the bridge forwards a known unicast frame as the very skb it
    received, and the same skb is later freed (or delivered, or queued);
  * the same data buffer (skb->head): br_flood() sends clones, which share it;
  * the same first bytes within `tie_ns` of the journey's latest step: a copy
    (skb_copy for VLAN changes, netfilter) or a clone whose buffer we missed.
A step that starts a journey ("entered" on a port, "originated" on the bridge
device) always starts a new one: the same skb entering again is a new pass.

A journey ends once `grace_ns` passes without a step; then its verdict is
decided from the steps alone (plus an FDB lookup for "suppressed").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

START_STEPS = ("entered", "originated")
FINGERPRINT_BYTES = 64
DEFAULT_GRACE_NS = 200_000_000     # 200 ms without a step: the journey is over
DEFAULT_TIE_NS = 5_000_000         # a copy with the same bytes within 5 ms is the same frame
MAX_OPEN = 10_000                  # journeys kept open at once (oldest forced to end)

# Functions whose free of a known unicast frame is br_forward() refusing to
# send it (should_deliver() false); br_forward is a tail call, so the kernel
# reports the caller.
FORWARD_REFUSERS = ("br_handle_frame_finish", "br_forward")


def fingerprint(data: bytes) -> bytes:
    return bytes(data[:FINGERPRINT_BYTES])


def mac_of(data: bytes, off: int) -> Optional[str]:
    if len(data) < off + 6:
        return None
    return ":".join(f"{b:02x}" for b in data[off:off + 6])


@dataclass
class Journey:
    n: int                        # frame number, 1.. in order of first step
    steps: list = field(default_factory=list)
    skbs: set = field(default_factory=set)
    heads: set = field(default_factory=set)
    fp: bytes = b""
    verdict: Optional[dict] = None

    @property
    def first_ts(self) -> int:
        return self.steps[0]["ts_ns"]

    @property
    def last_ts(self) -> int:
        return self.steps[-1]["ts_ns"]

    @property
    def done(self) -> bool:
        return self.verdict is not None


class Journeys:
    """Feed steps in arrival order with add(); collect finished journeys with
    expire(now_ns) while running and flush() at the end."""

    def __init__(self, bridge: str, fdb_port: Callable[[str], Optional[str]] = lambda mac: None,
                 grace_ns: int = DEFAULT_GRACE_NS, tie_ns: int = DEFAULT_TIE_NS,
                 max_journeys: Optional[int] = None):
        self.bridge = bridge
        self.fdb_port = fdb_port          # learned MAC -> port name (None: not learned)
        self.grace_ns = grace_ns
        self.tie_ns = tie_ns
        self.max_journeys = max_journeys  # stop starting journeys after this many
        self.started = 0
        self.open: dict = {}              # n -> Journey, in start order
        self._by_skb: dict = {}
        self._by_head: dict = {}
        self.refused = 0                  # steps not taken (beyond max_journeys)
        self._refused: dict = {}          # skb/head of refused frames -> when

    # -- feeding --------------------------------------------------------------
    def add(self, step: dict) -> Optional[Journey]:
        """Attach a step to its journey (maybe a new one) and return it; None
        when it would start a journey beyond max_journeys."""
        start = step["step"] in START_STEPS
        if not start and self._is_refused(step):
            self.refused += 1
            return None
        j = None if start else self._find(step)
        if j is None:
            if self.max_journeys is not None and self.started >= self.max_journeys:
                self.refused += 1
                for key in (step.get("skb"), step.get("head")):
                    if key:
                        self._refused[key] = step["ts_ns"]
                return None
            self.started += 1
            j = Journey(n=self.started, fp=fingerprint(step.get("data", b"")))
            self.open[j.n] = j
            if len(self.open) > MAX_OPEN:
                self._finish(next(iter(self.open.values())))
        j.steps.append(step)
        for key, index, where in ((step.get("skb"), self._by_skb, j.skbs),
                                  (step.get("head"), self._by_head, j.heads)):
            if key:
                index[key] = j
                where.add(key)
        if step["step"] == "freed" and step.get("skb"):
            # a freed skb's address will be reused for another frame
            if self._by_skb.get(step["skb"]) is j:
                del self._by_skb[step["skb"]]
        return j

    def _is_refused(self, step: dict) -> bool:
        """A later step of a frame whose start was refused is refused too (and
        must not be tied to another journey by its bytes)."""
        for key in (step.get("skb"), step.get("head")):
            ts = self._refused.get(key) if key else None
            if ts is not None and step["ts_ns"] - ts <= self.grace_ns:
                return True
        return False

    def _find(self, step: dict) -> Optional[Journey]:
        ts = step["ts_ns"]
        # skb and buffer addresses are recycled at once (LIFO slab caches): the
        # clones of consecutive floods get the same addresses. When the skb and
        # the buffer point at different journeys, the newer one owns them now.
        candidates = [j for j in (self._by_skb.get(step.get("skb")), self._by_head.get(step.get("head")))
                      if j is not None and not j.done and ts - j.last_ts <= self.grace_ns]
        if candidates:
            return max(candidates, key=lambda j: j.n)
        # A copy (new buffer, same bytes) soon after: the same frame, unless the
        # journey already has this very step (then it is the next identical frame).
        fp = fingerprint(step.get("data", b""))
        if len(fp) >= 14:
            seen = (step["step"], step.get("port"))
            for j in reversed(list(self.open.values())):
                if (j.fp == fp and 0 <= ts - j.last_ts <= self.tie_ns
                        and all((s["step"], s.get("port")) != seen for s in j.steps)):
                    return j
        return None

    # -- ending ---------------------------------------------------------------
    def expire(self, now_ns: int) -> list:
        """Journeys with no step for grace_ns, finished, oldest first."""
        out = [j for j in self.open.values() if now_ns - j.last_ts >= self.grace_ns]
        self._refused = {k: ts for k, ts in self._refused.items() if now_ns - ts < self.grace_ns}
        for j in out:
            self._finish(j)
        return out

    def flush(self) -> list:
        out = list(self.open.values())
        for j in out:
            self._finish(j)
        return out

    def _finish(self, j: Journey) -> None:
        j.verdict = verdict(j.steps, self.bridge, self.fdb_port)
        self.open.pop(j.n, None)
        for key in j.skbs:
            if self._by_skb.get(key) is j:
                del self._by_skb[key]
        for key in j.heads:
            if self._by_head.get(key) is j:
                del self._by_head[key]

    @property
    def all_done(self) -> bool:
        return not self.open


def _drop(s: dict) -> dict:
    return {"port": s.get("port"), "reason": s.get("reason"), "function": s.get("function"),
            "location": s.get("location")}


def verdict(steps: list, bridge: str, fdb_port=lambda mac: None) -> dict:
    """What the bridge did with one frame, from its steps:

    decision  "forward" (to one port), "flood" (to several, or a multicast/
              broadcast frame), "local" (delivered to the bridge itself only),
              "suppressed" (known unicast whose destination is learned on the
              ingress port), "dropped" (freed before leaving), "never_left"
    """
    entry = next((s for s in steps if s["step"] in START_STEPS), None)
    data = (entry or steps[0]).get("data", b"")
    dst = mac_of(data, 0)
    group = bool(data and data[0] & 1)
    exits = list(dict.fromkeys(s["port"] for s in steps if s["step"] == "left"))
    delivered = any(s["step"] == "delivered" for s in steps)
    frees = [s for s in steps if s["step"] == "freed"]
    ingress = entry["port"] if entry else None
    out = {"from": ingress, "to": exits, "local": delivered, "dst_mac": dst,
           "drops": [_drop(s) for s in frees],
           "duration_us": round((steps[-1]["ts_ns"] - steps[0]["ts_ns"]) / 1000, 1)}

    if not exits and not delivered:
        if frees:
            f = frees[0]
            if (entry and entry["step"] == "entered" and dst and not group
                    and (f.get("function") or "").startswith(FORWARD_REFUSERS)
                    and fdb_port(dst) == ingress):
                out["decision"] = "suppressed"
                out["text"] = (f"suppressed: {dst} is learned on {ingress}, the ingress port "
                               f"(same port); freed at {f.get('location') or f.get('function')}")
            else:
                out["decision"] = "dropped"
                out["text"] = f"dropped on {f.get('port')}: {_where(f)}"
        else:
            out["decision"] = "never_left"
            out["text"] = "never left"
    else:
        parts = []
        if len(exits) > 1 or (exits and group):
            out["decision"] = "flood"
            parts.append(f"flood to {len(exits)} port{'s' if len(exits) != 1 else ''} ({', '.join(exits)})")
        elif exits:
            out["decision"] = "forward"
            parts.append(f"forward to {exits[0]}")
        else:
            out["decision"] = "local"
        if delivered:
            parts.append("deliver locally")
        out["decided"] = " and ".join(parts)
        # frees after the decision: on an egress port, or by the host's stack
        out["after"] = [f"dropped on {f.get('port')}: {_where(f)}" for f in frees]
        out["text"] = ", then ".join([out["decided"], *out["after"]])
    out["summary"] = describe_path(steps, bridge, out)
    out.pop("decided", None)
    out.pop("after", None)
    return out


def _where(f: dict) -> str:
    loc = f.get("location") or f.get("function") or "?"
    return f"{f.get('reason') or '?'} at {loc}"


def describe_path(steps: list, bridge: str, v: dict) -> str:
    """One line: entered br-int on vnet0 -> forward to vnet1 -> left via vnet1."""
    entry = next((s for s in steps if s["step"] in START_STEPS), None)
    if entry is None:
        head = f"seen on {bridge} without its entry ({steps[0]['step']} {steps[0].get('port')})"
    elif entry["step"] == "originated":
        head = f"sent by {bridge} itself (host stack)"
    else:
        head = f"entered {bridge} on {entry['port']}"
    if v["decision"] == "never_left":
        return f"{head}, never left"
    parts = [head, v.get("decided", v["text"])]
    if v["to"]:
        parts.append("left via " + ", ".join(v["to"]))
    parts += v.get("after", [])
    return " -> ".join(parts)
