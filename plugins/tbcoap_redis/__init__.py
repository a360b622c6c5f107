"""The bundled Redis store, chosen with ``--store redis://...``, ``rediss://...`` or
``redis+sentinel://...``: the store several nodes can share (docs/redis.md).

    redis://[[user]:password@]host[:port][/db][?prefix=P&wait=N&timeout=S]
"""

from tbcoap.hookspecs import StoreBackend, hookimpl

from .url import SCHEMES, parse

__version__ = "0.1.0"


def make_store(url, settings):
    """An unopened RedisStore for ``url`` (ValueError naming what is wrong with it)."""
    from .store import RedisStore

    return RedisStore(parse(url))


@hookimpl
def tbcoap_store_backends():
    """Offer the ``redis``, ``rediss`` and ``redis+sentinel`` schemes."""
    return [StoreBackend(scheme=scheme, factory=make_store,
                         description="Redis (pub/sub between nodes; several nodes may share one)")
            for scheme in SCHEMES]
