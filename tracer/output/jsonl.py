"""JSON output: one object per line, flushed per record (so tests and pipes
see records as they happen)."""

from __future__ import annotations

import json
import sys


def emit(record: dict, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(record, sort_keys=False, default=str) + "\n")
    stream.flush()
