"""Keeping access tokens out of logs (docs/security.md): at most 4 characters and a hash."""

import hashlib
import re
from urllib.parse import unquote_plus

_QUERY_PARAM = re.compile(r"([?&])([^=&\s]*)=([^&\s]*)")  # "#" is part of a value: never a fragment here
_DEVICE_PATH = re.compile(r"(/api/v1/)([^/?\s]+)")
MASKED_PARAMS = ("accesstoken", "token")  # a device's token; an API key in a WebSocket URL (?token=)


def mask_token(token) -> str:
    """``"abcd...#1a2b3c4d"``: the first 4 characters and a short SHA-256, or ``"-"``."""
    if not token:
        return "-"
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:8]
    return f"{token[:4]}...#{digest}"


def redact_uri(uri: str) -> str:
    """A request URI with any ``accessToken`` or ``token`` value (also percent-encoded) and device-path
    token masked."""
    def param(m):
        if unquote_plus(m.group(2)).lower() not in MASKED_PARAMS:
            return m.group(0)
        return f"{m.group(1)}{m.group(2)}={mask_token(unquote_plus(m.group(3)))}"

    uri = _QUERY_PARAM.sub(param, uri)
    return _DEVICE_PATH.sub(
        lambda m: m.group(1) + (m.group(2) if m.group(2) == "provision" else mask_token(m.group(2))), uri)
