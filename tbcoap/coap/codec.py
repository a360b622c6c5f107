"""CoAP messages as bytes and back (RFC 7252 §3, RFC 7959 §2.2), for any transport.

txThings 0.3.0 stays the message and option model; this module adds what it lacks or gets
wrong: a validating ``decode`` that raises ``Malformed`` instead of failing somewhere inside,
Accept (17) decoded as a number, ``BlockOption`` encoding 0 as an empty value, the bytes of
empty messages and of answers that are only a code, and ``code_text``.  Nothing here knows
of sockets, peers or reactors.
"""

from __future__ import annotations

from txthings import coap

CON, NON, ACK, RST = coap.CON, coap.NON, coap.ACK, coap.RST
KNOWN_OPTIONS = frozenset({3, 4, 6, 7, 8, 11, 12, 14, 15, 17, 20, 23, 27, 28, 60})
"""Options this server understands; any other critical (odd) one is 4.02."""


def code_text(code: int) -> str:
    """``69`` -> ``"2.05"``."""
    return f"{code >> 5}.{code & 31:02d}"


class Malformed(Exception):
    """A datagram that is not a CoAP message; ``mtype``/``mid`` when readable."""

    def __init__(self, reason, mtype=None, mid=None):
        super().__init__(reason)
        self.mtype = mtype
        self.mid = mid


class BlockOption(coap.BlockOption):
    """Block1/Block2 option whose value 0 encodes as zero bytes (RFC 7959 §2.2)."""

    def encode(self):
        num, more, szx = self.value
        value = (num << 4) | (0x08 if more else 0) | szx
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    @property
    def length(self):
        return len(self.encode())


# txThings lists Accept (17) as 16, so it would decode as opaque bytes
OPTION_FORMATS = {**coap.option_formats, coap.ACCEPT: coap.UintOption, coap.BLOCK1: BlockOption,
                  coap.BLOCK2: BlockOption}


def _first(number):
    """A getter of the first value of option ``number`` (txThings' getters, one call fewer)."""

    def get(self):
        found = self._options.get(number)
        return found[0].value if found else None

    return get


class Options(coap.Options):
    """txThings' options with the getters the layer calls on every request made cheaper."""

    block1 = property(_first(coap.BLOCK1), coap.Options._setBlock1)
    block2 = property(_first(coap.BLOCK2), coap.Options._setBlock2)
    observe = property(_first(coap.OBSERVE), coap.Options._setObserve)
    content_format = property(_first(coap.CONTENT_FORMAT), coap.Options._setContentFormat)
    accept = property(_first(coap.ACCEPT), coap.Options._setAccept)

    @property
    def uri_path(self):
        found = self._options.get(coap.URI_PATH)
        return [option.value for option in found] if found else []

    @uri_path.setter
    def uri_path(self, segments):
        coap.Options._setUriPath(self, segments)


class Message(coap.Message):
    """txThings' Message with ``Options`` above; what ``decode`` and ``response`` make."""

    def __init__(self, mtype=None, mid=None, code=coap.EMPTY, payload=b"", token=b""):
        if payload is None:
            raise TypeError("Payload must not be None. Use empty string instead.")
        self.version, self.mtype, self.mid, self.code, self.token, self.payload = 1, mtype, mid, code, token, payload
        self.opt = Options()
        self.response_type = self.remote = self.prepath = self.postpath = None


def block_size(szx: int) -> int:
    """Bytes in a block of size exponent ``szx`` (RFC 7959 §2.2)."""
    return 1 << (szx + 4)


def decode(data: bytes, remote) -> coap.Message:
    """Validate a datagram and decode it into a txThings Message, or raise Malformed.

    The message's ``unknown_critical`` is the first critical option number
    this server does not understand, or None.
    """
    end = len(data)
    if end < 4:
        raise Malformed("shorter than a header")
    first = data[0]
    if first >> 6 != 1:
        raise Malformed("version is not 1")
    mtype, tkl, code, mid = (first >> 4) & 3, first & 15, data[1], (data[2] << 8) | data[3]
    if tkl > 8:
        raise Malformed("token length over 8", mtype, mid)
    pos = 4 + tkl
    if pos > end:
        raise Malformed("truncated token", mtype, mid)
    options, number, payload, unknown = [], 0, b"", None
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte == 0xFF:
            if pos == end:
                raise Malformed("payload marker without payload", mtype, mid)
            payload = data[pos:]
            break
        delta, length = byte >> 4, byte & 15
        if delta > 12:
            delta, pos = _extended(delta, data, pos, mtype, mid)
        if length > 12:
            length, pos = _extended(length, data, pos, mtype, mid)
        if pos + length > end:
            raise Malformed("truncated option", mtype, mid)
        number += delta
        if number & 1 and unknown is None and number not in KNOWN_OPTIONS:
            unknown = number
        options.append((number, data[pos:pos + length]))
        pos += length
    if code == coap.EMPTY and (tkl or options or payload):
        raise Malformed("empty message with content", mtype, mid)
    message = Message(mtype=mtype, mid=mid, code=code, payload=payload, token=data[4:4 + tkl])
    message.remote = remote
    message.unknown_critical = unknown
    add = message.opt.addOption
    for number, raw in options:
        option = OPTION_FORMATS.get(number, coap.OpaqueOption)(number)
        option.decode(raw)
        add(option)
    return message


def _extended(nibble, data, pos, mtype, mid):
    if nibble < 13:
        return nibble, pos
    if nibble == 13 and pos < len(data):
        return data[pos] + 13, pos + 1
    if nibble == 14 and pos + 1 < len(data):
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise Malformed("bad option delta or length", mtype, mid)


def encode(message: coap.Message) -> bytes:
    """The bytes of ``message`` (what txThings' ``Message.encode`` gives, in fewer steps)."""
    token = message.token
    head = bytes((0x40 | (message.mtype << 4) | len(token), message.code, message.mid >> 8, message.mid & 0xFF))
    options = message.opt.optionList()
    payload = message.payload
    parts = [head, token]
    number = 0
    for option in options:
        value = option.encode()
        delta, number = option.number - number, option.number
        parts.append(_option_header(delta, len(value)))
        parts.append(value)
    if payload:
        parts.append(b"\xff")
        parts.append(payload)
    return b"".join(parts)


def _option_header(delta: int, length: int) -> bytes:
    """An option's first byte and its extended delta and length (RFC 7252 §3.1)."""
    if delta < 13 and length < 13:
        return bytes(((delta << 4) | length,))
    out = bytearray(1)
    nibbles = 0
    for value in (delta, length):
        if value < 13:
            nibble = value
        elif value < 269:
            nibble = 13
            out.append(value - 13)
        else:
            nibble = 14
            out += (value - 269).to_bytes(2, "big")
        nibbles = (nibbles << 4) | nibble
    out[0] = nibbles
    return bytes(out)


def response(code: int, payload: bytes = b"", content_format: int | None = None) -> coap.Message:
    """A response Message for a handler to return."""
    message = Message(code=code, payload=payload)
    if content_format is not None:
        message.opt.content_format = content_format
    return message


def encode_empty(mtype: int, mid: int) -> bytes:
    """An empty message (an empty ACK, an RST): four bytes."""
    return bytes(((1 << 6) | (mtype << 4), 0, mid >> 8, mid & 0xFF))


def encode_bare_ack(code: int, mid: int, token: bytes) -> bytes:
    """A piggybacked answer that is only a code (no options, no payload)."""
    return bytes((0x60 | len(token), code, mid >> 8, mid & 0xFF)) + token
