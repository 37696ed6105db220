"""tracer/output/pcapng.py writes blocks a reader can walk back (a tiny reader here)."""

import io
import struct

from tracer.output.pcapng import INBOUND, OUTBOUND, PcapngWriter, with_vlan_tag


def read_pcapng(raw: bytes) -> list:
    """(block type, fields) per block; options decoded to {code: [bytes, ...]}."""
    blocks, off, ifaces = [], 0, []
    while off < len(raw):
        btype, total = struct.unpack_from("<II", raw, off)
        assert total % 4 == 0 and total >= 12
        assert struct.unpack_from("<I", raw, off + total - 4)[0] == total
        body = raw[off + 8:off + total - 4]
        if btype == 0x0A0D0D0A:
            magic, major, minor, _len = struct.unpack_from("<IHHq", body)
            assert (magic, major, minor) == (0x1A2B3C4D, 1, 0)
            blocks.append(("shb", {"opts": _opts(body[16:])}))
        elif btype == 1:
            linktype, _r, snaplen = struct.unpack_from("<HHI", body)
            ifaces.append(snaplen)
            blocks.append(("idb", {"linktype": linktype, "snaplen": snaplen, "opts": _opts(body[8:])}))
        elif btype == 6:
            if_id, hi, lo, cap, orig = struct.unpack_from("<IIIII", body)
            data = body[20:20 + cap]
            blocks.append(("epb", {"if_id": if_id, "ts": (hi << 32) | lo, "cap": cap, "orig": orig,
                                   "data": data, "opts": _opts(body[20 + cap + (-cap % 4):])}))
        off += total
    return blocks


def _opts(raw: bytes) -> dict:
    out, off = {}, 0
    while off + 4 <= len(raw):
        code, length = struct.unpack_from("<HH", raw, off)
        if code == 0:
            break
        out.setdefault(code, []).append(raw[off + 4:off + 4 + length])
        off += 4 + length + (-length % 4)
    return out


def test_write_and_read_back(tmp_path):
    path = tmp_path / "t.pcapng"
    frame = bytes(range(60))
    with open(path, "wb") as f:
        w = PcapngWriter(f, snaplen=32)
        w.packet("vnet0", 1_700_000_000_123_456_789, frame, 60, "port=vnet0 step=entered", INBOUND)
        w.packet("vnet1", 1_700_000_000_123_460_000, frame, 60, "port=vnet1 step=left", OUTBOUND)
        w.packet("vnet0", 1_700_000_000_123_470_000, frame[:5], 5, "port=vnet0 step=freed reason=X")
    blocks = read_pcapng(path.read_bytes())
    assert [b[0] for b in blocks] == ["shb", "idb", "epb", "idb", "epb", "epb"]
    assert blocks[0][1]["opts"][4] == [b"brtrace"]
    idbs = [b[1] for b in blocks if b[0] == "idb"]
    assert [i["opts"][2] for i in idbs] == [[b"vnet0"], [b"vnet1"]]
    assert all(i["linktype"] == 1 and i["snaplen"] == 32 and i["opts"][9] == [b"\x09"] for i in idbs)
    epbs = [b[1] for b in blocks if b[0] == "epb"]
    assert [e["if_id"] for e in epbs] == [0, 1, 0]
    assert epbs[0]["ts"] == 1_700_000_000_123_456_789
    assert (epbs[0]["cap"], epbs[0]["orig"], epbs[0]["data"]) == (32, 60, frame[:32])
    assert (epbs[2]["cap"], epbs[2]["orig"], epbs[2]["data"]) == (5, 5, frame[:5])
    assert [e["opts"][1] for e in epbs] == [[b"port=vnet0 step=entered"], [b"port=vnet1 step=left"],
                                            [b"port=vnet0 step=freed reason=X"]]
    assert struct.unpack("<I", epbs[0]["opts"][2][0])[0] == INBOUND
    assert 2 not in epbs[2]["opts"]


def test_odd_lengths_are_padded():
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    w.packet("a-very-odd-name", 1, b"\x01\x02\x03", comment="c" * 7)
    blocks = read_pcapng(buf.getvalue())
    assert blocks[-1][1]["data"] == b"\x01\x02\x03" and blocks[-1][1]["opts"][1] == [b"c" * 7]
    assert len(buf.getvalue()) % 4 == 0


def test_vlan_tag_goes_back_after_the_macs():
    frame = bytes(12) + b"\x88\xb5" + b"x"
    assert with_vlan_tag(frame, 0x0064) == bytes(12) + b"\x81\x00\x00\x64\x88\xb5x"
