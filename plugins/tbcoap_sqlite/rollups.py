"""Rollups of the SQLite store (see tbcoap.rollupkit): ``ts_kv_rollup`` holds one row per series,
resolution and bucket; ``ts_kv_series.rolled`` is each series' watermark (a day start) and
``ts_kv_dirty`` its dirty days.  Saves only move a watermark back (in the series upsert they run
anyway); the rollup pass (``rollup_telemetry``, a writer job driven by the retention service)
rolls whole days behind it; deletes and expiry delete the rows of days left empty and mark the
days they cut into dirty.
"""

from __future__ import annotations

import json
import sqlite3

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.rollupkit import DAY, FIRST_DAY, RESOLUTIONS, ceil_day, floor_day, merge, plan, sums_fit
from tbcoap.storekit import check

_FINEST = RESOLUTIONS[-1]
_STATE = "count(*), {nl}, {nd}, sum({l}), sum({d}), min({l}), max({l}), min({d}), max({d})"
_RAW_STATE = _STATE.format(nl="sum(t.kind = 'LONG')", nd="sum(t.kind = 'DOUBLE')",
                           l="CASE t.kind WHEN 'LONG' THEN t.value END", d="CASE t.kind WHEN 'DOUBLE' THEN t.value END")
_ROW_STATE = "sum(n), sum(nl), sum(nd), sum(sl), sum(sd), min(minl), max(maxl), min(mind), max(maxd)"
_INSERT = ("INSERT INTO ts_kv_rollup (device_id, key, res, bucket, n, nl, nd, sl, sd, minl, maxl, mind, maxd)")
# the finest rows from the raw points of [lo, hi), each coarser resolution from the one below it
_ROLL_RAW = (f"{_INSERT} SELECT device_id, key, ?, ts - ((ts % ?) + ?) % ? AS b, {_RAW_STATE} FROM ts_kv AS t"
             " WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ? GROUP BY b")
_ROLL_ROWS = (f"{_INSERT} SELECT device_id, key, ?, bucket - ((bucket % ?) + ?) % ? AS b, {_ROW_STATE}"
              " FROM ts_kv_rollup WHERE device_id = ? AND key = ? AND res = ? AND bucket >= ? AND bucket < ? GROUP BY b")
_READ_RAW = (f"SELECT (t.ts - ?) / ? AS k, {_RAW_STATE} FROM json_each(?) AS r CROSS JOIN ts_kv AS t"
             " ON t.device_id = ? AND t.key = ? AND t.ts >= r.value ->> 0 AND t.ts < r.value ->> 1 GROUP BY k")
_READ_ROWS = (f"SELECT (t.bucket - ?) / ? AS k, {_ROW_STATE} FROM json_each(?) AS r CROSS JOIN ts_kv_rollup AS t"
              " ON t.device_id = ? AND t.key = ? AND t.res = ? AND t.bucket >= r.value ->> 0"
              " AND t.bucket < r.value ->> 1 GROUP BY k")


def series_rolled(conn, device_id, key):
    row = conn.execute("SELECT rolled FROM ts_kv_series WHERE device_id = ? AND key = ?", (device_id, key)).fetchone()
    return None if row is None else row[0]


def roll(conn, device_id, key, lo, hi):
    """Recompute the rows of the days ``[lo, hi)`` (day starts) from the raw points; the points read."""
    conn.execute("DELETE FROM ts_kv_rollup WHERE device_id = ? AND key = ? AND res IN (?, ?, ?, ?)"
                 " AND bucket >= ? AND bucket < ?", (device_id, key, *RESOLUTIONS, lo, hi))
    try:
        conn.execute(_ROLL_RAW, (_FINEST, _FINEST, _FINEST, _FINEST, device_id, key, lo, hi))
    except sqlite3.OperationalError as exc:  # a LONG sum past 64 bits: kept as a float (read raw)
        if "overflow" not in str(exc):
            raise
        conn.execute(_ROLL_RAW.replace("sum(CASE t.kind WHEN 'LONG'", "total(CASE t.kind WHEN 'LONG'"),
                     (_FINEST, _FINEST, _FINEST, _FINEST, device_id, key, lo, hi))
    finer = _FINEST
    for res in reversed(RESOLUTIONS[:-1]):
        sql = _ROLL_ROWS
        try:  # (rows whose sum is a float, past 64 bits, add as floats)
            conn.execute(sql, (res, res, res, res, device_id, key, finer, lo, hi))
        except sqlite3.OperationalError as exc:
            if "overflow" not in str(exc):
                raise
            conn.execute(sql.replace("sum(sl)", "total(sl)"), (res, res, res, res, device_id, key, finer, lo, hi))
        finer = res
    return conn.execute("SELECT coalesce(sum(n), 0) FROM ts_kv_rollup WHERE device_id = ? AND key = ? AND res = ? AND bucket >= ?"
                        " AND bucket < ?", (device_id, key, DAY, lo, hi)).fetchone()[0]


def mark_dirty(conn, device_id, key, days):
    """The days (day starts) below the series' watermark whose points changed become dirty."""
    rolled = series_rolled(conn, device_id, key)
    if rolled is not None:
        conn.executemany("INSERT OR IGNORE INTO ts_kv_dirty (device_id, key, day) VALUES (?, ?, ?)",
                         [(device_id, key, day) for day in days if day < rolled])


def deleted_range(conn, device_id, key, start_ts, end_ts):
    """``[start_ts, end_ts)`` of a series was deleted: the days inside lose their rows, the two it
    cuts into become dirty."""
    inside = (ceil_day(start_ts), floor_day(end_ts))
    if inside[0] < inside[1]:
        conn.execute("DELETE FROM ts_kv_rollup WHERE device_id = ? AND key = ? AND res IN (?, ?, ?, ?)"
                     " AND bucket >= ? AND bucket < ?", (device_id, key, *RESOLUTIONS, *inside))
        conn.execute("DELETE FROM ts_kv_dirty WHERE device_id = ? AND key = ? AND day >= ? AND day < ?",
                     (device_id, key, *inside))
    mark_dirty(conn, device_id, key, {floor_day(t) for t in (start_ts, end_ts) if t % DAY})


def expired_below(conn, device_id, key, left):
    """Retention deleted a series' points before ``left`` (None: all of them)."""
    if left is None:
        conn.execute("DELETE FROM ts_kv_rollup WHERE device_id = ? AND key = ?", (device_id, key))
        conn.execute("DELETE FROM ts_kv_dirty WHERE device_id = ? AND key = ?", (device_id, key))
        return
    deleted_range(conn, device_id, key, FIRST_DAY, left)


def points_gone(conn, points):
    """Points ``(device_id, key, ts)`` were deleted one by one (their time to live ended)."""
    days = {}
    for device_id, key, ts in points:
        days.setdefault((device_id, key), set()).add(floor_day(ts))
    for (device_id, key), found in days.items():
        mark_dirty(conn, device_id, key, found)


def aggregate(conn, device_id, key, start_ts, end_ts, interval):
    """``{k: state}`` of one series from rollups and raw points, or None (read it raw instead:
    no series, or a LONG sum past 64 bits)."""
    rolled = series_rolled(conn, device_id, key)
    if rolled is None:
        return None
    dirty = [d for (d,) in conn.execute("SELECT day FROM ts_kv_dirty WHERE device_id = ? AND key = ? AND day >= ?"
                                        " AND day < ?", (device_id, key, floor_day(start_ts), end_ts))]
    raw, rows = plan(start_ts, end_ts, interval, rolled, dirty)
    states = {}
    try:
        for res, ranges in rows.items():
            merge(states, conn.execute(_READ_ROWS, (start_ts, interval, json.dumps(ranges), device_id, key, res)))
        if raw:
            merge(states, conn.execute(_READ_RAW, (start_ts, interval, json.dumps(raw), device_id, key)))
    except sqlite3.OperationalError as exc:
        if "overflow" not in str(exc):
            raise
        return None
    return states if sums_fit(states) else None


class RollupCalls:
    """The rollup pass; mixed into SQLiteStore, which provides ``_write``."""

    def rollup_telemetry(self, now, limit):
        try:
            check(isinstance(now, int) and isinstance(limit, int) and limit >= 1,
                  "now and limit must be integers (limit >= 1)")
        except BadRequest as exc:
            return defer.fail(exc)
        upper = floor_day(now)

        def job(conn):
            self._series_bounds.forget()  # watermarks move up: a late point must lower them again
            done = visited = 0
            for device_id, key, day in conn.execute("SELECT device_id, key, day FROM ts_kv_dirty LIMIT ?",
                                                    (limit,)).fetchall():
                if done >= limit:
                    break
                visited += 1
                done += roll(conn, device_id, key, day, day + DAY)
                conn.execute("DELETE FROM ts_kv_dirty WHERE device_id = ? AND key = ? AND day = ?",
                             (device_id, key, day))
            while done < limit and visited < limit:
                row = conn.execute("SELECT device_id, key, rolled FROM ts_kv_series WHERE rolled < ?"
                                   " ORDER BY rolled LIMIT 1", (upper,)).fetchone()
                if row is None:
                    break
                device_id, key, rolled = row
                visited += 1
                bound = conn.execute("SELECT ts FROM ts_kv WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ?"
                                     " ORDER BY ts LIMIT 1 OFFSET ?",
                                     (device_id, key, rolled, upper, limit - done)).fetchone()
                high = upper if bound is None else max(rolled + DAY, floor_day(bound[0]))
                done += roll(conn, device_id, key, rolled, high)
                conn.execute("DELETE FROM ts_kv_dirty WHERE device_id = ? AND key = ? AND day >= ? AND day < ?",
                             (device_id, key, rolled, high))
                conn.execute("UPDATE ts_kv_series SET rolled = ? WHERE device_id = ? AND key = ?",
                             (high, device_id, key))
            return done, done >= limit or visited >= limit

        return self._write(job)
