"""Plain-text tables for drop rows, within a given width (80 by default). Pure."""

from __future__ import annotations

import textwrap

from tabulate import tabulate


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "~"


def drops_table(rows: list, width: int = 80, rates: bool = True) -> list[str]:
    """A table of drop rows (most first) plus numbered explanations beneath.

    Columns: port, reason, location (function+offset), proto, count, rate.
    Long names are cut with '~' so that the table never exceeds `width`.
    """
    if not rows:
        return ["no drops on the bridge or its ports"]
    # Fixed columns take ~34 characters with separators; the rest is shared by
    # reason and location, which carry the most text.
    flexible = max(20, width - 36)
    reason_w, loc_w = flexible * 2 // 5, flexible - flexible * 2 // 5
    notes: list[str] = []
    body = []
    for row in rows:
        mark = ""
        if row.explanation:
            if row.explanation not in notes:
                notes.append(row.explanation)
            mark = f"[{notes.index(row.explanation) + 1}]"
        line = [_cut(row.port, 10), _cut(row.reason, reason_w - len(mark)) + mark,
                _cut(row.location, loc_w), _cut(row.proto, 5), row.count]
        if rates:
            line.append(f"{row.rate:.1f}")
        body.append(line)
    headers = ["PORT", "REASON", "LOCATION", "PROTO", "COUNT"] + (["/s"] if rates else [])
    out = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True,
                   colalign=("left", "left", "left", "left", "right") + (("right",) if rates else ())
                   ).splitlines()
    for i, note in enumerate(notes, 1):
        out.extend(textwrap.wrap(f"[{i}] {note}", width=width, subsequent_indent="    "))
    return out
