"""History reads for WebSocket commands: through the telemetry service (its checks, its fair turns
between keys), bounded to MAX_POINTS points per answer."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest

MAX_POINTS = 10_000  # points of one history answer or time window, all keys together
DEFAULT_LIMIT = 100  # ThingsBoard's, when a command gives none


@defer.inlineCallbacks
def read_points(core, caller, device_id, keys, start, end, limit, agg="NONE", interval=0, descending=True):
    """``{key: [(ts, value)]}`` of a history read through the telemetry service (its checks, its fair
    turns), at most MAX_POINTS points in all."""
    keys = sorted(keys) if keys is not None else (yield core.telemetry.keys(device_id))
    if not keys:
        return {}
    per_key = min(limit, MAX_POINTS // len(keys))
    if per_key < 1:
        raise BadRequest(f"at most {MAX_POINTS} points in one answer: ask for fewer keys")
    if agg == "NONE":
        read = yield core.telemetry.history(caller, device_id, keys, start, end, per_key, descending)
    else:
        read = yield core.telemetry.aggregate(caller, device_id, keys, start, end, interval, agg, per_key,
                                              descending)
    out = {}
    try:
        while True:
            chunk = yield read.next()
            if chunk is None:
                return out
            key, points, _last = chunk
            if points:
                out.setdefault(key, []).extend(points)
    finally:
        read.close()
