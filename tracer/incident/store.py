"""The incident bundle directory: one directory per incident, capped in
number, total size and rate, never raising on a disk that fails.

    ROOT/<UTC YYYYmmddTHHMMSSZ>-<bridge>-<type>/   (0700; files 0600: MACs, IPs)
        incident.json      replaced atomically at open, on every change, at close
        timeline.jsonl     ... whatever the daemon writes through a Bundle

Why it never raises: the daemon records incidents for hours, unattended, on a
host whose disk may fill or go read-only (the very morning an incident is
worth recording). A failed write is counted (`write_errors`, `last_error`),
logged at most once a minute per cause, and the next write tries again, so a
disk with space again works again. An unusable root is the same: open()
returns None until it works.

Rotation removes whole directories, oldest first (names sort by time), only
names that look like ours, never a bundle still open.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections import deque
from datetime import datetime, timezone
from typing import Callable, Optional

DEFAULT_ROOT = "/var/lib/brtrace/incidents"
MIB = 1 << 20
INCIDENT_FILE = "incident.json"
# One line per failure cause at most this often (seconds).
LOG_EVERY = 60.0
# History entries kept in incident.json; a finding set that changes every
# second for hours would otherwise grow it without end.
MAX_HISTORY = 500
# <UTC time>-<bridge>-<type>[-N]: N when two incidents of a bridge and type
# open within the same second.
BUNDLE_NAME = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9_.-]+-[a-z0-9_]+(?:-\d+)?$")

HINTS = {
    errno.ENOSPC: "free space on that filesystem or lower the incident size caps",
    errno.EDQUOT: "raise the quota or lower the incident size caps",
    errno.EROFS: "the filesystem is read-only: choose an incident directory on a writable one",
    errno.EACCES: "brtrace watch must run as root, or own that directory",
    errno.EPERM: "brtrace watch must run as root, or own that directory",
    errno.ENOENT: "the directory was removed while in use: it is created again on the next write",
    errno.ENOTDIR: "a file stands where the directory should be: move it or choose another directory",
    errno.EEXIST: "a file stands where the directory should be: move it or choose another directory",
}


def iso(t: float) -> str:
    """Wall-clock seconds -> ISO-8601 UTC with milliseconds."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _safe(name: str) -> str:
    """A bridge or type name as one path component of ours."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def looks_like_bundle(root: str, name: str) -> bool:
    """A directory of ours by name, not a symlink: the only kind rotation removes."""
    path = os.path.join(root, name)
    return bool(BUNDLE_NAME.match(name)) and os.path.isdir(path) and not os.path.islink(path)


def tree_size(path: str) -> int:
    """Bytes in the files under path (what the caps count); unreadable parts count 0."""
    total = 0
    for top, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except OSError:
                pass
    return total


def bundle_files(path: str) -> list:
    """(relative path, bytes) of every file in a bundle, sorted."""
    out = []
    for top, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(top, f)
            try:
                out.append((os.path.relpath(full, path), os.lstat(full).st_size))
            except OSError:
                pass
    return out


def read_bundle(root: str, name: str) -> dict:
    """One bundle: its incident.json plus `path`, `size`; a bundle whose
    incident.json is missing or broken comes back with `state` "broken" and
    `error`. FileNotFoundError when there is no bundle of that name."""
    if not looks_like_bundle(root, name):
        raise FileNotFoundError(errno.ENOENT, "no such incident", os.path.join(root, name))
    path = os.path.join(root, name)
    meta = {"path": path, "size": tree_size(path)}
    try:
        with open(os.path.join(path, INCIDENT_FILE), encoding="utf-8") as f:
            rec = json.load(f)
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return {"id": name, "state": "broken", "error": f"{INCIDENT_FILE}: {why}", **meta}
    return {**rec, "id": rec.get("id") or name, **meta}


def list_bundles(root: str) -> list:
    """Every bundle under root, oldest first (read_bundle() each). OSError
    when root itself cannot be listed; a bundle rotated away meanwhile is
    left out."""
    out = []
    for name in sorted(os.listdir(root)):
        try:
            out.append(read_bundle(root, name))
        except FileNotFoundError:
            continue
    return out


def _make_dirs(path: str) -> None:
    """mkdir -p where every directory made is 0700 (os.makedirs gives the
    parents it makes the umask's mode, not 0700)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent and parent != path:
        _make_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory", path) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Store:
    """The incident directory. See the module docstring for what it promises."""

    def __init__(self, root: str = DEFAULT_ROOT, max_bundles: int = 50, max_total_bytes: int = 512 * MIB,
                 max_per_hour: int = 6, bundle_max_bytes: int = 64 * MIB,
                 log: Optional[Callable[[str], None]] = None):
        self.root = os.fspath(root)
        self.max_bundles = max_bundles
        self.max_total_bytes = max_total_bytes
        self.max_per_hour = max_per_hour
        self.bundle_max_bytes = bundle_max_bytes
        self.log = log or (lambda _line: None)
        self.suppressed = 0          # incidents not recorded: per-hour limit
        self.write_errors = 0
        self.last_error: Optional[str] = None
        self.removed = 0             # bundles rotated away
        self._opened: deque = deque()  # wall times of this hour's opens
        self._open: dict = {}        # id -> Bundle still open
        self._logged: dict = {}      # failure cause -> monotonic time last logged
        self._sizes: dict = {}       # closed bundle name -> its size (a closed bundle no longer grows)
        self._ensure_root()

    def limits(self) -> dict:
        return {"max_bundles": self.max_bundles, "max_total_bytes": self.max_total_bytes,
                "max_per_hour": self.max_per_hour, "bundle_max_bytes": self.bundle_max_bytes}

    # -- failures ---------------------------------------------------------------
    def failed(self, what: str, path: str, exc: OSError) -> None:
        """Count a failed operation; one log line per (operation, errno) a minute."""
        self.write_errors += 1
        why = exc.strerror or str(exc)
        self.last_error = f"{what} {path}: {why}"
        key = (what, exc.errno)
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY) >= LOG_EVERY:
            self._logged[key] = now
            hint = HINTS.get(exc.errno, "")
            self.log(f"incident store: cannot {what} {path}: {why}" + (f"; {hint}" if hint else "")
                     + f" ({self.write_errors} failed writes so far; retried on the next write)")

    def _ensure_root(self) -> bool:
        try:
            _make_dirs(self.root)
            return True
        except OSError as exc:
            self.failed("create", self.root, exc)
            return False

    # -- bundles ----------------------------------------------------------------
    def open(self, bridge: str, netns: Optional[str], kind: str, ports: list, now: Optional[float] = None,
             trigger: Optional[dict] = None) -> Optional["Bundle"]:
        """A new bundle with incident.json written (state "open"), or None: the
        per-hour limit was hit (counted in `suppressed`) or the disk refused."""
        now = time.time() if now is None else now
        while self._opened and self._opened[0] <= now - 3600:
            self._opened.popleft()
        if len(self._opened) >= self.max_per_hour:
            self.suppressed += 1
            self.log(f"incident {kind} on {bridge} not recorded: {self.max_per_hour} bundles opened in "
                     f"the last hour already ({self.suppressed} suppressed so far); the limit keeps a "
                     "flapping fault from filling the disk")
            return None
        if not self._ensure_root():
            return None
        self.prune(reserve=1)
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        # The type is lower case with underscores (l2_loop), as BUNDLE_NAME expects.
        base = f"{stamp}-{_safe(bridge)}-{re.sub(r'[^a-z0-9_]', '_', kind.lower()) or '_'}"
        for n in range(1, 100):
            name = base if n == 1 else f"{base}-{n}"
            path = os.path.join(self.root, name)
            try:
                os.mkdir(path, 0o700)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                self.failed("create", path, exc)
                return None
        else:
            return None
        self._opened.append(now)
        bundle = Bundle(self, name, bridge, netns, kind, ports, now, trigger)
        self._open[name] = bundle
        bundle.save()
        return bundle

    def _closed(self, bundle: "Bundle") -> None:
        self._open.pop(bundle.id, None)
        self.prune()

    def open_bundles(self) -> list:
        return list(self._open.values())

    def prune(self, reserve: int = 0) -> int:
        """Remove the oldest closed bundles of ours until there are at most
        max_bundles - reserve and their total size is within max_total_bytes.
        Returns how many were removed."""
        try:
            names = sorted(n for n in os.listdir(self.root) if looks_like_bundle(self.root, n))
        except OSError as exc:
            self.failed("list", self.root, exc)
            return 0
        sizes = {n: tree_size(os.path.join(self.root, n)) for n in names}
        count, total = len(names), sum(sizes.values())
        removed = 0
        for name in names:
            if count + reserve <= self.max_bundles and total <= self.max_total_bytes:
                break
            if name in self._open:
                continue
            path = os.path.join(self.root, name)
            try:
                shutil.rmtree(path)
            except OSError as exc:
                self.failed("remove", path, exc)
                continue
            count, total, removed = count - 1, total - sizes[name], removed + 1
        if removed:
            self.removed += removed
            self.log(f"incident store: removed the {removed} oldest bundle(s) in {self.root} to stay within "
                     f"{self.max_bundles} bundles and {self.max_total_bytes // MIB} MiB")
        return removed

    def usage(self) -> dict:
        """{"bundles": count, "bytes": total} under root, for every metrics
        scrape: one listing of root; open bundles are sized each time, closed
        ones once (list() would read every incident.json and walk every tree
        per scrape)."""
        try:
            names = [n for n in os.listdir(self.root) if looks_like_bundle(self.root, n)]
        except OSError as exc:
            self.failed("list", self.root, exc)
            return {"bundles": 0, "bytes": 0}
        total, sizes = 0, {}
        for name in names:
            if name in self._open:
                total += self._open[name].size()
                continue
            size = self._sizes.get(name)
            if size is None:
                size = tree_size(os.path.join(self.root, name))
            sizes[name] = size
            total += size
        self._sizes = sizes          # bundles rotated away are forgotten
        return {"bundles": len(names), "bytes": total}

    def list(self) -> list:
        """Every bundle, oldest first, for `brtrace incidents`; [] when the root
        cannot be read (counted as a failure)."""
        try:
            return list_bundles(self.root)
        except OSError as exc:
            self.failed("list", self.root, exc)
            return []


class Bundle:
    """One incident's directory. Every method returns instead of raising on
    OSError (the store counts and logs it). `record` is incident.json."""

    def __init__(self, store: Store, name: str, bridge: str, netns: Optional[str], kind: str, ports: list,
                 opened_at: float, trigger: Optional[dict]):
        self.store = store
        self.id = name
        self.path = os.path.join(store.root, name)
        self.truncated: set = set()   # files whose appends hit bundle_max_bytes
        self._shape = None            # what set_findings() compares
        self.record = {
            "id": name, "bridge": bridge, "netns": netns, "type": kind, "ports": list(ports),
            "state": "open", "opened_at": iso(opened_at), "closed_at": None, "trigger": dict(trigger or {}),
            "verdict": None, "findings": [], "history": [], "capture": {}, "on_incident": [],
            "limits": store.limits(),
        }

    @property
    def closed(self) -> bool:
        return self.record["state"] == "closed"

    # -- incident.json ----------------------------------------------------------
    def save(self) -> bool:
        return self.write_json(INCIDENT_FILE, self.record)

    def update(self, **fields) -> bool:
        """Set top-level fields of incident.json (trigger, verdict, capture,
        on_incident, ...) and write it."""
        self.record.update(fields)
        return self.save()

    def set_findings(self, findings: list, now: Optional[float] = None) -> bool:
        """The latest findings (dicts as brtrace's JSON gives them). incident.json
        is written, and a history entry added, only when the set changed: a
        finding came or went, or its severity, activity or verdict changed.
        Evidence numbers move every second; they are kept in memory and land
        in the file with the next change or at close. Returns whether it changed."""
        shape = [(f.get("type"), tuple(f.get("ports") or ()), f.get("severity"), f.get("active"),
                  (f.get("evidence") or {}).get("kind"), tuple(f.get("culprit_ports") or ()))
                 for f in findings]
        self.record["findings"] = list(findings)
        if shape == self._shape:
            return False
        self._shape = shape
        history = self.record["history"]
        history.append({"at": iso(time.time() if now is None else now), "findings": list(findings)})
        if len(history) > MAX_HISTORY:
            del history[0]
            self.record["limits"]["history_dropped"] = self.record["limits"].get("history_dropped", 0) + 1
        self.save()
        return True

    def close(self, now: Optional[float] = None) -> bool:
        """State "closed", closed_at, incident.json written; the bundle may be
        rotated away from now on. Closing twice does nothing."""
        if self.closed:
            return True
        self.record.update(state="closed", closed_at=iso(time.time() if now is None else now))
        if self.truncated:
            self.record["limits"]["truncated_files"] = sorted(self.truncated)
        ok = self.save()
        self.store._closed(self)
        return ok

    # -- files --------------------------------------------------------------------
    def _file(self, relpath: str) -> str:
        """The path of a file of the bundle, its directory made (again, if
        someone removed it). ValueError for a path leaving the bundle."""
        norm = os.path.normpath(relpath)
        if os.path.isabs(norm) or norm.startswith(".."):
            raise ValueError(f"{relpath!r} is not a path inside the bundle")
        full = os.path.join(self.path, norm)
        _make_dirs(os.path.dirname(full))
        return full

    def write_json(self, relpath: str, obj) -> bool:
        """Replace relpath with obj as JSON, atomically (temp file, fsync,
        rename): a reader or a crash sees the old file or the new one."""
        data = (json.dumps(obj, indent=1, default=str) + "\n").encode()
        full, tmp = os.path.join(self.path, relpath), None
        try:
            full = self._file(relpath)
            tmp = os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.tmp")
            try:
                os.unlink(tmp)   # a stale one from a crash: O_EXCL below keeps our mode
            except FileNotFoundError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, full)
            return True
        except OSError as exc:
            self.store.failed("write", full, exc)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return False

    def append_lines(self, relpath: str, lines) -> bool:
        """Append lines (str, or dicts written as JSON) to relpath. Lines
        beyond room() are left out and the file is marked truncated; a write
        that fails half-way is cut back to whole lines."""
        data = b"".join((ln if isinstance(ln, str) else json.dumps(ln, default=str)).encode() + b"\n"
                        for ln in lines)
        if not data:
            return True
        room = self.room()
        if len(data) > room:
            fit = data[:room]
            data = fit[:fit.rfind(b"\n") + 1]
            if relpath not in self.truncated:
                self.truncated.add(relpath)
                self.store.log(f"incident {self.id}: {relpath} stopped growing at the bundle's cap of "
                               f"{self.store.bundle_max_bytes // MIB} MiB")
            if not data:
                return False
        fd, full = self._open_private(relpath, os.O_APPEND, "write")
        if fd is None:
            return False
        try:
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
            except OSError as exc:
                self.store.failed("write", full, exc)
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    pass
                return False
        except OSError as exc:
            self.store.failed("write", full, exc)
            return False
        finally:
            os.close(fd)
        return relpath not in self.truncated

    def open_binary(self, relpath: str):
        """relpath opened for writing (0600, truncated, unbuffered: each
        write() is one system call, so a capture writing whole blocks leaves
        whole blocks when killed). None when it cannot be created."""
        fd, _full = self._open_private(relpath, os.O_TRUNC, "create")
        return None if fd is None else os.fdopen(fd, "wb", buffering=0)

    def _open_private(self, relpath: str, flags: int, what: str) -> tuple:
        """(fd, path) of relpath opened for writing, created 0600, with
        `flags` (O_APPEND, O_TRUNC); (None, path) when it fails (counted)."""
        full = os.path.join(self.path, relpath)
        try:
            full = self._file(relpath)
            return os.open(full, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, 0o600), full
        except OSError as exc:
            self.store.failed(what, full, exc)
            return None, full

    def failed(self, what: str, exc: OSError) -> None:
        """For writers the bundle handed a file to (capture, command log)."""
        self.store.failed(what, self.path, exc)

    def size(self) -> int:
        return tree_size(self.path)

    def room(self) -> int:
        """Bytes left under bundle_max_bytes."""
        return max(0, self.store.bundle_max_bytes - self.size())
