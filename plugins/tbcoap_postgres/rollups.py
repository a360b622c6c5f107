"""Rollups of the PostgreSQL store (see tbcoap.rollupkit): ``ts_kv_rollup`` holds one row per
series, resolution and bucket; ``series.rolled`` is each series' watermark (a day start, NULL while
the series has no history) and ``ts_kv_dirty`` its dirty days.  Saves only move a watermark back
(in the series statements they run anyway); the rollup pass (``rollup_telemetry``, a writer job
driven by the retention service) rolls whole days behind it, holding the device's row so that no
save of another node is half-way through those days; deletes and expiry drop the rows of days
left empty and mark the days they cut into dirty.
"""

from __future__ import annotations

from twisted.internet import defer

import psycopg
from psycopg import sql as pgsql

from tbcoap.errors import BadRequest
from tbcoap.rollupkit import DAY, FIRST_DAY, RESOLUTIONS, ceil_day, floor_day, merge, plan
from tbcoap.storekit import check

from . import partitions

_FINEST = RESOLUTIONS[-1]


def floor_sql(column, res):
    """SQL for the start of ``column``'s bucket of ``res`` ms (never below FIRST_DAY for days)."""
    return (f"(CASE WHEN {column} < {FIRST_DAY} THEN {FIRST_DAY} ELSE {column} - mod({column}, {res})"
            f" - CASE WHEN mod({column}, {res}) < 0 THEN {res} ELSE 0 END END)")


_RAW_STATE = "count(*), count(l), count(d), sum(l), sum(d), min(l), max(l), min(d), max(d)"
_ROW_STATE = "sum(n), sum(nl), sum(nd), sum(sl), sum(sd), min(minl), max(maxl), min(mind), max(maxd)"
_INSERT = "INSERT INTO ts_kv_rollup (series, res, bucket, n, nl, nd, sl, sd, minl, maxl, mind, maxd)"
_ROLL_RAW = (f"{_INSERT} SELECT series, {_FINEST}, {floor_sql('ts', _FINEST)} AS bk, {_RAW_STATE} FROM ts_kv"
             " WHERE series = %s AND ts >= %s AND ts < %s GROUP BY series, bk")
_ROLL_ROWS = (f"{_INSERT} SELECT series, %s, bucket - mod(bucket, %s) - CASE WHEN mod(bucket, %s) < 0 THEN %s ELSE 0 END"
              f" AS bk, {_ROW_STATE} FROM ts_kv_rollup WHERE series = %s AND res = %s AND bucket >= %s AND bucket < %s"
              " GROUP BY series, bk")
# one index range per row of r: the subqueries are fenced (OFFSET 0) so the planner cannot turn them
# into a join filtering the whole series; raw ranges read one month's partition at a time (through
# the parent, every range would pay for the partitions' pruning again)
_READ_RAW = (f"SELECT (t.ts - %s) / %s AS k, {_RAW_STATE} FROM unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
             " CROSS JOIN LATERAL (SELECT ts, l, d FROM {table} WHERE series = %s AND ts >= r.lo AND ts < r.hi"
             " OFFSET 0) t GROUP BY k")
_READ_ROWS = (f"SELECT (t.bucket - %s) / %s AS k, {_ROW_STATE} FROM unnest(%s::bigint[], %s::bigint[]) AS r(lo, hi)"
              " CROSS JOIN LATERAL (SELECT * FROM ts_kv_rollup WHERE series = %s AND res = %s AND bucket >= r.lo"
              " AND bucket < r.hi OFFSET 0) t GROUP BY k")


def roll(conn, series, lo, hi):
    """Recompute the rows of the days ``[lo, hi)`` of a series from its points; the points read."""
    conn.execute("DELETE FROM ts_kv_rollup WHERE series = %s AND res = ANY(%s) AND bucket >= %s AND bucket < %s",
                 (series, list(RESOLUTIONS), lo, hi))
    conn.execute(_ROLL_RAW, (series, lo, hi))
    finer = _FINEST
    for res in reversed(RESOLUTIONS[:-1]):
        conn.execute(_ROLL_ROWS, (res, res, res, res, series, finer, lo, hi))
        finer = res
    row = conn.execute("SELECT coalesce(sum(n), 0) FROM ts_kv_rollup WHERE series = %s AND res = %s AND bucket >= %s"
                       " AND bucket < %s", (series, DAY, lo, hi)).fetchone()
    return int(row[0])


def mark_dirty(conn, series, days):
    """The days (day starts) below the series' watermark whose points changed become dirty."""
    row = conn.execute("SELECT rolled FROM series WHERE id = %s", (series,)).fetchone()
    days = [day for day in days if row is not None and row[0] is not None and day < row[0]]
    if days:
        conn.execute("INSERT INTO ts_kv_dirty (series, day) SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
                     (series, days))


def deleted_range(conn, series, start_ts, end_ts):
    """``[start_ts, end_ts)`` of a series was deleted: the days inside lose their rows, the two it
    cuts into become dirty."""
    inside = (ceil_day(start_ts), floor_day(end_ts))
    if inside[0] < inside[1]:
        conn.execute("DELETE FROM ts_kv_rollup WHERE series = %s AND res = ANY(%s) AND bucket >= %s AND bucket < %s",
                     (series, list(RESOLUTIONS), *inside))
        conn.execute("DELETE FROM ts_kv_dirty WHERE series = %s AND day >= %s AND day < %s", (series, *inside))
    mark_dirty(conn, series, {floor_day(t) for t in (start_ts, end_ts) if t % DAY})


def expired_below(conn, series, left):
    """Retention deleted a series' points before ``left`` (None: all of them; the series has no
    watermark then)."""
    if left is None:
        conn.execute("DELETE FROM ts_kv_rollup WHERE series = %s", (series,))
        conn.execute("DELETE FROM ts_kv_dirty WHERE series = %s", (series,))
        conn.execute("UPDATE series SET rolled = NULL WHERE id = %s", (series,))
        return
    deleted_range(conn, series, FIRST_DAY, left)


def points_gone(conn, points):
    """Points ``(series, ts)`` were deleted one by one (their time to live ended)."""
    days = {}
    for series, ts in points:
        days.setdefault(series, set()).add(floor_day(ts))
    for series, found in days.items():
        mark_dirty(conn, series, found)


def month_dropped(conn, end):
    """A partition of the history was dropped whole: every point before ``end`` (a day start) is gone."""
    conn.execute("DELETE FROM ts_kv_rollup WHERE bucket < %s", (end,))
    conn.execute("DELETE FROM ts_kv_dirty WHERE day < %s", (end,))


def _states(rows):
    """Rows of PostgreSQL's sums (numeric: Decimal) as plain ints."""
    for k, n, nl, nd, sl, sd, *extremes in rows:
        yield k, int(n), int(nl), int(nd), None if sl is None else int(sl), sd, *extremes


def aggregate(conn, series, start_ts, end_ts, interval):
    """``{k: state}`` of one series from rollups and raw points; None while it has no watermark."""
    row = conn.execute("SELECT rolled FROM series WHERE id = %s", (series,)).fetchone()
    if row is None or row[0] is None:
        return None
    dirty = [d for (d,) in conn.execute("SELECT day FROM ts_kv_dirty WHERE series = %s AND day >= %s AND day < %s",
                                        (series, floor_day(start_ts), end_ts))]
    raw, rows = plan(start_ts, end_ts, interval, row[0], dirty)
    states = {}
    for res, ranges in rows.items():
        found = conn.execute(_READ_ROWS, (start_ts, interval, [r[0] for r in ranges], [r[1] for r in ranges], series,
                                          res))
        merge(states, _states(found))
    if raw:
        months = partitions.existing(conn)
        for month, ranges in _by_month(raw).items():
            if month is not None and month not in months:
                continue  # no partition: no points
            table = "ts_kv" if month is None else partitions.name(month)
            query = pgsql.SQL(_READ_RAW.replace("{table}", "{}")).format(pgsql.Identifier(table))
            try:
                with conn.transaction():  # (a savepoint: retention may have dropped the month since)
                    found = conn.execute(query, (start_ts, interval, [r[0] for r in ranges], [r[1] for r in ranges],
                                                 series)).fetchall()
            except psycopg.errors.UndefinedTable:
                continue
            merge(states, _states(found))
    return states


def _by_month(ranges):
    """``{month or None: [(lo, hi)]}``: the ranges cut at month starts (None: outside 1970 .. 2099)."""
    out = {}
    for lo, hi in ranges:
        while lo < hi:
            month = partitions.month_of(lo)
            end = hi if month is None else min(hi, partitions.bounds(month)[1])
            if month is None and lo < 0:
                end = min(hi, 0)
            out.setdefault(month, []).append((lo, end))
            lo = end
    return out


def _pass(conn, upper, limit):
    done = visited = 0
    for series, day in conn.execute("SELECT series, day FROM ts_kv_dirty LIMIT %s", (limit,)).fetchall():
        if done >= limit:
            break
        visited += 1
        done += roll(conn, series, day, day + DAY)
        conn.execute("DELETE FROM ts_kv_dirty WHERE series = %s AND day = %s", (series, day))
    while done < limit and visited < limit:
        row = conn.execute("SELECT id, device_id FROM series WHERE rolled < %s ORDER BY rolled LIMIT 1",
                           (upper,)).fetchone()
        if row is None:
            break
        series, device_id = row
        visited += 1
        # the device's row first (a save holds it FOR KEY SHARE until it commits: no save of another
        # node is half-way through these days), then the watermark as it is now
        conn.execute("SELECT 1 FROM devices WHERE id = %s FOR UPDATE", (device_id,))
        row = conn.execute("SELECT rolled FROM series WHERE id = %s FOR UPDATE", (series,)).fetchone()
        if row is None or row[0] is None or row[0] >= upper:
            continue
        rolled = row[0]
        bound = conn.execute("SELECT ts FROM ts_kv WHERE series = %s AND ts >= %s AND ts < %s ORDER BY ts"
                             " LIMIT 1 OFFSET %s", (series, rolled, upper, limit - done)).fetchone()
        high = upper if bound is None else max(rolled + DAY, floor_day(bound[0]))
        done += roll(conn, series, rolled, high)
        conn.execute("DELETE FROM ts_kv_dirty WHERE series = %s AND day >= %s AND day < %s", (series, rolled, high))
        conn.execute("UPDATE series SET rolled = %s WHERE id = %s", (high, series))
    return done, done >= limit or visited >= limit


class RollupMixin:
    """The rollup pass of PostgresStore (``run_write`` is its)."""

    def rollup_telemetry(self, now, limit):
        try:
            check(isinstance(now, int) and isinstance(limit, int) and limit >= 1,
                  "now and limit must be integers (limit >= 1)")
        except BadRequest as exc:
            return defer.fail(exc)
        return self.run_write(lambda conn: _pass(conn, floor_day(now), limit))
