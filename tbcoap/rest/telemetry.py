"""REST calls on time series and attributes (ThingsBoard's /api/plugins/telemetry)."""

from __future__ import annotations

from twisted.internet import defer

from tbcoap.errors import BadRequest
from tbcoap.storekit import AGGREGATIONS as STORE_AGGREGATIONS
from tbcoap.rest.answers import Stream
from tbcoap.models import plain
from tbcoap.rest.views import SeriesWriter, attributes_json, page_json, ts_json, value_text
from tbcoap.services.attributes import check_scope

AGGREGATIONS = ("NONE", *STORE_AGGREGATIONS)
MAX_KEY_PAGE = 1000  # keys in one page of latest values or attributes (each value up to 64 KiB)


def key_paging(call):
    """``(page_size, page)`` when the call asks for a page of keys (``pageSize`` or ``page``), else None."""
    if "pageSize" not in call.query and "page" not in call.query:
        return None
    page_size, page = call.paging(required=True)
    if page_size > MAX_KEY_PAGE:
        raise BadRequest(f"pageSize must be at most {MAX_KEY_PAGE} for a page of keys")
    if page * page_size > 2**62:
        raise BadRequest("page is out of range")
    return page_size, page


@defer.inlineCallbacks
def timeseries_keys(call, device_id):
    """GET .../DEVICE/{id}/keys/timeseries."""
    yield call.device(device_id)
    keys = yield call.core.telemetry.keys(device_id)
    return keys


@defer.inlineCallbacks
def timeseries_values(call, device_id):
    """GET .../DEVICE/{id}/values/timeseries: latest values, or history with startTs/endTs."""
    yield call.device(device_id)
    keys = call.keys_param()
    strict = call.query.get("useStrictDataTypes", "false").lower() == "true"
    agg = (call.query.get("agg") or "NONE").upper()
    if agg not in AGGREGATIONS:
        raise BadRequest(f"agg must be one of {', '.join(AGGREGATIONS)}")
    if "startTs" not in call.query and "endTs" not in call.query and agg == "NONE":
        paging = key_paging(call) if keys is None else None
        if paging is not None:  # tbcoap's own: a page of the device's keys, in key order
            convert = plain if strict else value_text
            rows, total = yield call.core.telemetry.latest_page(device_id, paging[0], paging[0] * paging[1])
            return page_json([{"key": key, "ts": ts, "value": convert(value)} for key, ts, value in rows], total,
                             *paging)
        latest = yield call.core.telemetry.latest(device_id, keys)
        return ts_json({key: [point] for key, point in latest.items()}, strict)
    order = (call.query.get("orderBy") or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise BadRequest("orderBy must be ASC or DESC")
    start, end, limit = call.int_param("startTs"), call.int_param("endTs"), call.int_param("limit", 100, minimum=1)
    caller = call.principal.caller
    if agg == "NONE":
        read = yield call.core.telemetry.history(caller, device_id, keys, start, end, limit, order == "DESC")
    else:
        interval = call.int_param("interval", minimum=1)
        read = yield call.core.telemetry.aggregate(caller, device_id, keys, start, end, interval, agg, limit,
                                                   order == "DESC")
    try:
        first = yield read.next()  # a failure of the first read is still an error answer
    except BaseException:
        read.close()
        raise
    return Stream(b"application/json", SeriesWriter(read, first, strict).next, read.close)


@defer.inlineCallbacks
def attribute_keys(call, device_id, scope=None):
    """GET .../DEVICE/{id}/keys/attributes[/{scope}]."""
    yield call.device(device_id)
    keys = set()
    for one in [check_scope(scope)] if scope else ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE"):
        found = yield call.core.attributes.get(device_id, one)
        keys.update(found)
    return sorted(keys)


@defer.inlineCallbacks
def attribute_values(call, device_id, scope=None):
    """GET .../DEVICE/{id}/values/attributes[/{scope}]?keys=..: typed values."""
    yield call.device(device_id)
    keys = call.keys_param()
    paging = key_paging(call) if keys is None else None
    if paging is not None:  # tbcoap's own: a page of one scope's keys, in key order
        if not scope:
            raise BadRequest("a page of attributes is of one scope: .../values/attributes/{scope}")
        rows, total = yield call.core.attributes.page(device_id, check_scope(scope), paging[0], paging[0] * paging[1])
        return page_json([{"key": key, "value": plain(value), "lastUpdateTs": ts} for key, value, ts in rows], total,
                         *paging)
    out = []
    for one in [check_scope(scope)] if scope else ("CLIENT_SCOPE", "SHARED_SCOPE", "SERVER_SCOPE"):
        found = yield call.core.attributes.get(device_id, one, keys)
        out += attributes_json(found)
    return out


@defer.inlineCallbacks
def save_attributes(call, device_id, scope):
    """POST .../DEVICE/{id}/{scope} or .../DEVICE/{id}/attributes/{scope}: SHARED or SERVER scope."""
    check_scope(scope, writable=True)
    yield call.device(device_id)
    yield call.core.attributes.save(device_id, scope, call.body())


@defer.inlineCallbacks
def delete_attributes(call, device_id, scope):
    """DELETE .../DEVICE/{id}/{scope}?keys=a,b."""
    check_scope(scope)
    keys = call.keys_param()
    if not keys:
        raise BadRequest("query parameter keys is required")
    yield call.device(device_id)
    yield call.core.attributes.delete(device_id, scope, keys)


@defer.inlineCallbacks
def save_timeseries(call, device_id, scope, ttl=None):
    """POST .../DEVICE/{id}/timeseries/{scope}[/{ttl}]: telemetry from an operator (any scope name, as in
    ThingsBoard); ``ttl`` in seconds, 0 for none."""
    ttl_ms = None
    if ttl is not None:
        if not ttl.isascii() or not ttl.isdigit() or len(ttl) > 12:
            raise BadRequest("ttl must be whole seconds")
        ttl_ms = int(ttl) * 1000
    yield call.device(device_id)
    yield call.core.telemetry.save(device_id, call.body(), ttl_ms)


@defer.inlineCallbacks
def delete_timeseries(call, device_id):
    """DELETE .../DEVICE/{id}/timeseries/delete?keys=..&deleteAllDataForKeys=true (or startTs, endTs),
    deleteLatest (default true), rewriteLatestIfDeleted (default false)."""
    keys = call.keys_param()
    if not keys:
        raise BadRequest("query parameter keys is required")
    if call.bool_param("deleteAllDataForKeys", False):
        start, end = -(2**63), 2**63 - 1
    else:
        start, end = call.int_param("startTs", minimum=-(2**63)), call.int_param("endTs", minimum=-(2**63))
    yield call.device(device_id)
    yield call.core.telemetry.delete(device_id, keys, start, end, call.bool_param("deleteLatest", True),
                                     call.bool_param("rewriteLatestIfDeleted", False))
