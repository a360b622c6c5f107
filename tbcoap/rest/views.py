"""JSON shapes of the REST API, as ThingsBoard has them."""

from __future__ import annotations

import json

from tbcoap.models import plain


def device_json(device) -> dict:
    """``{"id":{"entityType":"DEVICE","id"},"name","type","label","createdTime","customerId"}``, with
    ``"additionalInfo"`` only when the device has some (a provisioned gateway's ``{"gateway":true}``)."""
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


def attributes_json(found) -> list:
    """``{key: (value, ts)}`` as ``[{"key","value","lastUpdateTs"}]`` with typed values."""
    return [{"key": key, "value": plain(value), "lastUpdateTs": ts} for key, (value, ts) in sorted(found.items())]

