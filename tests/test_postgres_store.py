"""What the PostgreSQL store does beyond the store contract: its URLs, its schema and partitions,
retention by dropping partitions, group commit, reads beside blocked writes, large events between
nodes, and what an operator sees of it through a node.  Each test works in a database of its own."""

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tbcoap.errors import BadRequest, StoreUnavailable
from tbcoap.models import Device, new_id
from tbcoap_postgres import make_store, partitions, schema
from tbcoap_postgres.url import parse
from tests.conftest import Rest
from tests.pgutil import TestDatabase

DAY = 24 * 3600 * 1000


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.fixture
def database():
    db = TestDatabase("tbcoap_pg")
    yield db
    db.drop()


@pytest_twisted.async_yield_fixture
async def store(database):
    s = make_store(database.url("timeout=2"), {})
    await s.open()
    yield s
    await s.close()


# -- URLs ----------------------------------------------------------------------------------------


def test_url_forms():
    url = parse("postgresql://tb:s%40cret@db.example:6543/things?sslmode=verify-full&sslrootcert=/ca.pem"
                "&schema=site_a&timeout=2.5")
    assert (url.host, url.port, url.dbname, url.user, url.password) == ("db.example", 6543, "things", "tb", "s@cret")
    assert (url.sslmode, url.sslrootcert, url.schema, url.timeout) == ("verify-full", "/ca.pem", "site_a", 2.5)
    assert "s@cret" not in url.shown() and "s@cret" not in repr(url)
    plain = parse("postgres://127.0.0.1/tbcoap")
    assert (plain.port, plain.user, plain.sslmode, plain.schema, plain.timeout) == (5432, None, "prefer", "tbcoap", 5.0)
    assert parse("postgresql://u@[::1]:5433/db").host == "::1" and parse("postgresql://u@[::1]:5433/db").port == 5433


@pytest.mark.parametrize("url, message", [
    ("postgresql://h/db?prefix=x", "unknown store URL option(s): prefix (known: sslmode, sslrootcert, schema, timeout)"),
    ("postgresql://h/db?sslmode=sometimes", "sslmode must be one of disable, allow, prefer, require"),
    ("postgresql://h/db?schema=Bad-Name", "schema must be 1 to 63 lower-case letters"),
    ("postgresql://h/db?timeout=0", "timeout must be more than 0"),
    ("postgresql://h/db?timeout=soon", "timeout must be seconds"),
    ("postgresql://h/", "names no database"),
    ("postgresql://h", "names no database"),
    ("postgresql:///db", "names no host"),
    ("postgresql://h:99999/db", "port must be a whole number"),
    ("postgresql://a,b/db", "takes one host"),
    ("postgresql://h/db?timeout=1&timeout=2", "given twice"),
    ("mysql://h/db", "not a postgresql store URL"),
])
def test_bad_urls_are_refused_clearly(url, message):
    with pytest.raises(ValueError) as caught:
        make_store(url, {})
    assert message in str(caught.value)


# -- schema and partitions ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_schema_is_versioned_and_kept_in_its_own_schema(store, database):
    conn = database.connect()
    assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION
    tables = {name for (name,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'tbcoap'")}
    assert {"devices", "credentials", "ts_kv_latest", "series", "rpcs", "rpc_counters", "bus_events"} <= tables
    assert not conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    # a second deployment in another schema of the same database sees nothing of the first
    await store.add_device(Device(id=new_id(), name="in-tbcoap"), "t1")
    other = make_store(database.url("schema=site_b&timeout=2"), {})
    await other.open()
    try:
        assert await other.device_by_name("in-tbcoap") is None
        assert (await other.list_profiles(10, 0))[1] == 1  # its own default profile
    finally:
        await other.close()
    # a database migrated by a newer tbcoap is refused, saying so
    conn.execute("UPDATE schema_version SET version = version + 1")
    newer = make_store(database.url("timeout=2"), {})
    with pytest.raises(StoreUnavailable, match="newer than this tbcoap supports"):
        await newer.open()
    conn.close()


def partition_names(database):
    conn = database.connect()
    try:
        return sorted(name for (name,) in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'ts_kv'::regclass"))
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_history_lands_in_monthly_partitions_made_when_needed(store, database):
    d = await store.add_device(Device(id=new_id(), name="a"), "ta")
    points = {"old": -5, "jan70": 1000, "mar21": 1_615_000_000_000, "far": 4_200_000_000_000}
    await store.save_telemetry(d.id, [(ts, key, n) for n, (key, ts) in enumerate(points.items())])
    names = partition_names(database)
    assert {"ts_kv_before", "ts_kv_after", "ts_kv_197001", "ts_kv_202103"} <= set(names)
    assert partitions.name(partitions.month_of(int(time.time() * 1000))) in names  # made ahead at start
    for n, (key, ts) in enumerate(points.items()):
        assert await store.telemetry_history(d.id, [key], -10, 10**13, 10, False) == {key: [(ts, n)]}
    conn = database.connect()
    assert conn.execute("SELECT count(*) FROM ts_kv_202103").fetchone()[0] == 1
    conn.close()


@pytest_twisted.ensureDeferred
async def test_retention_drops_whole_expired_months_and_trims_the_rest(store, database):
    d = await store.add_device(Device(id=new_id(), name="a"), "ta")
    jan, feb = partitions.month_start(2021, 1), partitions.month_start(2021, 2)
    await store.save_telemetry(d.id, [(jan + n * DAY, "t", n) for n in range(20)]
                               + [(feb + n * DAY, "t", 100 + n) for n in range(10)])
    assert "ts_kv_202101" in partition_names(database)
    older_than = feb + 5 * DAY  # all of January and five days of February have expired
    deleted, more = await store.expire_telemetry(10**13, older_than, 500)
    assert (deleted, more) == (20, True) and "ts_kv_202101" not in partition_names(database)
    deleted, more = await store.expire_telemetry(10**13, older_than, 500)
    assert (deleted, more) == (5, False)
    history = await store.telemetry_history(d.id, ["t"], 0, 10**13, 100, False)
    assert [v for _, v in history["t"]] == list(range(105, 110))
    assert (await store.latest_telemetry(d.id, ["t"]))["t"] == (feb + 9 * DAY, 109)
    # a point written later into the dropped month gets a new partition
    await store.save_telemetry(d.id, [(jan + 1, "t", -1)])
    assert "ts_kv_202101" in partition_names(database)


@pytest_twisted.ensureDeferred
async def test_a_deleted_devices_history_is_purged_by_retention(store, database):
    d = await store.add_device(Device(id=new_id(), name="a"), "ta")
    await store.save_telemetry(d.id, [(1000 + n, "k", n) for n in range(1200)])
    assert await store.delete_device(d.id) is True
    assert await store.telemetry_history(d.id, None, 0, 10**6, 10, False) == {}
    conn = database.connect()
    assert conn.execute("SELECT count(*) FROM ts_kv").fetchone()[0] == 1200  # not yet: in the background
    passes = 0
    while True:
        _, more = await store.expire_telemetry(10**13, None, 500)
        passes += 1
        if not more:
            break
    assert passes == 4 and conn.execute("SELECT count(*) FROM ts_kv").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM ts_kv_purge").fetchone()[0] == 0
    conn.close()


@pytest_twisted.ensureDeferred
async def test_text_postgresql_cannot_keep_is_a_bad_request(store):
    d = await store.add_device(Device(id=new_id(), name="a"), "ta")
    for bad in ([(1, "k", "a\x00b")], [(1, "k\x00", 1)], [(1, "k", "\ud800")]):
        with pytest.raises(BadRequest):
            await store.save_telemetry(d.id, bad)
    with pytest.raises(BadRequest):
        await store.save_attributes(d.id, "SHARED_SCOPE", {"k": "x\x00"}, 1)
    with pytest.raises(BadRequest):
        await store.add_device(Device(id=new_id(), name="nul\x00name"), "tn")
    assert await store.telemetry_keys(d.id) == []


# -- group commit, reads beside writes, faults of one call ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_writes_of_a_reactor_turn_share_one_commit(store):
    devices = [await store.add_device(Device(id=new_id(), name=f"d{n}"), f"t{n}") for n in range(20)]
    before = store.stats()["commits"]
    await defer.gatherResults([store.save_telemetry(d.id, [(n, "k", n)]) for n in range(10) for d in devices])
    stats = store.stats()
    assert stats["commits"] - before <= 3 and stats["largestBatch"] >= 100


@pytest_twisted.ensureDeferred
async def test_reads_never_wait_behind_blocked_writes(store, database):
    d = await store.add_device(Device(id=new_id(), name="a"), "ta")
    await store.save_telemetry(d.id, [(1, "k", 1)])
    conn = database.connect()
    conn.autocommit = False
    conn.execute("LOCK TABLE ts_kv_latest IN EXCLUSIVE MODE")  # writers of latest values wait; readers not
    started = time.monotonic()
    write = store.save_telemetry(d.id, [(2, "k", 2)])
    assert await store.latest_telemetry(d.id, ["k"]) == {"k": (1, 1)}
    assert (await store.get_device(d.id)).name == "a"
    assert not write.called  # the reads were answered while the write waited
    with pytest.raises(StoreUnavailable, match="within 2 s"):  # the URL's timeout bounds the write
        await write
    assert time.monotonic() - started < 6.0
    conn.rollback()
    conn.close()
    await store.save_telemetry(d.id, [(3, "k", 3)])  # and the store goes on
    assert await store.latest_telemetry(d.id, ["k"]) == {"k": (3, 3)}


# -- through nodes ---------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_node_on_postgres_names_its_store_and_backups_are_postgresqls(start_node, database):
    node = await start_node("--store", database.url("timeout=2").replace("postgresql://", "postgres://"))
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    status, plugins = await rest.get("/api/admin/plugins")
    assert status == 200 and {p["name"]: p for p in plugins}["postgres"]["active"]
    status, body = await rest.get("/api/admin/backup")
    assert status == 501 and "pg_dump" in body["message"] and "pg_basebackup" in body["message"]
    status, stats = await rest.get("/api/admin/stats")
    assert status == 200 and stats["store"]["partitions"] >= 3
    status, health = await rest.get("/api/health", key="")
    assert (status, health) == (200, {"status": "UP"})


@pytest_twisted.ensureDeferred
async def test_retention_on_a_node_deletes_expired_points(start_node, database):
    node = await start_node("--store", database.url("timeout=2"), "--ts-ttl", "2s")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    _, device = await rest.post("/api/device", {"name": "r"})
    now = int(time.time() * 1000)
    points = [{"ts": now - 60_000 + n, "values": {"t": n}} for n in range(30)] + [{"ts": now, "values": {"t": 9}}]
    await rest.post(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/timeseries/ANY", points)
    for _ in range(60):
        await sleep(0.1)
        if node.core.retention.expired >= 30:
            break
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device['id']['id']}/values/timeseries"
                                  f"?keys=t&startTs=0&endTs={now + 1}&limit=100")
    assert status == 200 and [p["ts"] for p in body["t"]] == [now]


@pytest_twisted.ensureDeferred
async def test_an_event_larger_than_a_notification_reaches_the_other_node(start_node, database, tmp_path):
    from tbcoap.events import SharedAttributesChanged

    url = database.url("timeout=2")
    a = await start_node("--store", url, data_dir=tmp_path / "a")
    b = await start_node("--store", url, data_dir=tmp_path / "b")
    device, _ = await a.core.devices.create("d", token="TOKEN-1")
    seen = []
    b.core.bus.subscribe(seen.append)
    big = "x" * 20_000  # NOTIFY takes 8,000 bytes at most: this one travels through bus_events
    status, _ = await Rest(f"http://127.0.0.1:{a.http_address[1]}").post(
        f"/api/plugins/telemetry/DEVICE/{device.id}/SHARED_SCOPE", {"big": big, "small": 1})
    assert status == 200
    await a.core.attributes.save(device.id, "SHARED_SCOPE", b'{"small":2}')  # and the next one comes after it
    deadline = time.monotonic() + 10
    while len([e for e in seen if isinstance(e, SharedAttributesChanged)]) < 2:
        assert time.monotonic() < deadline, seen
        await sleep(0.05)
    changes = [e for e in seen if isinstance(e, SharedAttributesChanged)]
    assert changes[0].values == {"big": big, "small": 1} and changes[1].values == {"small": 2}
    assert a.core.bus.counters["large"] == 1


@pytest_twisted.ensureDeferred
async def test_two_stores_on_one_database_share_one_rpc_id_sequence_per_device(store, database):
    from tbcoap.models import Rpc

    other = make_store(database.url("timeout=5"), {})  # another node's store
    await other.open()
    try:
        d = await store.add_device(Device(id=new_id(), name="a"), "ta")
        calls = [(store if n % 2 else other).add_rpc(Rpc(id=new_id(), device_id=d.id, request_id=0, method=f"m{n}"))
                 for n in range(40)]
        stored = await defer.gatherResults(calls)
        assert sorted(r.request_id for r in stored) == list(range(1, 41))
        # and a compare-and-set between them has one winner
        rpc = stored[0]
        results = await defer.gatherResults([s.set_rpc_status(rpc.id, "SENT", expect=["QUEUED"]) for s in (store, other)])
        assert sorted(results) == [False, True]
    finally:
        await other.close()
