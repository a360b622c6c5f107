"""PostgreSQL store URLs.

    postgresql://[user[:password]@]host[:port]/dbname[?sslmode=M&sslrootcert=FILE&schema=S&timeout=S]
    postgres://...                                       (the same)

A password left out of the URL is taken by libpq from ``PGPASSWORD`` or ``~/.pgpass``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
DEFAULT_PORT = 5432
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
OPTIONS = ("sslmode", "sslrootcert", "schema", "timeout")
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PostgresUrl:
    """What a store URL says: where PostgreSQL is and how to use it."""

    host: str
    port: int
    dbname: str
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    sslrootcert: str | None = None
    schema: str = "tbcoap"
    timeout: float = 5.0  # seconds: connecting, and any call the store makes

    @property
    def address(self):
        """``host:port`` for messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def shown(self):
        """The URL without its password, for logs and messages."""
        user = f"{self.user}@" if self.user else ""
        return f"postgresql://{user}{self.address}/{self.dbname}?schema={self.schema}"

    def connect_args(self):
        """Keyword arguments for ``psycopg.connect`` (libpq parameters)."""
        timeout = max(1, round(self.timeout))
        args = {"host": self.host, "port": self.port, "dbname": self.dbname, "sslmode": self.sslmode,
                "connect_timeout": timeout, "application_name": "tbcoap",
                # a server that stops answering is noticed within about the timeout, not hours later
                "keepalives": 1, "keepalives_idle": timeout, "keepalives_interval": 1, "keepalives_count": 3,
                "tcp_user_timeout": int(self.timeout * 1000)}
        if self.user:
            args["user"] = self.user
        if self.password:
            args["password"] = self.password
        if self.sslrootcert:
            args["sslrootcert"] = self.sslrootcert
        return args

    def with_dbname(self, dbname):
        """The same server and settings, another database (tests and tools)."""
        return PostgresUrl(**{**self.__dict__, "dbname": dbname})


def parse(url: str) -> PostgresUrl:
    """A PostgresUrl, or ValueError saying what is wrong."""
    if not isinstance(url, str):
        raise ValueError("the store URL must be text")
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("not a postgresql store URL: use postgresql://user@host:port/dbname")
    if parts.fragment:
        raise ValueError("a postgresql store URL takes no #fragment")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    host, port = _host(hostinfo)
    dbname = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
    if not dbname or "/" in dbname:
        raise ValueError("the postgresql store URL names no database: postgresql://user@host:port/DBNAME")
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    options = dict(pairs)
    if len(options) != len(pairs):
        raise ValueError("a postgresql store URL option is given twice")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown store URL option(s): {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    sslmode = options.get("sslmode", "prefer")
    if sslmode not in SSLMODES:
        raise ValueError(f"sslmode must be one of {', '.join(SSLMODES)}, not {sslmode!r}")
    schema = options.get("schema", "tbcoap")
    if not _SCHEMA.fullmatch(schema):
        raise ValueError("schema must be 1 to 63 lower-case letters, digits or '_', not starting with a digit")
    text = options.get("timeout", "5")
    try:
        timeout = float(text)
    except ValueError:
        raise ValueError(f"timeout must be seconds, not {text!r}") from None
    if not 0 < timeout <= 300:
        raise ValueError("timeout must be more than 0 and at most 300 seconds")
    if "sslrootcert" in options and not options["sslrootcert"]:
        raise ValueError("sslrootcert names a file of certificate authorities")
    return PostgresUrl(host=host, port=port, dbname=dbname, user=unquote(user) or None,
                       password=unquote(password) or None, sslmode=sslmode, sslrootcert=options.get("sslrootcert"),
                       schema=schema, timeout=timeout)


def _host(text):
    """``(host, port)`` of ``host[:port]`` or ``[v6]:port`` (a percent-encoded socket folder too)."""
    host, port = unquote(text), DEFAULT_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after the address in {text!r}")
            port = _port(rest[1:])
    elif ":" in text:
        name, _, number = text.rpartition(":")
        host, port = unquote(name), _port(number)
    if "," in host:
        raise ValueError("the postgresql store URL takes one host")
    if not host:
        raise ValueError("the postgresql store URL names no host: postgresql://user@HOST:port/dbname")
    return host, port


def _port(text):
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port must be a whole number from 1 to 65535, not {text!r}")
    return int(text)
