"""Telemetry and attribute writes, the store's busiest jobs, made cheap for the group commit
(writer.py).

A ``TelemetryWrite`` is checked in the writer thread before the transaction (``prepare``: a bad
entry fails that write alone), and the telemetry writes of one batch run together: one
``executemany`` per table for the whole batch, one device check per distinct device.  When a
series has several points in the batch (a device sending faster than the commits, or arrays of
points), only what writing them one by one would leave is written: the latest value once per
series, a history point once per ts.  Attribute writes of a batch (``AttributeWrite``: the
activity of every device heard, each turn) likewise go as one ``executemany``.

``SeriesBounds`` remembers, for the writer thread only, the oldest point each series was saved
with since it last forgot: after that upsert both the series' oldest point and its rollup
watermark in ``ts_kv_series`` are at or below it, so a point not older than it (nearly every
point) skips that table.  Whatever can raise them or remove the row (retention, the rollup pass,
a deleted device) and every rolled-back transaction forgets what it knew.
"""

from tbcoap.rollupkit import floor_day
from tbcoap.storekit import check_entries

from .sql import CHUNK, require_device

_HISTORY_INSERT = "INSERT OR REPLACE INTO ts_kv (device_id, key, ts, kind, value, expires) VALUES (?, ?, ?, ?, ?, ?)"
_LATEST_UPSERT = (
    "INSERT INTO ts_kv_latest (device_id, key, ts, kind, value) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET ts = excluded.ts, kind = excluded.kind,"
    " value = excluded.value WHERE excluded.ts >= ts_kv_latest.ts"
)
_SERIES_UPSERT = (  # a series' oldest point (retention's lower bound) moves only further back, and so does
    # its rollup watermark (a day start) when a point is below it (rollups.py)
    "INSERT INTO ts_kv_series (device_id, key, oldest, rolled) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (device_id, key) DO UPDATE SET oldest = min(oldest, excluded.oldest),"
    " rolled = min(rolled, excluded.rolled)"
    " WHERE excluded.oldest < ts_kv_series.oldest OR excluded.oldest < ts_kv_series.rolled"
)

MAX_KNOWN_SERIES = 100_000  # about 12 MB; past it the memory starts again (the table stays right)


class SeriesBounds:
    """``(device_id, key) -> oldest`` known to be in ``ts_kv_series``; writer thread only."""

    def __init__(self, cap=MAX_KNOWN_SERIES):
        self.cap = cap
        self.known = {}

    def needed(self, oldest):
        """The ``(device_id, key, ts, day)`` rows of ``oldest`` the table may not cover yet."""
        known = self.known
        return [(*series, ts, floor_day(ts)) for series, ts in oldest.items() if known.get(series, ts + 1) > ts]

    def stored(self, rows):
        """``rows`` were upserted (their transaction may still roll back: see ``forget``)."""
        known = self.known
        if len(known) + len(rows) > self.cap:
            known.clear()
        for device_id, key, ts, _ in rows:
            if ts < known.get((device_id, key), ts + 1):
                known[device_id, key] = ts

    def forget(self):
        """Forget everything (a rollback, retention, a deleted device)."""
        self.known.clear()


class TelemetryWrite:
    """One ``save_telemetry``: ``entries`` of ``device_id``, points expiring ``ttl`` ms after their ts."""

    __slots__ = ("device_id", "entries", "ttl", "bounds", "rows", "history", "oldest")

    def __init__(self, device_id, entries, ttl, bounds):
        self.device_id, self.entries, self.ttl, self.bounds = device_id, entries, ttl, bounds

    def prepare(self):
        """Check and shape the entries (BadRequest for a bad one); run before the transaction."""
        device_id, ttl = self.device_id, self.ttl
        rows, history, oldest = [], [], {}
        for ts, key, kind, data in check_entries(self.entries):
            rows.append((device_id, key, ts, kind, data))
            history.append((device_id, key, ts, kind, data, ts + ttl if ttl else None))
            if ts < oldest.get((device_id, key), ts + 1):
                oldest[device_id, key] = ts
        self.rows, self.history, self.oldest = rows, history, oldest
        self.entries = None

    def __call__(self, conn):
        run_together(conn, [self])

    @staticmethod
    def run_together(conn, writes):
        run_together(conn, writes)


def run_together(conn, writes):
    """Run prepared ``writes`` in ``conn``'s transaction: NotFound if a device is gone."""
    _require_all(conn, {write.device_id for write in writes})
    history, rows, oldest = [], [], {}
    for write in writes:
        history += write.history
        rows += write.rows
        for series, ts in write.oldest.items():
            if ts < oldest.get(series, ts + 1):
                oldest[series] = ts
    if len(oldest) < len(rows):  # some series has several points: write what one at a time would leave
        history, rows = _collapsed(history, rows)
    conn.executemany(_HISTORY_INSERT, history)
    conn.executemany(_LATEST_UPSERT, rows)
    bounds = writes[0].bounds
    series = bounds.needed(oldest)
    if series:
        conn.executemany(_SERIES_UPSERT, series)
        bounds.stored(series)


def _collapsed(history, rows):
    """The history rows and latest-value rows that leave the tables as writing every one in order
    would: the last point of each ts of a series (INSERT OR REPLACE), and of each series its newest
    point, the last written of that ts (the upsert keeps a point not older than the stored one)."""
    latest = {}
    for row in rows:
        series = row[0], row[1]
        kept = latest.get(series)
        if kept is None or row[2] >= kept[2]:
            latest[series] = row
    return {row[:3]: row for row in history}.values(), latest.values()


_ATTRIBUTE_UPSERT = ("INSERT OR REPLACE INTO attributes (device_id, scope, key, kind, value, last_update_ts)"
                     " VALUES (?, ?, ?, ?, ?, ?)")


class AttributeWrite:
    """One ``save_attributes``: its checked ``(device_id, scope, key, kind, value, ts)`` rows."""

    __slots__ = ("device_id", "rows")

    def __init__(self, device_id, rows):
        self.device_id, self.rows = device_id, rows

    def __call__(self, conn):
        attributes_together(conn, [self])

    @staticmethod
    def run_together(conn, writes):
        attributes_together(conn, writes)


def attributes_together(conn, writes):
    """Run ``writes`` in ``conn``'s transaction, in order: NotFound if a device is gone."""
    _require_all(conn, {write.device_id for write in writes})
    conn.executemany(_ATTRIBUTE_UPSERT, [row for write in writes for row in write.rows])


def _require_all(conn, devices):
    if len(devices) == 1:
        require_device(conn, next(iter(devices)))
    else:
        _require_devices(conn, devices)


def _require_devices(conn, devices):
    devices = list(devices)
    found = set()
    for i in range(0, len(devices), CHUNK):
        part = devices[i:i + CHUNK]
        marks = ", ".join("?" * len(part))
        found.update(row[0] for row in conn.execute(f"SELECT id FROM devices WHERE id IN ({marks})", part))
    for device_id in devices:
        if device_id not in found:
            require_device(conn, device_id)  # raises NotFound for it
