"""Folding monotonic kernel counters into groups and rates."""

from tracer.aggregate import HISTORY_MAX, SAMPLES_PER_GROUP, BridgeState, DropState
from tracer.hooks.ports import ndp_named


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


def _fold_steady(st, times, per_second, mac_per_second=0, start=0.0):
    """Fold counters growing `per_second` (and a MAC moving `mac_per_second`)
    at each of `times`."""
    for t in times:
        n = int(round((t - start) * per_second))
        moves = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 1 + int(round((t - start) * mac_per_second)),
                  "port": "t3o", "prev_port": "vnet0"}] if mac_per_second else []
        st.fold({"vnet0": {"rx_packets": n, "rx_broadcast": n}}, moves, t)


def test_a_short_last_interval_does_not_decide_rates_or_peaks():
    """The tail folded at exit is often ~0.1 s: the "now" rates span at least
    max(interval, 1 s), and peaks ignore intervals under half the interval."""
    st = BridgeState(interval=1.0)
    _fold_steady(st, [0.0, 1.0, 2.0, 3.0], 100, mac_per_second=12)
    assert st.rate("vnet0", "rx_packets") == 100.0 and st.peak("vnet0", "rx_packets") == 100.0
    m = st.macs[("02:aa:00:00:00:01", 0)]
    assert m.moves_per_second == 12.0 and m.peak_rate == 12.0
    # 0.1 s later, nothing new counted yet (the kernel's counters lag a little)
    st.fold({"vnet0": {"rx_packets": 300, "rx_broadcast": 300}},
            [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 37, "port": "t3o", "prev_port": "vnet0"}], 3.1)
    assert round(st.interval, 3) == 0.1 and round(st.window, 3) == 1.1   # from the fold at 2.0
    assert round(st.rate("vnet0", "rx_packets"), 1) == 90.9       # 100 frames over 1.1 s, not 0
    assert round(m.moves_per_second, 1) == 10.9 and m.interval_moves == 0
    # a tail with a burst cannot make a peak either
    st.fold({"vnet0": {"rx_packets": 400, "rx_broadcast": 400}},
            [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 45, "port": "t3o", "prev_port": "vnet0"}], 3.2)
    assert st.peak("vnet0", "rx_packets") == 100.0 and m.peak_rate == 12.0
    assert round(st.rate("vnet0", "rx_packets"), 1) == 166.7       # 200 frames over 1.2 s


def test_rate_window_is_at_least_one_second_and_falls_back_early():
    st = BridgeState(interval=0.25)
    _fold_steady(st, [0.0, 0.25], 40)
    assert st.window == 0.25 and st.rate("vnet0", "rx_packets") == 40.0  # early: what exists
    _fold_steady(st, [0.5, 0.75, 1.0, 1.25, 1.5], 40)
    assert st.window == 1.0 and st.rate("vnet0", "rx_packets") == 40.0
    assert st.peak("vnet0", "rx_packets") == 40.0
    # a long interval widens the window to one interval
    slow = BridgeState(interval=3.0)
    _fold_steady(slow, [0.0, 3.0, 6.0], 10)
    assert slow.rate_window() == 3.0 and slow.window == 3.0


def test_nominal_interval_without_a_configured_one_is_the_median():
    st = BridgeState()
    _fold_steady(st, [0.0, 2.0, 4.0, 6.0], 50)
    assert st.nominal_interval() == 2.0 and st.rate_window() == 2.0
    st.fold({"vnet0": {"rx_packets": 305, "rx_broadcast": 305}}, [], 6.1)   # +5 in 0.1 s: 50/s
    assert st.peak("vnet0", "rx_packets") == 50.0
    assert round(st.rate("vnet0", "rx_packets"), 1) == 50.0              # 105 frames over 2.1 s


def test_rate_history_stays_bounded():
    st = BridgeState(interval=0.01)      # a 1 s window would need 100 snapshots
    _fold_steady(st, [i * 0.01 for i in range(500)], 100, mac_per_second=50)
    m = st.macs[("02:aa:00:00:00:01", 0)]
    assert len(st._history) <= HISTORY_MAX and len(m.history) <= HISTORY_MAX + 1
    assert round(st.rate("vnet0", "rx_packets")) == 100 and round(m.moves_per_second) == 50


def test_ndp_rows_name_only_the_ports_of_what_was_seen():
    """Slot 0 is the bridge, a port in its own right: a slot whose count is
    zero was never written, and must not read as the bridge."""
    row = {"ip": "2001:db8::1", "solicits": 3, "dad_probes": 0, "adverts": 0, "routers": 0,
           "conflicts": 0, "elsewhere": 0, "dad_answered": 0, "copies": 0,
           "asker_slot": 2, "claimer_slot": 0, "other_slot": 0, "echo_slot": 0, "prober_slot": 0,
           "answer_slot": 0}
    named = ndp_named(row, {0: "br-int", 2: "vnet1"})
    assert (named["asker"], named["claimer"], named["prober"], named["answerer"]) == ("vnet1", None, None, None)
    assert "asker_slot" not in named
    named = ndp_named({**row, "adverts": 1}, {0: "br-int", 2: "vnet1"})
    assert named["claimer"] == "br-int"          # the host's own stack answered


def test_ndp_rates_span_the_rate_window():
    st = BridgeState(interval=0.5)
    row = {"ip": "2001:db8::1", "solicits": 0, "adverts": 0, "routers": 0, "conflicts": 0, "elsewhere": 0,
           "dad_answered": 0, "copies": 0}
    for i, n in enumerate((0, 2, 4, 4, 4)):
        st.fold({}, [], i * 0.5, ndp=[{**row, "solicits": n}])
        if i == 2:
            assert st.ndp_rate("2001:db8::1", "solicits") == 4.0     # 4 over the last 1 s
    assert st.ndp_rate("2001:db8::1", "solicits") == 0.0
    assert st.ndp_rate("2001:db8::2", "solicits") == 0.0             # never seen
