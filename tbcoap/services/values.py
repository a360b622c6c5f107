"""Device payload typing (docs/device-api.md): the one place these rules live.

``parse_json`` is strict JSON; ``type_value`` gives a value its ThingsBoard
type (bool, int, float, str or Json); ``parse_telemetry`` and
``parse_attributes`` check shape, keys and limits and type every value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal

from tbcoap.errors import BadRequest
from tbcoap.models import INT64_MAX, INT64_MIN, Json, compact_json

_NUMERIC = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_NUMERIC_START = frozenset("-0123456789")
_INFINITIES = (float("inf"), float("-inf"))


@dataclass(frozen=True)
class Limits:
    """Per-request limits (docs/device-api.md, Limits)."""

    max_keys: int = 1000  # entries per request (telemetry: all (ts, key) pairs)
    max_key_length: int = 255
    max_string_bytes: int = 65536  # a STRING or JSON value's UTF-8 length


class Number(float):
    """A float parsed from JSON that remembers its literal text."""

    __slots__ = ("literal",)


def _shown(key: str) -> str:
    """``key`` quoted and cut short enough for a CoAP diagnostic."""
    text = repr(key).encode()
    return text.decode() if len(text) <= 40 else text[:36].decode(errors="ignore") + "...'"


def _object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"duplicate key {_shown(key)}")
            seen.add(key)
    return obj


def _constant(name: str):
    raise BadRequest(f"{name} is not allowed")


def _float(literal: str) -> Number:
    number = Number(literal)
    if number in _INFINITIES:
        raise BadRequest("number out of range")
    number.literal = literal
    return number


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_float=_float, parse_constant=_constant)


def parse_json(payload: bytes) -> object:
    """Parse strict JSON: UTF-8, no NaN/Infinity, no duplicate keys, finite numbers."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("payload is not UTF-8") from None
    try:
        data = _DECODER.decode(text)
        if "\\ud" in text or "\\uD" in text:  # rare: reject lone surrogates
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as e:
        raise BadRequest(f"invalid JSON at char {e.pos}: {e.msg}") from None
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    except UnicodeEncodeError:
        raise BadRequest("invalid \\u escape (lone surrogate)") from None
    except ValueError:  # an integer literal over Python's digit limit
        raise BadRequest("number out of range") from None
    return data


def _big_int(value: int) -> str:
    """The STRING form of an integer beyond 64 bits but within the double range."""
    try:
        float(value)
    except OverflowError:
        raise BadRequest("number out of range") from None
    return str(value)


def _number(value: Number):
    literal = value.literal
    if "e" not in literal and "E" not in literal:
        return float(value)  # written with '.', no exponent: DOUBLE
    exact = Decimal(literal)
    if exact != exact.to_integral_value():
        return float(value)
    if INT64_MIN <= exact <= INT64_MAX:
        return int(exact)
    return literal  # finite (checked at parse), integral, beyond 64 bits


def _numeric_string(value: str):
    match = _NUMERIC.fullmatch(value)
    if match is None:
        return value
    if match.group(1):
        number = float(value)
        return value if number in _INFINITIES else number
    try:
        number = int(value)
    except ValueError:  # over Python's digit limit: surely beyond 64 bits
        return value
    return number if INT64_MIN <= number <= INT64_MAX else value


def type_value(value):
    """The typed value (bool, int, float, str, Json) of a parsed JSON value; None for null."""
    kind = type(value)
    if kind is str:
        return _numeric_string(value) if value[:1] in _NUMERIC_START else value
    if kind is int:
        return value if INT64_MIN <= value <= INT64_MAX else _big_int(value)
    if kind is Number:
        return _number(value)
    if kind is bool or value is None:
        return value
    if kind is dict or kind is list:
        try:
            return Json(compact_json(value))
        except RecursionError:
            raise BadRequest("JSON nested too deeply") from None
    if kind is float:  # not from parse_json: no literal to go by
        if value - value == 0:
            return value
        raise BadRequest("number out of range")
    raise TypeError(f"not a JSON value: {kind.__name__}")


def _typed(obj: dict, limits: Limits):
    """Check each key and value of ``obj``; yield (key, typed) for the non-null ones."""
    max_len, max_bytes = limits.max_key_length, limits.max_string_bytes
    safe_chars = max_bytes // 4  # a str this short is surely within max_bytes
    for key, value in obj.items():
        if not key or len(key) > max_len:
            raise BadRequest("empty key" if not key else f"key over {max_len} characters")
        typed = type_value(value)
        if typed is None:
            continue
        if (
            isinstance(typed, str)
            and len(typed) > safe_chars
            and len(typed.encode("utf-8")) > max_bytes
        ):
            raise BadRequest(f"value of {_shown(key)} over {max_bytes} bytes")
        yield key, typed


def _ts(value) -> int:
    if type(value) is int:
        ts = value
    elif type(value) is str and value.isascii() and value.isdigit():
        try:
            ts = int(value)
        except ValueError:  # over Python's digit limit
            ts = -1
    else:
        ts = -1
    if 0 <= ts <= INT64_MAX:
        return ts
    raise BadRequest("'ts' must be milliseconds: an integer or a string of digits")


def parse_telemetry(
    payload: bytes, now_ms: int, limits: Limits = Limits(), read=parse_json
) -> list[tuple[int, str, object]]:
    """(ts, key, typed value) entries of a telemetry payload, in payload order; ``read`` turns the
    bytes into JSON values (strict JSON; CBOR and Protobuf readers give the same values)."""
    data = read(payload)
    if type(data) is dict:
        items = (data,)
    elif type(data) is list:
        items = data
    else:
        raise BadRequest("telemetry must be a JSON object or array")
    entries: list[tuple[int, str, object]] = []
    count = 0
    for item in items:
        if type(item) is not dict:
            raise BadRequest("telemetry array items must be objects")
        if "ts" in item and "values" in item:
            ts, values = _ts(item["ts"]), item["values"]
            if type(values) is not dict:
                raise BadRequest("'values' must be an object")
        else:
            ts, values = now_ms, item
        count += len(values)
        if count > limits.max_keys:
            raise BadRequest(f"over {limits.max_keys} keys in one request")
        entries += [(ts, key, typed) for key, typed in _typed(values, limits)]
    return entries


def parse_attributes(payload: bytes, limits: Limits = Limits(), read=parse_json) -> dict[str, object]:
    """Key -> typed value of a client attributes payload (an object; nulls skipped); ``read`` as
    for ``parse_telemetry``."""
    data = read(payload)
    if type(data) is not dict:
        raise BadRequest("attributes must be a JSON object")
    if len(data) > limits.max_keys:
        raise BadRequest(f"over {limits.max_keys} keys in one request")
    return dict(_typed(data, limits))
