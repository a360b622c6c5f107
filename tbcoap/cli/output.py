"""Readable output: times, values, aligned tables and ``key: value`` blocks."""

from __future__ import annotations

import json
from datetime import datetime, timezone


def iso(ms) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC (``2024-01-02T03:04:05.678Z``)."""
    if not isinstance(ms, (int, float)):
        return "-"
    try:
        when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):  # beyond what a calendar date can show
        return str(ms)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(value) -> str:
    """A value for people: strings as they are, None as ``-``, anything else as JSON."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def table(headers, rows) -> str:
    """Rows as columns aligned under upper-case headers (the last column unpadded)."""
    cells = [[str(h).upper() for h in headers]] + [[text(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + ("  " if len(row) > 1 else "") + row[-1]
             for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs) -> str:
    """``(label, value)`` pairs as aligned ``label: value`` lines."""
    width = max(len(label) for label, _ in pairs) + 1
    return "\n".join(f"{label + ':':<{width}} {text(value)}" for label, value in pairs)


def page_text(page, number, headers, rows, singular, plural) -> str:
    """Rows of a page as a table, with where the page is in the whole list when there is more than one."""
    total, pages = page.get("totalElements", len(rows)), page.get("totalPages", 1)
    lines = [table(headers, rows)] if rows else [f"no {plural} on this page"]
    if pages > 1 or number > 0:
        more = f"; next: --page {number + 1}" if page.get("hasNext") else ""
        noun = singular if total == 1 else plural
        lines.append(f"page {number + 1} of {pages} (--page {number}), {total} {noun} in all{more}")
    return "\n".join(lines)
