"""tracer/arming.py: when watch attaches the per-flooded-frame detail."""

from tracer.arming import BRIDGE_RX_FLOOR, RATE_FACTOR, Arming, Sample


def quiet(a: Arming, t0: float, seconds: int, rx: float = 100.0) -> list:
    return [a.observe(Sample(t=t0 + i, bridge_rx_pps=rx)) for i in range(seconds)]


def test_a_quiet_bridge_never_arms_and_learns_its_baseline():
    a = Arming(quiet_after=5)
    assert quiet(a, 0, 300, rx=500) == [None] * 300
    assert not a.armed
    assert 450 < a.baseline["bridge_rx"] <= 500


def test_a_mac_move_arms_at_once_and_a_quiet_period_disarms():
    a = Arming(quiet_after=5)
    quiet(a, 0, 3)
    change = a.observe(Sample(t=3, moves=2))
    assert change.armed and "2 MAC moves" in change.reason
    assert a.observe(Sample(t=4, moves=1)) is None            # still armed, no second change
    assert quiet(a, 5, 3) == [None] * 3                        # t=5..7: 4 s since the last move at t=4... not yet
    change = a.observe(Sample(t=9))
    assert change is not None and not change.armed and "no symptom for 5 s" in change.reason
    assert a.arms == 1


def test_an_active_critical_finding_keeps_detail_armed():
    a = Arming(quiet_after=2)
    a.observe(Sample(t=0, echo_lines=1))
    for t in range(1, 10):
        assert a.observe(Sample(t=t, critical_active=True)) is None
    assert a.armed
    assert a.observe(Sample(t=10)) is None
    assert not a.observe(Sample(t=11)).armed


def test_a_storm_already_running_at_start_arms_on_the_first_sample():
    a = Arming()
    change = a.observe(Sample(t=0, bridge_rx_pps=BRIDGE_RX_FLOOR * 3))
    assert change.armed and "frames/s reaching the bridge device" in change.reason


def test_rates_arm_only_well_above_their_own_baseline():
    a = Arming()
    quiet(a, 0, 600, rx=BRIDGE_RX_FLOOR)                      # a busy but normal bridge
    assert not a.armed
    assert a.observe(Sample(t=600, bridge_rx_pps=BRIDGE_RX_FLOOR * 2)) is None
    change = a.observe(Sample(t=601, bridge_rx_pps=BRIDGE_RX_FLOOR * (RATE_FACTOR + 1)))
    assert change.armed


def test_a_storm_does_not_teach_the_baseline():
    a = Arming(quiet_after=1)
    for t in range(100):
        a.observe(Sample(t=t, drops_pps=50_000))
    assert a.baseline["drops"] == 0.0
