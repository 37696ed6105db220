"""tracer/episodes.py: one incident per episode, its verdict following the findings."""

from tracer.episodes import Episodes


def finding(type_, ports, active=True, severity="critical", kind=None, message="m"):
    return {"type": type_, "ports": ports, "active": active, "severity": severity,
            "evidence": {"kind": kind} if kind else {}, "message": message, "hint": "h"}


def test_no_trigger_no_incident_and_non_l2_findings_never_open_one():
    e = Episodes(close_after=5)
    assert e.update([], 0) == []
    assert e.update([finding("neigh_failed", ["vnet0"]), finding("not_forwarded", ["t3o"]),
                     finding("mac_flap", ["a", "b"], severity="warning")], 1) == []
    assert e.current is None


def test_one_incident_per_episode_with_the_verdict_following_the_findings():
    e = Episodes(close_after=5)
    flap = finding("mac_flap", ["lnk1a", "lnk2a"])
    (what, ep), = e.update([flap], 0)
    assert what == "open" and ep.type == "mac_flap" and ep.ports == ["lnk1a", "lnk2a"]
    loop = finding("l2_loop", ["lnk1a", "lnk2a"], kind="loop_between_ports", message="loop through lnk1a, lnk2a")
    events = e.update([flap, loop], 1)
    assert [w for w, _ in events] == ["changed"]
    assert e.current.verdict["type"] == "l2_loop" and e.current.verdict["kind"] == "loop_between_ports"
    # the same findings with growing counts: no new history entry
    assert e.update([flap, dict(loop, evidence={"kind": "loop_between_ports", "copies": 9})], 2) == []
    assert len(e.current.history) == 2
    # the loop broken: inactive findings, closes after 5 quiet seconds, once
    calm = [dict(flap, active=False), dict(loop, active=False)]
    assert [w for w, _ in e.update(calm, 3)] == ["changed"]
    for t in (4, 5, 6):
        assert e.update(calm, t) == []
    (what, ep), = e.update(calm, 7)              # 5 s after the last active second (2)
    assert what == "close" and ep.closed_t == 7 and e.current is None
    assert e.update(calm, 8) == []


def test_ports_grow_as_more_of_the_fault_is_seen():
    e = Episodes()
    e.update([finding("own_address_echo", ["t3o"])], 0)
    events = e.update([finding("own_address_echo", ["t3o"]), finding("l2_loop", ["t3o", "dl1"])], 1)
    assert ("ports", e.current) in events and e.current.ports == ["t3o", "dl1"]
    assert e.current.type == "own_address_echo"      # the bundle keeps the type it opened with
    assert e.current.verdict["type"] == "l2_loop"


def test_a_new_episode_after_a_close_is_a_new_incident():
    e = Episodes(close_after=1)
    e.update([finding("storm", ["vnet1"])], 0)
    assert [w for w, _ in e.update([], 1)] == ["changed", "close"]
    (what, ep), = e.update([finding("storm", ["vnet1"])], 10)
    assert what == "open" and ep.opened_t == 10


def test_verdict_prefers_an_active_critical_finding_over_a_warning():
    """The tinc storm seen from a third node before the loop's copies are
    counted: a warning that the VM's MAC moves between vnet0 and t3o, and a
    critical storm on t3o. The verdict is the storm: it names only the tap."""
    e = Episodes()
    flap = finding("mac_flap", ["vnet0", "t3o"], severity="warning")
    storm = finding("storm", ["t3o"], kind="broadcast_storm")
    (what, ep), = e.update([flap, storm], 0)
    assert what == "open" and ep.type == "storm"
    assert (ep.verdict["type"], ep.verdict["ports"]) == ("storm", ["t3o"])
    loop = finding("l2_loop", ["t3o"], kind="loop_beyond_port")
    e.update([flap, storm, loop], 1)
    assert (e.current.verdict["type"], e.current.verdict["kind"]) == ("l2_loop", "loop_beyond_port")


def test_a_flapping_mac_adds_the_ports_it_is_wrongly_learned_on():
    e = Episodes()
    loop = finding("l2_loop", ["t3o"], kind="loop_beyond_port")
    flap = dict(finding("mac_flap", ["vnet0", "t3o"]),
                evidence={"lives_on": "vnet0", "wrongly_learned_on": ["t3o"]})
    (what, ep), = e.update([loop, flap], 0)
    assert ep.ports == ["t3o"]
    # before the loop is known, a flapping MAC involves every port it moved between
    e2 = Episodes()
    (_, ep2), = e2.update([finding("mac_flap", ["vnet0", "t3o"])], 0)
    assert ep2.ports == ["vnet0", "t3o"]
