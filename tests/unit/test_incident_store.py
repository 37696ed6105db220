"""tracer/incident/store.py: caps, rotation, permissions, atomic incident.json,
and a disk that fails (nothing raises; failures counted, logged once, retried)."""

import errno
import json
import os
import stat

import pytest

from tracer.incident import store as store_mod
from tracer.incident.store import Store, list_bundles

T0 = 1_765_000_000.0   # 2025-12-06T05:46:40Z


def make(root, **kw):
    lines = []
    return Store(str(root), log=lines.append, **kw), lines


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_open_writes_incident_json_private(tmp_path):
    old = os.umask(0)    # the modes come from mkdir/open, not from the umask
    try:
        st, _ = make(tmp_path / "inc")
        b = st.open("br-int", "lab", "l2_loop", ["t3o", "vnet0"], now=T0, trigger={"finding": "l2_loop"})
        b.append_lines("timeline.jsonl", [{"t": 1}])
        b.write_json("snapshots/open.json", {"ports": 2})
        cap = b.open_binary("capture.pcapng")
        cap.close()
    finally:
        os.umask(old)
    assert b.id == "20251206T054640Z-br-int-l2_loop" and b.path == str(tmp_path / "inc" / b.id)
    rec = json.loads((tmp_path / "inc" / b.id / "incident.json").read_text())
    assert rec == {"id": b.id, "bridge": "br-int", "netns": "lab", "type": "l2_loop", "ports": ["t3o", "vnet0"],
                   "state": "open", "opened_at": "2025-12-06T05:46:40.000Z", "closed_at": None,
                   "trigger": {"finding": "l2_loop"}, "verdict": None, "findings": [], "history": [],
                   "capture": {}, "on_incident": [], "limits": st.limits()}
    assert mode(tmp_path / "inc") == 0o700
    seen = []
    for top, _dirs, files in os.walk(b.path):
        assert mode(top) == 0o700
        for f in files:
            assert mode(os.path.join(top, f)) == 0o600, f
            seen.append(os.path.relpath(os.path.join(top, f), b.path))
    assert sorted(seen) == ["capture.pcapng", "incident.json", "snapshots/open.json", "timeline.jsonl"]


def test_findings_history_only_on_change_and_close(tmp_path):
    st, _ = make(tmp_path)
    b = st.open("br0", None, "l2_loop", ["a"], now=T0)
    f1 = {"type": "l2_loop", "ports": ["a"], "severity": "critical", "active": True, "evidence": {"kind": "x", "n": 1}}
    assert b.set_findings([f1], now=T0 + 1)
    assert not b.set_findings([{**f1, "evidence": {"kind": "x", "n": 99}}], now=T0 + 2)   # numbers moved only
    assert b.set_findings([{**f1, "active": False}], now=T0 + 3)
    b.update(verdict={"message": "a reflects", "hint": "unplug a", "kind": "reflecting_port"})
    assert b.close(now=T0 + 60) and b.close()
    rec = json.loads(open(os.path.join(b.path, "incident.json")).read())
    assert [h["at"] for h in rec["history"]] == ["2025-12-06T05:46:41.000Z", "2025-12-06T05:46:43.000Z"]
    assert rec["state"] == "closed" and rec["closed_at"] == "2025-12-06T05:47:40.000Z"
    assert rec["findings"][0]["active"] is False and rec["verdict"]["kind"] == "reflecting_port"
    assert st.open_bundles() == []


def test_same_second_gets_a_suffix(tmp_path):
    st, _ = make(tmp_path)
    a = st.open("br0", None, "storm", [], now=T0)
    b = st.open("br0", None, "storm", [], now=T0 + 0.5)
    assert b.id == a.id + "-2"
    assert [x["id"] for x in list_bundles(str(tmp_path))] == [a.id, b.id]


def test_rotation_by_count_keeps_open_and_foreign(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "20200101T000000Z-looks-like-ours.txt").write_text("a file, not a bundle")
    (tmp_path / "20200101T000000Z-br0-l2_loop").symlink_to(tmp_path / "notes")
    st, lines = make(tmp_path, max_bundles=3)
    kept_open = st.open("br0", None, "l2_loop", [], now=T0)          # oldest, but never closed
    ids = []
    for i in range(1, 6):
        b = st.open("br0", None, "storm", [], now=T0 + 60 * i)
        b.close(now=T0 + 60 * i + 1)
        ids.append(b.id)
    names = sorted(os.listdir(tmp_path))
    ours = [n for n in names if n.startswith("2025")]
    assert ours == [kept_open.id, ids[-2], ids[-1]]
    assert "notes" in names and "20200101T000000Z-looks-like-ours.txt" in names
    assert os.path.islink(tmp_path / "20200101T000000Z-br0-l2_loop")
    assert st.removed == 3 and any("removed the 1 oldest" in ln for ln in lines)


def test_rotation_never_removes_open_bundles(tmp_path):
    st, _ = make(tmp_path, max_bundles=2, max_per_hour=10)
    bundles = [st.open("br0", None, "storm", [], now=T0 + i) for i in range(4)]
    assert all(bundles) and len(os.listdir(tmp_path)) == 4
    bundles[0].close()
    assert sorted(os.listdir(tmp_path)) == sorted(b.id for b in bundles[1:])


def test_rotation_by_total_size(tmp_path):
    st, _ = make(tmp_path, max_total_bytes=300_000, max_per_hour=10)
    ids = []
    for i in range(4):
        b = st.open("br0", None, "storm", [], now=T0 + i)
        b.append_lines("timeline.jsonl", ["x" * 99_999])
        b.close()
        ids.append(b.id)
    assert sorted(os.listdir(tmp_path)) == ids[-2:]   # 2 x 100 kB + the JSON fit; 3 do not


def test_per_hour_limit(tmp_path):
    st, lines = make(tmp_path, max_per_hour=2)
    assert st.open("br0", None, "storm", [], now=T0) and st.open("br0", None, "storm", [], now=T0 + 10)
    lines.clear()
    assert st.open("br0", None, "l2_loop", [], now=T0 + 20) is None
    assert st.suppressed == 1 and len(lines) == 1 and "not recorded" in lines[0]
    assert st.open("br0", None, "storm", [], now=T0 + 3601) is not None


def test_root_under_a_file_never_raises(tmp_path):
    (tmp_path / "file").write_text("")
    st, lines = make(tmp_path / "file" / "incidents")
    assert st.write_errors == 1 and "file is not a directory" in st.last_error and len(lines) == 1
    assert st.open("br0", None, "storm", [], now=T0) is None
    assert st.list() == [] and st.write_errors == 3 and len(lines) == 2   # create, list: one line per cause


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_read_only_root(tmp_path):
    root = tmp_path / "ro"
    root.mkdir(mode=0o500)
    st, _ = make(root)
    assert st.open("br0", None, "storm", [], now=T0) is None and st.write_errors == 1
    root.chmod(0o700)
    assert st.open("br0", None, "storm", [], now=T0) is not None


def test_disk_full_then_space_again(tmp_path, monkeypatch):
    st, lines = make(tmp_path)
    b = st.open("br0", None, "storm", ["a"], now=T0)
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "write", full)
    assert not b.append_lines("timeline.jsonl", ["{}"])
    assert not b.update(verdict={"message": "m"})
    assert not b.write_json("snapshots/close.json", {})
    assert st.write_errors == 3 and "No space left" in st.last_error
    assert len(lines) == 1 and "free space" in lines[0]         # one line per cause a minute
    rec = json.loads(open(os.path.join(b.path, "incident.json")).read())
    assert rec["verdict"] is None                               # the old file, whole
    assert not [f for f in os.listdir(b.path) if f.endswith(".tmp")]
    monkeypatch.setattr(store_mod.os, "write", real_write)
    assert b.append_lines("timeline.jsonl", ["{}"]) and b.close()
    assert json.loads(open(os.path.join(b.path, "incident.json")).read())["verdict"] == {"message": "m"}


def test_half_written_append_is_cut_back(tmp_path, monkeypatch):
    st, _ = make(tmp_path)
    b = st.open("br0", None, "storm", [], now=T0)
    assert b.append_lines("timeline.jsonl", ['{"t": 0}'])
    real_write = os.write

    def half(fd, data):
        if len(data) > 4:
            return real_write(fd, bytes(data[:4]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "write", half)
    assert not b.append_lines("timeline.jsonl", ['{"t": 1}', '{"t": 2}'])
    monkeypatch.setattr(store_mod.os, "write", real_write)
    assert open(os.path.join(b.path, "timeline.jsonl")).read() == '{"t": 0}\n'


def test_root_or_bundle_removed_under_us(tmp_path):
    st, _ = make(tmp_path / "inc")
    b = st.open("br0", None, "storm", [], now=T0)
    os.system(f"rm -rf {tmp_path / 'inc'}")
    assert b.append_lines("timeline.jsonl", ["{}"])     # made again, private
    assert mode(tmp_path / "inc") == 0o700 and mode(b.path) == 0o700


def test_bundle_cap_truncates_appends(tmp_path):
    st, lines = make(tmp_path, bundle_max_bytes=4096)
    b = st.open("br0", None, "storm", [], now=T0)
    assert 0 < b.room() < 4096
    for _ in range(20):
        b.append_lines("timeline.jsonl", ["y" * 99] * 5)
    assert b.size() <= 4096 and b.room() < 100 and b.truncated == {"timeline.jsonl"}
    assert sum("stopped growing" in ln for ln in lines) == 1
    assert all(len(ln) == 99 for ln in open(os.path.join(b.path, "timeline.jsonl")).read().splitlines())
    b.close()
    assert json.load(open(os.path.join(b.path, "incident.json")))["limits"]["truncated_files"] == ["timeline.jsonl"]


def test_list_reports_broken_bundles(tmp_path):
    st, _ = make(tmp_path)
    good = st.open("br0", None, "storm", [], now=T0)
    bad = st.open("br1", None, "l2_loop", [], now=T0 + 1)
    with open(os.path.join(bad.path, "incident.json"), "w") as f:
        f.write('{"id": "trunc')
    listed = st.list()
    assert [x["id"] for x in listed] == [good.id, bad.id]
    assert listed[0]["state"] == "open" and listed[0]["size"] > 0
    assert listed[1]["state"] == "broken" and listed[1]["error"].startswith("incident.json: ")


def test_paths_stay_inside_the_bundle(tmp_path):
    st, _ = make(tmp_path)
    b = st.open("br0", None, "storm", [], now=T0)
    with pytest.raises(ValueError):
        b.write_json("../escape.json", {})


def test_failed_directory_never_touches_the_old_file(tmp_path, monkeypatch):
    st, _ = make(tmp_path)
    b = st.open("br0", None, "storm", [], now=T0)

    def refuse(path):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store_mod, "_make_dirs", refuse)
    assert not b.update(verdict={"message": "m"})
    monkeypatch.undo()
    assert json.load(open(os.path.join(b.path, "incident.json")))["verdict"] is None


def test_usage_sizes_closed_bundles_once_and_open_ones_live(tmp_path, monkeypatch):
    st, _ = make(tmp_path, max_per_hour=10)
    closed = st.open("br0", None, "storm", [], now=T0)
    closed.append_lines("timeline.jsonl", ["x" * 9_999])
    closed.close()
    live = st.open("br0", None, "l2_loop", [], now=T0 + 1)
    (tmp_path / "notes").mkdir()                      # not a bundle: not counted
    walked = []
    real = store_mod.tree_size
    monkeypatch.setattr(store_mod, "tree_size", lambda p: walked.append(os.path.basename(p)) or real(p))
    first = st.usage()
    assert first == {"bundles": 2, "bytes": real(closed.path) + real(live.path)}
    live.append_lines("timeline.jsonl", ["y" * 4_999])
    second = st.usage()
    assert second["bytes"] == first["bytes"] + 5_000          # the open bundle grew, seen at once
    assert walked.count(closed.id) == 1                       # sized once, when first listed
    # a bundle removed by the operator is forgotten; the count follows the directory
    store_mod.shutil.rmtree(closed.path)
    assert st.usage() == {"bundles": 1, "bytes": real(live.path)}
