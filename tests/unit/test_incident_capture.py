"""tracer/incident/capture.py without root or traffic: whole blocks or none
(the byte cap, a write failing half-way), a port that cannot be opened, and
stop() in time. Real frames: tests/integration/test_incident_capture.py."""

import errno
import io
import time

import pytest

from tracer.incident.capture import Capture, _Blocks, _Full, netns_path


class ShortThenFull(io.BytesIO):
    """Takes 10 bytes of the first write, then the disk is full."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def write(self, data):
        self.calls += 1
        if self.calls == 1:
            return super().write(bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")


def test_blocks_capped_whole():
    sink = _Blocks(io.BytesIO(), max_bytes=100)
    sink.write(b"a" * 60)
    with pytest.raises(_Full):
        sink.write(b"b" * 41)
    sink.write(b"c" * 40)
    assert sink.written == 100 and sink.stream.getvalue() == b"a" * 60 + b"c" * 40


def test_half_written_block_is_cut_back():
    stream = ShortThenFull()
    sink = _Blocks(stream, max_bytes=1000)
    with pytest.raises(OSError):
        sink.write(b"x" * 32)
    assert stream.getvalue() == b"" and sink.written == 0


def test_unknown_port_and_quick_stop(tmp_path):
    path = tmp_path / "c.pcapng"
    with open(path, "wb", buffering=0) as f:
        cap = Capture(f, "br0", None, max_seconds=30)
        assert cap.start([("brtnoport0", None)])
        assert not cap.add_port("brtnoport1")
        t0 = time.monotonic()
        stats = cap.stop()
        assert time.monotonic() - t0 < 0.5 and not cap.running
    assert stats["packets"] == 0 and stats["truncated_by"] is None and stats["ports"] == []
    assert set(stats["port_errors"]) == {"brtnoport0", "brtnoport1"}
    data = path.read_bytes()
    assert data[:4] == b"\x0a\x0d\x0d\x0a" and len(data) == stats["bytes"]   # a valid, empty section


def test_seconds_limit(tmp_path):
    with open(tmp_path / "c.pcapng", "wb", buffering=0) as f:
        cap = Capture(f, "br0", None, max_seconds=0.3)
        cap.start([])
        time.sleep(0.6)
        assert not cap.running and cap.stats()["truncated_by"] == "seconds"


def test_netns_path():
    assert netns_path(None) is None and netns_path("lab") == "/run/netns/lab"
    assert netns_path("/proc/1/ns/net") == "/proc/1/ns/net"
