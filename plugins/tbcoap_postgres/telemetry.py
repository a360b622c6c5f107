"""Time series on PostgreSQL: saves merged per batch, history reads, aggregation in SQL, retention.

The saves of one writer batch become five statements whatever their number: the devices are
locked (``FOR KEY SHARE``: a delete on another node waits for this commit) and checked, new
series get their id, series lower bounds move back where a point is older, then one multi-row
INSERT of the history (``ON CONFLICT`` keeps the later write of one ts) and one of the latest
values.  Rows are sorted before they are written, so two nodes lock them in the same order.
"""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest, NotFound
from tbcoap.rollupkit import DAY, usable, windowed
from tbcoap.storekit import (bucket_ts, check, check_aggregate, check_deletion, check_entries, check_expiry,
                             check_scope, is_int64, key_list)

from . import partitions, rollups
from .records import require_device
from .values import COLUMNS, check_text, columns, value

_DAY_OF_OLDEST = rollups.floor_sql("u.oldest", DAY)
# the batch's series, each with its number n in the batch; rows name their series by n
_SERIES = "unnest(%b::text[], %b::text[], %b::bigint[]) WITH ORDINALITY AS u(device_id, key, oldest, n)"
_SERIES_NEW = (f"INSERT INTO series (device_id, key, oldest, rolled) SELECT u.device_id, u.key, u.oldest, {_DAY_OF_OLDEST}"
               f" FROM {_SERIES}"
               " WHERE EXISTS (SELECT 1 FROM devices WHERE id = u.device_id) ON CONFLICT (device_id, key) DO NOTHING")
# a series' oldest point moves only back, and so does its rollup watermark (rollups.py) below a point
_SERIES_OLDER = (f"UPDATE series SET oldest = LEAST(series.oldest, u.oldest), rolled = LEAST(series.rolled,"
                 f" {_DAY_OF_OLDEST}) FROM {_SERIES} WHERE series.device_id = u.device_id AND series.key = u.key"
                 " AND (series.oldest IS NULL OR u.oldest < series.oldest OR series.rolled IS NULL"
                 " OR u.oldest < series.rolled)")
_HISTORY = (f"WITH s AS (SELECT u.n, x.id FROM {_SERIES} CROSS JOIN LATERAL"
            " (SELECT id FROM series WHERE series.device_id = u.device_id AND series.key = u.key) x)"
            " INSERT INTO ts_kv (ts, series, l, d, expires, b, s, j) SELECT h.ts, s.id, h.l, h.d, h.expires, h.b, h.s,"
            " h.j FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::float8[], %b::bigint[], %b::bool[],"
            " %b::text[], %b::text[]) AS h(n, ts, l, d, expires, b, s, j) JOIN s ON s.n = h.n"
            " ON CONFLICT (series, ts) DO UPDATE SET l = excluded.l, d = excluded.d, expires = excluded.expires,"
            " b = excluded.b, s = excluded.s, j = excluded.j")
_LATEST = ("INSERT INTO ts_kv_latest (device_id, key, ts, l, d, b, s, j) SELECT * FROM unnest(%b::text[], %b::text[],"
           " %b::bigint[], %b::bigint[], %b::float8[], %b::bool[], %b::text[], %b::text[]) AS u(device_id, key, ts, l, d, b, s, j)"
           " WHERE EXISTS (SELECT 1 FROM devices WHERE id = u.device_id)"
           " ON CONFLICT (device_id, key) DO UPDATE SET ts = excluded.ts, l = excluded.l, d = excluded.d,"
           " b = excluded.b, s = excluded.s, j = excluded.j WHERE excluded.ts >= ts_kv_latest.ts")


class TelemetrySave:
    """One ``save_telemetry`` call as a writer job; the batch's saves run together (``merge``)."""

    __slots__ = ("device_id", "rows")

    def __init__(self, device_id, rows):
        self.device_id = device_id
        self.rows = rows  # [(ts, key, (l, d, b, s, j), expires)]

    def __call__(self, conn):
        ok, result = save_many(conn, [self])[0]
        if not ok:
            raise result
        return result


def save_many(conn, saves, commit=False):
    """Write the saves of a batch, in one round trip (pipeline mode): ``[(ok, None or NotFound)]``
    in their order.  Every statement skips the rows of devices that do not exist; the first one
    locks the devices that do and says which."""
    history, latest, oldest = {}, {}, {}
    for save in saves:
        device_id = save.device_id
        for ts, key, cols, expires in save.rows:
            history[device_id, key, ts] = (cols, expires)  # the later write of one ts wins
            series = (device_id, key)
            if ts >= latest.get(series, (ts,))[0]:
                latest[series] = (ts, cols)
            if ts < oldest.get(series, ts + 1):
                oldest[series] = ts
    names = sorted(oldest)
    number = {name: n for n, name in enumerate(names, 1)}
    series_args = ([d for d, _ in names], [k for _, k in names], [oldest[name] for name in names])
    rows = sorted((number[device, key], ts, cols, expires) for (device, key, ts), (cols, expires) in history.items())
    items = sorted(latest.items())
    with conn.pipeline():
        found = conn.execute("SELECT id FROM devices WHERE id = ANY(%b) ORDER BY id FOR KEY SHARE",
                             (sorted({save.device_id for save in saves}),))
        conn.execute(_SERIES_NEW, series_args)
        conn.execute(_SERIES_OLDER, series_args)
        conn.execute(_HISTORY, (*series_args, [r[0] for r in rows], [r[1] for r in rows],
                                *([r[2][n] for r in rows] for n in (0, 1)), [r[3] for r in rows],
                                *([r[2][n] for r in rows] for n in (2, 3, 4))))
        conn.execute(_LATEST, ([d for (d, _), _ in items], [k for (_, k), _ in items], [ts for _, (ts, _) in items],
                               *([cols[n] for _, (_, cols) in items] for n in range(5))))
        if commit:
            conn.commit()
    found = {row[0] for row in found.fetchall()}
    return [(True, None) if save.device_id in found else (False, NotFound(f"no device with id {save.device_id}"))
            for save in saves]


TelemetrySave.merge = staticmethod(save_many)


def _series_of(conn, device_id, keys):
    """``{key: series id}`` of the device's series among ``keys`` (all when None)."""
    if keys is None:
        rows = conn.execute("SELECT key, id FROM series WHERE device_id = %s", (device_id,))
    else:
        rows = conn.execute("SELECT key, id FROM series WHERE device_id = %s AND key = ANY(%s)", (device_id, keys))
    return dict(rows.fetchall())


def _latest_keys(conn, device_id):
    return [k for (k,) in conn.execute("SELECT key FROM ts_kv_latest WHERE device_id = %s ORDER BY key",
                                       (device_id,))]


def _storable(key):
    """False for a key PostgreSQL could never have stored (so it is not present)."""
    try:
        check_text(key)
    except BadRequest:
        return False
    return True


class TelemetryMixin:
    """The ITelemetryStore part of PostgresStore (``_write``, ``_read``, ``_maintain`` are its)."""

    rollups = True  # aggregations use the rollups (False: every point is read, as benchmarks compare)

    def save_telemetry(self, device_id, entries, ttl=None):
        try:
            check(ttl is None or is_int64(ttl, 0), "ttl must be milliseconds (an integer >= 0)")
            rows = []
            for ts, key, kind, data in check_entries(entries):
                check_text(key)
                rows.append((ts, key, columns(kind, data), ts + ttl if ttl else None))
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)
        return self.run_write(TelemetrySave(device_id, rows))

    def latest_telemetry(self, device_id, keys):
        try:
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)
        if keys == []:
            return defer.succeed({})

        def read(conn):
            sql = f"SELECT key, ts, {COLUMNS} FROM ts_kv_latest WHERE device_id = %s"
            if keys is None:
                rows = conn.execute(sql, (device_id,))
            else:
                rows = conn.execute(sql + " AND key = ANY(%s)", (device_id, keys))
            return {key: (ts, value(*cols)) for key, ts, *cols in rows}

        return self.run_read(read)

    def telemetry_keys(self, device_id):
        return self.run_read(_latest_keys, device_id)

    def count_telemetry_keys(self, device_id, keys):
        return self._count_keys("ts_kv_latest WHERE device_id = %s", (device_id,), keys)

    def count_attribute_keys(self, device_id, scope, keys):
        try:
            check_scope(scope)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._count_keys("attributes WHERE device_id = %s AND scope = %s", (device_id, scope), keys)

    def telemetry_key_page(self, device_id, limit, offset):
        return self._key_page("ts_kv_latest WHERE device_id = %s", (device_id,), limit, offset)

    def attribute_key_page(self, device_id, scope, limit, offset):
        try:
            check_scope(scope)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._key_page("attributes WHERE device_id = %s AND scope = %s", (device_id, scope), limit, offset)

    def _key_page(self, where, params, limit, offset):
        """``(keys, total)``: a page of the rows ``where`` finds, in the primary key's order (COLLATE "C")."""
        try:
            check(is_int64(limit, 1) and is_int64(offset, 0), "limit must be positive and offset at least 0")
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            keys = [key for (key,) in conn.execute(f"SELECT key FROM {where} ORDER BY key LIMIT %s OFFSET %s",
                                                   (*params, limit, offset))]
            return keys, conn.execute(f"SELECT count(*) FROM {where}", params).fetchone()[0]

        return self.run_read(read)

    def _count_keys(self, where, params, keys):
        """``(count, present)`` of the rows ``where`` finds (a count over the primary key's prefix)."""
        try:
            keys = [key for key in key_list(keys) if _storable(key)]
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            count = conn.execute(f"SELECT count(*) FROM {where}", params).fetchone()[0]
            present = [key for (key,) in conn.execute(f"SELECT key FROM {where} AND key = ANY(%s)",
                                                      (*params, keys))] if keys else []
            return count, present

        return self.run_read(read)

    def telemetry_history(self, device_id, keys, start_ts, end_ts, limit, descending):
        try:
            keys = key_list(keys)
            check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
            check(is_int64(limit, 1), "limit must be a positive integer")
        except BadRequest as exc:
            return defer.fail(exc)
        order = "DESC" if descending else "ASC"
        sql = (f"SELECT ts, {COLUMNS} FROM ts_kv WHERE series = %s AND ts >= %s AND ts <= %s"
               f" ORDER BY ts {order} LIMIT %s")

        def read(conn):
            # the primary key's order, partition after partition, is the order asked: never sort
            # (a partition the planner has no statistics for yet could otherwise be sorted whole)
            conn.execute("SET LOCAL enable_sort = off")
            names = _latest_keys(conn, device_id) if keys is None else keys
            series = _series_of(conn, device_id, names)
            out = {}
            for key in names:
                if key in series:
                    rows = conn.execute(sql, (series[key], start_ts, end_ts, limit)).fetchall()
                    if rows:
                        out[key] = [(ts, value(*cols)) for ts, *cols in rows]
            return out

        return self.run_read(read)

    def telemetry_aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        try:
            keys = key_list(keys)
            check_aggregate(start_ts, end_ts, interval, agg, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        planned = self.rollups and usable(start_ts, end_ts, interval)
        return self.run_read(_aggregate, device_id, keys, start_ts, end_ts, interval, agg, limit, descending, planned)

    def expire_telemetry(self, now, older_than, limit):
        try:
            check_expiry(now, older_than, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        if older_than is not None:
            gone = partitions.expired(self._months, older_than)
            if gone:  # a whole month has expired: dropped at once, then the rest is trimmed
                return self._maintain(partitions.drop, gone[0]).addCallback(self._dropped, gone[0])
        return self.run_write(lambda conn: _expire(conn, now, older_than, limit))

    def _dropped(self, rows, month):
        self._months = self._months - {month}
        end = partitions.bounds(month)[1]
        return self.run_write(lambda conn: rollups.month_dropped(conn, end)).addCallback(lambda _: (rows, True))

    def delete_telemetry(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        try:
            keys = check_deletion(keys, start_ts, end_ts)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            require_device(conn, device_id)
            series = _series_of(conn, device_id, keys)
            for key in keys:
                if key in series:
                    conn.execute("DELETE FROM ts_kv WHERE series = %s AND ts >= %s AND ts < %s",
                                 (series[key], start_ts, end_ts))
                    rollups.deleted_range(conn, series[key], start_ts, end_ts)
                row = conn.execute("SELECT ts FROM ts_kv_latest WHERE device_id = %s AND key = %s",
                                   (device_id, key)).fetchone()
                if row is None or not start_ts <= row[0] < end_ts or not delete_latest:
                    continue
                conn.execute("DELETE FROM ts_kv_latest WHERE device_id = %s AND key = %s", (device_id, key))
                if rewrite_latest and key in series:
                    conn.execute(
                        f"INSERT INTO ts_kv_latest (device_id, key, ts, {COLUMNS}) SELECT %s, %s, ts, {COLUMNS}"
                        " FROM ts_kv WHERE series = %s ORDER BY ts DESC LIMIT 1", (device_id, key, series[key]))

        return self.run_write(job)


def _expire(conn, now, older_than, limit):
    """One retention batch (a writer job): ``(deleted, more)``."""
    deleted = visited = 0
    while older_than is not None and deleted < limit and visited < limit:
        # the series whose oldest point may have expired (a lower bound, indexed), then a range of
        # that series: neighbouring rows of its index, cheap to delete
        row = conn.execute("SELECT id FROM series WHERE oldest < %s ORDER BY oldest LIMIT 1", (older_than,)).fetchone()
        if row is None:
            break
        series = row[0]
        visited += 1
        bound = conn.execute("SELECT ts FROM ts_kv WHERE series = %s AND ts < %s ORDER BY ts LIMIT 1 OFFSET %s",
                             (series, older_than, limit - deleted)).fetchone()
        bound = None if bound is None else bound[0]
        deleted += conn.execute("DELETE FROM ts_kv WHERE series = %s AND ts < %s",
                                (series, older_than if bound is None else bound)).rowcount
        left = bound if bound is not None else conn.execute(
            "SELECT min(ts) FROM ts_kv WHERE series = %s", (series,)).fetchone()[0]
        conn.execute("UPDATE series SET oldest = %s WHERE id = %s", (left, series))
        rollups.expired_below(conn, series, left)
    if deleted >= limit or visited >= limit:
        return deleted, True
    gone = conn.execute(
        "DELETE FROM ts_kv WHERE (series, ts) IN (SELECT series, ts FROM ts_kv WHERE expires <= %s LIMIT %s)"
        " RETURNING series, ts", (now, limit - deleted)).fetchall()
    rollups.points_gone(conn, gone)
    deleted += len(gone)
    more = deleted >= limit
    return deleted, _purge(conn, limit) or more


def _purge(conn, limit):
    """Delete up to ``limit`` history points of deleted devices; True if some are left."""
    row = conn.execute("SELECT series FROM ts_kv_purge LIMIT 1").fetchone()
    if row is None:
        return False
    series = row[0]
    bound = conn.execute("SELECT ts FROM ts_kv WHERE series = %s ORDER BY ts OFFSET %s LIMIT 1",
                         (series, limit)).fetchone()
    if bound is None:
        conn.execute("DELETE FROM ts_kv WHERE series = %s", (series,))
        conn.execute("DELETE FROM ts_kv_purge WHERE series = %s", (series,))
        conn.execute("DELETE FROM ts_kv_rollup WHERE series = %s", (series,))
    else:
        conn.execute("DELETE FROM ts_kv WHERE series = %s AND ts < %s", (series, bound[0]))
    return True


_AGGREGATES = {
    "COUNT": "count(*), NULL::numeric, NULL::float8, NULL::bigint, NULL::bigint",
    "SUM": "NULL::bigint, sum(l), sum(d), count(l), count(d)",
    "AVG": "NULL::bigint, sum(l), sum(d), count(l), count(d)",
    "MIN": "min(l), NULL::numeric, min(d), count(l), count(d)",
    "MAX": "max(l), NULL::numeric, max(d), count(l), count(d)",
}


def _aggregate(conn, device_id, keys, start_ts, end_ts, interval, agg, limit, descending, planned=False):
    numbers = "" if agg == "COUNT" else " AND (l IS NOT NULL OR d IS NOT NULL)"
    sql = (f"SELECT (ts - %s) / %s AS bucket, {_AGGREGATES[agg]} FROM ts_kv"
           f" WHERE series = %s AND ts >= %s AND ts < %s{numbers}"
           f" GROUP BY bucket ORDER BY bucket {'DESC' if descending else 'ASC'} LIMIT %s")

    def point(bucket, count_or_l, sum_l, d, count_l, count_d):
        if agg == "COUNT":
            result = count_or_l
        elif agg in ("SUM", "AVG"):
            total = (int(sum_l) if sum_l is not None else 0)
            if agg == "AVG":
                result = (float(total) + (d or 0.0)) / (count_l + count_d)
            else:
                result = float(total) + d if count_d else total
        else:
            candidates = [v for v in (count_or_l, d) if v is not None]
            result = min(candidates) if agg == "MIN" else max(candidates)
        return bucket_ts(start_ts, end_ts, interval, bucket), result

    # with fewer buckets asked than the range has, the first (or, descending, the last) ``limit``
    # bucket slots are grouped first, then four times as many, and so on until ``limit`` buckets
    # hold points: the newest day of a year of points never groups the whole year
    slots = -(-(end_ts - start_ts) // interval)

    def window(span):
        if descending:
            return start_ts + (slots - span) * interval, end_ts
        return start_ts, start_ts + span * interval

    names = _latest_keys(conn, device_id) if keys is None else keys
    series = _series_of(conn, device_id, names)
    out = {}
    for key in names:
        if key not in series:
            continue
        found = windowed(lambda lo, hi: rollups.aggregate(conn, series[key], lo, hi, interval), agg, start_ts,
                         end_ts, interval, limit, descending, bucket_ts) if planned else None
        if found is not None:
            if found:
                out[key] = found
            continue
        span = limit
        while span < slots:
            low, high = window(span)
            rows = conn.execute(sql, (start_ts, interval, series[key], low, high, limit)).fetchall()
            if len(rows) >= limit:
                break
            span *= 4
        else:
            rows = conn.execute(sql, (start_ts, interval, series[key], start_ts, end_ts, limit)).fetchall()
        if rows:
            out[key] = [point(*row) for row in rows]
    return out
