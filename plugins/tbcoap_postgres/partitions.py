"""Time partitions of the history table ``ts_kv``: one a calendar month (UTC), made when needed.

A month's partition is made (``CREATE TABLE`` then ``ATTACH PARTITION``, which does not stop
readers or writers of the other partitions) before the first point of that month is written, in
a transaction of its own under an advisory lock, so nodes never race.  Points before 1970 go to
``ts_kv_before`` and points from 2100 on to ``ts_kv_after``: a device cannot make more than the
1,560 monthly partitions in between.  Retention drops a month whose every point has expired
(``DETACH PARTITION ... CONCURRENTLY``: readers and writers go on) and trims the rest row by row.
"""

from __future__ import annotations

import calendar
import re
import zlib
from datetime import datetime, timezone

HORIZON_YEAR = 2100  # months up to the end of 2099 get partitions of their own
_NAME = re.compile(r"ts_kv_(\d{4})(\d{2})")
_LOCK = zlib.crc32(b"tbcoap-partitions")


def month_of(ts):
    """``(year, month)`` of a timestamp (ms), or None outside 1970 .. 2099."""
    if ts < 0 or ts >= month_start(HORIZON_YEAR, 1):
        return None
    moment = datetime.fromtimestamp(ts // 1000, tz=timezone.utc)
    return moment.year, moment.month


def month_start(year, month):
    """The first ms of a month (UTC)."""
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def next_month(year, month):
    return (year + 1, 1) if month == 12 else (year, month + 1)


def bounds(month):
    """``(start, end)`` ms of a month: start included, end excluded."""
    return month_start(*month), month_start(*next_month(*month))


def name(month):
    year, number = month
    return f"ts_kv_{year:04d}{number:02d}"


def months_of(timestamps):
    """The months (with partitions of their own) that ``timestamps`` fall in."""
    out = set()
    last = None
    for ts in timestamps:
        if last is not None and last[0] <= ts < last[1]:
            continue  # most points of a batch fall in one month
        month = month_of(ts)
        if month is not None:
            out.add(month)
            last = bounds(month)
    return out


def create_fixed(conn):
    """Migration step: the partitions before 1970 and from 2100 on."""
    horizon = month_start(HORIZON_YEAR, 1)
    conn.execute("CREATE TABLE ts_kv_before PARTITION OF ts_kv FOR VALUES FROM (MINVALUE) TO (0)")
    conn.execute(f"CREATE TABLE ts_kv_after PARTITION OF ts_kv FOR VALUES FROM ({horizon}) TO (MAXVALUE)")


def existing(conn):
    """The months that have partitions now."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'ts_kv'::regclass").fetchall()
    out = set()
    for (relname,) in rows:
        match = _NAME.fullmatch(relname)
        if match:
            out.add((int(match.group(1)), int(match.group(2))))
    return out


def create(conn, month):
    """Make the month's partition unless it exists; ``conn`` is outside a transaction."""
    start, end = bounds(month)
    table = name(month)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
            return
        # made apart and attached: ATTACH takes a lock that readers and writers of ts_kv do not wait for
        conn.execute(f"CREATE TABLE {table} (LIKE ts_kv INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_range CHECK (ts >= {start} AND ts < {end})")
        conn.execute(f"ALTER TABLE ts_kv ATTACH PARTITION {table} FOR VALUES FROM ({start}) TO ({end})")
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_range")


def expired(months, older_than):
    """The months whose every point is older than ``older_than``, oldest first."""
    return sorted(m for m in months if bounds(m)[1] <= older_than)


def drop(conn, month):
    """Detach (concurrently) and drop a month's partition; ``conn`` in autocommit mode.  Fires the
    number of rows it held (the planner's estimate for a large one).  Another node dropping it at
    the same time is no error."""
    table = name(month)
    if conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK + 1,)).fetchone()[0] is False:
        return 0
    try:
        row = conn.execute("SELECT c.reltuples, i.inhdetachpending FROM pg_class c"
                           " JOIN pg_inherits i ON i.inhrelid = c.oid"
                           " WHERE c.oid = to_regclass(%s) AND i.inhparent = 'ts_kv'::regclass", (table,)).fetchone()
        if row is None:
            return 0
        estimate, pending = row
        rows = int(estimate) if estimate > 100_000 else conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if pending:  # a detach that was interrupted
            conn.execute(f"ALTER TABLE ts_kv DETACH PARTITION {table} FINALIZE")
        else:
            conn.execute(f"ALTER TABLE ts_kv DETACH PARTITION {table} CONCURRENTLY")
        conn.execute(f"DROP TABLE {table}")
        return rows
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK + 1,))
