"""DTLS 1.2 record framing (RFC 6347 §4.1), the little of it the CoAPS endpoint reads itself.

OpenSSL does the protocol; this only tells a ClientHello from other datagrams before any state
exists, checks that a datagram is whole records (so a forged or truncated one never reaches a
session's connection), and packs what a connection wrote into datagrams that fit the path.
"""

from __future__ import annotations

HEADER = 13  # content type, version (2), epoch (2), sequence number (6), length (2)
HANDSHAKE = 22
CLIENT_HELLO = 1
CONTENT_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, application_data
DTLS_MAJOR = 0xFE  # DTLS versions are 0xFEFF (1.0) and 0xFEFD (1.2)


def records(datagram: bytes) -> int | None:
    """How many whole DTLS records ``datagram`` holds, or None when it is not exactly that."""
    pos, count, end = 0, 0, len(datagram)
    while pos < end:
        if end - pos < HEADER or datagram[pos] not in CONTENT_TYPES or datagram[pos + 1] != DTLS_MAJOR:
            return None
        pos += HEADER + ((datagram[pos + 11] << 8) | datagram[pos + 12])
        count += 1
    return count if pos == end and count else None


def is_client_hello(datagram: bytes) -> bool:
    """True for a datagram that starts with an epoch-0 handshake record carrying a ClientHello."""
    return (len(datagram) > HEADER and datagram[0] == HANDSHAKE and datagram[1] == DTLS_MAJOR
            and datagram[3] == 0 and datagram[4] == 0 and datagram[HEADER] == CLIENT_HELLO
            and records(datagram) is not None)


def datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Whole records of ``data`` (what a connection wrote) packed into datagrams of at most ``mtu``
    bytes; a record longer than ``mtu`` goes alone."""
    out, start, pos, end = [], 0, 0, len(data)
    while pos < end:
        size = HEADER + ((data[pos + 11] << 8) | data[pos + 12]) if end - pos >= HEADER else end - pos
        if pos > start and pos + size - start > mtu:
            out.append(data[start:pos])
            start = pos
        pos += size
    if start < end:
        out.append(data[start:end])
    return out


CHANGE_CIPHER_SPEC, ALERT, APPLICATION_DATA = 20, 21, 23
CLIENT_KEY_EXCHANGE = 16
HANDSHAKE_HEADER = 12  # type, length (3), message_seq (2), fragment_offset (3), fragment_length (3)


def each_record(datagram: bytes):
    """``(content type, epoch, sequence number, record)`` of each record of a datagram that
    ``records`` accepted."""
    pos, end = 0, len(datagram)
    while pos < end:
        size = HEADER + ((datagram[pos + 11] << 8) | datagram[pos + 12])
        record = datagram[pos:pos + size]
        yield record[0], (record[3] << 8) | record[4], int.from_bytes(record[5:11], "big"), record
        pos += size


def _whole_handshake(record: bytes, kind: int):
    """The body of an unfragmented epoch-0 handshake message of ``kind`` in ``record``, or None."""
    if record[0] != HANDSHAKE or record[3] or record[4] or len(record) < HEADER + HANDSHAKE_HEADER:
        return None
    head = record[HEADER:HEADER + HANDSHAKE_HEADER]
    length = int.from_bytes(head[1:4], "big")
    if head[0] != kind or head[6:9] != b"\0\0\0" or int.from_bytes(head[9:12], "big") != length:
        return None
    body = record[HEADER + HANDSHAKE_HEADER:HEADER + HANDSHAKE_HEADER + length]
    return body if len(body) == length else None


def hello_fields(datagram: bytes):
    """``(random, cookie, cipher suites)`` of the ClientHello that starts ``datagram`` (whole, as
    ``is_client_hello`` found it), or None when it is fragmented or cut short."""
    body = _whole_handshake(datagram[:HEADER + ((datagram[11] << 8) | datagram[12])], CLIENT_HELLO)
    if body is None or len(body) < 35:
        return None
    random, pos = body[2:34], 35 + body[34]  # after the session id
    if pos >= len(body):
        return None
    cookie = body[pos + 1:pos + 1 + body[pos]]
    pos += 1 + body[pos]
    if pos + 2 > len(body) or len(cookie) != body[pos - len(cookie) - 1]:
        return None
    size = int.from_bytes(body[pos:pos + 2], "big")
    suites = body[pos + 2:pos + 2 + size]
    if len(suites) != size or size % 2:
        return None
    return random, cookie, frozenset(int.from_bytes(suites[i:i + 2], "big") for i in range(0, size, 2))


def psk_identity(datagram: bytes) -> bytes | None:
    """The PSK identity of a plain-PSK ClientKeyExchange in ``datagram`` (RFC 4279 §2: the message
    is the identity and its 2-byte length, sent in the clear), or None without one. An ECDHE
    ClientKeyExchange (a 1-byte length, then the point) never has that shape."""
    for kind, epoch, _, record in each_record(datagram):
        body = _whole_handshake(record, CLIENT_KEY_EXCHANGE) if kind == HANDSHAKE and not epoch else None
        if body is not None and len(body) > 2 and int.from_bytes(body[:2], "big") == len(body) - 2:
            return body[2:]
    return None
