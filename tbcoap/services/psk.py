"""DTLS pre-shared keys as device credentials: what an identity and a key may be, and the proof a
session keeps of the key it was made with."""

from __future__ import annotations

import hashlib
import re

from tbcoap.errors import BadRequest
from tbcoap.models import PSK, Credentials

MAX_IDENTITY = 128  # UTF-8 bytes of a PSK identity
KEY_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){16,64}")  # 16 to 64 bytes


def psk_credentials(identity, key) -> Credentials:
    """``Credentials`` of a pre-shared key: ``identity`` (text) and ``key`` (hex, 16 to 64 bytes,
    kept in lowercase); BadRequest for anything else."""
    if (not isinstance(identity, str) or not identity or len(identity.encode("utf-8", "replace")) > MAX_IDENTITY
            or any(ord(c) < 32 or ord(c) == 127 for c in identity)):
        raise BadRequest(f"credentialsId must be the PSK identity: 1 to {MAX_IDENTITY} bytes of text "
                         "without control characters")
    if not isinstance(key, str) or KEY_HEX.fullmatch(key) is None:
        raise BadRequest("credentialsValue must be the pre-shared key in hex: 16 to 64 bytes (32 to 128 digits)")
    return Credentials(PSK, identity, key.lower())


def key_proof(key: bytes) -> bytes:
    """What a session keeps of the key its handshake used: enough to tell it from another key."""
    return hashlib.sha256(key).digest()
