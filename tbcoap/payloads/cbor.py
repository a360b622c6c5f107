"""CBOR (RFC 8949, Content-Format 60) with the JSON data model, by cbor2.

``read`` takes exactly one data item made of maps with text keys, arrays, text, integers, finite
floats, booleans and null; anything else (byte strings, tags, undefined, other simple values, NaN
or an infinity, a key that is not text, a key twice in one map, bytes after the item) is
BadRequest with a diagnostic. ``write`` encodes JSON values.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import cbor2

from tbcoap.errors import BadRequest

MAX_DEPTH = 200  # nesting of maps and arrays


class _Refused(Exception):
    """Raised inside the decoder for a tag; becomes BadRequest."""


def _refuse_tag(decoder, value=None):
    raise _Refused("tags are not allowed")


class _EveryTag(Mapping):
    """cbor2's semantic decoders, one for every tag: each refuses (no tag is JSON)."""

    def __getitem__(self, tag):
        return _refuse_tag

    def __contains__(self, tag):
        return True

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


_EVERY_TAG = _EveryTag()
_SCALARS = frozenset({str, int, bool, type(None)})
_NOT_FINITE = "NaN and infinities are not allowed (JSON has none)"
_decoder = None  # one decoder, given each payload in turn (no tag is taken, so it keeps no state)


def read(payload: bytes):
    """The one CBOR data item of ``payload`` as JSON values; BadRequest for anything else."""
    global _decoder
    if not payload:
        raise BadRequest("empty body: expected a CBOR data item")
    stream = io.BytesIO(payload)
    if _decoder is None:
        _decoder = cbor2.CBORDecoder(stream, semantic_decoders=_EVERY_TAG, tag_hook=_refuse_tag,
                                     allow_duplicate_keys=False, max_depth=MAX_DEPTH)
    else:
        _decoder.fp = stream
    try:
        value = _decoder.decode()
    except _Refused as e:
        raise BadRequest(f"invalid CBOR: {e}") from None
    except cbor2.CBORDecodeError as e:
        cause = e.__cause__
        text = str(cause) if isinstance(cause, _Refused) else str(e)
        raise BadRequest(f"invalid CBOR: {text}"[:90]) from None
    except (RecursionError, MemoryError):
        raise BadRequest("invalid CBOR: nested too deeply") from None
    finally:
        _decoder.fp = _EMPTY
    if stream.tell() != len(payload):
        raise BadRequest(f"invalid CBOR: {len(payload) - stream.tell()} bytes after the data item")
    kind = type(value)
    if kind is dict or kind is list:
        _check(value)
    elif kind is float:
        if value - value != 0:
            raise BadRequest(_NOT_FINITE)
    elif kind not in _SCALARS:
        raise BadRequest(f"{_name(value)} is not allowed (not JSON)")
    return value


_EMPTY = io.BytesIO(b"")


def _check(container):
    """BadRequest unless every key is text and every value of the JSON data model, all the way down."""
    if type(container) is dict:
        for key in container:
            if type(key) is not str:
                raise BadRequest(f"CBOR map keys must be text, not {_name(key)}")
        items = container.values()
    else:
        items = container
    for item in items:
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is float:
            if item - item != 0:
                raise BadRequest(_NOT_FINITE)
        elif kind is dict or kind is list:
            _check(item)
        else:
            raise BadRequest(f"{_name(item)} is not allowed (not JSON)")


def _name(value):
    if isinstance(value, (bytes, bytearray)):
        return "a byte string"
    if value is cbor2.undefined:
        return "undefined"
    if isinstance(value, cbor2.CBORSimpleValue):
        return f"simple value {value.value}"
    return type(value).__name__


def write(value) -> bytes:
    """JSON values as CBOR."""
    return cbor2.dumps(value)
