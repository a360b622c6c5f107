"""Protobuf messages as the values a JSON payload gives, and JSON values into messages.

``MessageReader(message class)`` decodes bytes and turns the message into plain Python values of
the JSON data model, one converter per field made once per message type:

- field names as written in the schema, in the order of their field numbers (as ThingsBoard's
  JSON printer has them);
- a field with presence (``optional``, a message, a oneof member) only when it is set; any other
  field always, with its default when unset (``0``, ``""``, ``false``, ``[]``, ``{}``), as
  ThingsBoard stores it;
- 64-bit integers as numbers; ``float`` fields as the shortest decimal that reads back the same;
  bytes as base64 and enums by name, as the protobuf JSON mapping writes them; a NaN or infinite
  number is BadRequest (JSON has none);
- nested messages as objects, repeated fields as arrays, maps as objects with text keys.

``fill(message class, {..})`` makes a message from JSON values by the protobuf JSON mapping
(unknown names ignored), a string field taking a non-string value as its JSON text.
"""

from __future__ import annotations

import base64
import struct

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from tbcoap.errors import BadRequest
from tbcoap.models import compact_json

_FLOAT, _DOUBLE = FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE
_BYTES, _ENUM, _MESSAGE = FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_ENUM, FieldDescriptor.TYPE_MESSAGE
_STRING = FieldDescriptor.TYPE_STRING


class MessageReader:
    """Reads one message type from bytes into JSON values (see the module's rules)."""

    __slots__ = ("message", "name", "_convert")

    def __init__(self, message):
        self.message = message
        self.name = message.DESCRIPTOR.full_name
        self._convert = _message_converter(message.DESCRIPTOR, {})

    def __call__(self, payload: bytes) -> dict:
        """The message in ``payload`` as a dict; BadRequest with the decoder's message."""
        return self._convert(self.decode(payload), self.name)

    def decode(self, payload: bytes):
        """The message itself; BadRequest with the decoder's message."""
        try:
            return self.message.FromString(payload)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise BadRequest(f"not a {self.name} message: {e}") from None

    def values(self, message) -> dict:
        """An already decoded message as a dict."""
        return self._convert(message, self.name)


def fill(message, data: dict):
    """A ``message`` (class) filled from JSON values; BadRequest with the mapping's complaint."""
    fields = message.DESCRIPTOR.fields_by_name
    given = {}
    for key, value in data.items():
        if value is None:
            continue
        field = fields.get(key) or _by_json_name(message.DESCRIPTOR, key)
        if field is not None and field.type == _STRING and not field.is_repeated and not isinstance(value, str):
            value = compact_json(value)  # a string field takes the JSON text of an object, a number..
        given[key] = value
    out = message()
    try:
        json_format.ParseDict(given, out, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise BadRequest(f"does not fit {message.DESCRIPTOR.full_name}: {e}"[:200]) from None
    return out


def _by_json_name(descriptor, key):
    for field in descriptor.fields:
        if field.json_name == key:
            return field
    return None


def _message_converter(descriptor, made):
    """The converter of one message type (``made``: the converters made so far, for recursion)."""
    if descriptor in made:
        return made[descriptor]
    fields = []

    def convert(message, where):
        out = {}
        for name, presence, value_of in fields:
            if presence and not message.HasField(name):
                continue
            out[name] = value_of(getattr(message, name), name)
        return out

    made[descriptor] = convert
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        fields.append((field.name, field.has_presence, _field_converter(field, made)))
    return convert


def _field_converter(field, made):
    if field.is_repeated:
        if field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
            value_of = _single_converter(field.message_type.fields_by_name["value"], made)
            return lambda mapping, where: {_map_key(k): value_of(v, where) for k, v in mapping.items()}
        item = _single_converter(field, made)
        return lambda items, where: [item(v, where) for v in items]
    return _single_converter(field, made)


def _single_converter(field, made):
    kind = field.type
    if kind == _DOUBLE:
        return _double
    if kind == _FLOAT:
        return _float
    if kind == _BYTES:
        return lambda value, where: base64.b64encode(value).decode("ascii")
    if kind == _ENUM:
        names = {value.number: value.name for value in field.enum_type.values}
        return lambda value, where: names.get(value, value)
    if kind == _MESSAGE:
        return _message_converter(field.message_type, made)
    return _same  # integers (as numbers, 64 bits too), bool, string


def _same(value, where):
    return value


def _double(value, where):
    if value - value != 0:  # NaN or an infinity
        raise BadRequest(f"{where!r} is not a finite number")
    return value


def _float(value, where):
    """A float32 value as the shortest decimal that reads back as the same float32."""
    if value - value != 0:
        raise BadRequest(f"{where!r} is not a finite number")
    for digits in range(6, 10):
        shortest = float(f"{value:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", shortest))[0] == value:
            return shortest
    return value


def _map_key(key):
    if key is True or key is False:
        return "true" if key else "false"
    return str(key)

