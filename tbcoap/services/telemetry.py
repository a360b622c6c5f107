"""Time series: device uploads and operator reads."""

from __future__ import annotations

from tbcoap.errors import BadRequest
from tbcoap.models import now_ms
from tbcoap.services.values import Limits, parse_telemetry

MAX_HISTORY_LIMIT = 100_000


class TelemetryService:
    """Stores typed telemetry and reads it back."""

    def __init__(self, store, rules=None, limits: Limits = Limits()):
        self.store = store
        self.rules = rules
        self.limits = limits

    def upload(self, device, payload: bytes):
        """Type and store a device's telemetry payload.

        Returns None when there is nothing to store, else a Deferred that
        fires once the entries are committed.  BadRequest for a bad payload.
        """
        entries = parse_telemetry(payload, now_ms(), self.limits)
        if not entries:
            return None
        d = self.store.save_telemetry(device.id, entries)
        if self.rules is not None:
            d.addCallback(lambda _: self.rules.uploaded("tbcoap_telemetry_uploaded", device, entries=entries))
        return d

    def latest(self, device_id, keys=None):
        """Deferred ``{key: (ts, value)}``; ``keys`` None means every key."""
        return self.store.latest_telemetry(device_id, keys)

    def history(self, device_id, keys, start_ts, end_ts, limit=100, descending=True):
        """Deferred ``{key: [(ts, value)]}`` in [start_ts, end_ts], at most ``limit`` per key."""
        if not 0 < limit <= MAX_HISTORY_LIMIT:
            raise BadRequest(f"limit must be 1 to {MAX_HISTORY_LIMIT}")
        if start_ts > end_ts:
            raise BadRequest("startTs is after endTs")
        return self.store.telemetry_history(device_id, keys, start_ts, end_ts, limit, descending)

    def keys(self, device_id):
        """Deferred sorted list of the device's time-series keys."""
        return self.store.telemetry_keys(device_id)
