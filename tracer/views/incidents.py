"""`brtrace incidents`: the incident bundles `brtrace watch` recorded (newest
last), and `brtrace incidents show ID`: one of them, its findings printed as
`brtrace loops` prints them, its times and its files.

Reads the directory only (tracer/incident/store.py's readers): it never
creates, changes or rotates anything, so it is safe beside a running daemon.
"""

from __future__ import annotations

import os
import sys
import textwrap
from datetime import datetime

from tabulate import tabulate

from tracer.diagnose import Finding
from tracer.errors import BrtraceError, UsageError
from tracer.incident.store import DEFAULT_ROOT, bundle_files, list_bundles, read_bundle
from tracer.output import jsonl
from tracer.output.table import findings_lines

# What the list gives per bundle in JSON (incident.json's history and
# evidence stay in `show`).
LIST_FIELDS = ("id", "bridge", "netns", "type", "ports", "state", "opened_at", "closed_at", "verdict",
               "size", "path", "error")


def _when(text) -> str:
    """incident.json's ISO time -> `2026-12-05 23:42:21`; as given if not one."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return str(text or "?")


def _seconds(rec: dict):
    try:
        a = datetime.strptime(rec["opened_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        b = datetime.strptime(rec["closed_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except (KeyError, TypeError, ValueError):
        return None
    return (b - a).total_seconds()


def human_size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _message(rec: dict) -> str:
    """The verdict's message, else the first finding's, else why it is broken."""
    if rec.get("error"):
        return f"broken: {rec['error']}"
    verdict = rec.get("verdict") or {}
    if verdict.get("message"):
        return verdict["message"]
    findings = rec.get("findings") or []
    return findings[0].get("message", "") if findings and isinstance(findings[0], dict) else "(no finding recorded)"


def list_lines(bundles: list, width: int = 80) -> list[str]:
    """The table of bundles, each followed by its ID and verdict, wrapped. Pure."""
    if not bundles:
        return ["no incident recorded"]
    rows = [[_when(b.get("opened_at")), str(b.get("bridge", "?"))[:15], str(b.get("type", "?"))[:16],
             ", ".join(b.get("ports") or [])[:16], b.get("state", "?"), human_size(b.get("size", 0))]
            for b in bundles]
    table = tabulate(rows, headers=["OPENED (UTC)", "BRIDGE", "TYPE", "PORTS", "STATE", "SIZE"],
                     tablefmt="simple", disable_numparse=True).splitlines()
    out = table[:2]
    for line, b in zip(table[2:], bundles):
        out.append(line)
        out.extend(textwrap.wrap(f"{b['id']}: {_message(b)}", width=width, initial_indent="  ",
                                 subsequent_indent="    "))
    return out


def show_lines(rec: dict, files: list, width: int = 80) -> list[str]:
    """One incident: what, when, verdict, findings, command results, files. Pure."""
    ns = f" (netns {rec['netns']})" if rec.get("netns") else ""
    out = [f"incident {rec['id']}"]
    if rec.get("error"):
        out.append(f"  broken: {rec['error']}")
    else:
        out.append(f"  {rec.get('type', '?')} on {rec.get('bridge', '?')}{ns}, ports "
                   f"{', '.join(rec.get('ports') or []) or '-'}")
        when = f"  opened {_when(rec.get('opened_at'))} UTC"
        if rec.get("state") == "closed":
            secs = _seconds(rec)
            when += f", closed {_when(rec.get('closed_at'))} UTC" + (f" ({secs:.0f} s)" if secs is not None else "")
        else:
            when += ", still open"
        out.append(when)
        verdict = rec.get("verdict") or {}
        if verdict.get("message"):
            out.extend(textwrap.wrap(f"verdict: {verdict['message']}", width=width, subsequent_indent="    "))
            if verdict.get("hint"):
                out.extend(textwrap.wrap("try: " + verdict["hint"], width=width, initial_indent="    ",
                                         subsequent_indent="    "))
        findings = [Finding.from_record(f) for f in rec.get("findings") or [] if isinstance(f, dict)]
        out.extend(findings_lines(findings, width) if findings else ["", "no finding recorded"])
        changes = len(rec.get("history") or []) - 1
        if changes > 0:
            out.append(f"(the findings changed {changes} time{'s' if changes > 1 else ''} after the first; "
                       "incident.json's history has each)")
        cap = rec.get("capture") or {}
        if "packets" in cap:
            out.append(f"capture: {cap['packets']} frames, {human_size(cap.get('bytes', 0))}"
                       + (f", stopped by its {cap['truncated_by']} limit" if cap.get("truncated_by") else "")
                       + (f", {cap['kernel_drops']} dropped by the kernel" if cap.get("kernel_drops") else ""))
        for res in rec.get("on_incident") or []:
            if isinstance(res, dict):
                out.append(f"on-incident {res.get('event', '?')}: {res.get('result', '?')}"
                           + (f" ({res['log']})" if res.get("log") else ""))
    out += ["", "files:"]
    name_w = max([len(p) for p, _ in files] + [10])
    out += [f"  {p:<{name_w}}  {human_size(n):>10}" for p, n in files] or ["  (none)"]
    return out


def _bundles(root: str) -> list:
    try:
        return list_bundles(root)
    except FileNotFoundError:
        raise UsageError(f"no incident directory {root}",
                         f"pass --dir with the directory brtrace watch writes to (default {DEFAULT_ROOT})") from None
    except NotADirectoryError:
        raise UsageError(f"{root} is not a directory", "pass --dir with the incident directory") from None
    except PermissionError:
        raise UsageError(f"cannot read {root}: permission denied",
                         "run as root (bundles are private: they hold MACs and IPs)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {root}: {exc.strerror or exc}",
                         "pass --dir with the incident directory") from None


def _find(root: str, ident: str) -> dict:
    """The bundle named ident, or the only one whose name starts with it."""
    bundles = _bundles(root)
    ident = ident.rstrip("/")
    exact = [b for b in bundles if os.path.basename(b["path"]) == ident]
    found = exact or [b for b in bundles if os.path.basename(b["path"]).startswith(ident)]
    if len(found) == 1:
        return read_bundle(root, os.path.basename(found[0]["path"]))
    if not found:
        raise UsageError(f"no incident {ident!r} in {root}", f"list them with `brtrace incidents --dir {root}`")
    raise UsageError(f"{ident!r} matches {len(found)} incidents in {root}", "give more of the ID")


def run_incidents(root: str, as_json: bool, out=None, width: int = 80) -> int:
    out = out or sys.stdout
    bundles = _bundles(root)
    if as_json:
        for b in bundles:
            jsonl.emit({"kind": "incident", **{k: b.get(k) for k in LIST_FIELDS if k in b}}, out)
    else:
        print("\n".join(list_lines(bundles, width)), file=out)
    out.flush()
    return 0


def run_incident_show(root: str, ident: str, as_json: bool, out=None, width: int = 80) -> int:
    out = out or sys.stdout
    rec = _find(root, ident)
    files = bundle_files(rec["path"])
    if as_json:
        jsonl.emit({"kind": "incident", **rec, "files": [{"path": p, "bytes": n} for p, n in files]}, out)
    else:
        print("\n".join(show_lines(rec, files, width)), file=out)
    out.flush()
    if rec.get("error"):
        raise BrtraceError(f"incident {rec['id']} is broken ({rec['error']})",
                           f"its files are in {rec['path']}")
    return 0
