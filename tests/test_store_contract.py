"""The IStore contract (tbcoap.testing.store_contract) run against every bundled backend.

To add a backend, add one async factory to BACKENDS: it gets the test's tmp_path and returns an
opened store; calling it again in the same test must reach the same data.
"""

import functools
import uuid

import pytest

from tbcoap.testing.store_contract import *  # noqa: F401,F403  the contract's tests and fixtures
from tbcoap_postgres import make_store as make_postgres_store
from tbcoap_redis import make_store as make_redis_store
from tbcoap_sqlite import make_store
from tests.conftest import REDIS_URL, require_postgres, require_redis
from tests.pgutil import TestDatabase
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


POSTGRES_DATABASES = {}  # tmp_path -> TestDatabase: a test's reopen reaches the same data


async def open_postgres(tmp_path):
    """A PostgresStore in a database of this test's own on the test PostgreSQL (dropped afterwards)."""
    database = POSTGRES_DATABASES.get(str(tmp_path))
    if database is None:
        database = POSTGRES_DATABASES[str(tmp_path)] = TestDatabase("tbcoap_contract")
    store = make_postgres_store(database.url("timeout=5"), {})
    await store.open()
    return store


@pytest.fixture(autouse=True)
def drop_postgres_database(tmp_path):
    """The database a PostgreSQL contract test made goes with it."""
    yield
    database = POSTGRES_DATABASES.pop(str(tmp_path), None)
    if database is not None:
        database.drop()


BACKENDS = {"sqlite": open_sqlite, "redis": open_redis, "postgres": open_postgres}
PEERS = {"redis": require_redis, "postgres": require_postgres}  # checked here: a skip inside the
# asynchronous ``store`` fixture would leave pytest-twisted's fixture state broken for later tests


@pytest.fixture(params=sorted(BACKENDS))
def open_backend(request, tmp_path):
    """An async callable opening a store of the backend under test on this test's data (skipped, or
    failed under TBCOAP_REQUIRE_ALL=1, when the backend's server is not there)."""
    if request.param in PEERS:
        PEERS[request.param]()
    return functools.partial(BACKENDS[request.param], tmp_path)


def test_every_bundled_store_keeps_rollups():
    """The contract's rollup tests roll only a store that has ``rollup_telemetry``: every bundled
    store does (an outside store may not, and aggregates raw)."""
    from tbcoap_postgres.store import PostgresStore
    from tbcoap_redis.store import RedisStore
    from tbcoap_sqlite.store import SQLiteStore

    assert all(callable(getattr(cls, "rollup_telemetry", None)) for cls in (SQLiteStore, RedisStore, PostgresStore))
