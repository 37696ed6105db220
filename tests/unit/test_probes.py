"""Which mechanism each hook picks, and why, for the kernels brtrace meets."""

import errno
import os

import pytest

from tracer import probes
from tracer.kernel import switches, tcx
from tracer.kernel.features import Features, kernel_symbol_modules


def features(**kw):
    base = dict(kernel="test", btf=True, tracefs="/sys/kernel/tracing", kprobes=False,
                fentry=False, raw_tracepoints=True, tcx=False)
    base.update(kw)
    return Features(**base)


def picked(choices, hook):
    c = next(c for c in choices if c.hook.name == hook)
    return (c.picked.mechanism if c.picked else None), c.why


def every_tracepoint(_name):
    return True


@pytest.fixture(autouse=True)
def no_avoid(monkeypatch):
    monkeypatch.delenv(switches.AVOID, raising=False)


def test_ports_use_tcx_where_the_kernel_has_it():
    mech, why = picked(probes.choose(features(tcx=True), every_tracepoint), "ports")
    assert mech == "tcx" and why == "available"


def test_ports_fall_back_to_tracepoints_and_say_why():
    mech, why = picked(probes.choose(features(tcx=False), every_tracepoint), "ports")
    assert mech == "raw_tracepoint"
    assert "fallback" in why and "kernel has no tcx" in why


def test_operator_can_avoid_a_mechanism(monkeypatch):
    monkeypatch.setenv(switches.AVOID, "tcx")
    mech, why = picked(probes.choose(features(tcx=True), every_tracepoint), "ports")
    assert mech == "raw_tracepoint" and "skipped (BRTRACE_AVOID=tcx)" in why


def test_ports_need_their_tracepoints_when_there_is_no_tcx():
    missing = probes.choose(features(tcx=False), lambda tp: tp != "net_dev_queue")
    mech, why = picked(missing, "ports")
    assert mech is None and "no tracepoint net_dev_queue" in why


def test_forward_is_reconstructed_without_kprobes():
    mech, why = picked(probes.choose(features(kprobes=False), every_tracepoint), "forward")
    assert mech == "reconstructed" and "kernel has no kprobes" in why


class FakeBtf:
    def __init__(self, values):
        self.values = values

    def enum(self, name):
        assert name == "bpf_attach_type"
        return self.values


def test_tcx_attach_types_come_from_btf():
    assert tcx.attach_types(FakeBtf({"BPF_TCX_INGRESS": 46, "BPF_TCX_EGRESS": 47})) == \
        {"ingress": 46, "egress": 47}
    # 6.1: no tcx in enum bpf_attach_type
    assert tcx.attach_types(FakeBtf({"BPF_CGROUP_INET_INGRESS": 0})) is None


def test_kernel_symbol_modules_in_one_pass(tmp_path):
    ks = tmp_path / "kallsyms"
    ks.write_text("ffffffff81000000 T _stext\n"
                  "ffffffffc0a01000 t br_forward\t[bridge]\n"
                  "ffffffff81234000 T netif_receive_skb\n"
                  "ffffffffc0a02000 d br_flood_data\t[bridge]\n")
    assert kernel_symbol_modules(["br_forward", "netif_receive_skb", "br_flood"], str(ks)) == \
        {"br_forward": "bridge", "netif_receive_skb": "", "br_flood": None}
    assert kernel_symbol_modules(["x"], str(tmp_path / "missing")) == {"x": None}


def test_tcx_links_follow_the_watched_set(monkeypatch):
    """sync() links both programs to new devices, unlinks those that left, and
    skips a device that vanished before its link (ENODEV)."""
    made = []

    def fake_link_create(prog_fd, ifindex, attach_type):
        if ifindex == 9:
            raise OSError(errno.ENODEV, "No such device")
        fd = os.open("/dev/null", os.O_RDONLY)
        made.append((prog_fd, ifindex, attach_type, fd))
        return fd

    monkeypatch.setattr(tcx.bpfsys, "link_create", fake_link_create)
    links = tcx.TcxLinks({"ingress": 100, "egress": 101}, {"ingress": 46, "egress": 47}, None)
    assert links.sync({2: 1, 3: 1, 9: 1}) == [9]
    assert sorted((p, i, a) for p, i, a, _fd in made) == [
        (100, 2, 46), (100, 3, 46), (101, 2, 47), (101, 3, 47)]
    gone_fds = links.links[3]
    assert links.sync({2: 1}) == [] and set(links.links) == {2}
    for fd in gone_fds:
        with pytest.raises(OSError):
            os.fstat(fd)               # port 3's links were closed
    links.close()
    assert links.links == {}
