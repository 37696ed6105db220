"""The operator's `--on-incident CMD`: run through /bin/sh -c when an incident
opens and when it closes, told about it by environment variables, its output
kept in the bundle, bounded in time and output.

The caller never waits: each run has a watcher thread that copies its output
and enforces the timeout; results come back through poll() (or on_done, from
the watcher thread). The command runs in its own session, so its process
group is its own: at the timeout the whole group gets SIGTERM, then SIGKILL
2 s later, which also ends what it started in the background (a `tcpdump &`
left behind would otherwise outlive the daemon). A run is finished when the
shell has exited and its output pipe is closed, i.e. when everything it left
writing to it has exited too, or at the timeout.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

from tracer.incident.store import iso

DEFAULT_TIMEOUT = 30.0
KILL_GRACE = 2.0                # SIGTERM -> SIGKILL
MAX_OUTPUT = 1 << 20            # bytes of output kept per run
EVENTS = ("open", "close")


def incident_env(bundle, event: str) -> dict:
    """The variables a command is told about its incident by (on top of the
    daemon's environment)."""
    rec = bundle.record
    return {"BRTRACE_INCIDENT_DIR": bundle.path, "BRTRACE_INCIDENT_ID": bundle.id,
            "BRTRACE_INCIDENT_EVENT": event, "BRTRACE_BRIDGE": rec["bridge"],
            "BRTRACE_NETNS": rec.get("netns") or "", "BRTRACE_INCIDENT_TYPE": rec["type"],
            "BRTRACE_PORTS": " ".join(rec.get("ports") or ())}


class _Run:
    def __init__(self, proc: subprocess.Popen, output, result: dict):
        self.proc = proc
        self.output = output
        self.result = result
        self.started = time.monotonic()
        self.exited: Optional[float] = None
        self.stop = threading.Event()      # stop_all(): kill now
        self.thread: Optional[threading.Thread] = None


class OnIncident:
    """Runs one operator command per incident event; see the module docstring."""

    def __init__(self, command: str, timeout: float = DEFAULT_TIMEOUT, kill_grace: float = KILL_GRACE,
                 max_output: int = MAX_OUTPUT, on_done: Optional[Callable[[dict], None]] = None,
                 log: Optional[Callable[[str], None]] = None):
        self.command = command
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.max_output = max_output
        self.on_done = on_done
        self.log = log or (lambda _line: None)
        self._done: queue.Queue = queue.Queue()
        self._runs: list = []
        self._lock = threading.Lock()

    def start_for(self, bundle, event: str) -> bool:
        """Run the command for a Bundle's event, its output into
        on-incident-<event>.log in the bundle."""
        log_name = f"on-incident-{event}.log"
        return self.start(event, incident_env(bundle, event), bundle.open_binary(log_name), log_name)

    def start(self, event: str, env: dict, output=None, log_name: Optional[str] = None) -> bool:
        """Start the command with env added to the daemon's environment, its
        stdout and stderr written to `output` (a binary file; None: discarded).
        Returns at once; False when it could not be started (result reported)."""
        if event not in EVENTS:
            raise ValueError(f"event must be one of {EVENTS}")
        result = {"event": event, "incident": env.get("BRTRACE_INCIDENT_ID"), "command": self.command,
                  "started_at": iso(time.time()), "log": log_name if output is not None else None,
                  "status": None, "result": None, "duration_s": None, "output_bytes": 0,
                  "output_truncated": False}
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", self.command], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env={**os.environ, **env}, start_new_session=True)
        except OSError as exc:
            result.update(result=f"could not start: {exc.strerror or exc}", duration_s=0.0)
            self._finish(result, output)
            return False
        run = _Run(proc, output, result)
        run.thread = threading.Thread(target=self._watch, args=(run,), daemon=True,
                                      name=f"on-incident-{event}-{proc.pid}")
        with self._lock:
            self._runs.append(run)
        run.thread.start()
        return True

    def poll(self) -> list:
        """Results of the runs finished since the last call (dicts for
        incident.json's on_incident), oldest first."""
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def running(self) -> int:
        with self._lock:
            return len(self._runs)

    def stop_all(self, wait: Optional[float] = None) -> None:
        """Shutdown: kill what is still running (SIGTERM, SIGKILL after the
        grace) and wait for the watchers; their results go to poll()."""
        with self._lock:
            runs = list(self._runs)
        for run in runs:
            run.stop.set()
        limit = time.monotonic() + (wait if wait is not None else self.kill_grace + 1.0)
        for run in runs:
            run.thread.join(max(0.0, limit - time.monotonic()))

    # -- the watcher thread -----------------------------------------------------
    def _watch(self, run: _Run) -> None:
        fd = run.proc.stdout.fileno()
        poller = select.poll()     # not select(): the daemon may hold more than 1024 descriptors
        poller.register(fd, select.POLLIN)
        term_at: Optional[float] = None
        killed = eof = False
        why = None
        while not (eof and run.exited is not None):
            now = time.monotonic()
            if term_at is None and (run.stop.is_set() or now >= run.started + self.timeout):
                why = (f"killed at shutdown after {now - run.started:.1f} s" if run.stop.is_set()
                       else f"killed at timeout after {self.timeout:g} s")
                self._signal(run, signal.SIGTERM)
                term_at = now
            elif term_at is not None and not killed and now >= term_at + self.kill_grace:
                self._signal(run, signal.SIGKILL)
                killed = True
            if run.exited is None and run.proc.poll() is not None:
                run.exited = time.monotonic()
            if eof:
                time.sleep(0.05)
                continue
            if poller.poll(100):
                data = os.read(fd, 65536)
                if data:
                    self._save(run, data)
                else:
                    eof = True
        run.proc.stdout.close()
        code = run.proc.returncode
        res = run.result
        if why is None:
            why = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        res.update(status=code, result=why, duration_s=round(run.exited - run.started, 3))
        with self._lock:
            self._runs.remove(run)
        self._finish(res, run.output)

    def _save(self, run: _Run, data: bytes) -> None:
        res = run.result
        keep = data[:max(0, self.max_output - res["output_bytes"])]
        res["output_bytes"] += len(keep)
        if keep:
            self._write(run.output, keep, res)
        if len(keep) < len(data) and not res["output_truncated"]:
            res["output_truncated"] = True
            self._write(run.output, f"\n[brtrace: output cut at {self.max_output} bytes]\n".encode(), res)

    def _write(self, output, data: bytes, res: dict) -> None:
        if output is None or res.get("output_error"):
            return
        try:
            output.write(data)
        except OSError as exc:
            # Keep draining the pipe (the command must not block on a full
            # pipe); the output is lost from here on and the result says so.
            res["output_error"] = exc.strerror or str(exc)

    @staticmethod
    def _signal(run: _Run, sig: int) -> None:
        try:
            os.killpg(run.proc.pid, sig)   # its own session: group id = its pid
        except ProcessLookupError:
            pass

    def _finish(self, result: dict, output) -> None:
        if output is not None:
            try:
                output.close()
            except OSError as exc:
                result["output_error"] = exc.strerror or str(exc)
        self.log(f"on-incident {result['event']} of {result['incident']}: {result['result']}, "
                 f"ran {result['duration_s']:g} s")
        self._done.put(result)
        if self.on_done is not None:
            self.on_done(result)
