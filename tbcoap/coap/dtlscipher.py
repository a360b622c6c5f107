"""DTLS 1.2 record protection of an established session (RFC 6347 §4.1.2, AEAD suites only).

OpenSSL runs every handshake; once one completes, the session keeps only what protects its
records: the keys derived from the master secret (the TLS 1.2 PRF, RFC 5246 §6.3), its sequence
numbers and its replay window. That is a few hundred bytes and two AEAD objects from
``cryptography``, where an OpenSSL DTLS connection holds over 70 KB, so ten thousand idle sessions
fit in a few tens of megabytes. Only AEAD suites are offered (``SUITES``): AES-GCM, AES-CCM,
AES-CCM_8 and ChaCha20-Poly1305, whose records carry no padding and no separate MAC.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from tbcoap.coap.dtlsrecords import HEADER

VERSION = b"\xfe\xfd"  # DTLS 1.2
WINDOW = 64  # replay window (RFC 6347 §4.1.2.6)
MAX_SEQ = (1 << 48) - 1


def _gcm(key):
    return AESGCM(key)


def _ccm(key):
    return AESCCM(key, tag_length=16)


def _ccm8(key):
    return AESCCM(key, tag_length=8)


def _chacha(key):
    return ChaCha20Poly1305(key)


class Suite:
    """One AEAD cipher suite: OpenSSL's name, the IANA number, its AEAD, key and fixed-IV sizes, tag
    size and PRF hash."""

    __slots__ = ("name", "number", "aead", "key_size", "iv_size", "tag_size", "hash")

    def __init__(self, name, number, aead, key_size, iv_size, tag_size, hash=hashlib.sha256):
        self.name, self.number, self.aead, self.key_size, self.iv_size = name, number, aead, key_size, iv_size
        self.tag_size, self.hash = tag_size, hash

    @property
    def explicit_nonce(self) -> bool:
        """AES-GCM and AES-CCM carry 8 bytes of nonce in each record; ChaCha20-Poly1305 none."""
        return self.iv_size == 4


SUITES = {suite.name: suite for suite in (  # the certificate suites first
    Suite("ECDHE-ECDSA-AES128-GCM-SHA256", 0xC02B, _gcm, 16, 4, 16),
    Suite("ECDHE-ECDSA-AES256-GCM-SHA384", 0xC02C, _gcm, 32, 4, 16, hashlib.sha384),
    Suite("ECDHE-ECDSA-CHACHA20-POLY1305", 0xCCA9, _chacha, 32, 12, 16),
    Suite("ECDHE-ECDSA-AES128-CCM", 0xC0AC, _ccm, 16, 4, 16),
    Suite("ECDHE-ECDSA-AES256-CCM", 0xC0AD, _ccm, 32, 4, 16),
    Suite("ECDHE-RSA-AES128-GCM-SHA256", 0xC02F, _gcm, 16, 4, 16),
    Suite("ECDHE-RSA-AES256-GCM-SHA384", 0xC030, _gcm, 32, 4, 16, hashlib.sha384),
    Suite("ECDHE-RSA-CHACHA20-POLY1305", 0xCCA8, _chacha, 32, 12, 16),
    Suite("PSK-AES128-GCM-SHA256", 0x00A8, _gcm, 16, 4, 16),  # TLS_PSK_WITH_AES_128_GCM_SHA256
    Suite("PSK-AES128-CCM8", 0xC0A8, _ccm8, 16, 4, 8),  # TLS_PSK_WITH_AES_128_CCM_8 (RFC 7252's)
)}
PSK_CCM8 = SUITES["PSK-AES128-CCM8"]
MAIN_CIPHERS = ":".join(name for name in SUITES if name != PSK_CCM8.name)  # one context serves them all
MAIN_NUMBERS = frozenset(suite.number for suite in SUITES.values() if suite is not PSK_CCM8)


def prf(secret: bytes, label: bytes, seed: bytes, size: int, hash=hashlib.sha256) -> bytes:
    """TLS 1.2's PRF (RFC 5246 §5): P_hash(secret, label + seed), ``size`` bytes of it."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < size:
        a = hmac.digest(secret, a, hash)
        out += hmac.digest(secret, a + seed, hash)
    return out[:size]


class RecordCipher:
    """The epoch-1 records of one session: ``seal`` what the server sends, ``open`` what the peer
    sent (authenticated, not replayed). ``sent`` and ``received`` are the highest sequence numbers
    the handshake already used in this epoch (OpenSSL's Finished messages)."""

    __slots__ = ("suite", "epoch", "_seq", "_top", "_seen", "_read_iv", "_write_iv", "_reader", "_writer")

    def __init__(self, suite: Suite, master: bytes, client_random: bytes, server_random: bytes,
                 sent: int = 0, received: int = 0, epoch: int = 1):
        keys, ivs = suite.key_size, suite.iv_size
        block = prf(master, b"key expansion", server_random + client_random, 2 * (keys + ivs), suite.hash)
        client_key, server_key = block[:keys], block[keys:2 * keys]
        self._read_iv, self._write_iv = block[2 * keys:2 * keys + ivs], block[2 * keys + ivs:]
        self._reader, self._writer = suite.aead(client_key), suite.aead(server_key)
        self.suite, self.epoch = suite, epoch
        self._seq = sent + 1  # the next sequence number to send
        self._top, self._seen = received, (1 << WINDOW) - 1  # every number up to the handshake's taken

    def _nonce(self, iv, seq_bytes, explicit):
        if self.suite.explicit_nonce:
            return iv + explicit
        return (int.from_bytes(iv, "big") ^ int.from_bytes(seq_bytes, "big")).to_bytes(12, "big")

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """One record carrying ``plaintext``; ValueError once the sequence numbers run out."""
        seq = self._seq
        if seq > MAX_SEQ:
            raise ValueError("DTLS sequence numbers exhausted")
        self._seq = seq + 1
        seq_bytes = self.epoch.to_bytes(2, "big") + seq.to_bytes(6, "big")
        aad = seq_bytes + bytes((content_type,)) + VERSION + len(plaintext).to_bytes(2, "big")
        sealed = self._writer.encrypt(self._nonce(self._write_iv, seq_bytes, seq_bytes), plaintext, aad)
        if self.suite.explicit_nonce:
            sealed = seq_bytes + sealed
        return bytes((content_type,)) + VERSION + seq_bytes + len(sealed).to_bytes(2, "big") + sealed

    def open(self, record: bytes):
        """``(content type, plaintext)`` of one whole record of this epoch, or None when it does
        not authenticate or was seen before (both dropped silently, as RFC 6347 §4.1.2.7 says)."""
        seq_bytes = record[3:11]
        if int.from_bytes(seq_bytes[:2], "big") != self.epoch:
            return None
        seq = int.from_bytes(seq_bytes[2:], "big")
        if seq <= self._top and (seq <= self._top - WINDOW or self._seen >> (self._top - seq) & 1):
            return None
        fragment = record[HEADER:]
        explicit, tag = (8 if self.suite.explicit_nonce else 0), self.suite.tag_size
        length = len(fragment) - explicit - tag
        if length < 0:
            return None
        content_type = record[0]
        aad = seq_bytes + bytes((content_type,)) + VERSION + length.to_bytes(2, "big")
        try:
            plain = self._reader.decrypt(self._nonce(self._read_iv, seq_bytes, fragment[:explicit]),
                                         fragment[explicit:], aad)
        except InvalidTag:
            return None
        if seq > self._top:
            shift = seq - self._top
            self._seen = ((self._seen << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            self._top = seq
        else:
            self._seen |= 1 << (self._top - seq)
        return content_type, plain
