"""The bundled PostgreSQL store, chosen with ``--store postgresql://...`` (or ``postgres://``):
history on disk in time partitions, and several nodes on one database (docs/postgres.md).

    postgresql://[user[:password]@]host[:port]/dbname[?sslmode=M&sslrootcert=FILE&schema=S&timeout=S]
"""

from tbcoap.hookspecs import StoreBackend, hookimpl

from .url import SCHEMES, parse

__version__ = "0.1.0"


def make_store(url, settings):
    """An unopened PostgresStore for ``url`` (ValueError naming what is wrong with it)."""
    parsed = parse(url)
    try:
        from .store import PostgresStore
    except ImportError as exc:  # the driver is missing from this install
        raise ValueError(f"the postgresql store needs psycopg 3: pip install 'psycopg[binary]' ({exc})") from None
    return PostgresStore(parsed)


@hookimpl
def tbcoap_store_backends():
    """Offer the ``postgresql`` and ``postgres`` schemes."""
    return [StoreBackend(scheme=scheme, factory=make_store,
                         description="PostgreSQL (history in monthly partitions; several nodes may share one)")
            for scheme in SCHEMES]
