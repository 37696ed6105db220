"""Drop-reason tables from recorded kernel formats.

Fixtures in data/kfree_skb_format/:
  6.18.txt  copied from this machine's /sys/kernel/tracing (6.18.44).
  6.1.txt   rebuilt from Debian 12's linux-headers-6.1.0-56-common (6.1.192):
            enum starts at SKB_NOT_DROPPED_YET = 0, DEFINE_DROP_REASON order,
            TRACE_DEFINE_ENUM substitutes the numbers; no rx_sk, location=%p.
  5.17.txt  rebuilt from v5.17's skbuff.h / trace/events/skb.h: six reasons
            starting at NOT_SPECIFIED = 0, plus MAX.
  5.10.txt  rebuilt from v5.10's trace/events/skb.h: no reason field.
data/btf_skb_drop_reason/6.18.json is `enum skb_drop_reason` of this machine's
BTF as dumped by bpftool (SUBSYS_MASK comes out sign-extended to 64 bits).
"""
import json
from pathlib import Path

import pytest

from tracer.errors import KernelFeatureError
from tracer.kernel import reasons
from tracer.kernel.reasons import (ReasonTable, from_btf_enum, load_reason_table,
                                   parse_kfree_skb_format)

DATA = Path(__file__).parent / "data"
FORMATS = DATA / "kfree_skb_format"


def table(version: str) -> ReasonTable:
    return parse_kfree_skb_format((FORMATS / f"{version}.txt").read_text())


def btf_618() -> dict:
    return json.loads((DATA / "btf_skb_drop_reason" / "6.18.json").read_text())


# --- values that differ between kernels ------------------------------------

@pytest.mark.parametrize("version, expected", [
    ("5.17", {"NOT_SPECIFIED": 0, "NO_SOCKET": 1, "SOCKET_FILTER": 4, "UDP_CSUM": 5,
              "NETFILTER_DROP": None, "TC_CHAIN_NOTFOUND": None,
              "BRIDGE_INGRESS_STP_STATE": None}),
    ("6.1", {"NOT_SPECIFIED": 1, "NO_SOCKET": 2, "SOCKET_FILTER": 5, "UDP_CSUM": 6,
             "NETFILTER_DROP": 7, "PKT_TOO_BIG": 64, "TC_CHAIN_NOTFOUND": 65,
             "BRIDGE_INGRESS_STP_STATE": None}),
    ("6.18", {"NOT_SPECIFIED": 2, "NO_SOCKET": 3, "SOCKET_FILTER": 5, "UDP_CSUM": 11,
              "NETFILTER_DROP": 12, "PKT_TOO_BIG": 93, "TC_CHAIN_NOTFOUND": 107,
              "BRIDGE_INGRESS_STP_STATE": 119}),
])
def test_values_per_kernel(version, expected):
    t = table(version)
    assert t.source == "tracefs"
    for name, value in expected.items():
        assert t.value(name) == value, (version, name)
        if value is not None:
            assert t.name(value) == name


def test_same_number_means_different_reasons():
    # The reason brtrace exists for, and why no table may be hard-coded.
    assert table("6.18").name(119) == "BRIDGE_INGRESS_STP_STATE"
    assert table("6.1").name(119) == "UNKNOWN_119"
    assert [table(v).name(5) for v in ("5.17", "6.1", "6.18")] == [
        "UDP_CSUM", "SOCKET_FILTER", "SOCKET_FILTER"]
    assert [table(v).name(2) for v in ("5.17", "6.1", "6.18")] == [
        "PKT_TOO_SMALL", "NO_SOCKET", "NOT_SPECIFIED"]


def test_sizes_and_max_dropped():
    # MAX bounds the enum; it is listed in __print_symbolic but is no reason.
    assert len(table("5.17")) == 6
    assert len(table("6.1")) == 65
    assert len(table("6.18")) == 126
    for v, max_value in (("5.17", 6), ("6.1", 66), ("6.18", 128)):
        assert table(v).value("MAX") is None
        assert table(v).name(max_value) == f"UNKNOWN_{max_value}"


def test_field_layout():
    assert table("6.18").fields["reason"] == reasons.FormatField(
        "enum skb_drop_reason", "reason", 36, 4, False)
    assert "rx_sk" in table("6.18").fields
    assert "rx_sk" not in table("6.1").fields
    assert table("6.1").fields["reason"].offset == 28
    assert table("5.17").fields["location"] == reasons.FormatField(
        "void *", "location", 16, 8, False)
    assert table("5.17").fields["common_pid"].signed


# --- unknown and subsystem values ------------------------------------------

def test_unknown_core_value():
    t = table("6.18")
    assert t.name(4000) == "UNKNOWN_4000"
    assert t.name(0) == "UNKNOWN_0"  # SKB_NOT_DROPPED_YET is not in the tracepoint table


def test_subsystem_values():
    t = table("6.18")
    # e.g. openvswitch reasons: subsystem in the upper 16 bits, code below.
    assert t.name((3 << 16) | 5) == "SUBSYS_3_5"
    assert t.name(0xFFFF0000) == "SUBSYS_65535_0"
    # A value read as a signed int is the same u32.
    assert t.name(-65536) == "SUBSYS_65535_0"
    known = ReasonTable({2: "NOT_SPECIFIED", (1 << 16) | 1: "OVS_DROP_LAST_ACTION"}, "btf")
    assert known.name(0x10001) == "OVS_DROP_LAST_ACTION"
    assert known.name(0x10002) == "SUBSYS_1_2"


# --- the table object -------------------------------------------------------

def test_mapping_interface_and_immutability():
    t = table("5.17")
    assert list(t.items()) == [(0, "NOT_SPECIFIED"), (1, "NO_SOCKET"), (2, "PKT_TOO_SMALL"),
                               (3, "TCP_CSUM"), (4, "SOCKET_FILTER"), (5, "UDP_CSUM")]
    assert t[3] == "TCP_CSUM" and 6 not in t
    assert t.value("SKB_DROP_REASON_TCP_CSUM") == 3
    assert t.value("tcp_csum") == 3
    assert t.value("NOPE") is None
    with pytest.raises(TypeError):
        t[7] = "X"  # type: ignore[index]
    with pytest.raises(AttributeError):
        t.source = "btf"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t.extra = 1  # type: ignore[attr-defined]


# --- format robustness -------------------------------------------------------

def test_pre_517_has_no_reason_field():
    with pytest.raises(KernelFeatureError) as err:
        table("5.10")
    assert "5.17" in err.value.oneline()


def test_whitespace_newlines_hex_and_expressions():
    text = (FORMATS / "5.17.txt").read_text().split("print fmt:")[0] + (
        'print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr,\n'
        " REC->protocol, REC->location, __print_symbolic( REC->reason ,\n"
        '\t{0,"NOT_SPECIFIED"},{ 0x1 , "NO_SOCKET" },\n'
        '  { (2), "PKT_TOO_SMALL" }, { 3U, "TCP_CSUM" },\n'
        '  { (1 << 16) | 4, "OVS_DROP_LAST_ACTION" }, { 5 + 1 , "WITH_PAREN)IN_NAME" },\n'
        '  { SKB_DROP_REASON_UNRESOLVED, "UNRESOLVED" }, { __import__("os"), "EVIL" },\n'
        '  { 7, "MAX" })\n')
    t = parse_kfree_skb_format(text)
    assert dict(t.items()) == {0: "NOT_SPECIFIED", 1: "NO_SOCKET", 2: "PKT_TOO_SMALL",
                               3: "TCP_CSUM", 0x10004: "OVS_DROP_LAST_ACTION",
                               6: "WITH_PAREN)IN_NAME"}
    assert t.value("UNRESOLVED") is None


def test_reason_field_without_table_is_an_error():
    # 5.19 printed names from an in-kernel array: nothing to read from tracefs.
    text = (FORMATS / "6.1.txt").read_text().split("print fmt:")[0] + (
        'print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, '
        "REC->protocol, REC->location, drop_reasons[REC->reason]\n")
    with pytest.raises(KernelFeatureError):
        parse_kfree_skb_format(text)


# --- BTF ---------------------------------------------------------------------

def test_btf_enum_matches_tracefs_on_same_kernel():
    t = from_btf_enum(btf_618())
    assert t.source == "btf"
    assert t.fields == {}
    # BTF also knows the two non-drop values the tracepoint table leaves out.
    assert t.name(0) == "NOT_DROPPED_YET" and t.name(1) == "CONSUMED"
    assert {v: n for v, n in t.items() if v >= 2} == dict(table("6.18").items())
    assert t.value("BRIDGE_INGRESS_STP_STATE") == 119
    assert t.value("MAX") is None and t.value("SUBSYS_MASK") is None
    assert t.name(128) == "UNKNOWN_128"
    assert t.name(0xFFFF0000) == "SUBSYS_65535_0"


@pytest.mark.parametrize("mask", [0xFFFF0000, -65536, 0xFFFFFFFFFFFF0000])
def test_btf_subsys_mask_any_signedness(mask):
    t = from_btf_enum({"SKB_DROP_REASON_NOT_SPECIFIED": 2, "SKB_DROP_REASON_MAX": 3,
                       "SKB_DROP_REASON_SUBSYS_MASK": mask})
    assert dict(t.items()) == {2: "NOT_SPECIFIED"}


def test_btf_empty_enum_is_an_error():
    with pytest.raises(KernelFeatureError):
        from_btf_enum({"SKB_DROP_REASON_MAX": 0})


# --- load_reason_table -------------------------------------------------------

def make_tracefs(tmp_path, version):
    d = tmp_path / "tracing" / "events" / "skb" / "kfree_skb"
    d.mkdir(parents=True)
    (d / "format").write_text((FORMATS / f"{version}.txt").read_text())
    return str(tmp_path / "tracing")


def test_load_prefers_tracefs(tmp_path):
    called = []
    t = load_reason_table(make_tracefs(tmp_path, "6.1"), btf_enum=lambda: called.append(1))
    assert t.source == "tracefs" and t.value("NOT_SPECIFIED") == 1
    assert not called


def test_load_falls_back_to_btf(tmp_path):
    t = load_reason_table(str(tmp_path / "nothing"), btf_enum=btf_618)
    assert t.source == "btf" and t.name(119) == "BRIDGE_INGRESS_STP_STATE"


def test_load_falls_back_to_btf_when_format_has_no_table(tmp_path):
    root = make_tracefs(tmp_path, "6.1")
    fmt = Path(root) / reasons.FORMAT_PATH
    fmt.write_text(fmt.read_text().split("print fmt:")[0] + (
        'print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, '
        "REC->protocol, REC->location, drop_reasons[REC->reason]\n"))
    assert load_reason_table(root, btf_enum=btf_618).source == "btf"
    with pytest.raises(KernelFeatureError):
        load_reason_table(root)


def test_load_without_tracefs_or_btf_says_how_to_mount(tmp_path):
    with pytest.raises(KernelFeatureError) as err:
        load_reason_table(str(tmp_path / "nothing"))
    assert "mount -t tracefs tracefs /sys/kernel/tracing" in err.value.hint


def test_load_btf_failure_is_a_kernel_feature_error(tmp_path):
    def broken():
        raise OSError("no /sys/kernel/btf/vmlinux")

    with pytest.raises(KernelFeatureError):
        load_reason_table(str(tmp_path / "nothing"), btf_enum=broken)


def test_load_pre_517_does_not_fall_back(tmp_path):
    with pytest.raises(KernelFeatureError):
        load_reason_table(make_tracefs(tmp_path, "5.10"), btf_enum=btf_618)


def test_live_kernel_if_readable():
    try:
        t = load_reason_table()
    except KernelFeatureError:
        pytest.skip("no readable tracefs here")
    assert t.value("NOT_SPECIFIED") is not None
