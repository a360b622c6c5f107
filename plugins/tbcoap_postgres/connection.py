"""Blocking psycopg connections for the store's threads, and what their errors mean.

Every connection works inside the URL's schema (``search_path``), so the store's SQL names its
tables without the schema.  ``describe`` turns libpq's several-line messages into one line that
names the cause; ``translate`` turns psycopg's errors into tbcoap's.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pgerrors

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, StoreUnavailable

# unique constraints -> the domain error they mean (jobs check first; this catches what another
# node wrote meanwhile)
_UNIQUE = {
    "devices_name_key": (DuplicateName, "a device with this name exists"),
    "devices_pkey": (BadRequest, "a device with this id exists"),
    "credentials_pkey": (DuplicateToken, "these credentials are used by another device"),
    "device_profiles_name_key": (DuplicateName, "a device profile with this name exists"),
    "device_profiles_provision_key_key": (BadRequest, "this provision key is used by another device profile"),
    "rpcs_pkey": (BadRequest, "an RPC with this id exists"),
    "customers_pkey": (BadRequest, "a customer with this id exists"),
    "customers_key_digest_key": (BadRequest, "this API key is used by another customer"),
    "customers_title_key": (DuplicateName, "a customer with this title exists"),
}


READ_WORK_MEM = "32MB"  # per sort or hash of a read (a node reads on 4 connections at most)


def connect(url, autocommit=False, read_only=False):
    """A new connection to ``url`` inside its schema (StoreUnavailable, in one line, if none)."""
    try:
        conn = psycopg.connect(**url.connect_args(), autocommit=autocommit)
    except psycopg.Error as exc:
        raise StoreUnavailable(describe(exc, url)) from None
    try:
        if read_only:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        statement_ms = int(url.timeout * 1000)
        with conn.cursor() as cur:
            cur.execute(f"SET search_path TO {url.schema}, public")
            # a call that would take longer than the store's timeout is cut by the server as well
            if read_only:
                cur.execute(f"SET statement_timeout = {max(statement_ms, 60_000)}")
                # aggregation sorts a year of points into buckets: in memory, not in temporary files
                cur.execute(f"SET work_mem = '{READ_WORK_MEM}'")
            cur.execute(f"SET lock_timeout = {statement_ms}")
            cur.execute("SET idle_in_transaction_session_timeout = 60000")
        if not autocommit:
            conn.commit()
    except psycopg.Error as exc:
        conn.close()
        raise StoreUnavailable(describe(exc, url)) from None
    return conn


def describe(exc, url) -> str:
    """One line naming why PostgreSQL at ``url`` could not be used."""
    text = str(exc)
    lower = text.lower()
    where = f"postgresql at {url.address}"
    if "connection refused" in lower:
        return f"{where} refused the connection: is PostgreSQL running at {url.address}?"
    if "password authentication failed" in lower or "no pg_hba.conf entry" in lower \
            or "authentication failed" in lower or "no password supplied" in lower:
        user = url.user or "the default user"
        return f"{where}: authentication failed for {user} (check the user, the password or pg_hba.conf)"
    if "does not exist" in lower and "role" in lower:
        return f"{where}: role \"{url.user or 'of the default user'}\" does not exist (check the user in the URL)"
    if "does not exist" in lower and "database" in lower:
        return f"{where}: database \"{url.dbname}\" does not exist (create it: createdb {url.dbname})"
    if "ssl" in lower or "certificate" in lower or "tls" in lower:
        return f"{where}: TLS failed (sslmode={url.sslmode}): {_first_line(text)}"
    if "timeout expired" in lower or "timed out" in lower:
        return f"{where} did not answer within {url.timeout:g} s"
    if "could not translate host name" in lower or "name or service not known" in lower:
        return f"{where}: unknown host {url.host}"
    if isinstance(exc, (pgerrors.AdminShutdown, pgerrors.CannotConnectNow, pgerrors.CrashShutdown)) \
            or "shutting down" in lower or "starting up" in lower or "terminating connection" in lower:
        return f"{where} is restarting or shutting down: {_first_line(text)}"
    if isinstance(exc, pgerrors.TooManyConnections):
        return f"{where} has no free connection (max_connections): {_first_line(text)}"
    if isinstance(exc, pgerrors.QueryCanceled):
        return f"{where} did not finish a call within its statement timeout"
    if isinstance(exc, pgerrors.LockNotAvailable):
        return f"{where}: a lock was not granted within {url.timeout:g} s"
    if "server closed the connection" in lower or "connection is closed" in lower \
            or "consuming input failed" in lower or "connection is lost" in lower or "eof" in lower:
        return f"{where} closed the connection (restarted?): {_first_line(text)}"
    return f"{where}: {_first_line(text)}"


def _first_line(text):
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line.removeprefix("connection failed: ")
    return "unknown error"


def is_unavailable(exc) -> bool:
    """True for errors about the server or the connection (not about the data)."""
    if isinstance(exc, (pgerrors.IntegrityError, pgerrors.DataError, pgerrors.ProgrammingError)):
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError, pgerrors.InternalError,
                            pgerrors.ReadOnlySqlTransaction, StoreUnavailable))


def is_retryable(exc) -> bool:
    """A deadlock or serialization failure between nodes, or a partition another node dropped
    meanwhile: the transaction may simply run again."""
    if isinstance(exc, pgerrors.CheckViolation) and "no partition of relation" in str(exc):
        return True
    return isinstance(exc, (pgerrors.DeadlockDetected, pgerrors.SerializationFailure))


def translate(exc, url):
    """The tbcoap error for an exception raised by psycopg (others pass unchanged)."""
    if isinstance(exc, pgerrors.UniqueViolation):
        constraint = getattr(exc.diag, "constraint_name", None) or ""
        cls, message = _UNIQUE.get(constraint, (BadRequest, f"constraint failed: {_first_line(exc)}"))
        return cls(message)
    if isinstance(exc, UnicodeEncodeError):
        return BadRequest("text that is not valid Unicode cannot be stored")
    if isinstance(exc, (pgerrors.DataError, pgerrors.IntegrityError)):
        return BadRequest(f"value not storable: {_first_line(exc)}")
    if is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
        return StoreUnavailable(describe(exc, url))
    return exc
