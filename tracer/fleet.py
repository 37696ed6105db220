"""The bridges a long-running view serves (export, watch), each of which may
come and go: libvirt tears networks down and builds them again, a test
namespace is deleted and re-created under the same name.

A member is *up* (a BridgeRun attached, its Monitor, a Follow in the run
loop) or *down* (its bridge, or the bridge's namespace, vanished: everything
of that incarnation is detached and forgotten, and every REJOIN_POLL s a
netlink look-up asks whether a bridge of that name exists again in a
namespace of that name; when it does, a new run is attached to it). The
first attach happens at start, where a missing bridge is bad input (a typo
must not become a daemon that waits forever) and ends the view.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from tracer.config import Config
from tracer.errors import BridgeGone, BrtraceError, UsageError
from tracer.monitor import Monitor
from tracer.runloop import Follow, run_loop, warn_run
from tracer.session import BridgeRun, Stopped, signals_deferred, stop_on_signals
from tracer.topology import Topology, resolve_netns

# How often a down bridge is looked for (re-attach within 2 s: this, plus
# ~0.8 s to build and attach).
REJOIN_POLL = 0.5


@dataclass
class Member:
    bridge: str
    cfg: Config
    monitor: Optional[Monitor] = None    # None while down
    follow: Optional[Follow] = None
    incarnation: int = 0                 # runs attached so far
    changed_at: float = 0.0              # monotonic time it last went up or down
    why_down: str = ""

    @property
    def up(self) -> bool:
        return self.monitor is not None

    @property
    def run(self) -> Optional[BridgeRun]:
        return self.monitor.run if self.monitor else None


class Fleet:
    """Members and their lifecycle. `make_run(cfg)` builds a BridgeRun;
    `on_up(member)` returns the member's Follow (called at every attach);
    `on_down(member, reason)` is told before its run is detached."""

    def __init__(self, cfg: Config, bridges: list, make_run: Callable[[Config], BridgeRun],
                 on_up: Callable[[Member], Follow], on_down: Callable[[Member, str], None] = lambda m, r: None,
                 log=None):
        self.members = [Member(b, replace(cfg, bridge=b, ready_file=None)) for b in bridges]
        self.make_run, self.on_up, self.on_down = make_run, on_up, on_down
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.follows: list = []
        self._looked_at = 0.0
        self._failures: dict = {}      # bridge -> last attach error, logged once

    # -- attach / detach ----------------------------------------------------
    def _attach(self, m: Member) -> None:
        run = self.make_run(m.cfg)
        try:
            run.open()
            warn_run(run)
            m.monitor = Monitor(run)
        except BaseException:
            run.close()
            raise
        m.incarnation += 1
        m.changed_at = time.monotonic()
        m.why_down = ""
        m.follow = self.on_up(m)
        self.follows.append(m.follow)

    def _detach(self, m: Member, reason: str) -> None:
        try:
            self.on_down(m, reason)
        finally:
            run = m.run
            m.monitor, m.follow, m.why_down = None, None, reason
            m.changed_at = time.monotonic()
            if run is not None:
                run.close()

    def start(self) -> None:
        """Attach every member; bad input (a missing bridge) ends the view."""
        for m in self.members:
            self._attach(m)

    def gone(self, follow: Follow, exc: BridgeGone) -> None:
        """The run loop saw a member's bridge vanish (on_gone)."""
        for m in self.members:
            if m.follow is follow:
                self.log(f"brtrace: {m.bridge}: {exc.message}; waiting for it to come back")
                self._detach(m, exc.message)

    def rejoin(self) -> None:
        """Every REJOIN_POLL s: attach any down member whose bridge exists again."""
        now = time.monotonic()
        if now - self._looked_at < REJOIN_POLL:
            return
        self._looked_at = now
        for m in self.members:
            if m.up or not bridge_exists(m.cfg):
                continue
            try:
                self._attach(m)
            except (UsageError, BridgeGone):
                continue              # gone again meanwhile: next poll
            except BrtraceError as exc:
                if self._failures.get(m.bridge) != exc.message:
                    self.log(f"brtrace: {m.bridge}: cannot attach to it again: {exc.message} ({exc.hint})")
                    self._failures[m.bridge] = exc.message
                continue
            self._failures.pop(m.bridge, None)
            self.log(f"brtrace: {m.bridge}: back (attach #{m.incarnation}); counters start again from 0")

    def loop(self, interval: float, duration: Optional[float] = None, on_interval=None, lock=None,
             on_poll=None) -> None:
        def poll():
            with lock if lock is not None else nullcontext():
                self.rejoin()
                if on_poll is not None:
                    on_poll()
        run_loop(self.follows, interval, duration, on_interval=on_interval, on_poll=poll,
                 lock=lock, on_gone=self.gone)

    def close(self) -> None:
        for m in self.members:
            if m.up:
                self._detach(m, "stopped")


def bridge_exists(cfg: Config) -> bool:
    """A cheap netlink look: does bridge cfg.bridge exist in namespace
    cfg.netns (by name, so a re-created namespace counts)?"""
    try:
        netns = resolve_netns(cfg.netns)
    except UsageError:
        return False
    with signals_deferred():
        try:
            topo = Topology(netns)
        except BrtraceError:
            return False
        try:
            topo.bridge(cfg.bridge)
            return True
        except UsageError:
            return False
        finally:
            topo.close()


@contextmanager
def serving(fleet: Fleet) -> Iterator[Fleet]:
    """SIGTERM/SIGINT end the block quietly; every member is detached however
    it ends."""
    with stop_on_signals():
        try:
            try:
                fleet.start()
                yield fleet
            finally:
                fleet.close()
        except Stopped:
            pass
