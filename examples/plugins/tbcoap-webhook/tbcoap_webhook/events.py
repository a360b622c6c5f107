"""The JSON events posted: one per committed upload, encoded when it is queued."""

import json

from tbcoap.models import now_ms, plain


def telemetry_event(device, entries):
    """A telemetry upload; ``entries`` ``[(ts, key, value)]`` grouped by ts, in upload order."""
    by_ts = {}
    for ts, key, value in entries:
        by_ts.setdefault(ts, {})[key] = plain(value)
    return {"type": "telemetry", "deviceId": device.id, "deviceName": device.name,
            "entries": [{"ts": ts, "values": values} for ts, values in by_ts.items()]}


def attributes_event(device, values, ts=None):
    """A client-attributes upload; ``ts`` is when the plugin saw it (ms), now by default."""
    return {"type": "attributes", "deviceId": device.id, "deviceName": device.name,
            "ts": now_ms() if ts is None else ts,
            "values": {key: plain(value) for key, value in values.items()}}


def encode(event):
    """Compact UTF-8 JSON of one event."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def batch_body(encoded):
    """The POST body: a JSON array of already encoded events."""
    return b"[" + b",".join(encoded) + b"]"
