"""The one run loop and the one lifecycle of every bridge view (drops, loops,
neigh, top, export, trace), for one bridge or several.

`attached(runs)` is the lifecycle: SIGTERM/SIGINT become `Stopped`, every run
is opened (its warnings printed) and closed however the block ends, a signal
ends the block quietly, and a bridge that vanished is raised last, after the
view has printed its summary and everything is detached.

`Life.loop()` is the loop: wait on the ring buffers, hand each bridge's
records to its view, look at the topology within TOPOLOGY_POLL s of a netlink
link change and at every interval (port events go to the view either way),
fold counters every interval without catching up missed ticks, stop on the
duration, a signal, the view's word or a vanished bridge.

A view gives, per bridge, a `Follow` (what to do with records, port events
and an interval) and, for the whole run, `on_interval` and `on_poll`.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

from tracer.errors import BridgeGone
from tracer.session import BridgeRun, Stopped, stop_on_signals

# How often, at most, the loop looks at netlink for ports that joined or left.
TOPOLOGY_POLL = 0.2


def _nothing(*_args) -> None:
    return None


@dataclass
class Follow:
    """One bridge in the loop, and what its view does with it."""

    run: BridgeRun
    # Decode what the ring buffer delivered (called after every poll).
    drain: Callable[[], None] = _nothing
    # After every look at the topology (a netlink change or an interval): the
    # port events since the last look, stamped (port_event_record), maybe none.
    refreshed: Callable[[list], None] = _nothing
    # Every interval, after the refresh: fold the kernel counters.
    tick: Callable[[], None] = _nothing


def next_tick(due: float, now: float, interval: float) -> float:
    """When the tick after the one that was due at `due`, and ran at `now`,
    is due. On time or a little late: an interval after `due` (the grid is
    kept). Late by more than half an interval (a long FDB dump, a suspended
    terminal, a stopped process): half an interval from now. Missed ticks are
    never caught up in a burst: every tick is at least half an interval after
    the one before."""
    return max(due + interval, now + interval / 2)


def port_event_record(run: BridgeRun, ev: dict) -> dict:
    """A port event (topology.port_changes) as every view reports it."""
    return {**ev, "identity": run.labels.get(ev["port"], ""), "at_s": round(run.elapsed(), 3)}


def refresh(follow: Follow) -> None:
    """Look at the bridge's topology again (BridgeGone if it vanished) and
    hand the port events to the view."""
    run = follow.run
    follow.refreshed([port_event_record(run, ev) for ev in run.refresh()])


def run_loop(follows: list, interval: float, duration: Optional[float] = None,
             on_interval: Optional[Callable[[], None]] = None,
             on_poll: Optional[Callable[[], Optional[bool]]] = None,
             poll_cap: float = TOPOLOGY_POLL, lock=None,
             on_gone: Optional[Callable[[Follow, BridgeGone], None]] = None) -> Optional[BridgeGone]:
    """Run until `duration` s pass, a signal arrives (Stopped) or `on_poll()`
    returns False; return the BridgeGone error if a bridge vanished (the
    caller prints its summary first, then raises it).

    Each round waits at most `poll_cap` s on the ring buffers (shared out
    between the bridges), refreshes the topology of every bridge whose
    links changed, drains the records, and calls on_poll(). Every `interval` s each
    bridge is refreshed and ticked, then on_interval() is called. `lock` (a
    context manager; export's scrape thread holds it too) is held around
    everything but the wait.

    Long-running views (export, watch) pass `on_gone`: a vanished bridge is
    then taken out of `follows` and handed to it, and the loop goes on; the
    view may put a follow back into the list (the bridge came back)."""
    lock = lock if lock is not None else nullcontext()
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    due = start + interval

    def look(follow: Follow, tick: bool) -> Optional[BridgeGone]:
        try:
            with lock:
                refresh(follow)
                if tick:
                    follow.tick()
        except BridgeGone as exc:
            if on_gone is None:
                return exc
            follows.remove(follow)
            on_gone(follow, exc)
        return None

    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = min(due, deadline if deadline is not None else due, now + poll_cap) - now
            if not follows:
                time.sleep(max(0.001, wait))
            for follow in list(follows):
                follow.run.maps.poll(max(1, int(wait * 1000 / len(follows))))
            # Ports that joined are looked at before the records are decoded:
            # a new port's first records (its FDB entries) then carry its name.
            for follow in list(follows):
                if follow.run.topo.links_changed():
                    gone = look(follow, tick=False)
                    if gone is not None:
                        return gone
            for follow in list(follows):
                with lock:
                    follow.drain()
            if on_poll is not None and on_poll() is False:
                return None
            now = time.monotonic()
            if now >= due:
                due = next_tick(due, now, interval)
                for follow in list(follows):
                    gone = look(follow, tick=True)
                    if gone is not None:
                        return gone
                if on_interval is not None:
                    on_interval()
    except Stopped:
        return None


def last_pass(follows: list, lock=None) -> None:
    """Before a summary: deliver what is still in the ring buffers, a last
    look at the topology (fresh interface counters; a vanished bridge keeps
    its last look), a last fold."""
    with lock if lock is not None else nullcontext():
        for follow in follows:
            follow.run.maps.poll(0)
            follow.drain()
            try:
                refresh(follow)
            except BridgeGone:
                pass
            follow.tick()


def warn_run(run: BridgeRun) -> None:
    run.kernel.warn()
    for idx in run.unwatchable:
        print(f"brtrace: warning: ifindex {idx} is too large to watch", file=sys.stderr)
    for idx in run.unslotted:
        print(f"brtrace: warning: port ifindex {idx} has no counter slot (too many ports)", file=sys.stderr)


class Life:
    """The runs of one view between open and close (see attached())."""

    def __init__(self, runs: list):
        self.runs = runs
        self.gone: Optional[BridgeGone] = None

    def loop(self, follows: list, cfg, **hooks) -> None:
        """run_loop() with the view's interval and duration; a vanished
        bridge is kept and raised when the lifecycle ends."""
        self.gone = run_loop(follows, cfg.interval, cfg.duration, **hooks)


@contextmanager
def attached(runs: list) -> Iterator[Life]:
    """Open every run (printing its warnings), yield, close every run however
    the block ends. A signal (Stopped) during start-up, the loop or the summary
    ends the block quietly; a bridge the loop saw vanish is raised at the end."""
    life = Life(runs)
    with stop_on_signals():
        try:
            with ExitStack() as stack:
                for run in runs:
                    stack.enter_context(run)
                    warn_run(run)
                yield life
        except Stopped:
            pass
    if life.gone is not None:
        raise life.gone
