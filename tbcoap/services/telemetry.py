"""Time series: device uploads and operator reads."""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure

from tbcoap.errors import BadRequest
from tbcoap.models import now_ms
from tbcoap.services.history import HistoryGate, HistoryRead, check_aggregate, check_history
from tbcoap.services.keycap import TIMESERIES, KeyCap
from tbcoap.services.values import Limits, parse_json, parse_telemetry

class TelemetryService:
    """Stores typed telemetry and reads it back."""

    def __init__(self, store, retention, rules=None, limits: Limits = Limits(), keycap=None):
        self.store = store
        self.keycap = keycap or KeyCap(store)  # the cap on a device's distinct keys
        self.retention = retention  # the RetentionService, told when points with a time to live expire
        self.rules = rules
        self.limits = limits
        self.history_gate = HistoryGate()
        self.points_stored = 0  # committed on this node (for /metrics)
        self.live = None  # the LiveService, told of every commit (it publishes for watched devices)

    def upload(self, device, payload: bytes, read=parse_json):
        """Type and store a device's telemetry payload (``read``: its bytes to JSON values, as
        ``parse_telemetry`` takes it).

        Returns None when there is nothing to store, else a Deferred that
        fires once the entries are committed.  BadRequest for a bad payload.
        """
        entries = parse_telemetry(payload, now_ms(), self.limits, read)
        if not entries:
            return None
        admitted = self.keycap.admit(device.id, TIMESERIES, {entry[1] for entry in entries})
        if admitted is None:
            d = self.store.save_telemetry(device.id, entries)
        else:
            d = admitted.addCallback(self._save_admitted, device.id, entries)
        return d.addCallback(self._uploaded, device, entries)

    def _uploaded(self, result, device, entries):
        """A device's upload is committed: count it, publish it, tell the rules (one callback)."""
        self._stored(result, device.id, entries)
        if self.rules is not None:
            self.rules.uploaded("tbcoap_telemetry_uploaded", device, entries=entries)

    def _save_admitted(self, new, device_id, entries, ttl_ms=None):
        """Save what the key cap let in with keys new to the store, then settle them."""
        d = self.store.save_telemetry(device_id, entries, ttl_ms)

        def settle(result):
            self.keycap.settle(device_id, TIMESERIES, new, not isinstance(result, Failure))
            return result

        return d.addBoth(settle)

    def save(self, device_id, payload: bytes, ttl_ms=None):
        """Store telemetry an operator posted (the device shapes); Deferred fired on commit.
        ``ttl_ms``: the points may be removed that long after their ts."""
        entries = parse_telemetry(payload, now_ms(), self.limits)
        if not entries:
            return defer.succeed(None)
        admitted = self.keycap.admit(device_id, TIMESERIES, {entry[1] for entry in entries})
        if admitted is None:
            d = self.store.save_telemetry(device_id, entries, ttl_ms or None)
        else:
            d = admitted.addCallback(self._save_admitted, device_id, entries, ttl_ms or None)
        d.addCallback(self._stored, device_id, entries)
        if ttl_ms:
            d.addCallback(self._expect, min(ts for ts, _, _ in entries) + ttl_ms)
        return d

    def _expect(self, result, expires_ms):
        self.retention.expect(expires_ms)
        return result

    def _stored(self, result, device_id, entries):
        self.points_stored += len(entries)
        if self.live is not None:
            self.live.telemetry_stored(device_id, entries)
        return result

    def delete(self, device_id, keys, start_ts, end_ts, delete_latest=True, rewrite_latest=False):
        """Delete the points of ``keys`` in [start_ts, end_ts) (ThingsBoard's time-series deletion)."""
        if not keys:
            raise BadRequest("query parameter keys is required")
        if start_ts > end_ts:
            raise BadRequest("startTs is after endTs")
        d = self.store.delete_telemetry(device_id, keys, start_ts, end_ts, delete_latest, rewrite_latest)
        return d.addBoth(self._deleted, device_id)

    def _deleted(self, result, device_id):
        self.keycap.forget(device_id)  # its keys may be fewer now: ask the store again
        return result

    def latest(self, device_id, keys=None):
        """Deferred ``{key: (ts, value)}``; ``keys`` None means every key."""
        return self.store.latest_telemetry(device_id, keys)

    @defer.inlineCallbacks
    def history(self, caller, device_id, keys, start_ts, end_ts, limit=100, descending=True):
        """A ``HistoryRead`` of the points in [start_ts, end_ts], at most ``limit`` per key (``keys``
        None: every key of the device), read in chunks in ``caller``'s turns (``caller``: who asks, an
        API key's owner); BadRequest when the answer could hold more than MAX_ANSWER_POINTS."""
        keys = keys if keys is not None else (yield self.store.telemetry_keys(device_id))
        check_history(keys, start_ts, end_ts, limit)
        return HistoryRead(self.history_gate, caller, self.store, device_id, keys, start_ts, end_ts, limit,
                           descending)

    @defer.inlineCallbacks
    def aggregate(self, caller, device_id, keys, start_ts, end_ts, interval, agg, limit=100, descending=False):
        """A ``HistoryRead`` of one point per ``interval`` bucket of [start_ts, end_ts) per key, computed
        by the store a window of buckets at a time; BadRequest for a range of more than MAX_BUCKETS
        buckets or an answer that could hold more than MAX_ANSWER_POINTS."""
        keys = keys if keys is not None else (yield self.store.telemetry_keys(device_id))
        check_aggregate(keys, start_ts, end_ts, interval, limit)
        return HistoryRead(self.history_gate, caller, self.store, device_id, keys, start_ts, end_ts, limit,
                           descending, agg, interval)

    @defer.inlineCallbacks
    def latest_page(self, device_id, limit, offset):
        """``([(key, ts, value)], total)``: the latest values of a page of the device's keys, in key
        order; the store reads the page's keys only."""
        keys, total = yield self.store.telemetry_key_page(device_id, limit, offset)
        found = (yield self.store.latest_telemetry(device_id, keys)) if keys else {}
        return [(key, *found[key]) for key in keys if key in found], total

    def keys(self, device_id):
        """Deferred sorted list of the device's time-series keys."""
        return self.store.telemetry_keys(device_id)
