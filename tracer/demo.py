"""The built-in demo behind `scripts/demo`: a lab bridge with reproduced faults,
traced by the real `brtrace drops` for about ten seconds, then torn down.

Run as root: python -m tracer.demo [--seconds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from tracer.lab import Lab, LabError, build_demo, drive_demo

PREFIX = "brtdemo"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to send faulty traffic")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (run scripts/demo, which re-runs under sudo)", file=sys.stderr)
        return 1
    try:
        with Lab(prefix=PREFIX, hosts=4, bridge="br-int") as lab:
            plan = build_demo(lab)
            print(f"demo: bridge br-int in netns {lab.bridge_ns}, ports "
                  + ", ".join(h.port for h in lab.hosts) + f", {lab.prefix}tap0", file=sys.stderr)
            print("demo: faults reproduced: " + ", ".join(f"{f} on {p}" for f, p in plan.faults.items()),
                  file=sys.stderr)
            return _trace(lab, args.seconds)
    except LabError as exc:
        print(f"demo: could not build the lab: {exc} (stale namespaces? `ip netns list | grep {PREFIX}`)",
              file=sys.stderr)
        return 1


def _trace(lab: Lab, seconds: float) -> int:
    ready = f"/tmp/{PREFIX}-{os.getpid()}.ready"
    cmd = [sys.executable, "-m", "tracer.cli", "drops", "--bridge", lab.bridge,
           "--netns", lab.bridge_ns, "--interval", "5", "--duration", str(seconds + 30),
           "--ready-file", ready]
    print("demo: $ brtrace " + " ".join(cmd[3:-2]), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("demo: brtrace did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        drive_demo(lab, seconds=seconds, rate=20)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)   # our child, by PID: ends with the summary
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(ready):
            os.unlink(ready)


if __name__ == "__main__":
    sys.exit(main())
