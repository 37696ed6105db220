"""The lab's one sender, as the lab and the bench call it: arguments and frame
numbering (pure: no root, nothing sent)."""

import pytest

from lab import ETH_P_LAB, Frames, ether
from lab import traffic


def test_numbered_frames_carry_their_index_whatever_the_template_holds_there():
    frame = ether("ff:ff:ff:ff:ff:ff", "02:b7:00:00:00:01", ETH_P_LAB, b"abcdefgh")
    numbered = traffic._numbered(frame, 300, 14)
    for i in (0, 1, 255, 299):
        f = numbered.frame(i)
        assert f[14:18] == i.to_bytes(4, "big")
        assert f[:14] == frame[:14] and f[18:] == frame[18:] and len(f) == len(frame)
    assert len({numbered.frame(i) for i in range(300)}) == 300


def test_unnumbered_frames_are_the_template():
    frame = ether("ff:ff:ff:ff:ff:ff", "02:b7:00:00:00:01", ETH_P_LAB, b"same")
    assert traffic._numbered(frame, 5, None) == Frames(frame)


def test_seq_offset_must_leave_four_bytes():
    frame = ether("ff:ff:ff:ff:ff:ff", "02:b7:00:00:00:01", ETH_P_LAB)
    for bad in (-1, len(frame) - 3):
        with pytest.raises(ValueError):
            traffic._numbered(frame, 1, bad)


def test_sender_arguments(monkeypatch):
    monkeypatch.setattr(traffic, "compile_sender", lambda: ("/x/sender", ""))
    frame = ether("02:b7:00:00:00:02", "02:b7:00:00:00:01", ETH_P_LAB)
    argv = traffic._sender_argv("ns1", "eth0", frame, 7, 0.05, 12.0)
    # the lab's mode (no -f): exact counts, through the qdisc layer
    assert argv[:5] == ["ip", "netns", "exec", "ns1", "/x/sender"]
    assert argv[5:] == ["eth0", "7", "12.000", frame.hex(), "0", "1", "20.0"]   # ..., DISTINCT, RATE
    assert traffic._sender_argv("ns1", "eth0", frame, 7, 0.0, 12.0)[-1] == "1"  # no interval: no RATE
    assert traffic.sender_command(fast=True) == ["/x/sender", "-f"]
    py = traffic.sender_command(prefer_c=False)
    assert py[1].endswith("lab/children/sender.py") and "-f" not in py


def test_sender_falls_back_to_python_without_a_compiler(monkeypatch):
    monkeypatch.setattr(traffic, "compile_sender", lambda: (None, "no C compiler"))
    cmd = traffic.sender_command(fast=True)
    assert cmd[1].endswith("lab/children/sender.py") and cmd[2:] == ["-f"]
