"""What only the SQLite store does: its URL forms, file layout, migrations, group commit, threads."""

import os
import sqlite3
import threading
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import defer

from tbcoap.errors import BadRequest, DuplicateName, NotFound, StoreUnavailable
from tbcoap.models import ACCESS_TOKEN, ClaimRequest, Device, new_id
from tbcoap.testing.store_contract import cust, dev, digest, raises, rpc, settled
from tbcoap_sqlite import database_path, make_store, schema
from tbcoap_sqlite.store import SQLiteStore
from tests.test_store_contract import open_sqlite as _open_sqlite, sqlite_url as _sqlite_url

@pytest_twisted.async_yield_fixture
async def sqlite_store(tmp_path):
    s = await _open_sqlite(tmp_path)
    yield s
    await s.close()


def test_registered_through_entry_point():
    from tbcoap.plugins import PluginManager

    backend = PluginManager().store_backends()["sqlite"]
    assert backend.factory is make_store and backend.description


def test_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert database_path("sqlite:///abs/file.sqlite3", {}) == "/abs/file.sqlite3"
    assert database_path("sqlite://rel/file", {}) == str(tmp_path / "rel" / "file")
    assert database_path("sqlite://", {"data-dir": "/data"}) == "/data/tbcoap.sqlite3"
    assert database_path("sqlite://", {}) == str(tmp_path / "tbcoap-data" / "tbcoap.sqlite3")
    assert database_path("sqlite:///a%20b/f", {}) == "/a b/f"
    assert database_path("sqlite:////abs/f", {}) == "/abs/f"
    for bad in (
        "sqlite://:memory:", "sqlite:///:memory:", "sqlite:/abs", "sqlite:rel", "redis://h:1/0",
        "sqlite:///f?mode=ro", "sqlite:///dir/", "sqlite://file:x.db", "",
    ):
        with pytest.raises(ValueError):
            database_path(bad, {})
    with pytest.raises(ValueError):
        database_path("sqlite://" + str(tmp_path), {})  # an existing directory


def test_factory_settings(tmp_path):
    url = _sqlite_url(tmp_path)
    store = make_store(url, {"plugins": {"sqlite": {"sync": "full"}}})
    assert isinstance(store, SQLiteStore) and store.path == str(tmp_path / "store" / "tbcoap.sqlite3")
    assert make_store("sqlite://", {"data-dir": str(tmp_path)}).path == str(tmp_path / "tbcoap.sqlite3")
    with pytest.raises(ValueError):
        make_store(url, {"plugins": {"sqlite": {"sync": "sometimes"}}})


@pytest_twisted.ensureDeferred
async def test_file_layout_wal_and_schema_version(tmp_path):
    path = tmp_path / "deep" / "er" / "db.sqlite3"
    path.parent.mkdir(parents=True)  # an existing folder: the store makes none
    store = make_store(f"sqlite://{path}", {})
    await store.open()
    await store.open()  # already open: fine
    await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION >= 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {
            "devices", "credentials", "device_profiles", "ts_kv", "ts_kv_latest", "attributes",
            "rpcs", "rpc_counters", "customers", "claim_requests",
        } <= tables
        assert conn.execute("SELECT count(*) FROM device_profiles WHERE name = 'default'").fetchone()[0] == 1
    finally:
        conn.close()
    await raises(StoreUnavailable, store.open())  # a closed store stays closed


@pytest_twisted.ensureDeferred
async def test_migration_steps_run_once(tmp_path, monkeypatch):
    store = await _open_sqlite(tmp_path)
    d = await store.add_device(dev("a"), "ta")
    await store.close()

    def data_step(conn):
        conn.execute("INSERT INTO extra (note) SELECT name FROM devices")

    steps = schema.MIGRATIONS + ["CREATE TABLE extra (note TEXT);", data_step]
    monkeypatch.setattr(schema, "MIGRATIONS", steps)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(steps))
    for _ in range(2):  # the second open has nothing to do
        store = await _open_sqlite(tmp_path)
        assert await store.get_device(d.id) == d
        await store.close()
    conn = sqlite3.connect(tmp_path / "store" / "tbcoap.sqlite3")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(steps)
        assert conn.execute("SELECT note FROM extra").fetchall() == [("a",)]
        assert conn.execute("SELECT count(*) FROM device_profiles").fetchone()[0] == 1
    finally:
        conn.close()


async def _old_database(tmp_path, monkeypatch, steps, *statements):
    """A database with only the first ``steps`` migration steps, and rows written in its own terms."""
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:steps])
        m.setattr(schema, "SCHEMA_VERSION", steps)
        store = await _open_sqlite(tmp_path)
        await store.close()
    conn = sqlite3.connect(tmp_path / "store" / "tbcoap.sqlite3")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def _version(tmp_path):
    conn = sqlite3.connect(tmp_path / "store" / "tbcoap.sqlite3")
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


DEVICE_V1 = "INSERT INTO devices (id, name, type, label, created_time, customer_id) VALUES (?, ?, 'default', NULL, 5, ?)"
TOKEN_V1 = "INSERT INTO credentials (token, device_id) VALUES (?, ?)"


@pytest_twisted.ensureDeferred
async def test_upgrade_from_the_first_schema(tmp_path, monkeypatch):
    d = dev("a", created_time=5)
    await _old_database(tmp_path, monkeypatch, 1, (DEVICE_V1, (d.id, "a", None)), (TOKEN_V1, ("ta", d.id)),
                        ("INSERT INTO attributes VALUES (?, 'SHARED_SCOPE', 'k', 'LONG', 1, 1)", (d.id,)))
    store = await _open_sqlite(tmp_path)
    try:
        assert await store.get_device(d.id) == d
        assert await store.get_attributes(d.id, "SHARED_SCOPE", None) == {"k": (1, 1)}
        assert (await store.add_rpc(rpc(d))).request_id == 1
    finally:
        await store.close()
    assert _version(tmp_path) == schema.SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_upgrade_makes_the_profile_named_default_the_default(tmp_path, monkeypatch):
    d = dev("a", created_time=5)
    await _old_database(tmp_path, monkeypatch, 7, (DEVICE_V1, (d.id, "a", None)), (TOKEN_V1, ("ta", d.id)))
    store = await _open_sqlite(tmp_path)
    try:
        default = await store.default_profile()
        assert default == await store.profile_by_name("default")
        await raises(BadRequest, store.delete_profile(default.id))
    finally:
        await store.close()
    assert _version(tmp_path) == schema.SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_upgrade_from_the_rpc_schema(tmp_path, monkeypatch):
    owner = new_id()
    d, free = dev("a", customer_id=owner, created_time=5), dev("b", created_time=5)
    await _old_database(tmp_path, monkeypatch, 2, (DEVICE_V1, (d.id, "a", owner)), (TOKEN_V1, ("ta", d.id)),
                        (DEVICE_V1, (free.id, "b", None)), (TOKEN_V1, ("tb", free.id)))
    store = await _open_sqlite(tmp_path)
    try:
        assert await store.get_device(d.id) == d
        assert await store.list_customer_devices(owner, 10, 0) == ([d], 1)
        c = await store.add_customer(cust("new"), digest(1))
        assert await store.set_device_customer(free.id, c.id, None) is True
        assert await store.put_claim_request(ClaimRequest(device_id=d.id, secret="s", expiration_time=9), 0)
        assert await store.mark_provisioned(d.id) is True
    finally:
        await store.close()
    assert _version(tmp_path) == schema.SCHEMA_VERSION


@pytest_twisted.ensureDeferred
async def test_upgrade_turns_provisioned_marks_into_the_attribute(tmp_path, monkeypatch):
    d = dev("a", created_time=5)
    await _old_database(tmp_path, monkeypatch, 4, (DEVICE_V1, (d.id, "a", None)), (TOKEN_V1, ("ta", d.id)),
                        ("INSERT INTO provisioned (device_id) VALUES (?)", (d.id,)))
    store = await _open_sqlite(tmp_path)
    try:
        assert (await store.get_attributes(d.id, "SERVER_SCOPE", None))["provisionState"][0] == "provisioned"
        assert await store.mark_provisioned(d.id) is False
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_upgrade_keeps_customers_sharing_a_title(tmp_path, monkeypatch):
    with monkeypatch.context() as m:  # before titles were unique, two customers could share one
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        m.setattr(schema, "SCHEMA_VERSION", 3)
        store = await _open_sqlite(tmp_path)
        first = await store.add_customer(cust("Twin", created_time=1), digest(1))
        await store.close()
        conn = sqlite3.connect(tmp_path / "store" / "tbcoap.sqlite3")
        conn.execute("INSERT INTO customers (id, title, created_time, key_digest) VALUES (?, 'Twin', 2, ?)",
                     (new_id(), digest(2)))
        conn.commit()
        conn.close()
    store = await _open_sqlite(tmp_path)
    try:
        assert (await store.list_customers(10, 0))[1] == 2
        assert await store.customer_by_title("Twin") == first  # the oldest
        await raises(DuplicateName, store.add_customer(cust("Twin"), digest(3)))
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_rpc_failing_in_a_batch_takes_no_id(sqlite_store):
    d = await sqlite_store.add_device(dev("a"), "ta")
    first = await sqlite_store.add_rpc(rpc(d))
    results = await settled([
        sqlite_store.add_rpc(rpc(d)),
        sqlite_store.add_rpc(replace(rpc(d), id=first.id)),  # its uuid is taken: rolled back alone
        sqlite_store.add_rpc(rpc(Device(id=new_id(), name="ghost"))),
        sqlite_store.add_rpc(rpc(d)),
    ])
    assert [ok for ok, _ in results] == [True, False, False, True]
    assert results[1][1].check(BadRequest) and results[2][1].check(NotFound)
    assert [results[0][1].request_id, results[3][1].request_id] == [2, 3]
    assert await sqlite_store.get_rpc(first.id) == first


@pytest_twisted.ensureDeferred
async def test_delete_device_drops_its_rpc_counter(sqlite_store):
    a = await sqlite_store.add_device(dev("a"), "ta")
    b = await sqlite_store.add_device(dev("b"), "tb")
    for d in (a, b):
        await sqlite_store.add_rpc(rpc(d))
    await sqlite_store.delete_device(a.id)

    def counters(conn):
        return dict(conn.execute("SELECT device_id, last_request_id FROM rpc_counters"))

    assert await sqlite_store.database.writer.submit(counters) == {b.id: 1}


@pytest_twisted.ensureDeferred
async def test_two_stores_create_one_file(tmp_path):
    first, second = make_store(_sqlite_url(tmp_path), {}), make_store(_sqlite_url(tmp_path), {})
    await defer.gatherResults([first.open(), second.open()])
    try:
        d = await first.add_device(dev("a"), "ta")
        assert await second.device_by_credentials(ACCESS_TOKEN, "ta") == d
        assert (await second.list_profiles(10, 0))[1] == 1
    finally:
        await defer.gatherResults([first.close(), second.close()])


@pytest_twisted.ensureDeferred
async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    store = make_store(f"sqlite://{path}", {})
    await raises(StoreUnavailable, store.open())
    await store.close()


def test_a_given_file_whose_folder_is_missing_is_refused_and_nothing_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for url, folder in ((f"sqlite://{tmp_path}/nonexistent/dir/x.db", tmp_path / "nonexistent"),
                        ("sqlite://rel/x.db", tmp_path / "rel")):
        with pytest.raises(ValueError) as refused:
            make_store(url, {"data-dir": str(tmp_path / "data")})
        assert str(refused.value) == (f"cannot create {folder}/{'dir/' if 'dir' in url else ''}x.db: the folder "
                                      f"{folder}{'/dir' if 'dir' in url else ''} does not exist (tbcoap creates only "
                                      "its data directory; check the path, or create the folder)")
        assert not folder.exists()
    with pytest.raises(ValueError, match="does not exist"):  # the plugin's path setting too
        make_store("sqlite://", {"plugins": {"sqlite": {"path": str(tmp_path / "gone" / "x.db")}}})
    # the default file is in the data directory, which the node creates before the store opens
    store = make_store("sqlite://", {"data-dir": str(tmp_path / "data")})
    assert store.path == str(tmp_path / "data" / "tbcoap.sqlite3") and not (tmp_path / "data").exists()
    assert not [p for p in tmp_path.iterdir()]


def test_twistd_refuses_a_store_file_in_a_missing_folder(tmp_path):
    from tests.test_service import PORTS, run_twistd

    code, output = run_twistd("--data-dir", str(tmp_path / "data"), "--admin-key", "k", *PORTS,
                              "--store", f"sqlite://{tmp_path}/nonexistent/dir/x.db", cwd=tmp_path)
    assert code == 1, output
    assert output.strip().splitlines() == [
        f"twistd tbcoap: --store: cannot create {tmp_path}/nonexistent/dir/x.db: the folder {tmp_path}/nonexistent/dir "
        "does not exist (tbcoap creates only its data directory; check the path, or create the folder) "
        "(twistd tbcoap --help lists every option)"], output
    assert not (tmp_path / "nonexistent").exists() and not (tmp_path / "data").exists()


def _configured(tmp_path, args, config):
    import tbcoap

    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        args = [*args, "--config", str(tmp_path / "c.toml")]
    return tbcoap.make_service(["--data-dir", str(tmp_path / "data"), "--admin-key", "k", *args])


@pytest.mark.parametrize("args, config, sync", [
    ([], None, "normal"),
    (["--plugin-option", "sqlite.sync=full"], None, "full"),
    ([], '[plugins.sqlite]\nsync = "full"\n', "full"),
    (["--sync", "full"], None, "full"),  # --sync is an alias of the plugin's setting
    ([], 'sync = "full"\n', "full"),
    (["--sync", "full"], '[plugins.sqlite]\nsync = "normal"\n', "full"),  # the command line wins
    (["--plugin-option", "sqlite.sync=full", "--sync", "normal"], None, "full"),  # the plugin's own option wins
    ([], 'sync = "full"\n[plugins.sqlite]\nsync = "normal"\n', "normal"),
])
def test_sync_is_a_setting_of_the_sqlite_plugin(tmp_path, args, config, sync):
    node = _configured(tmp_path, args, config)
    assert node.settings["plugins"]["sqlite"] == {"sync": sync, "path": None}


@pytest.mark.parametrize("args, message", [
    (["--sync", "sometimes"], "--sync: sync must be 'normal' or 'full', not 'sometimes'"),
    (["--plugin-option", "sqlite.sync=FULL"],
     "--plugin-option sqlite.sync: sync must be 'normal' or 'full', not 'FULL'"),
    (["--plugin-option", "sqlite.journal=wal"],
     "--plugin-option sqlite.journal: plugin sqlite has no setting 'journal' (it takes: path, sync)"),
])
def test_sqlite_settings_are_checked_by_the_plugin(tmp_path, args, message):
    from twisted.python import usage

    with pytest.raises(usage.UsageError) as refused:
        _configured(tmp_path, args, None)
    assert str(refused.value) == message


@pytest_twisted.ensureDeferred
async def test_the_plugin_settings_reach_the_store(start_node, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    node = await start_node("--sync", "full", "--plugin-option", f"sqlite.path={tmp_path}/elsewhere/db.sqlite3")
    assert node.store.path == str(tmp_path / "elsewhere" / "db.sqlite3")
    assert await node.store.database.writer.submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
    default = await start_node()  # sqlite:// with no path setting: the data directory's file
    assert default.store.path == str(tmp_path / "data-1" / "tbcoap.sqlite3") and os.path.exists(default.store.path)


@pytest_twisted.ensureDeferred
async def test_unopenable_path(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ValueError, match="cannot create"):  # the factory refuses it at start
        make_store(f"sqlite://{tmp_path}/file/db.sqlite3", {})
    store = SQLiteStore(f"{tmp_path}/file/db.sqlite3")
    await raises(StoreUnavailable, store.open())
    await raises(StoreUnavailable, store.get_device(new_id()))


@pytest_twisted.ensureDeferred
async def test_calls_before_open_fail(tmp_path):
    store = make_store(_sqlite_url(tmp_path), {})
    await raises(StoreUnavailable, store.add_device(dev("a"), "t"))
    await raises(StoreUnavailable, store.check())
    assert store.stats()["queueDepth"] == 0
    await store.close()


@pytest_twisted.ensureDeferred
async def test_close_while_opening(tmp_path):
    store = make_store(_sqlite_url(tmp_path), {})
    opening = store.open()
    await store.close()
    await opening
    await raises(StoreUnavailable, store.check())


@pytest.mark.parametrize("sync, level", [("normal", 1), ("full", 2)])
@pytest_twisted.ensureDeferred
async def test_sync_setting(tmp_path, sync, level):
    store = make_store(_sqlite_url(tmp_path), {"plugins": {"sqlite": {"sync": sync}}})
    await store.open()
    try:
        assert await store.database.writer.submit(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == level
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_group_commit_batches(sqlite_store):
    d = await sqlite_store.add_device(dev("a"), "ta")
    before = sqlite_store.stats()
    await defer.gatherResults([sqlite_store.save_telemetry(d.id, [(i, "k", i)]) for i in range(200)])
    after = sqlite_store.stats()
    assert after["writes"] - before["writes"] == 200
    assert after["commits"] - before["commits"] <= 20
    assert after["largestBatch"] >= 10
    assert len((await sqlite_store.telemetry_history(d.id, ["k"], 0, 1000, 1000, False))["k"]) == 200


@pytest_twisted.ensureDeferred
async def test_savepoint_rolls_back_only_the_failing_job(sqlite_store):
    d = await sqlite_store.add_device(dev("a"), "ta")

    def half_done(conn):
        conn.execute("INSERT INTO ts_kv VALUES (?, 'half', 1, 'LONG', 1, NULL)", (d.id,))
        raise ValueError("boom")

    jobs = [
        sqlite_store.save_telemetry(d.id, [(1, "before", 1)]),
        sqlite_store.database.writer.submit(half_done),
        sqlite_store.save_telemetry(d.id, [(1, "after", 1)]),
    ]
    results = await settled(jobs)
    assert [ok for ok, _ in results] == [True, False, True]
    assert results[1][1].check(ValueError)
    history = await sqlite_store.telemetry_history(d.id, None, 0, 10, 10, False)
    assert set(history) == {"before", "after"}
    assert sqlite_store.stats()["failedWrites"] >= 1


@pytest_twisted.ensureDeferred
async def test_telemetry_writes_of_a_batch_go_together_and_fail_alone(sqlite_store):
    a = await sqlite_store.add_device(dev("a"), "ta")
    b = await sqlite_store.add_device(dev("b"), "tb")
    before = sqlite_store.stats()["commits"]
    # one reactor turn, so one batch: b goes first, then a bad entry, then both devices' points
    jobs = [
        sqlite_store.delete_device(b.id),
        sqlite_store.save_telemetry(a.id, [(1, "k", 1)]),
        sqlite_store.save_telemetry(a.id, [(2, "k", float("nan"))]),
        sqlite_store.save_telemetry(b.id, [(1, "k", 1)]),
        sqlite_store.save_telemetry(a.id, [(3, "k", 3), (3, "j", "x")]),
    ]
    results = await settled(jobs)
    assert [ok for ok, _ in results] == [True, True, False, False, True]
    assert results[2][1].check(BadRequest) and "NaN" in str(results[2][1].value)
    assert results[3][1].check(NotFound)
    history = await sqlite_store.telemetry_history(a.id, None, 0, 10, 10, False)
    assert [ts for ts, _ in history["k"]] == [1, 3] and [v for _, v in history["j"]] == ["x"]
    assert sqlite_store.stats()["commits"] - before <= 3


@pytest_twisted.ensureDeferred
async def test_a_rolled_back_batch_leaves_every_series_to_retention(sqlite_store):
    """The writer remembers which series ts_kv_series holds; a rollback must make it forget, or a
    point committed on the retry would have no series row and never expire."""
    d = await sqlite_store.add_device(dev("a"), "ta")

    def boom(conn):
        raise ValueError("boom")

    jobs = [sqlite_store.save_telemetry(d.id, [(1000, "k", 1)]), sqlite_store.database.writer.submit(boom)]
    assert [ok for ok, _ in await settled(jobs)] == [True, False]
    deleted, more = await sqlite_store.expire_telemetry(5000, 2000, 100)
    assert deleted == 1 and not more
    await sqlite_store.save_telemetry(d.id, [(3000, "k", 3)])  # after retention emptied the series
    assert (await sqlite_store.expire_telemetry(6000, 4000, 100))[0] == 1
    assert (await sqlite_store.telemetry_history(d.id, ["k"], 0, 10_000, 10, False)).get("k", []) == []


@pytest_twisted.ensureDeferred
async def test_a_late_point_after_a_rollup_pass_still_counts(sqlite_store):
    """The writer skips ts_kv_series for points not older than one it saved; the rollup pass moves
    the watermark up, so after it a late point must lower the watermark again (or the rolled day
    would answer without it)."""
    day = 86_400_000
    base = 1_700_000_000_000 - 1_700_000_000_000 % day
    d = await sqlite_store.add_device(dev("late"), "tlate")
    await sqlite_store.save_telemetry(d.id, [(base + 1000, "k", 1)])
    while (await sqlite_store.rollup_telemetry(base + 3 * day, 10_000))[1]:
        pass
    await sqlite_store.save_telemetry(d.id, [(base + 2000, "k", 5)])  # newer than the first, in a rolled day
    answer = await sqlite_store.telemetry_aggregate(d.id, ["k"], base, base + day, day, "SUM", 10, False)
    assert [value for _, value in answer["k"]] == [6]


@pytest_twisted.ensureDeferred
async def test_locked_database_is_unavailable(tmp_path):
    store = SQLiteStore(str(tmp_path / "db.sqlite3"), busy_timeout=0.05)
    await store.open()
    d = await store.add_device(dev("a"), "ta")
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        await raises(StoreUnavailable, store.add_device(dev("b"), "tb"))
        await raises(StoreUnavailable, store.save_telemetry(d.id, [(1, "k", 1)]))
        assert await store.get_device(d.id) == d  # WAL: reads go on
        other.execute("ROLLBACK")
        await store.add_device(dev("b"), "tb")
        assert await store.check() is None
    finally:
        other.close()
        await store.close()


@pytest_twisted.ensureDeferred
async def test_full_queue_is_unavailable(tmp_path):
    store = SQLiteStore(str(tmp_path / "db.sqlite3"), max_queue=5)
    await store.open()
    try:
        d = await store.add_device(dev("a"), "ta")
        results = await settled([store.save_telemetry(d.id, [(i, "k", i)]) for i in range(8)])
        assert [ok for ok, _ in results] == [True] * 5 + [False] * 3
        assert results[-1][1].check(StoreUnavailable)
    finally:
        await store.close()


@pytest_twisted.ensureDeferred
async def test_close_joins_threads(tmp_path):
    def ours():
        return {t for t in threading.enumerate() if "tbcoap-sqlite" in t.name}

    before = ours()  # stores other tests may keep open
    store = await _open_sqlite(tmp_path)
    d = await store.add_device(dev("a"), "ta")
    await defer.gatherResults([store.get_device(d.id) for _ in range(10)])
    assert ours() - before
    await store.close()
    assert not ours() - before
