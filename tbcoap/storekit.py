"""Helpers for store plugins: the argument checks every IStore makes the same way, and how a
typed value becomes a (kind, data) pair.  Part of the public plugin API; each check raises
``tbcoap.errors.BadRequest`` with a message for the caller.
"""

from __future__ import annotations

import math
import re

from tbcoap.errors import BadRequest
from tbcoap.models import (ACCESS_TOKEN, CREDENTIALS_TYPES, DEVICE_SORT_PROPERTIES, INT64_MAX, INT64_MIN, PSK,
                           OTA_CHUNK, OTA_TYPES, RPC_STATUSES, SCOPES, ClaimRequest, Credentials, Customer,
                           OtaPackage, Rpc, kind_of)

STALLED_WRITE = 5.0  # seconds a write may wait before IStore.check() says the store cannot write


def check(condition, message):
    """BadRequest(message) unless ``condition``."""
    if not condition:
        raise BadRequest(message)


def is_int64(value, low=INT64_MIN) -> bool:
    """An int (not a bool) from ``low`` to the largest 64-bit integer."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= INT64_MAX


def is_id(value) -> bool:
    """A non-empty string."""
    return isinstance(value, str) and bool(value)


PSK_KEY_HEX = re.compile(r"(?:[0-9a-f]{2}){16,64}")  # 16 to 64 bytes, lowercase hex


def check_credentials(credentials):
    """A ``Credentials`` of a known type with an id; no value for a token, the PEM for a certificate,
    the key as 32 to 128 lowercase hex digits for a pre-shared key."""
    check(isinstance(credentials, Credentials), "credentials must be a Credentials")
    check(credentials.type in CREDENTIALS_TYPES, f"credentials type must be one of {', '.join(CREDENTIALS_TYPES)}")
    check(is_id(credentials.id), "a credentials id is required")
    if credentials.type == ACCESS_TOKEN:
        check(credentials.value is None, "an access token has no credentials value")
    elif credentials.type == PSK:
        check(isinstance(credentials.value, str) and PSK_KEY_HEX.fullmatch(credentials.value) is not None,
              "a pre-shared key needs its key as 32 to 128 lowercase hex digits")
    else:
        check(is_id(credentials.value), "a certificate needs its PEM as the credentials value")


def _encode_bool(value):
    return "BOOLEAN", int(value)


def _encode_int(value):
    check(INT64_MIN <= value <= INT64_MAX, "integer value does not fit in 64 bits")
    return "LONG", value


def _encode_float(value):
    check(value == value, "NaN cannot be stored")
    return "DOUBLE", value


def _encode_str(value):
    return "STRING", value


_EXACT = {bool: _encode_bool, int: _encode_int, float: _encode_float, str: _encode_str}  # the usual types


def encode_value(value):
    """``(kind, data)``: the ThingsBoard kind of a typed value and a plain int, float or str for it."""
    exact = _EXACT.get(type(value))
    if exact is not None:
        return exact(value)
    try:
        kind = kind_of(value)
    except TypeError as exc:
        raise BadRequest(str(exc)) from None
    if kind == "BOOLEAN":
        return kind, int(value)
    if kind == "LONG":
        check(INT64_MIN <= value <= INT64_MAX, "integer value does not fit in 64 bits")
        return kind, int(value)
    if kind == "DOUBLE":
        check(not math.isnan(value), "NaN cannot be stored")
        return kind, float(value)
    return kind, str(value)


def key_list(keys):
    """None, or the distinct keys in their order (BadRequest for a plain string)."""
    if keys is None:
        return None
    check(not isinstance(keys, str), "keys must be a list of strings, not a string")
    return list(dict.fromkeys(keys))


def check_entries(entries):
    """``[(ts, key, kind, data)]`` of telemetry entries ``(ts, key, value)``."""
    rows = []
    for ts, key, value in entries:
        if type(ts) is not int or not 0 <= ts <= INT64_MAX:  # the usual: a plain non-negative int
            check(is_int64(ts), f"timestamp must be a 64-bit integer, not {ts!r}")
        if type(key) is not str or not key:
            check(is_id(key), "keys must be non-empty strings")
        rows.append((ts, key, *encode_value(value)))
    return rows


def check_values(values):
    """``[(key, kind, data)]`` of attribute values ``{key: value}``."""
    rows = []
    for key, value in values.items():
        check(is_id(key), "keys must be non-empty strings")
        rows.append((key, *encode_value(value)))
    return rows


AGGREGATIONS = ("AVG", "MIN", "MAX", "SUM", "COUNT")


def check_expiry(now, older_than, limit):
    """The arguments of ``expire_telemetry``."""
    check(is_int64(now) and (older_than is None or is_int64(older_than)) and is_int64(limit, 1),
          "now, older_than and limit must be integers (older_than may be None)")


def check_deletion(keys, start_ts, end_ts) -> list:
    """The arguments of ``delete_telemetry``; the keys as a list."""
    check(keys is not None, "the keys to delete are required")
    keys = key_list(keys)
    check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
    return keys


def check_aggregate(start_ts, end_ts, interval, agg, limit):
    """The arguments of ``telemetry_aggregate``."""
    check(is_int64(start_ts) and is_int64(end_ts), "start and end must be integer timestamps")
    check(is_int64(interval, 1), "interval must be a positive integer")
    check(agg in AGGREGATIONS, f"agg must be one of {', '.join(AGGREGATIONS)}")
    check(is_int64(limit, 1), "limit must be a positive integer")


def bucket_ts(start_ts, end_ts, interval, k) -> int:
    """The timestamp of bucket ``k``: the middle of ``[start + k*interval, start + (k+1)*interval)``,
    the bucket cut at ``end_ts``."""
    begin = start_ts + k * interval
    return begin + (min(begin + interval, end_ts) - begin) // 2


def check_scope(scope):
    """An attribute scope: CLIENT_SCOPE, SHARED_SCOPE or SERVER_SCOPE."""
    check(scope in SCOPES, f"unknown attribute scope {scope!r}")


def check_page(limit, offset):
    check(is_int64(limit, 0) and is_int64(offset, 0), "limit and offset must be integers >= 0")


def check_device_query(limit, offset, text_search, sort_property):
    check_page(limit, offset)
    check(sort_property in DEVICE_SORT_PROPERTIES, f"cannot sort devices by {sort_property!r}")
    check(text_search is None or isinstance(text_search, str), "text_search must be a string")


def is_json_text(value) -> bool:
    return value is None or isinstance(value, str)


def check_rpc(rpc):
    """BadRequest unless ``rpc`` is an Rpc whose fields can be stored."""
    check(isinstance(rpc, Rpc), f"not an Rpc: {type(rpc).__name__}")
    check(is_id(rpc.id), "the RPC id must be a non-empty string")
    check(is_id(rpc.device_id), "the device id must be a non-empty string")
    check(is_id(rpc.method), "the RPC method must be a non-empty string")
    check(isinstance(rpc.params_json, str), "params_json must be JSON text")
    check(is_json_text(rpc.response_json), "response_json must be JSON text or None")
    check(isinstance(rpc.oneway, bool) and isinstance(rpc.persistent, bool), "oneway and persistent are booleans")
    check(rpc.status in RPC_STATUSES, f"unknown RPC status {rpc.status!r}")
    check(is_int64(rpc.expiration_time) and is_int64(rpc.created_time), "RPC times must be integer timestamps")


def check_status_change(status, response_json, expect):
    """The statuses ``expect`` as a list (None: any), after checking all three arguments."""
    check(status in RPC_STATUSES, f"unknown RPC status {status!r}")
    check(is_json_text(response_json), "response_json must be JSON text or None")
    if expect is None:
        return None
    check(not isinstance(expect, str), "expect must be a collection of statuses, not a string")
    expect = list(dict.fromkeys(expect))
    for s in expect:
        check(s in RPC_STATUSES, f"unknown RPC status {s!r}")
    return expect


def check_customer(customer, key_digest):
    check(isinstance(customer, Customer), f"not a Customer: {type(customer).__name__}")
    check(is_id(customer.id), "the customer id must be a non-empty string")
    check(is_id(customer.title), "the title must be a non-empty string")
    check(is_int64(customer.created_time), "created_time must be an integer timestamp")
    check(is_id(key_digest), "the key digest must be a non-empty string")


def check_owner_change(customer_id, expect_customer_id):
    check(customer_id is None or is_id(customer_id), "the customer id must be a string or None")
    check(expect_customer_id is None or is_id(expect_customer_id),
          "the expected customer id must be a non-empty string or None")


def check_claim_request(request, now):
    check(isinstance(request, ClaimRequest), f"not a ClaimRequest: {type(request).__name__}")
    check(isinstance(request.secret, str), "the claim secret must be a string")
    check(is_int64(request.expiration_time), "expiration_time must be an integer timestamp")
    check(is_int64(now), "now must be an integer timestamp")


def check_ota_package(package):
    """BadRequest unless ``package`` is an OtaPackage whose fields can be stored."""
    check(isinstance(package, OtaPackage), f"not an OtaPackage: {type(package).__name__}")
    for name in ("id", "title", "version", "device_profile_id"):
        check(is_id(getattr(package, name)), f"the package's {name} must be a non-empty string")
    check(package.type in OTA_TYPES, f"the package type must be one of {', '.join(OTA_TYPES)}")
    check(package.tag is None or isinstance(package.tag, str), "the tag must be a string or None")
    check(is_int64(package.created_time), "created_time must be an integer timestamp")


def check_ota_data(package):
    check_ota_package(package)
    check(is_id(package.data_id), "the upload id must be a non-empty string")
    check(is_int64(package.data_size, 0), "data_size must be an integer >= 0")
    for name in ("file_name", "content_type", "checksum_algorithm", "checksum"):
        check(isinstance(getattr(package, name), str), f"{name} must be a string")


def check_ota_chunk(upload_id, index, data):
    check(is_id(upload_id), "the upload id must be a non-empty string")
    check(is_int64(index, 0), "the chunk index must be an integer >= 0")
    check(isinstance(data, (bytes, bytearray, memoryview)) and len(data) <= OTA_CHUNK,
          f"a chunk is bytes, at most {OTA_CHUNK}")


def check_ota_range(offset, length):
    check(is_int64(offset, 0) and is_int64(length, 0), "offset and length must be integers >= 0")


def check_ota_assignment(entity_id, ota_type, package_id):
    check(is_id(entity_id), "the entity id must be a non-empty string")
    check(ota_type in OTA_TYPES, f"the package type must be one of {', '.join(OTA_TYPES)}")
    check(package_id is None or is_id(package_id), "the package id must be a string or None")


def ota_chunks(offset, length, data_size):
    """``[(index, start, end)]``: the chunks a range touches and the part of each it takes."""
    end = min(offset + length, data_size)
    out = []
    position = offset
    while position < end:
        index, start = divmod(position, OTA_CHUNK)
        take = min(OTA_CHUNK - start, end - position)
        out.append((index, start, start + take))
        position += take
    return out
