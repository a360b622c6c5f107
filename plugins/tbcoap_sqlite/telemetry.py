"""The time-series and attribute calls of SQLiteStore (ITelemetryStore, IAttributeStore).

``TelemetryCalls`` is a part of SQLiteStore (store.py): its methods hand jobs to the store's
``_write`` (the group commit) and reads to its ``_read`` (a reader thread).  ``ts_kv`` holds
the history, ``ts_kv_latest`` the latest point of each key, ``ts_kv_series`` a lower bound of
each series' oldest point (how retention finds expired points without a scan).
"""

import sqlite3

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.models import from_kind
from tbcoap.rollupkit import floor_day, usable, windowed
from tbcoap.storekit import (
    bucket_ts,
    check,
    check_aggregate,
    check_deletion,
    check_expiry,
    check_scope,
    check_values,
    is_int64,
    key_list,
)

from . import rollups
from .ingest import AttributeWrite, TelemetryWrite
from .sql import by_keys, one, require_device


def _series_keys(conn, device_id):
    return [k for (k,) in conn.execute("SELECT key FROM ts_kv_latest WHERE device_id = ?", (device_id,))]


class TelemetryCalls:
    """Telemetry and attributes; mixed into SQLiteStore, which provides ``_write`` and ``_read``."""

    rollups = True  # aggregations use the rollups (False: every point is read, as benchmarks compare)

    def save_telemetry(self, device_id, entries, ttl=None):
        if ttl is not None and not is_int64(ttl, 0):
            return defer.fail(BadRequest("ttl must be milliseconds (an integer >= 0)"))
        if not entries:
            return defer.succeed(None)
        return self._write(TelemetryWrite(device_id, entries, ttl, self._series_bounds))

    def expire_telemetry(self, now, older_than, limit):
        try:
            check_expiry(now, older_than, limit)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            self._series_bounds.forget()  # oldest points move up or go: the table decides again
            deleted = visited = 0
            while older_than is not None and deleted < limit and visited < limit:
                # the series whose oldest point may have expired (a lower bound, indexed), then a
                # range of that series: neighbouring rows of the primary key, cheap to delete
                row = conn.execute("SELECT device_id, key FROM ts_kv_series WHERE oldest < ? ORDER BY oldest LIMIT 1",
                                   (older_than,)).fetchone()
                if row is None:
                    break
                visited += 1
                bound = one(conn, "SELECT ts FROM ts_kv WHERE device_id = ? AND key = ? AND ts < ?"
                             " ORDER BY ts LIMIT 1 OFFSET ?", *row, older_than, limit - deleted)
                deleted += conn.execute("DELETE FROM ts_kv WHERE device_id = ? AND key = ? AND ts < ?",
                                        (*row, older_than if bound is None else bound)).rowcount
                left = bound if bound is not None else one(
                    conn, "SELECT min(ts) FROM ts_kv WHERE device_id = ? AND key = ?", *row)
                rollups.expired_below(conn, *row, left)
                if left is None:
                    conn.execute("DELETE FROM ts_kv_series WHERE device_id = ? AND key = ?", row)
                else:
                    conn.execute("UPDATE ts_kv_series SET oldest = ? WHERE device_id = ? AND key = ?", (left, *row))
            if deleted >= limit or visited >= limit:
                return deleted, True
            gone = conn.execute(
                "DELETE FROM ts_kv WHERE (device_id, key, ts) IN"
                " (SELECT device_id, key, ts FROM ts_kv WHERE expires <= ? LIMIT ?) RETURNING device_id, key, ts",
                (now, limit - deleted)).fetchall()
            rollups.points_gone(conn, gone)
            return deleted + len(gone), deleted + len(gone) >= limit

        return self._write(job)

    def delete_telemetry(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        try:
            keys = check_deletion(keys, start_ts, end_ts)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            require_device(conn, device_id)
            for key in keys:
                conn.execute("DELETE FROM ts_kv WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ?",
                             (device_id, key, start_ts, end_ts))
                rollups.deleted_range(conn, device_id, key, start_ts, end_ts)
                latest = one(conn, "SELECT ts FROM ts_kv_latest WHERE device_id = ? AND key = ?", device_id, key)
                if latest is None or not start_ts <= latest < end_ts or not delete_latest:
                    continue
                conn.execute("DELETE FROM ts_kv_latest WHERE device_id = ? AND key = ?", (device_id, key))
                if rewrite_latest:
                    conn.execute(
                        "INSERT INTO ts_kv_latest (device_id, key, ts, kind, value) SELECT device_id, key, ts,"
                        " kind, value FROM ts_kv WHERE device_id = ? AND key = ? ORDER BY ts DESC LIMIT 1",
                        (device_id, key))

        return self._write(job)

    def latest_telemetry(self, device_id, keys):
        try:
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            sql = "SELECT key, ts, kind, value FROM ts_kv_latest WHERE device_id = ?"
            rows = by_keys(conn, sql, (device_id,), keys)
            return {key: (ts, from_kind(kind, v)) for key, ts, kind, v in rows}

        return self._read(read)

    def telemetry_history(self, device_id, keys, start_ts, end_ts, limit, descending):
        try:
            keys = key_list(keys)
            check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
            check(is_int64(limit, 1), "limit must be a positive integer")
        except BadRequest as exc:
            return defer.fail(exc)
        order = "DESC" if descending else "ASC"

        def read(conn):
            names = _series_keys(conn, device_id) if keys is None else keys
            out = {}
            for key in names:
                rows = conn.execute(
                    "SELECT ts, kind, value FROM ts_kv WHERE device_id = ? AND key = ? AND ts BETWEEN ? AND ?"
                    f" ORDER BY ts {order} LIMIT ?",
                    (device_id, key, start_ts, end_ts, limit),
                ).fetchall()
                if rows:
                    out[key] = [(ts, from_kind(kind, v)) for ts, kind, v in rows]
            return out

        return self._read(read)

    def telemetry_aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit, descending):
        try:
            keys = key_list(keys)
            check_aggregate(start_ts, end_ts, interval, agg, limit)
        except BadRequest as exc:
            return defer.fail(exc)
        numbers = "" if agg == "COUNT" else " AND kind IN ('LONG', 'DOUBLE')"
        value = "count(*)" if agg == "COUNT" else f"{agg.lower()}(value)"
        sql = (f"SELECT (ts - ?) / ? AS bucket, {value}, max(kind = 'DOUBLE') FROM ts_kv"
               f" WHERE device_id = ? AND key = ? AND ts >= ? AND ts < ?{numbers}"
               f" GROUP BY bucket ORDER BY bucket {'DESC' if descending else 'ASC'} LIMIT ?")

        def point(bucket, result, any_double):
            if agg == "AVG" or (agg == "SUM" and any_double):
                result = float(result)
            return bucket_ts(start_ts, end_ts, interval, bucket), result

        def query(conn, key, low, high):
            params = (start_ts, interval, device_id, key, low, high, limit)
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:  # an integer SUM past 64 bits: add as floats
                if "overflow" not in str(exc):
                    raise
                return conn.execute(sql.replace("sum(value)", "total(value)"), params).fetchall()

        # with fewer buckets asked than the range has, the first (or, descending, the last) ``limit``
        # bucket slots are grouped first, then four times as many, and so on until ``limit`` buckets
        # hold points: the newest day of a year of points never groups the whole year
        slots = -(-(end_ts - start_ts) // interval)
        planned = self.rollups and usable(start_ts, end_ts, interval)

        def window(span):
            if descending:
                return start_ts + (slots - span) * interval, end_ts
            return start_ts, start_ts + span * interval

        def read(conn):
            out = {}
            for key in _series_keys(conn, device_id) if keys is None else keys:
                found = windowed(lambda lo, hi: rollups.aggregate(conn, device_id, key, lo, hi, interval), agg,
                                 start_ts, end_ts, interval, limit, descending, bucket_ts) if planned else None
                if found is not None:
                    if found:
                        out[key] = found
                    continue
                span = limit
                while span < slots:
                    rows = query(conn, key, *window(span))
                    if len(rows) >= limit:
                        break
                    span *= 4
                else:
                    rows = query(conn, key, start_ts, end_ts)
                if rows:
                    out[key] = [point(*row) for row in rows]
            return out

        return self._read(read)

    def telemetry_keys(self, device_id):
        return self._read(lambda conn: sorted(_series_keys(conn, device_id)))

    def count_telemetry_keys(self, device_id, keys):
        return self._count_keys("ts_kv_latest WHERE device_id = ?", (device_id,), keys)

    def count_attribute_keys(self, device_id, scope, keys):
        try:
            check_scope(scope)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._count_keys("attributes WHERE device_id = ? AND scope = ?", (device_id, scope), keys)

    def telemetry_key_page(self, device_id, limit, offset):
        return self._key_page("ts_kv_latest WHERE device_id = ?", (device_id,), limit, offset)

    def attribute_key_page(self, device_id, scope, limit, offset):
        try:
            check_scope(scope)
        except BadRequest as exc:
            return defer.fail(exc)
        return self._key_page("attributes WHERE device_id = ? AND scope = ?", (device_id, scope), limit, offset)

    def _key_page(self, where, params, limit, offset):
        """``(keys, total)``: a page of the rows ``where`` finds, in the primary key's order."""
        try:
            check(is_int64(limit, 1) and is_int64(offset, 0), "limit must be positive and offset at least 0")
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            keys = [key for (key,) in conn.execute(f"SELECT key FROM {where} ORDER BY key LIMIT ? OFFSET ?",
                                                   (*params, limit, offset))]
            return keys, one(conn, f"SELECT count(*) FROM {where}", *params)

        return self._read(read)

    def _count_keys(self, where, params, keys):
        """``(count, present)`` of the rows ``where`` finds (a count over the primary key's prefix)."""
        try:
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            count = one(conn, f"SELECT count(*) FROM {where}", *params)
            present = [key for (key,) in by_keys(conn, f"SELECT key FROM {where}", params, keys)] if keys else []
            return count, present

        return self._read(read)

    # -- attributes --------------------------------------------------------------

    def save_attributes(self, device_id, scope, values, ts):
        try:
            check_scope(scope)
            check(is_int64(ts), f"timestamp must be a 64-bit integer, not {ts!r}")
            rows = [(device_id, scope, key, kind, data, ts) for key, kind, data in check_values(values)]
        except Exception:
            return defer.fail()
        if not rows:
            return defer.succeed(None)
        return self._write(AttributeWrite(device_id, rows))

    def get_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def read(conn):
            sql = "SELECT key, kind, value, last_update_ts FROM attributes WHERE device_id = ? AND scope = ?"
            rows = by_keys(conn, sql, (device_id, scope), keys)
            return {key: (from_kind(kind, v), ts) for key, kind, v, ts in rows}

        return self._read(read)

    def delete_attributes(self, device_id, scope, keys):
        try:
            check_scope(scope)
            check(keys is not None, "the keys to delete are required")
            keys = key_list(keys)
        except BadRequest as exc:
            return defer.fail(exc)

        def job(conn):
            require_device(conn, device_id)
            sql = "SELECT key FROM attributes WHERE device_id = ? AND scope = ?"
            found = {k for (k,) in by_keys(conn, sql, (device_id, scope), keys)}
            gone = [k for k in keys if k in found]
            conn.executemany(
                "DELETE FROM attributes WHERE device_id = ? AND scope = ? AND key = ?",
                [(device_id, scope, k) for k in gone],
            )
            return gone

        return self._write(job)
