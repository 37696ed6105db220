"""tracer/runloop.py without a kernel: the tick rule, and the loop over fake
runs (ring buffers, netlink, topology refreshes) for one bridge and several."""

from __future__ import annotations

import time

from tracer.errors import BridgeGone
from tracer.runloop import Follow, next_tick, run_loop


def test_a_tick_on_time_or_a_little_late_keeps_the_grid():
    assert next_tick(due=10.0, now=10.0, interval=2.0) == 12.0
    assert next_tick(due=10.0, now=10.9, interval=2.0) == 12.0


def test_missed_ticks_are_not_caught_up():
    # The loop stalled for 3.7 intervals (a long FDB dump, a suspended
    # terminal): one tick runs now, the next is half an interval on, not at
    # once for each one missed.
    assert next_tick(due=10.0, now=17.4, interval=2.0) == 18.4
    ticks, due = [], 10.0
    for now in (17.4, 17.5, 17.9, 18.0, 18.4, 19.0, 20.0, 20.4):   # the loop's wake-ups
        if now >= due:
            ticks.append(now)
            due = next_tick(due, now, 2.0)
    assert ticks == [17.4, 18.4, 20.4]
    assert all(b - a >= 1.0 for a, b in zip(ticks, ticks[1:]))


class FakeMaps:
    def __init__(self):
        self.polls = []

    def poll(self, ms):
        self.polls.append(ms)
        time.sleep(ms / 1000)


class FakeTopo:
    def __init__(self):
        self.changes = 0

    def links_changed(self):
        changed, self.changes = self.changes > 0, 0
        return changed


class FakeRun:
    """What the loop uses of a BridgeRun."""

    def __init__(self, name):
        self.name, self.maps, self.topo = name, FakeMaps(), FakeTopo()
        self.labels = {"vnet2": "vm web02"}
        self.pending: list = []         # port events the next refresh returns
        self.refreshes = 0
        self.gone = False
        self.t0 = time.monotonic()

    def refresh(self):
        if self.gone:
            raise BridgeGone(f"bridge {self.name} disappeared", "")
        self.refreshes += 1
        out, self.pending = self.pending, []
        return out

    def elapsed(self):
        return time.monotonic() - self.t0


def follow(run, log):
    return Follow(run, drain=lambda: log.append(("drain", run.name)),
                  refreshed=lambda evs: log.extend(("event", run.name, e) for e in evs),
                  tick=lambda: log.append(("tick", run.name)))


def test_a_link_change_is_followed_within_a_poll_and_its_events_reported():
    a, b = FakeRun("br0"), FakeRun("br1")
    log: list = []
    state = {"polls": 0}

    def on_poll():
        state["polls"] += 1
        if state["polls"] == 3:          # a port joins br1 between intervals
            b.pending = [{"event": "added", "port": "vnet2"}]
            b.topo.changes = 1
        return state["polls"] < 6

    assert run_loop([follow(a, log), follow(b, log)], interval=60, on_poll=on_poll, poll_cap=0.02) is None
    (event,) = [e for e in log if e[0] == "event"]
    assert event[1] == "br1" and event[2]["event"] == "added" and event[2]["identity"] == "vm web02"
    assert 0 < event[2]["at_s"] < 1
    assert (a.refreshes, b.refreshes) == (0, 1)       # only the bridge whose links changed
    assert not [e for e in log if e[0] == "tick"]      # no interval passed
    # both ring buffers are polled every round, the wait shared out between them
    assert len(a.maps.polls) == len(b.maps.polls) == 6
    assert all(9 <= ms <= 10 for ms in a.maps.polls + b.maps.polls)   # 20 ms each round


def test_every_interval_each_bridge_is_refreshed_then_ticked_and_the_view_called():
    a, b = FakeRun("br0"), FakeRun("br1")
    log: list = []
    a.pending = [{"event": "down", "port": "t0"}]
    run_loop([follow(a, log), follow(b, log)], interval=0.1, duration=0.35, poll_cap=0.02,
             on_interval=lambda: log.append(("interval",)))
    ticks = [e for e in log if e[0] in ("tick", "interval")]
    assert 2 <= ticks.count(("interval",)) <= 3
    assert ticks[:3] == [("tick", "br0"), ("tick", "br1"), ("interval",)]
    assert a.refreshes == b.refreshes == ticks.count(("interval",))
    assert [e[2]["port"] for e in log if e[0] == "event"] == ["t0"]


def test_a_vanished_bridge_ends_the_loop_and_is_returned():
    a, b = FakeRun("br0"), FakeRun("br1")
    b.gone, b.topo.changes = True, 1
    log: list = []
    gone = run_loop([follow(a, log), follow(b, log)], interval=60, duration=5, poll_cap=0.01)
    assert isinstance(gone, BridgeGone) and "br1" in gone.message


def test_the_duration_ends_the_loop():
    run = FakeRun("br0")
    t0 = time.monotonic()
    assert run_loop([follow(run, [])], interval=60, duration=0.1, poll_cap=0.05) is None
    assert 0.1 <= time.monotonic() - t0 < 0.5
