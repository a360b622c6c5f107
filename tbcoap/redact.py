"""Keeping access tokens out of logs (SPEC 7): at most 4 characters and a hash."""

import hashlib
import re

_QUERY_TOKEN = re.compile(r"(?i)(accessToken=)([^&\s]*)")
_DEVICE_PATH = re.compile(r"(/api/v1/)([^/?\s]+)")


def mask_token(token) -> str:
    """``"abcd...#1a2b3c4d"``: the first 4 characters and a short SHA-256, or ``"-"``."""
    if not token:
        return "-"
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]
    return f"{token[:4]}...#{digest}"


def redact_uri(uri: str) -> str:
    """A request URI with any ``accessToken=`` value and device-path token masked."""
    uri = _QUERY_TOKEN.sub(lambda m: m.group(1) + mask_token(m.group(2)), uri)
    return _DEVICE_PATH.sub(
        lambda m: m.group(1) + (m.group(2) if m.group(2) == "provision" else mask_token(m.group(2))), uri)
