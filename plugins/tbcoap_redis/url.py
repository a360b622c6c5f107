"""Redis store URLs: ``redis://``, ``rediss://`` (TLS) and ``redis+sentinel://``.

    redis://[[user]:password@]host[:port][/db][?prefix=P&wait=N&timeout=S]
    rediss://...                          (TLS; ?ca=FILE for a private certificate authority)
    redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db][?...]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
SCHEMES = ("redis", "rediss", "redis+sentinel")
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class RedisUrl:
    """What a store URL says: where Redis is and how to use it."""

    scheme: str
    hosts: tuple = ()          # ((host, port), ...): the server, or the sentinels
    service: str | None = None  # the Sentinel service name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = "tbcoap"
    wait: int = 0              # replicas each acknowledged write waits for (WAIT)
    timeout: float = 5.0       # seconds any Redis call may take
    ca: str | None = None      # rediss: a CA file to trust instead of the system's

    @property
    def tls(self):
        return self.scheme == "rediss"

    def shown(self):
        """The URL without its password, for logs and messages."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        service = f"/{self.service}" if self.service else ""
        return f"{self.scheme}://{hosts}{service}/{self.db}?prefix={self.prefix}"


def parse(url: str) -> RedisUrl:
    """A RedisUrl, or ValueError saying what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a redis store URL: use {', '.join(s + '://' for s in SCHEMES)}")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    service = None
    if scheme == "redis+sentinel":
        if not segments:
            raise ValueError("a redis+sentinel URL names the service: redis+sentinel://host:port/SERVICE[/db]")
        service = segments.pop(0)
    if len(segments) > 1:
        raise ValueError(f"unexpected path {parts.path!r}: only a database number may follow")
    db = _int(segments[0], "database number", 0, 10_000) if segments else 0
    hosts = tuple(_host(h, DEFAULT_SENTINEL_PORT if service else DEFAULT_PORT) for h in hostinfo.split(",") if h)
    if not hosts:
        raise ValueError("the redis store URL names no host")
    if len(hosts) > 1 and not service:
        raise ValueError("several hosts need redis+sentinel://")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - {"prefix", "wait", "timeout", "ca"})
    if unknown:
        raise ValueError(f"unknown store URL option(s): {', '.join(unknown)} (known: prefix, wait, timeout, ca)")
    prefix = options.get("prefix", "tbcoap")
    if not _PREFIX.fullmatch(prefix):
        raise ValueError("prefix must be 1 to 64 letters, digits, '_', '.' or '-'")
    if "ca" in options and scheme != "rediss":
        raise ValueError("ca= is for rediss:// URLs")
    timeout = options.get("timeout", "5")
    try:
        timeout = float(timeout)
    except ValueError:
        raise ValueError(f"timeout must be seconds, not {timeout!r}") from None
    if not 0 < timeout <= 300:
        raise ValueError("timeout must be more than 0 and at most 300 seconds")
    return RedisUrl(scheme=scheme, hosts=hosts, service=service, db=db, username=unquote(username) or None,
                    password=unquote(password) or None, prefix=prefix,
                    wait=_int(options.get("wait", "0"), "wait", 0, 100), timeout=timeout, ca=options.get("ca"))


def _host(text, default_port):
    host, port = text, default_port
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _int(rest[1:], "port", 1, 65535)
    elif text.count(":") == 1:
        host, port = text.split(":")
        port = _int(port, "port", 1, 65535)
    if not host:
        raise ValueError(f"no host in {text!r}")
    return host, port


def _int(text, what, low, high):
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{what} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)
