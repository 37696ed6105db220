"""The ctypes mirror in tracer/trace_abi.py must agree with bpf/brtrace.h (struct trace_event) byte for byte."""

import pytest

from tracer import abi, trace_abi
from tracer.errors import UsageError
from tracer.views.trace import Filters, check_filters, parse_proto


def test_trace_record_header_is_8_aligned():
    """The ring carries the header plus SNAPLEN bytes: keep the header 8-aligned.
    (Sizes and offsets against bpf/brtrace.h: tests/unit/test_abi.py.)"""
    assert trace_abi.HEADER_SIZE % 8 == 0


def test_trace_kind_fits_the_shared_rate_limiter_and_stats():
    kind = trace_abi.EVENT_TRACE
    kinds = [v for k, v in abi.CONST.items() if k.startswith("EVENT_") and k != "EVENT_KINDS"]
    assert len(kinds) == len(set(kinds)), "two record kinds share a value"
    assert abi.CONST["EVENT_TRACE"] == kind
    assert max(kinds) < abi.CONST["EVENT_KINDS"]     # each has a rate_state window (common.bpf.h)
    c = abi.CONST
    assert abi.stat_kind_slot(c["EVENT_KINDS"] - 1, c["KIND_LIMITED"]) < c["STAT_SLOTS"]
    assert c["STAT_SLOTS"] == c["STAT_KIND_BASE"] + c["EVENT_KINDS"] * c["STAT_PER_KIND"]
    assert max(v for k, v in c.items() if k.startswith("STAT_") and k not in
               ("STAT_SLOTS", "STAT_KIND_BASE", "STAT_PER_KIND")) < c["STAT_KIND_BASE"]
    assert trace_abi.SNAP_MAX <= 255       # cap_len is a __u8


def test_parse_short_record_with_snaplen_bytes():
    ev = trace_abi.TraceEvent()
    ev.kind, ev.step, ev.cap_len, ev.ifindex, ev.wire_len = trace_abi.EVENT_TRACE, 3, 20, 7, 60
    ev.ts_ns, ev.skb, ev.head = 123, 0xffff888001, 0xffff888002
    raw = bytes(ev)[:trace_abi.HEADER_SIZE] + bytes(range(20))
    rec = trace_abi.parse_trace_event(raw)
    assert rec["step"] == "left" and rec["ifindex"] == 7 and rec["frame"] == bytes(range(20))
    assert rec["skb"] == 0xffff888001 and rec["vlan_tci"] is None
    with pytest.raises(ValueError):
        trace_abi.parse_trace_event(raw[:10])


def test_filter_values_match_the_kernel_byte_order():
    assert trace_abi.mac_filter("02:b7:00:00:00:01") == int.from_bytes(bytes([2, 0xb7, 0, 0, 0, 1]), "little")
    assert trace_abi.ip_filter("10.77.0.1") == int.from_bytes(bytes([10, 77, 0, 1]), "little")


def test_ipv6_filter_words_and_protocol_names():
    d = trace_abi.ip6_filter("2001:db8::2")
    assert d["FILTER_IP6"] == 1
    assert d["FILTER_IP6_W0"] == int.from_bytes(bytes([0x20, 0x01, 0x0d, 0xb8]), "little")
    assert d["FILTER_IP6_W3"] == int.from_bytes(bytes([0, 0, 0, 2]), "little")
    assert parse_proto("icmpv6") == (0x86DD, 58) and parse_proto("ipv6") == (0x86DD, None)
    assert parse_proto("0x88b5") == (0x88B5, None)
    v6 = Filters(ip="2001:db8::2", proto=0x86DD, ip_proto=58).defines()
    assert v6["FILTER_IP"] == 0 and v6["FILTER_IP6_W3"] == d["FILTER_IP6_W3"] and v6["FILTER_L4"] == 58
    assert Filters(ip="10.0.0.1").defines()["FILTER_IP"] and "FILTER_IP6" not in Filters(ip="10.0.0.1").defines()


def test_bad_ip_and_arp_with_ipv6_are_one_line_errors():
    with pytest.raises(UsageError, match="bad IP address"):
        check_filters(Filters(ip="10.0.0.300"))
    with pytest.raises(UsageError, match="--arp with an IPv6 address"):
        check_filters(Filters(ip="2001:db8::1", arp=True))
    check_filters(Filters(ip="2001:db8::1"))
