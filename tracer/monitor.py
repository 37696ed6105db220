"""The userspace half of a run: reads the kernel maps each interval, decodes
ring-buffer records as they come, and keeps the aggregated state every view
renders (drops, loops, neigh, top and export). tracer/runloop.py drives it.
"""

from __future__ import annotations

import os
import time
from collections import deque

from tracer import abi
from tracer.aggregate import MAX_MACS, BridgeState, DropState
from tracer.hooks import groups as hook_groups
from tracer.hooks import parse_event
from tracer.diagnose import Inputs, diagnose
from tracer.kernel.features import jiffy_ns
from tracer.report import drop_rows, sample_record
from tracer.runloop import Follow
from tracer.session import BridgeRun
from tracer.topology import NETNS_DIR


class Monitor:
    def __init__(self, run: BridgeRun):
        self.run = run
        self.drops = DropState()
        self.bridge_state = BridgeState(interval=run.cfg.interval)
        self.bad_records = 0
        self.jiffy_ms = jiffy_ns() / 1e6   # loop records' round trips are in ticks
        self.port_events: deque = deque(maxlen=1024)
        self._pending: list = []
        # Port counters at the start of the current episode (watch: when
        # detail was armed); findings count from there. Empty: since load.
        self.base: dict = {}
        self.last_snapshot: dict = {}
        self.last_findings: list = []    # as of the last tick (export, watch)
        run.maps.on_events(self._pending.append)

    # -- per record -----------------------------------------------------------
    def drain(self, emit=None) -> None:
        """Decode queued records; `emit(record)` gets the JSON form of each
        sampled drop (views that stream samples pass it)."""
        run = self.run
        while self._pending:
            raw = self._pending.pop(0)
            try:
                rec = parse_event(raw)
            except ValueError:
                self.bad_records += 1
                continue
            if rec["kind"] == "drop":
                self.drops.add_sample(rec)
                if emit:
                    emit(sample_record(rec, run.bridge, run.kernel.reasons, run.kernel.kallsyms, run.names))
            elif rec["kind"] == "neigh":
                rec["dev"] = self.device_name(rec["netns"], rec["ifindex"])
                self.bridge_state.neigh_events.append(rec)
            else:
                self.bridge_state.add_event(rec, self.port_name)

    def note_port_events(self, events: list, emit=None) -> None:
        """Keep the port events (runloop.port_event_record) and pass each to `emit`."""
        for ev in events:
            self.port_events.append(ev)
            if emit:
                emit(ev)

    def follow(self, emit=None, on_event=None) -> Follow:
        """This monitor as one bridge of the run loop: `emit` gets the JSON
        form of sampled drops, `on_event` port events."""
        return Follow(self.run, drain=lambda: self.drain(emit),
                      refreshed=lambda events: self.note_port_events(events, on_event), tick=self.tick)

    def device_name(self, netns_inode: int, ifindex: int) -> str:
        """A device anywhere: its name in the bridge's namespace, else
        `ifindex N@netns` with the namespace's `ip netns` name when known."""
        if netns_inode == self.run.netns.inode:
            return self.port_name(ifindex)
        return f"ifindex {ifindex}@{netns_name(netns_inode)}"

    def port_name(self, ifindex: int) -> str:
        return self.run.names.get(ifindex) or self.run.bridge.port_name(ifindex)

    # -- per interval ---------------------------------------------------------
    def snapshot(self) -> dict:
        """Read every kernel map the run has loaded, each hook group its own
        (tracer/hooks/<group>.py read()), keyed by port name: {"drops":
        {(ifindex, reason, location, ethertype): n}, "counters": {port:
        {counter: n}}, "moves": [...], "arp": [...], "ndp": [...], "neigh": [...]}.
        Exporters call this at scrape time; tick() folds it."""
        slots = sorted(self.run.slots.owner)
        snap = {"slot_names": {slot: self.run.slot_name(slot) for slot in slots}, "drops": {},
                "counters": {}, "moves": [], "arp": [], "ndp": [], "neigh": []}
        for group in hook_groups(self.run.groups):
            if group.read is not None:
                group.read(self, snap)
        del snap["slot_names"]
        return snap

    def restart_episode(self) -> None:
        """Findings count from now: a new episode (watch arms detail again)
        must not be judged on the totals of the last one. The kernel's
        counters are never cleared (Prometheus reads them); they are read
        relative to this moment, and the aggregated state starts empty."""
        self.base = self.snapshot()["counters"]
        self.bridge_state = BridgeState(interval=self.run.cfg.interval)

    def tick(self) -> None:
        """Fold a snapshot of every kernel map the run has loaded."""
        snap, now = self.snapshot(), time.monotonic()
        self.last_snapshot = snap
        if "drops" in self.run.groups:
            self.drops.fold_counts(snap["drops"], now)
        counters = snap["counters"]
        if self.base:
            counters = {port: {k: v - self.base.get(port, {}).get(k, 0) for k, v in values.items()}
                        for port, values in counters.items()}
        self.bridge_state.fold(counters, snap["moves"], now, ndp=snap["ndp"], arp=snap["arp"])
        self.bridge_state.neigh = snap["neigh"]

    def rows(self) -> list:
        run = self.run
        return drop_rows(self.drops.groups(), run.bridge, run.fdb(), run.kernel.reasons,
                         run.kernel.kallsyms, run.names, moved=self.moved_macs(),
                         fdb_at=run.fdb_read_at())

    def moved_macs(self) -> dict:
        """MACs that moved between ports during the run, for explanations
        (tracer.explain.DropContext.moved): mac -> ports and when it was last
        seen moving, in seconds into the run."""
        out: dict = {}
        for m in self.bridge_state.macs.values():
            if m.count < 2 or len(m.ports) < 2:
                continue
            seen = out.setdefault(m.mac, {"ports": [], "moved_at": None})
            seen["ports"] += [p for p in m.ports if p not in seen["ports"]]
            if m.history:
                at = max(0.0, m.history[-1][0] - self.run.started)
                seen["moved_at"] = max(at, seen["moved_at"] or 0.0)
        return out

    def findings(self, rows=None) -> list:
        run = self.run
        ns = f"ip netns exec {run.netns.name} " if run.netns.name else ""
        found = diagnose(Inputs(bridge=run.bridge, state=self.bridge_state, seconds=run.elapsed(),
                                drop_rows=self.rows() if rows is None else rows, ns_prefix=ns,
                                labels=run.labels, onward=run.onward, jiffy_ms=self.jiffy_ms,
                                started_ns=int(run.started * 1e9)))
        for f in found:
            f.identities = {p: run.labels[p] for p in f.ports if run.labels.get(p)}
        return found

    def stats(self) -> dict:
        """The kernel's self-counters, plus what was capped: bounded tables
        (kernel LRU maps, Python's per-MAC state) that reached their size, so
        the oldest entries were forgotten under hostile traffic."""
        out = self.run.maps.stats() if self.run.maps else {}
        out["bad_records"] = self.bad_records
        st = self.bridge_state
        # LRU maps evict silently before they are quite full: 90% counts as capped.
        near = lambda n, size: n >= size * 9 // 10  # noqa: E731
        capped = {
            "fdb_macs": near(len(st.macs), MAX_MACS) or out.get("fdb_keys_full", 0) > 0,
            # a set-associative table displaces entries before it is full
            "arp_targets": near(len(st.arp), abi.CONST["ARP_TARGETS_MAX"])
                           or out.get("arp_evicted", 0) > 0,
            "ndp_targets": near(len(st.ndp), abi.CONST["NDP_TARGETS_MAX"])
                           or out.get("ndp_evicted", 0) > 0,
            "neigh_entries": near(len(st.neigh), abi.CONST["NEIGH_KEYS_MAX"]),
            "drop_keys": out.get("drop_keys_full", 0) > 0,
        }
        out["capped"] = sorted(k for k, v in capped.items() if v)
        out["tracked"] = {"fdb_macs": len(st.macs), "arp_targets": len(st.arp),
                          "ndp_targets": len(st.ndp), "neigh_entries": len(st.neigh)}
        return out


def netns_name(inode: int) -> str:
    """The `ip netns` name of a namespace inode, or `netns:<inode>`."""
    try:
        for name in os.listdir(NETNS_DIR):
            try:
                if os.stat(os.path.join(NETNS_DIR, name)).st_ino == inode:
                    return name
            except OSError:
                continue
    except OSError:
        pass
    return f"netns:{inode}"
