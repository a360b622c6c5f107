"""PostgreSQL databases for the benchmarks: each run makes one of its own and drops it afterwards."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit


def new_database(server, query="timeout=30", synchronous_commit=None):
    """A store URL naming a new database on ``server`` (whose user may create databases); with
    ``synchronous_commit``, that setting for sessions in this database only (the server's own
    setting is left alone)."""
    import psycopg

    name = f"tbcoap_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        if synchronous_commit:
            conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {synchronous_commit}')
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", query, ""))


def drop_database(url):
    """Drop the database ``url`` names (connected to the server's ``postgres`` database)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.strip("/")
    with psycopg.connect(urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def disk_bytes(url, schema="tbcoap"):
    """``{table: bytes}`` on disk (heap, indexes, TOAST) of the history (all partitions), the latest values
    and the series, and the size of the whole database."""
    import psycopg

    parts = urlsplit(url)
    plain = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        history = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i"
            " WHERE i.inhparent = 'ts_kv'::regclass").fetchone()[0]
        out = {"history": int(history)}
        for table in ("ts_kv_latest", "series"):
            out[table] = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (table,)).fetchone()[0]
        out["database"] = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        return out
