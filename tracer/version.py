"""brtrace's version, from one place: pyproject.toml's `version`.

A checkout reads it from pyproject.toml beside `tracer/`; an installed copy
(pip, or the Debian package, which ships a `brtrace.dist-info` beside
`tracer/` with that version in it) from its package metadata. A leaf.
"""

from __future__ import annotations

import re
from pathlib import Path

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def from_pyproject(text: str) -> str | None:
    """The `version` of pyproject's [project] table (no tomllib before 3.11)."""
    m = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    v = m and re.search(r'^version\s*=\s*"([^"]+)"\s*$', m.group(1), re.M)
    return v.group(1) if v else None


def version() -> str:
    try:
        found = from_pyproject(_PYPROJECT.read_text())
    except OSError:
        found = None
    if found:
        return found
    try:
        from importlib.metadata import PackageNotFoundError  # noqa: PLC0415 - only outside a checkout
        from importlib.metadata import version as dist_version  # noqa: PLC0415 - only outside a checkout
        return dist_version("brtrace")
    except PackageNotFoundError:
        return "unknown"


VERSION = version()
