"""tracer/incident/kmsg.py: /dev/kmsg records parsed from a fake reader
(continuation lines, EPIPE, a bad record), the ring's bound, and a log that
cannot be opened."""

import time

import pytest

from tracer.incident.kmsg import OVERWRITTEN, KernelLog, format_line, parse_record


class FakeKmsg:
    """read() as /dev/kmsg answers it: one record per call, EPIPE for lost
    records, EAGAIN when nothing is left."""

    def __init__(self, items):
        self.items = list(items)

    def feed(self, *items):
        self.items.extend(items)

    def __call__(self, fd, size):
        if not self.items:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        item = self.items.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


@pytest.fixture
def any_file(tmp_path):
    path = tmp_path / "kmsg"
    path.write_bytes(b"")
    return str(path)


def test_parse_record():
    raw = b"6,1234,10690310338,-;br-int: received packet on t3o with own address as source address\n" \
          b" SUBSYSTEM=net\n DEVICE=n5\n"
    assert parse_record(raw) == (10690310338, "br-int: received packet on t3o with own address as source address")
    assert parse_record(b"4,5,7,c,caller=T1;a\\x0ab\n") == (7, "a\\x0ab")   # escapes kept, extra header field
    assert parse_record(b"garbage\n") is None and parse_record(b"6,1,notanumber,-;x\n") is None
    assert format_line(1234567890, "x") == "[ 1234.567890] x"


def test_poll_since_gap_and_bad_records(any_file):
    fake = FakeKmsg([b"6,1,1000000,-;before the daemon\n", b"6,2,2500000,-;br0: port 1(vnet0) entered blocking state\n"
                     b" SUBSYSTEM=net\n DEVICE=n3\n"])
    log = KernelLog(any_file, read=fake)
    assert log.available and len(log.lines) == 2        # the buffer as found, at start
    fake.feed(BrokenPipeError(32, "Broken pipe"), b"6,9,3000000,-;after the gap\n", b"nonsense")
    assert log.poll() == 1 and log.overwritten == 1 and log.bad_records == 1
    assert log.since(2.0) == ["[    2.500000] br0: port 1(vnet0) entered blocking state",
                              f"[    3.000000] {OVERWRITTEN}", "[    3.000000] after the gap"]
    assert log.poll() == 0


def test_ring_is_bounded(any_file):
    fake = FakeKmsg([f"6,{i},{i * 1000},-;line {i}\n".encode() for i in range(25)])
    log = KernelLog(any_file, max_lines=10, read=fake)   # reads 10 at start: a poll reads max_lines at most
    assert log.poll() == 10 and log.poll() == 5 and log.poll() == 0
    assert len(log.lines) == 10 and log.since(0)[0].endswith("line 15")


def test_unavailable_never_raises(tmp_path):
    log = KernelLog(str(tmp_path / "absent"))
    assert not log.available and "No such file" in log.why
    assert log.poll() == 0 and log.since(0) == []


def test_read_error_disables(any_file):
    log = KernelLog(any_file, read=FakeKmsg([OSError(5, "Input/output error")]))
    assert not log.available and "Input/output error" in log.why


def test_real_kmsg_reads_the_existing_buffer():
    log = KernelLog()
    if not log.available:      # kernel.dmesg_restrict without CAP_SYSLOG, or no /dev/kmsg
        assert "/dev/kmsg" in log.why
        pytest.skip(log.why)
    try:
        assert log.available and len(log.lines) > 0       # boot messages at least
        assert all(usec <= time.monotonic() * 1e6 for usec, _ in log.lines)
    finally:
        log.close()
