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
