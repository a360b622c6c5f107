"""Time series: device uploads and operator reads."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest, StoreUnavailable
from tbcoap.models import now_ms
from tbcoap.services.values import Limits, parse_telemetry

MAX_HISTORY_LIMIT = 100_000
MAX_BUCKETS = 100_000
LONG_READS_RUNNING = 2   # history and aggregate reads a node runs at once ...
LONG_READS_WAITING = 32  # ... and queues; more are 503, so they never take every store reader from devices


class LongReads:
    """A gate for reads whose cost grows with the stored data (history, aggregation)."""

    def __init__(self, running=LONG_READS_RUNNING, waiting=LONG_READS_WAITING):
        self.semaphore = defer.DeferredSemaphore(running)
        self.max_waiting = waiting

    def run(self, read, *args):
        if len(self.semaphore.waiting) >= self.max_waiting:
            return defer.fail(StoreUnavailable(f"more than {self.max_waiting} history reads are waiting; retry later"))
        return self.semaphore.run(read, *args)


class TelemetryService:
    """Stores typed telemetry and reads it back."""

    def __init__(self, store, retention, rules=None, limits: Limits = Limits()):
        self.store = store
        self.retention = retention  # the RetentionService, told when points with a time to live expire
        self.rules = rules
        self.limits = limits
        self.long_reads = LongReads()
        self.points_stored = 0  # committed on this node (for /metrics)

    def upload(self, device, payload: bytes):
        """Type and store a device's telemetry payload.

        Returns None when there is nothing to store, else a Deferred that
        fires once the entries are committed.  BadRequest for a bad payload.
        """
        entries = parse_telemetry(payload, now_ms(), self.limits)
        if not entries:
            return None
        d = self.store.save_telemetry(device.id, entries)
        d.addCallback(self._stored, len(entries))
        if self.rules is not None:
            d.addCallback(lambda _: self.rules.uploaded("tbcoap_telemetry_uploaded", device, entries=entries))
        return d

    def save(self, device_id, payload: bytes, ttl_ms=None):
        """Store telemetry an operator posted (the device shapes); Deferred fired on commit.
        ``ttl_ms``: the points may be removed that long after their ts."""
        entries = parse_telemetry(payload, now_ms(), self.limits)
        if not entries:
            return defer.succeed(None)
        d = self.store.save_telemetry(device_id, entries, ttl_ms or None).addCallback(self._stored, len(entries))
        if ttl_ms:
            d.addCallback(self._expect, min(ts for ts, _, _ in entries) + ttl_ms)
        return d

    def _expect(self, result, expires_ms):
        self.retention.expect(expires_ms)
        return result

    def _stored(self, result, points):
        self.points_stored += points
        return result

    def delete(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        """Delete the points of ``keys`` in [start_ts, end_ts) (ThingsBoard's time-series deletion)."""
        if not keys:
            raise BadRequest("query parameter keys is required")
        if start_ts > end_ts:
            raise BadRequest("startTs is after endTs")
        return self.store.delete_telemetry(device_id, keys, start_ts, end_ts, delete_latest, rewrite_latest)

    def latest(self, device_id, keys=None):
        """Deferred ``{key: (ts, value)}``; ``keys`` None means every key."""
        return self.store.latest_telemetry(device_id, keys)

    def history(self, device_id, keys, start_ts, end_ts, limit=100, descending=True):
        """Deferred ``{key: [(ts, value)]}`` in [start_ts, end_ts], at most ``limit`` per key."""
        if not 0 < limit <= MAX_HISTORY_LIMIT:
            raise BadRequest(f"limit must be 1 to {MAX_HISTORY_LIMIT}")
        if start_ts > end_ts:
            raise BadRequest("startTs is after endTs")
        return self.long_reads.run(self.store.telemetry_history, device_id, keys, start_ts, end_ts, limit, descending)

    def aggregate(self, device_id, keys, start_ts, end_ts, interval, agg, limit=100, descending=False):
        """Deferred ``{key: [(ts, value)]}``: one point per ``interval`` bucket of [start_ts, end_ts),
        computed by the store; BadRequest for a range of more than MAX_BUCKETS buckets."""
        if start_ts > end_ts:
            raise BadRequest("startTs is after endTs")
        if interval < 1:
            raise BadRequest("interval must be at least 1 ms")
        if -(-(end_ts - start_ts) // interval) > MAX_BUCKETS:
            raise BadRequest(f"at most {MAX_BUCKETS} buckets: make the interval longer or the range shorter")
        if not 0 < limit <= MAX_HISTORY_LIMIT:
            raise BadRequest(f"limit must be 1 to {MAX_HISTORY_LIMIT}")
        return self.long_reads.run(self.store.telemetry_aggregate, device_id, keys, start_ts, end_ts, interval, agg,
                                   limit, descending)

    def keys(self, device_id):
        """Deferred sorted list of the device's time-series keys."""
        return self.store.telemetry_keys(device_id)
