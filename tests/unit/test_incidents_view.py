"""`brtrace incidents` and `brtrace incidents show` on bundles the store wrote."""

import json
import os

import pytest

from tracer import cli
from tracer.incident.store import Store

T0 = 1_765_000_000.0   # 2025-12-06T05:46:40Z
LOOP = {"type": "l2_loop", "bridge": "br-int", "ports": ["t3o"], "severity": "critical", "active": True,
        "message": "t3o reflects: 27 flooded frames that the bridge sent out of t3o came back in through t3o",
        "hint": "take t3o out of the bridge", "evidence": {"kind": "reflecting_port"}, "culprit_ports": ["t3o"]}


@pytest.fixture
def incidents(tmp_path):
    st = Store(str(tmp_path))
    a = st.open("br-int", "lab", "l2_loop", ["t3o"], now=T0)
    a.set_findings([LOOP], now=T0 + 1)
    a.update(verdict={"message": "a loop through t3o", "hint": "unplug t3o", "kind": "reflecting_port"},
             capture={"packets": 20, "bytes": 4096, "truncated_by": "bytes", "kernel_drops": 0},
             on_incident=[{"event": "open", "result": "exit status 0", "log": "on-incident-open.log"}])
    a.append_lines("timeline.jsonl", [{"t": 0}])
    a.close(now=T0 + 90)
    b = st.open("br-ext", None, "storm", ["vnet1"], now=T0 + 3600)
    return tmp_path, a.id, b.id


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_list_newest_last(incidents, capsys):
    root, a, b = incidents
    code, out, err = run(["incidents", "--dir", str(root)], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["OPENED", "(UTC)", "BRIDGE", "TYPE", "PORTS", "STATE", "SIZE"]
    assert lines[2].split()[:6] == ["2025-12-06", "05:46:40", "br-int", "l2_loop", "t3o", "closed"]
    assert lines[3] == f"  {a}: a loop through t3o"
    assert lines[4].split()[:6] == ["2025-12-06", "06:46:40", "br-ext", "storm", "vnet1", "open"]
    assert lines[5] == f"  {b}: (no finding recorded)"
    assert max(len(ln) for ln in lines) <= 80


def test_list_json(incidents, capsys):
    root, a, b = incidents
    code, out, _ = run(["incidents", "--dir", str(root), "--json"], capsys)
    recs = [json.loads(ln) for ln in out.splitlines()]
    assert code == 0 and [r["id"] for r in recs] == [a, b] and recs[0]["verdict"]["kind"] == "reflecting_port"
    assert "history" not in recs[0] and recs[0]["size"] > 0


def test_show(incidents, capsys):
    root, a, _ = incidents
    code, out, err = run(["incidents", "show", a[:13], "--dir", str(root)], capsys)   # a unique prefix
    assert code == 0 and err == ""
    assert f"incident {a}" in out and "l2_loop on br-int (netns lab), ports t3o" in out
    assert "opened 2025-12-06 05:46:40 UTC, closed 2025-12-06 05:48:10 UTC (90 s)" in out
    assert "CRITICAL l2_loop on t3o: t3o reflects" in out and "    try: take t3o out of the bridge" in out
    assert "capture: 20 frames, 4.0 KiB, stopped by its bytes limit" in out
    assert "on-incident open: exit status 0 (on-incident-open.log)" in out
    files = out.split("files:\n")[1].split()
    assert files[0::3] == ["incident.json", "timeline.jsonl"]


def test_show_json_and_group_options(incidents, capsys):
    root, _, b = incidents
    code, out, _ = run(["incidents", "--dir", str(root), "-o", "json", "show", b], capsys)
    rec = json.loads(out)
    assert code == 0 and rec["id"] == b and rec["state"] == "open"
    assert [f["path"] for f in rec["files"]] == ["incident.json"]


@pytest.mark.parametrize("argv, needle", [
    (["incidents", "show", "20991231T000000Z-nope-storm"], "no incident '20991231T000000Z-nope-storm' in"),
    (["incidents", "show", "2025"], "matches 2 incidents"),
    (["incidents", "show", "../x"], "no incident '../x' in"),
])
def test_bad_id_is_one_line(incidents, capsys, argv, needle):
    root, _, _ = incidents
    code, out, err = run([*argv, "--dir", str(root)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and needle in err and "Traceback" not in err


def test_missing_dir_is_one_line(tmp_path, capsys):
    code, out, err = run(["incidents", "--dir", str(tmp_path / "none")], capsys)
    assert code == 2 and out == ""
    assert err == (f"brtrace: error: no incident directory {tmp_path / 'none'}; pass --dir with the directory "
                   "brtrace watch writes to (default /var/lib/brtrace/incidents)\n")


def test_broken_bundle_listed_and_shown(incidents, capsys):
    root, a, _ = incidents
    with open(os.path.join(root, a, "incident.json"), "w") as f:
        f.write("{")
    code, out, _ = run(["incidents", "--dir", str(root)], capsys)
    assert code == 0 and f"{a}: broken: incident.json: " in out and "broken" in out.splitlines()[2]
    code, out, err = run(["incidents", "show", a, "--dir", str(root)], capsys)
    assert code == 1 and "files:" in out and "timeline.jsonl" in out
    assert err.startswith(f"brtrace: error: incident {a} is broken") and err.count("\n") == 1
