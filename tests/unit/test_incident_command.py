"""tracer/incident/command.py: the operator's command gets its environment,
its output lands in the bundle, a hanging one is killed (its whole group) at
the timeout, and the caller never waits."""

import os
import time

from tracer.incident.command import OnIncident
from tracer.incident.store import Store


def bundle(tmp_path):
    st = Store(str(tmp_path / "inc"))
    return st.open("br-int", "lab1", "l2_loop", ["t3o", "vnet0"], now=1_765_000_000.0)


def wait_results(runner, n, limit=10.0):
    out, end = [], time.monotonic() + limit
    while len(out) < n and time.monotonic() < end:
        out += runner.poll()
        time.sleep(0.02)
    return out


def test_environment_and_output(tmp_path):
    b = bundle(tmp_path)
    runner = OnIncident('env | grep ^BRTRACE_ | sort; echo oops >&2; exit 3')
    t0 = time.monotonic()
    assert runner.start_for(b, "open")
    assert time.monotonic() - t0 < 0.5
    [res] = wait_results(runner, 1)
    assert res["status"] == 3 and res["result"] == "exit status 3" and res["event"] == "open"
    assert res["incident"] == b.id and res["log"] == "on-incident-open.log" and res["duration_s"] < 5
    text = open(os.path.join(b.path, "on-incident-open.log")).read()
    assert text.splitlines() == [
        "BRTRACE_BRIDGE=br-int", f"BRTRACE_INCIDENT_DIR={b.path}", "BRTRACE_INCIDENT_EVENT=open",
        f"BRTRACE_INCIDENT_ID={b.id}", "BRTRACE_INCIDENT_TYPE=l2_loop", "BRTRACE_NETNS=lab1",
        "BRTRACE_PORTS=t3o vnet0", "oops"]
    assert os.stat(os.path.join(b.path, "on-incident-open.log")).st_mode & 0o777 == 0o600


def test_hanging_command_killed_at_timeout(tmp_path):
    b = bundle(tmp_path)
    done = []
    runner = OnIncident("sleep 60", timeout=1.0, on_done=done.append)
    t0 = time.monotonic()
    runner.start_for(b, "close")
    assert time.monotonic() - t0 < 0.5 and runner.running() == 1
    [res] = wait_results(runner, 1)
    assert res["result"] == "killed at timeout after 1 s" and res["status"] == -15
    assert 0.9 <= res["duration_s"] < 2.0 and done == [res] and runner.running() == 0


def test_whole_group_killed_even_when_term_is_ignored(tmp_path):
    b = bundle(tmp_path)
    runner = OnIncident("trap '' TERM; sleep 60 & echo $!; wait", timeout=0.5, kill_grace=0.5)
    runner.start_for(b, "open")
    [res] = wait_results(runner, 1)
    assert res["result"] == "killed at timeout after 0.5 s" and res["status"] == -9
    assert 0.9 <= res["duration_s"] < 3.0
    child = int(open(os.path.join(b.path, "on-incident-open.log")).read().split()[0])
    time.sleep(0.1)
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"


def test_output_is_bounded(tmp_path):
    b = bundle(tmp_path)
    runner = OnIncident("head -c 100000 /dev/zero", max_output=1000)
    runner.start_for(b, "open")
    [res] = wait_results(runner, 1)
    assert res["status"] == 0 and res["output_truncated"] and res["output_bytes"] == 1000
    data = open(os.path.join(b.path, "on-incident-open.log"), "rb").read()
    assert data.startswith(b"\0" * 1000) and data.endswith(b"[brtrace: output cut at 1000 bytes]\n")


def test_stop_all_kills_what_runs(tmp_path):
    b = bundle(tmp_path)
    runner = OnIncident("sleep 60", timeout=30)
    runner.start_for(b, "open")
    time.sleep(0.2)
    t0 = time.monotonic()
    runner.stop_all()
    assert time.monotonic() - t0 < 3.5 and runner.running() == 0
    [res] = runner.poll()
    assert res["result"].startswith("killed at shutdown after ") and res["status"] == -15


def test_unstartable_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: (_ for _ in ()).throw(OSError(11, "no fork")))
    runner = OnIncident("true")
    assert not runner.start("open", {"BRTRACE_INCIDENT_ID": "x"})
    [res] = runner.poll()
    assert res["result"] == "could not start: no fork" and res["status"] is None
