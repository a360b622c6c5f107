"""JSON shapes of the REST API, as ThingsBoard has them."""

from __future__ import annotations

import json

from twisted.internet import defer

from tbcoap.models import plain
from tbcoap.payloads.power import device_data_json


def device_json(device) -> dict:
    """``{"id":{"entityType":"DEVICE","id"},"name","type","label","createdTime","customerId"}``, with
    ``"additionalInfo"`` only when the device has some (a provisioned gateway's ``{"gateway":true}``), and
    ThingsBoard's ``deviceData`` only when the device has power-saving settings of its own (its
    ``transportConfiguration``)."""
    data = {
        "id": {"entityType": "DEVICE", "id": device.id},
        "name": device.name,
        "type": device.type,
        "label": device.label,
        "createdTime": device.created_time,
        "customerId": {"entityType": "CUSTOMER", "id": device.customer_id} if device.customer_id else None,
    }
    if device.additional_info:
        data["additionalInfo"] = json.loads(device.additional_info)
    if device.transport_configuration:
        data["deviceData"] = device_data_json(device.transport_configuration)
    return data


def page_json(items, total, page_size, page) -> dict:
    """ThingsBoard's page: ``{"data","totalPages","totalElements","hasNext"}``."""
    pages = -(-total // page_size) if page_size else 0
    return {"data": items, "totalPages": pages, "totalElements": total, "hasNext": page + 1 < pages}


def value_text(value) -> str:
    """A typed value in ThingsBoard's string form (DOUBLE as Python's repr)."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def ts_json(series, strict=False) -> dict:
    """``{key: [(ts, value)]}`` as ``{key: [{"ts","value"}]}``."""
    convert = plain if strict else value_text
    return {key: [{"ts": ts, "value": convert(value)} for ts, value in points] for key, points in series.items()}


class SeriesWriter:
    """The text of ``ts_json`` of a HistoryRead, a chunk at a time: ``next()`` fires with the next
    piece, or None after the closing brace.  A key without points is left out, as ``ts_json`` of
    the store's answer would."""

    def __init__(self, read, first, strict=False):
        self.read, self.pending = read, first
        self.convert = plain if strict else value_text
        self.started = self.ended = False
        self.open_key = None  # the key whose list is open
        self.keys_written = 0

    @defer.inlineCallbacks
    def next(self):
        if self.ended:
            return None
        if self.started:
            chunk = yield self.read.next()
        else:
            chunk, self.pending = self.pending, None
        text = "" if self.started else "{"
        self.started = True
        if chunk is None:
            self.ended = True
            return (text + "}").encode("utf-8")
        key, points, last = chunk
        if points:
            items = ",".join(json.dumps({"ts": ts, "value": self.convert(value)}, separators=(",", ":"))
                             for ts, value in points)
            if self.open_key != key:
                text += ("," if self.keys_written else "") + json.dumps(key) + ":[" + items
                self.open_key = key
                self.keys_written += 1
            else:
                text += "," + items
        if last and self.open_key == key:
            text += "]"
            self.open_key = None
        return text.encode("utf-8")


def attributes_json(found) -> list:
    """``{key: (value, ts)}`` as ``[{"key","value","lastUpdateTs"}]`` with typed values."""
    return [{"key": key, "value": plain(value), "lastUpdateTs": ts} for key, (value, ts) in sorted(found.items())]

