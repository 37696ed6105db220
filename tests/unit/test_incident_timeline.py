"""tracer/incident/timeline.py: the per-second ring stays within its bounds."""

from tracer.incident.timeline import Timeline


def test_bounded_by_records():
    tl = Timeline(seconds=600)
    assert tl.max_records == 600
    for t in range(2000):
        tl.add(t * 0.1, {"t": t})           # ten a second: the count bound holds
    assert len(tl) == 600 and tl.since(0)[0][1] == {"t": 1400}


def test_bounded_by_age():
    tl = Timeline(seconds=10, max_records=100)
    for t in range(0, 60, 5):              # one every 5 s: the age bound holds
        tl.add(float(t), {"t": t})
    assert [t for t, _ in tl.since(0)] == [45.0, 50.0, 55.0]


def test_since():
    tl = Timeline(seconds=600)
    for t in range(10):
        tl.add(100.0 + t, {"rx": t})
    assert tl.since(107.0) == [(107.0, {"rx": 7}), (108.0, {"rx": 8}), (109.0, {"rx": 9})]
    assert tl.since(200.0) == []
