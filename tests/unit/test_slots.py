from tracer.slots import SlotTable


def test_bridge_is_slot_zero_and_ports_keep_their_slots():
    t = SlotTable(max_ports=8)
    assert t.assign(2, [5, 3]) == []
    assert t.by_ifindex == {2: 0, 3: 1, 5: 2}
    t.assign(2, [3, 5, 9])
    assert t.by_ifindex[9] == 3 and t.by_ifindex[3] == 1


def test_departed_slots_are_reused_only_when_fresh_ones_run_out():
    t = SlotTable(max_ports=4)            # slots 1..3 for ports
    t.assign(2, [10, 11, 12])
    t.assign(2, [10, 12])                 # 11 leaves: slot 2 freed
    assert t.assign(2, [10, 12, 13]) == []
    assert t.by_ifindex[13] == 2 and t.take_reused() == [2]
    assert t.take_reused() == []
    assert t.assign(2, [10, 12, 13, 14]) == [14]   # full: 14 gets no slot
    assert 14 not in t.by_ifindex
