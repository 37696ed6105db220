"""Folding monotonic kernel counters into groups and rates."""

from tracer.aggregate import SAMPLES_PER_GROUP, DropState


def test_groups_sum_ethertypes_and_sort_by_count():
    s = DropState()
    s.fold_counts({(3, 2, 0x10, 0x0806): 5, (3, 2, 0x10, 0x0800): 2, (4, 119, 0x20, 0x0800): 9}, 1.0)
    g = s.groups()
    assert [x.key for x in g] == [(4, 119, 0x20), (3, 2, 0x10)]
    assert g[1].count == 7 and g[1].by_ethertype == {0x0806: 5, 0x0800: 2}
    assert s.total() == 16


def test_rates_are_deltas_over_the_interval():
    s = DropState()
    s.fold_counts({(3, 2, 0x10, 0x0806): 10}, 1.0)
    assert s.groups()[0].rate == 0.0            # no previous snapshot yet
    s.fold_counts({(3, 2, 0x10, 0x0806): 30, (4, 2, 0x10, 0x0806): 4}, 3.0)
    g = {x.ifindex: x for x in s.groups()}
    assert g[3].rate == 10.0 and g[3].count == 30
    assert g[4].rate == 2.0


def test_samples_are_bounded_per_group():
    s = DropState()
    for i in range(SAMPLES_PER_GROUP * 3):
        s.add_sample({"ifindex": 3, "reason": 2, "location": 0x10, "n": i})
    s.fold_counts({(3, 2, 0x10, 0x0806): 1}, 1.0)
    samples = s.groups()[0].samples
    assert len(samples) == SAMPLES_PER_GROUP
    assert samples[-1]["n"] == SAMPLES_PER_GROUP * 3 - 1
    assert s.sample_count == SAMPLES_PER_GROUP * 3
