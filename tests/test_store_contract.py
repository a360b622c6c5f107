"""The IStore contract (tbcoap.testing.store_contract) run against every bundled backend.

To add a backend, add one async factory to BACKENDS: it gets the test's tmp_path and returns an
opened store; calling it again in the same test must reach the same data.
"""

import functools
import uuid

import pytest

from tbcoap.testing.store_contract import *  # noqa: F401,F403  the contract's tests and fixtures
from tbcoap_redis import make_store as make_redis_store
from tbcoap_sqlite import make_store
from tests.conftest import REDIS_URL, require_redis
from tests.redisutil import Resp


def sqlite_url(tmp_path):
    (tmp_path / "store").mkdir(exist_ok=True)  # the store creates its file, not its folder
    return "sqlite://" + str(tmp_path / "store" / "tbcoap.sqlite3")  # tmp_path is absolute


async def open_sqlite(tmp_path):
    store = make_store(sqlite_url(tmp_path), {})
    await store.open()
    return store


REDIS_PREFIXES = {}  # tmp_path -> prefix: a test's reopen reaches the same data


async def open_redis(tmp_path):
    """A RedisStore on the test Redis, under a prefix of this test's own (removed afterwards)."""
    url = require_redis()
    prefix = REDIS_PREFIXES.setdefault(str(tmp_path), f"contract-{uuid.uuid4().hex[:12]}")
    store = make_redis_store(f"{url}?prefix={prefix}", {})
    await store.open()
    return store


@pytest.fixture(autouse=True)
def remove_redis_keys(tmp_path):
    """The keys a Redis contract test made go with it."""
    yield
    prefix = REDIS_PREFIXES.pop(str(tmp_path), None)
    if prefix is not None:
        client = Resp.for_url(REDIS_URL)
        client.delete_prefix(prefix)
        client.close()


BACKENDS = {"sqlite": open_sqlite, "redis": open_redis}


@pytest.fixture(params=sorted(BACKENDS))
def open_backend(request, tmp_path):
    """An async callable opening a store of the backend under test on this test's data."""
    return functools.partial(BACKENDS[request.param], tmp_path)
