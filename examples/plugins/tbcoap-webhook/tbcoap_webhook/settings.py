"""The plugin's settings (``[plugins.webhook]`` / ``--plugin-option webhook.KEY=VALUE``) and their checks.

Check messages never repeat the URL or the header value: either may hold a secret.
"""

import re
from urllib.parse import urlsplit

from tbcoap.hookspecs import SHUTDOWN_TIMEOUT, Setting

MAX_BACKOFF = 30.0      # seconds: the longest wait between two attempts
MAX_SHUTDOWN_FLUSH = SHUTDOWN_TIMEOUT  # tbcoap waits at most this long for tbcoap_shutdown
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # an HTTP header name (RFC 9110 token)
RESERVED_HEADERS = {"content-length", "transfer-encoding", "host", "content-type"}


def fail(text):
    raise ValueError(text)  # tbcoap puts "--plugin-option webhook.KEY:" (or the TOML table) in front


def check_url(url):
    parts = urlsplit(url)
    try:
        parts.port  # ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        fail("url has a bad port number")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail("url must start with http:// or https:// and name a host")


def at_least(key, low):
    def check(value):
        if value < low:
            fail(f"{key} must be at least {low}, got {value!r}")
    return check


def positive(key):
    def check(value):
        if not value > 0:
            fail(f"{key} must be more than 0, got {value!r}")
    return check


def check_shutdown_flush(value):
    if not 0 <= value <= MAX_SHUTDOWN_FLUSH:
        fail(f"shutdown-flush must be 0 to {MAX_SHUTDOWN_FLUSH:g} seconds "
             f"(tbcoap waits at most {MAX_SHUTDOWN_FLUSH:g} s), got {value!r}")


def parse_header(text):
    """``"Name: value"`` -> ``(b"Name", b"value")``; ``""`` -> None.  ValueError for a bad one."""
    if text == "":
        return None
    name, colon, value = text.partition(":")
    value = value.strip(" \t")
    if not colon or not TOKEN.match(name):
        fail("header must look like 'Name: value' with a plain header name")
    if not value or any((c < " " and c != "\t") or c == "\x7f" for c in value):
        fail("header needs a value without control characters (no line breaks)")
    if name.lower() in RESERVED_HEADERS:
        fail(f"header may not set {name} (the plugin sets it)")
    return name.encode("ascii"), value.encode("utf-8")


SETTINGS = [
    Setting("url", str, None, "where to POST the JSON batches (http:// or https://)",
            required=True, check=check_url, secret=True),
    Setting("batch-size", int, 100, "most events in one POST", check=at_least("batch-size", 1)),
    Setting("batch-wait", float, 1.0, "seconds a batch may wait to fill, from its first event",
            check=positive("batch-wait")),
    Setting("queue-size", int, 10000, "most events held (waiting or being sent); more are dropped",
            check=at_least("queue-size", 1)),
    Setting("retries", int, 5, "retries of a failed POST before its events are given up",
            check=at_least("retries", 0)),
    Setting("backoff", float, 0.5, f"seconds before the first retry, doubling up to {MAX_BACKOFF:g}",
            check=positive("backoff")),
    Setting("timeout", float, 10.0, "seconds one POST may take", check=positive("timeout")),
    Setting("shutdown-flush", float, 5.0, "seconds to try sending what is held when the node stops",
            check=check_shutdown_flush),
    Setting("header", str, "", "one extra request header, 'Name: value' (e.g. Authorization: Bearer ...)",
            check=parse_header, secret=True),
]
