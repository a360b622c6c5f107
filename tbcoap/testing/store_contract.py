"""The IStore contract: one test suite that every storage backend must pass.

tbcoap runs it against its bundled backends; a plugin author runs it against a new one from
the plugin's own tests (pytest and pytest-twisted installed)::

    # tests/test_contract.py of your plugin
    import pytest
    from tbcoap.testing.store_contract import *  # noqa: F401,F403  the tests and the store fixture

    @pytest.fixture
    def open_backend(tmp_path):
        async def open_store():
            store = MyStore(...)        # on this test's data: a second call must reach the same data
            await store.open()
            return store
        return open_store

Each test gets ``store`` (opened through ``open_backend`` and closed afterwards); the
persistence tests open a second instance through ``open_backend`` itself.
"""

from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from tbcoap.errors import BadRequest, DuplicateName, DuplicateToken, NotFound, StoreUnavailable
from tbcoap.interfaces import STORE_STATS, IClaimStore, ICustomerStore, IProvisionStore, IStore
from tbcoap.latency import LatencyHistogram
from tbcoap.models import (
    ACCESS_TOKEN,
    PSK,
    RPC_FINAL,
    RPC_STATUSES,
    X509_CERTIFICATE,
    ClaimRequest,
    Credentials,
    Customer,
    Device,
    DeviceProfile,
    Json,
    Rpc,
    new_id,
)


@pytest_twisted.async_yield_fixture
async def store(open_backend):
    """An open store of the backend under test, closed after the test."""
    s = await open_backend()
    yield s
    await s.close()


def dev(name, **kw):
    return Device(id=new_id(), name=name, **kw)


def rpc(device, method="m", **kw):
    """A new Rpc for ``device``; its request_id (0 here) is the store's to choose."""
    kw.setdefault("request_id", 0)
    return Rpc(id=new_id(), device_id=device.id, method=method, **kw)


async def token_of(store, device_id):
    """The device's credentials id (its token), or None."""
    credentials = await store.get_credentials(device_id)
    return None if credentials is None else credentials.id


async def raises(exc_type, d):
    with pytest.raises(exc_type):
        await d


async def settled(deferreds):
    """``[(ok, value_or_failure)]`` once every Deferred has fired."""
    return await defer.DeferredList(deferreds, consumeErrors=True)


TYPED = {
    "true": True,
    "false": False,
    "long": 42,
    "max": 2**63 - 1,
    "min": -(2**63),
    "neg": -7,
    "double": 21.5,
    "integral": 42.0,
    "str": "s",
    "numtext": "42",
    "empty": "",
    "json": Json('{"a":1}'),
    "jsonlist": Json("[1,2]"),
}


def assert_typed(got, expected):
    assert got == expected and type(got) is type(expected), (got, expected)


# -- life cycle ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_provides_istore(store):
    assert verifyObject(IStore, store)
    for part in (ICustomerStore, IClaimStore, IProvisionStore):
        assert verifyObject(part, store)
    assert isinstance(store.name, str) and store.name


@pytest_twisted.ensureDeferred
async def test_declares_what_the_node_reads(store):
    """``commit_latency`` counts commits (for /metrics); ``backup_type`` is None or what backup() writes."""
    assert isinstance(store.commit_latency, LatencyHistogram)
    before = store.commit_latency.count
    await store.add_device(dev("a"), "ta")
    assert store.commit_latency.count > before and store.commit_latency.sum >= 0
    if store.backup_type is not None:
        media_type, suffix = store.backup_type
        assert "/" in media_type and media_type.isascii() and suffix.isalnum()


@pytest_twisted.ensureDeferred
async def test_check_and_stats(store):
    assert await store.check() is None
    stats = store.stats()
    for key in {"queueDepth", "commits", "writes"} | set(STORE_STATS):  # what the node reads
        assert type(stats[key]) is int
    assert stats["queueDepth"] == 0
    before = stats["writes"]
    await store.add_device(dev("a"), "ta")
    assert store.stats()["writes"] == before + 1
    assert store.stats()["queueDepth"] == 0


@pytest_twisted.ensureDeferred
async def test_queue_depth_counts_waiting_writes(store):
    d = await store.add_device(dev("a"), "ta")
    pending = [store.save_telemetry(d.id, [(i, "k", i)]) for i in range(20)]
    assert store.stats()["queueDepth"] == 20
    await defer.gatherResults(pending)
    assert store.stats()["queueDepth"] == 0


@pytest_twisted.ensureDeferred
async def test_calls_after_close_fail(store):
    d = await store.add_device(dev("a"), "ta")
    await store.close()
    await store.close()  # idempotent
    await raises(StoreUnavailable, store.check())
    await raises(StoreUnavailable, store.get_device(d.id))
    await raises(StoreUnavailable, store.add_device(dev("b"), "tb"))
    await raises(StoreUnavailable, store.save_telemetry(d.id, [(1, "k", 1)]))


@pytest_twisted.ensureDeferred
async def test_close_answers_queued_writes(store, open_backend):
    d = await store.add_device(dev("a"), "ta")
    order = []
    writes = [store.save_telemetry(d.id, [(i, "k", i)]) for i in range(100)]
    for w in writes:
        w.addBoth(lambda r: (order.append("write"), r)[1])
    closing = store.close()
    closing.addCallback(lambda _: order.append("closed"))
    await raises(StoreUnavailable, store.save_telemetry(d.id, [(1000, "k", 0)]))
    results = await settled(writes)
    await closing
    assert all(ok for ok, _ in results)
    assert order == ["write"] * 100 + ["closed"]
    again = await open_backend()
    try:
        history = await again.telemetry_history(d.id, ["k"], 0, 10**6, 1000, False)
        assert [ts for ts, _ in history["k"]] == list(range(100))
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_persistence_across_instances(store, open_backend):
    d = await store.add_device(dev("a", label="L"), "ta")
    await store.add_profile(DeviceProfile(id=new_id(), name="p", provision_key="k", provision_secret="s"))
    await store.save_telemetry(d.id, [(5, k, v) for k, v in TYPED.items()])
    await store.save_attributes(d.id, "SHARED_SCOPE", TYPED, 7)
    await store.close()
    again = await open_backend()
    try:
        assert await again.device_by_credentials(ACCESS_TOKEN, "ta") == d
        assert (await again.profile_by_name("p")).provision_key == "k"
        latest = await again.latest_telemetry(d.id, None)
        attrs = await again.get_attributes(d.id, "SHARED_SCOPE", None)
        for key, value in TYPED.items():
            assert_typed(latest[key][1], value)
            assert_typed(attrs[key][0], value)
    finally:
        await again.close()


# -- devices and tokens ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_and_find_device(store):
    d = dev("thermo", type="sensor", label="kitchen", created_time=1234)
    assert await store.add_device(d, "tok") == d
    assert await store.get_device(d.id) == d
    assert await store.device_by_name("thermo") == d
    assert await store.device_by_credentials(ACCESS_TOKEN, "tok") == d
    assert await token_of(store, d.id) == "tok"
    owned = dev("owned", customer_id=new_id())
    await store.add_device(owned, "tok2")
    assert (await store.get_device(owned.id)).customer_id == owned.customer_id


@pytest_twisted.ensureDeferred
async def test_unknown_device_lookups(store):
    assert await store.get_device(new_id()) is None
    assert await store.device_by_name("nope") is None
    assert await store.device_by_credentials(ACCESS_TOKEN, "nope") is None
    assert await token_of(store, new_id()) is None
    assert await store.delete_device(new_id()) is False


@pytest_twisted.ensureDeferred
async def test_duplicate_name_and_token(store):
    await store.add_device(dev("a"), "ta")
    await raises(DuplicateName, store.add_device(dev("a"), "other"))
    await raises(DuplicateToken, store.add_device(dev("b"), "ta"))
    assert await store.device_by_credentials(ACCESS_TOKEN, "other") is None
    assert await store.device_by_name("b") is None
    await raises(BadRequest, store.add_device(dev("c"), ""))
    assert (await store.list_devices(10, 0))[1] == 1


@pytest_twisted.ensureDeferred
async def test_failing_job_in_batch_fails_alone(store):
    devices = [dev(f"d{i}") for i in range(50)]
    calls = [store.add_device(d, f"t{i}") for i, d in enumerate(devices)]
    calls.insert(25, store.add_device(dev("d3"), "fresh"))
    calls.insert(40, store.add_device(dev("fresh"), "t7"))
    results = await settled(calls)
    failed = [r for ok, r in results if not ok]
    assert len(failed) == 2
    assert failed[0].check(DuplicateName) and failed[1].check(DuplicateToken)
    assert [r for ok, r in results if ok] == devices
    assert (await store.list_devices(100, 0))[1] == 50
    assert await store.device_by_credentials(ACCESS_TOKEN, "fresh") is None


@pytest_twisted.ensureDeferred
async def test_list_devices_ordered_and_paged(store):
    a, b = sorted([new_id(), new_id()])
    made = [
        Device(id=new_id(), name="late", created_time=300),
        Device(id=b, name="tie-b", created_time=200),
        Device(id=a, name="tie-a", created_time=200),
        Device(id=new_id(), name="early", created_time=100),
    ]
    for i, d in enumerate(made):
        await store.add_device(d, f"t{i}")
    names = [d.name for d in (await store.list_devices(10, 0))[0]]
    assert names == ["early", "tie-a", "tie-b", "late"]
    page, total = await store.list_devices(2, 1)
    assert [d.name for d in page] == ["tie-a", "tie-b"] and total == 4
    assert await store.list_devices(2, 10) == ([], 4)
    await raises(BadRequest, store.list_devices(-1, 0))


@pytest_twisted.ensureDeferred
async def test_list_devices_searched_and_sorted_by_the_store(store):
    made = [dev("Boiler-2", type="heat", label="b", created_time=100),
            dev("sensor_1", type="air", label=None, created_time=200),
            dev("Ärger-Sensor", type="air", label="a", created_time=300),
            dev("boiler%x", type="heat", label="c", created_time=400)]
    for i, d in enumerate(made):
        await store.add_device(d, f"t{i}")

    async def names(**query):
        devices, total = await store.list_devices(10, 0, **query)
        assert total == len(devices)
        return [d.name for d in devices]

    assert await names(text_search="BOILER") == ["Boiler-2", "boiler%x"]  # any case, a part of the name
    assert await names(text_search="%") == ["boiler%x"]                   # % and _ are plain characters
    assert await names(text_search="_") == ["sensor_1"]
    assert await names(text_search="ärger") == ["Ärger-Sensor"]           # not only ASCII
    assert await names(text_search="sensor") == ["sensor_1", "Ärger-Sensor"]
    assert await names(text_search="nothing") == []
    assert await names(sort_property="name") == ["Boiler-2", "boiler%x", "sensor_1", "Ärger-Sensor"]
    assert await names(sort_property="createdTime", descending=True) == [d.name for d in reversed(made)]
    assert set((await names(sort_property="type"))[:2]) == {"sensor_1", "Ärger-Sensor"}  # "air" < "heat"
    page, total = await store.list_devices(1, 1, text_search="boiler", sort_property="name", descending=True)
    assert [d.name for d in page] == ["Boiler-2"] and total == 2
    await raises(BadRequest, store.list_devices(10, 0, sort_property="customerTitle"))


@pytest_twisted.ensureDeferred
async def test_delete_device_removes_everything(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(1, "t", 1.5)])
    await store.save_attributes(d.id, "CLIENT_SCOPE", {"c": 1}, 1)
    await store.save_attributes(d.id, "SERVER_SCOPE", {"s": 1}, 1)
    assert await store.delete_device(d.id) is True
    assert await store.get_device(d.id) is None
    assert await store.device_by_credentials(ACCESS_TOKEN, "ta") is None
    assert await token_of(store, d.id) is None
    assert await store.telemetry_keys(d.id) == []
    assert await store.latest_telemetry(d.id, None) == {}
    assert await store.telemetry_history(d.id, None, 0, 10, 10, False) == {}
    for scope in ("CLIENT_SCOPE", "SERVER_SCOPE"):
        assert await store.get_attributes(d.id, scope, None) == {}
    assert await store.delete_device(d.id) is False
    # the name, token and id are free again; nothing of the old data shows
    again = await store.add_device(Device(id=d.id, name="a"), "ta")
    assert await store.latest_telemetry(again.id, None) == {}


@pytest_twisted.ensureDeferred
async def test_set_token(store):
    a = await store.add_device(dev("a"), "ta")
    await store.add_device(dev("b"), "tb")
    await store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "new"))
    assert await store.device_by_credentials(ACCESS_TOKEN, "ta") is None
    assert await store.device_by_credentials(ACCESS_TOKEN, "new") == a
    assert await token_of(store, a.id) == "new"
    await store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "new"))  # its own token again: fine
    await raises(DuplicateToken, store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "tb")))
    assert await token_of(store, a.id) == "new"
    await raises(NotFound, store.set_credentials(new_id(), Credentials(ACCESS_TOKEN, "x")))
    await raises(BadRequest, store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "")))


@pytest_twisted.ensureDeferred
async def test_certificate_credentials(store):
    a = await store.add_device(dev("a"), "ta")
    await store.add_device(dev("b"), "tb")
    assert await store.get_credentials(a.id) == Credentials(ACCESS_TOKEN, "ta")
    cert = Credentials(X509_CERTIFICATE, "d1gest", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    await store.set_credentials(a.id, cert)
    assert await store.get_credentials(a.id) == cert
    assert await store.device_by_credentials(X509_CERTIFICATE, "d1gest") == a
    assert await store.device_by_credentials(ACCESS_TOKEN, "d1gest") is None  # a digest is no token
    assert await store.device_by_credentials(ACCESS_TOKEN, "ta") is None  # the old token is gone
    await raises(DuplicateToken, store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "tb")))
    b = await store.device_by_credentials(ACCESS_TOKEN, "tb")
    await raises(DuplicateToken, store.set_credentials(b.id, Credentials(X509_CERTIFICATE, "d1gest", "pem")))
    for bad in (Credentials(X509_CERTIFICATE, "x"), Credentials(ACCESS_TOKEN, "t", "pem"), Credentials("RPK", "x", "k"),
                ("ACCESS_TOKEN", "t")):
        await raises(BadRequest, store.set_credentials(a.id, bad))
    assert await store.get_credentials(a.id) == cert
    await store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "back"))  # and back to a token
    assert await store.get_credentials(a.id) == Credentials(ACCESS_TOKEN, "back")
    assert await store.device_by_credentials(X509_CERTIFICATE, "d1gest") is None
    assert await store.get_credentials(new_id()) is None



@pytest_twisted.ensureDeferred
async def test_psk_credentials(store):
    """A pre-shared key: the identity as id, the key as lowercase hex as value, found by type."""
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    key = Credentials(PSK, "sensor-7", "00112233445566778899aabbccddeeff")
    await store.set_credentials(a.id, key)
    assert await store.get_credentials(a.id) == key
    assert await store.device_by_credentials(PSK, "sensor-7") == a
    assert await store.device_by_credentials(ACCESS_TOKEN, "sensor-7") is None  # an identity is no token
    assert await store.device_by_credentials(X509_CERTIFICATE, "sensor-7") is None
    assert await store.device_by_credentials(ACCESS_TOKEN, "ta") is None  # the old token is gone
    await raises(DuplicateToken, store.set_credentials(b.id, Credentials(PSK, "sensor-7", "ff" * 16)))
    await raises(DuplicateToken, store.set_credentials(b.id, Credentials(ACCESS_TOKEN, "sensor-7")))
    await raises(DuplicateToken, store.set_credentials(a.id, Credentials(PSK, "tb", "ff" * 16)))
    for bad in (Credentials(PSK, "x"), Credentials(PSK, "x", "00" * 15), Credentials(PSK, "x", "00" * 65),
                Credentials(PSK, "x", "0g" * 16), Credentials(PSK, "x", "AB" * 16), Credentials(PSK, "", "00" * 16)):
        await raises(BadRequest, store.set_credentials(b.id, bad))
    rotated = Credentials(PSK, "sensor-7", "ab" * 64)  # a new key under the same identity
    await store.set_credentials(a.id, rotated)
    assert await store.get_credentials(a.id) == rotated and await store.device_by_credentials(PSK, "sensor-7") == a
    await store.set_credentials(a.id, Credentials(ACCESS_TOKEN, "back"))
    assert await store.device_by_credentials(PSK, "sensor-7") is None
    await store.set_credentials(b.id, key)  # the identity is free again
    assert await store.device_by_credentials(PSK, "sensor-7") == b

# -- profiles ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_default_profile_exists(store):
    default = await store.profile_by_name("default")
    assert default.name == "default" and default.provision_type == "DISABLED"
    profiles, total = await store.list_profiles(10, 0)
    assert total == 1 and profiles == [default]


@pytest_twisted.ensureDeferred
async def test_profiles(store):
    p = DeviceProfile(
        id=new_id(), name="prov", provision_type="ALLOW_CREATE_NEW_DEVICES",
        provision_key="key", provision_secret="secret", created_time=4 * 10**12,
    )
    assert await store.add_profile(p) == p
    assert await store.profile_by_name("prov") == p
    assert await store.profile_by_name("nope") is None
    await raises(DuplicateName, store.add_profile(DeviceProfile(id=new_id(), name="prov")))
    await raises(BadRequest, store.add_profile(DeviceProfile(id=new_id(), name="other", provision_key="key")))
    await raises(BadRequest, store.add_profile(DeviceProfile(id=new_id(), name="x", provision_type="NOPE")))
    for name in ("n1", "n2"):  # profiles without a key do not collide
        await store.add_profile(DeviceProfile(id=new_id(), name=name, created_time=5 * 10**12))
    profiles, total = await store.list_profiles(10, 0)
    assert [x.name for x in profiles] == ["default", "prov"] + sorted(
        ["n1", "n2"], key=lambda n: next(x.id for x in profiles if x.name == n)
    )
    assert total == 4
    assert (await store.list_profiles(1, 1)) == ([p], 4)


# -- telemetry ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_telemetry_typed_round_trip(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(10, k, v) for k, v in TYPED.items()])
    latest = await store.latest_telemetry(d.id, None)
    history = await store.telemetry_history(d.id, None, 0, 100, 10, False)
    assert set(latest) == set(history) == set(TYPED)
    for key, value in TYPED.items():
        assert latest[key][0] == 10 and history[key][0][0] == 10
        assert_typed(latest[key][1], value)
        assert_typed(history[key][0][1], value)
    assert await store.telemetry_keys(d.id) == sorted(TYPED)


@pytest_twisted.ensureDeferred
async def test_latest_versus_history(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(200, "t", 2)])
    await store.save_telemetry(d.id, [(100, "t", 1)])  # older: history only
    assert await store.latest_telemetry(d.id, ["t"]) == {"t": (200, 2)}
    await store.save_telemetry(d.id, [(200, "t", "again")])  # same ts: later write wins
    assert await store.latest_telemetry(d.id, ["t"]) == {"t": (200, "again")}
    await store.save_telemetry(d.id, [(300, "t", 3.5), (300, "t", 4.5)])  # within one save too
    assert await store.latest_telemetry(d.id, ["t"]) == {"t": (300, 4.5)}
    history = await store.telemetry_history(d.id, ["t"], 0, 1000, 100, False)
    assert history == {"t": [(100, 1), (200, "again"), (300, 4.5)]}


@pytest_twisted.ensureDeferred
async def test_latest_key_selection(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(1, "a", 1), (2, "b", 2), (3, "c", 3)])
    assert await store.latest_telemetry(d.id, ["a", "c", "missing"]) == {"a": (1, 1), "c": (3, 3)}
    assert await store.latest_telemetry(d.id, []) == {}
    assert set(await store.latest_telemetry(d.id, None)) == {"a", "b", "c"}
    many = [f"k{i}" for i in range(1200)]  # more keys than one IN list takes
    await store.save_telemetry(d.id, [(5, k, i) for i, k in enumerate(many)])
    assert len(await store.latest_telemetry(d.id, many)) == 1200
    assert await store.latest_telemetry(new_id(), None) == {}


@pytest_twisted.ensureDeferred
async def test_history_range_limit_and_order(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(ts, "x", ts) for ts in range(10, 101, 10)])
    await store.save_telemetry(d.id, [(ts, "y", -ts) for ts in (5, 50, 500)])
    asc = await store.telemetry_history(d.id, ["x"], 20, 60, 100, False)
    assert [ts for ts, _ in asc["x"]] == [20, 30, 40, 50, 60]  # both ends included
    desc = await store.telemetry_history(d.id, ["x"], 20, 60, 100, True)
    assert [ts for ts, _ in desc["x"]] == [60, 50, 40, 30, 20]
    last = await store.telemetry_history(d.id, ["x"], 0, 1000, 3, True)
    first = await store.telemetry_history(d.id, ["x"], 0, 1000, 3, False)
    assert [ts for ts, _ in last["x"]] == [100, 90, 80] and [ts for ts, _ in first["x"]] == [10, 20, 30]
    both = await store.telemetry_history(d.id, None, 0, 60, 2, False)  # limit is per key
    assert both == {"x": [(10, 10), (20, 20)], "y": [(5, -5), (50, -50)]}
    assert await store.telemetry_history(d.id, ["x", "nope"], 1000, 2000, 5, False) == {}
    await raises(BadRequest, store.telemetry_history(d.id, None, 0, 10, 0, False))


@pytest_twisted.ensureDeferred
async def test_telemetry_save_is_all_or_nothing(store):
    d = await store.add_device(dev("a"), "ta")
    await raises(BadRequest, store.save_telemetry(d.id, [(1, "ok", 1), (1, "big", 2**64), (1, "ok2", 2)]))
    await raises(BadRequest, store.save_telemetry(d.id, [(1, "ok", 1), (1, "nan", float("nan"))]))
    await raises(BadRequest, store.save_telemetry(d.id, [(1, "ok", 1), (1, "obj", object())]))
    await raises(BadRequest, store.save_telemetry(d.id, [(1, "ok", 1), ("1", "badts", 1)]))
    await raises(BadRequest, store.save_telemetry(d.id, [(1, "", 1)]))
    await raises(Exception, store.save_telemetry(d.id, [(1, "short")]))  # fails the Deferred, never raises
    assert await store.telemetry_keys(d.id) == []
    assert await store.save_telemetry(d.id, []) is None


@pytest_twisted.ensureDeferred
async def test_unknown_device_writes(store):
    missing = new_id()
    await raises(NotFound, store.save_telemetry(missing, [(1, "k", 1)]))
    await raises(NotFound, store.save_attributes(missing, "SHARED_SCOPE", {"k": 1}, 1))
    await raises(NotFound, store.delete_attributes(missing, "SHARED_SCOPE", ["k"]))
    assert await store.telemetry_keys(missing) == []


# -- attributes -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_attributes(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_attributes(d.id, "CLIENT_SCOPE", TYPED, 10)
    got = await store.get_attributes(d.id, "CLIENT_SCOPE", None)
    assert set(got) == set(TYPED)
    for key, value in TYPED.items():
        assert_typed(got[key][0], value)
        assert got[key][1] == 10
    assert await store.get_attributes(d.id, "SHARED_SCOPE", None) == {}  # scopes are apart
    await store.save_attributes(d.id, "CLIENT_SCOPE", {"long": "changed", "new": 1.5}, 20)
    got = await store.get_attributes(d.id, "CLIENT_SCOPE", ["long", "new", "str", "missing"])
    assert got == {"long": ("changed", 20), "new": (1.5, 20), "str": ("s", 10)}
    assert await store.get_attributes(new_id(), "CLIENT_SCOPE", None) == {}
    await raises(BadRequest, store.get_attributes(d.id, "NO_SCOPE", None))
    await raises(BadRequest, store.save_attributes(d.id, "NO_SCOPE", {"k": 1}, 1))


@pytest_twisted.ensureDeferred
async def test_attribute_save_is_all_or_nothing(store):
    d = await store.add_device(dev("a"), "ta")
    await raises(BadRequest, store.save_attributes(d.id, "SHARED_SCOPE", {"a": 1, "b": -(2**63) - 1}, 1))
    assert await store.get_attributes(d.id, "SHARED_SCOPE", None) == {}


@pytest_twisted.ensureDeferred
async def test_delete_attributes(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_attributes(d.id, "SHARED_SCOPE", {"a": 1, "b": 2, "c": 3}, 1)
    await store.save_attributes(d.id, "SERVER_SCOPE", {"a": 1}, 1)
    assert await store.delete_attributes(d.id, "SHARED_SCOPE", ["c", "missing", "a"]) == ["c", "a"]
    assert await store.get_attributes(d.id, "SHARED_SCOPE", None) == {"b": (2, 1)}
    assert await store.get_attributes(d.id, "SERVER_SCOPE", None) == {"a": (1, 1)}
    assert await store.delete_attributes(d.id, "SHARED_SCOPE", ["a"]) == []


# -- server-side RPCs -----------------------------------------------------------------------


PENDING = [s for s in RPC_STATUSES if s not in RPC_FINAL]


@pytest_twisted.ensureDeferred
async def test_rpc_ids_count_per_device(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    made = [
        rpc(a, "setGpio", params_json='{"pin":7,"value":1}', request_id=99, expiration_time=5000,
            created_time=1000),
        rpc(b, oneway=True, persistent=True, expiration_time=2**63 - 1, created_time=0),
        rpc(a, params_json="null"),
        rpc(a, params_json="[1,2]", status="SENT", response_json='"r"'),
        rpc(b),
    ]
    stored = [await store.add_rpc(r) for r in made]
    assert [r.request_id for r in stored] == [1, 1, 2, 3, 2]
    for given, got in zip(made, stored):
        assert type(got) is Rpc and got == replace(given, request_id=got.request_id)
        assert type(got.oneway) is bool and type(got.persistent) is bool
        assert await store.get_rpc(got.id) == got
        assert await store.rpc_by_request_id(got.device_id, got.request_id) == got
    assert await store.rpc_by_request_id(a.id, 4) is None
    assert await store.rpc_by_request_id(b.id, 3) is None
    assert await store.rpc_by_request_id(new_id(), 1) is None
    assert await store.get_rpc(new_id()) is None


@pytest_twisted.ensureDeferred
async def test_rpc_ids_are_never_reused(store, open_backend):
    a = await store.add_device(dev("a"), "ta")
    first = [await store.add_rpc(rpc(a)) for _ in range(3)]
    assert await store.delete_rpc(first[2].id) is True  # the newest
    assert await store.delete_rpc(first[2].id) is False
    assert await store.get_rpc(first[2].id) is None
    assert (await store.add_rpc(rpc(a))).request_id == 4
    for r in await store.list_rpcs(a.id, 100, 0).addCallback(lambda page: page[0]):
        assert await store.delete_rpc(r.id) is True
    assert await store.list_rpcs(a.id, 10, 0) == ([], 0)
    assert (await store.add_rpc(rpc(a))).request_id == 5  # none left, still counting on
    kept = await store.add_rpc(rpc(a, status="DELIVERED"))
    await store.delete_rpc((await store.rpc_by_request_id(a.id, 5)).id)
    await store.close()
    again = await open_backend()
    try:
        assert await again.get_rpc(kept.id) == kept
        assert (await again.add_rpc(rpc(a))).request_id == 7  # 6 was the last, deleted or not
        assert await again.delete_rpc(new_id()) is False
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_concurrent_add_rpc_gets_consecutive_ids(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    calls = [store.add_rpc(rpc(a if i % 3 else b, f"m{i}")) for i in range(75)]  # none awaited yet
    stored = await defer.gatherResults(calls)
    ids_a = [r.request_id for r in stored if r.device_id == a.id]
    ids_b = [r.request_id for r in stored if r.device_id == b.id]
    assert sorted(ids_a) == list(range(1, 51)) and sorted(ids_b) == list(range(1, 26))
    assert len({r.id for r in stored}) == 75
    page, total = await store.list_rpcs(a.id, 100, 0)
    assert total == 50 and sorted(page, key=lambda r: r.request_id) == sorted(
        (r for r in stored if r.device_id == a.id), key=lambda r: r.request_id
    )


@pytest_twisted.ensureDeferred
async def test_set_rpc_status_compare_and_set(store):
    a = await store.add_device(dev("a"), "ta")
    r = await store.add_rpc(rpc(a))
    assert await store.set_rpc_status(r.id, "SENT") is True  # no expect: any status
    assert (await store.get_rpc(r.id)).status == "SENT"
    assert await store.set_rpc_status(r.id, "DELIVERED", expect=["QUEUED", "SENT"]) is True
    assert await store.set_rpc_status(r.id, "QUEUED", expect=("QUEUED", "SENT")) is False  # lost the race
    assert (await store.get_rpc(r.id)).status == "DELIVERED"
    assert await store.set_rpc_status(r.id, "SUCCESSFUL", '{"ok":true}', expect={"DELIVERED"}) is True
    got = await store.get_rpc(r.id)
    assert (got.status, got.response_json) == ("SUCCESSFUL", '{"ok":true}')
    assert await store.set_rpc_status(r.id, "FAILED", '"late"', expect=PENDING) is False
    assert (await store.get_rpc(r.id)).response_json == '{"ok":true}'  # a failed CAS changes nothing
    assert await store.set_rpc_status(r.id, "TIMEOUT") is True  # response None: kept
    got = await store.get_rpc(r.id)
    assert (got.status, got.response_json) == ("TIMEOUT", '{"ok":true}')
    assert got == replace(r, status="TIMEOUT", response_json='{"ok":true}')  # nothing else changed
    assert await store.set_rpc_status(r.id, "FAILED", expect=[]) is False
    assert await store.set_rpc_status(new_id(), "SENT") is False
    assert await store.set_rpc_status(new_id(), "SENT", expect=["QUEUED"]) is False
    await raises(BadRequest, store.set_rpc_status(r.id, "DONE"))
    await raises(BadRequest, store.set_rpc_status(r.id, "SENT", expect=["NOPE"]))
    await raises(BadRequest, store.set_rpc_status(r.id, "SENT", response_json={"a": 1}))
    assert (await store.get_rpc(r.id)).status == "TIMEOUT"


@pytest_twisted.ensureDeferred
async def test_concurrent_compare_and_set_has_one_winner(store):
    a = await store.add_device(dev("a"), "ta")
    r = await store.add_rpc(rpc(a, status="DELIVERED"))
    calls = [store.set_rpc_status(r.id, s, f'"{s}"', expect=["DELIVERED"]) for s in ("SUCCESSFUL", "TIMEOUT")]
    results = await defer.gatherResults(calls)
    assert sorted(results) == [False, True]
    winner = ("SUCCESSFUL", "TIMEOUT")[results.index(True)]
    got = await store.get_rpc(r.id)
    assert (got.status, got.response_json) == (winner, f'"{winner}"')


@pytest_twisted.ensureDeferred
async def test_pending_and_listed_rpcs(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    made = {}
    for status in RPC_STATUSES:  # one RPC of each status on each device, request ids 1..7
        for d in (b, a):
            made[d.id, status] = await store.add_rpc(rpc(d, status=status))
    for d in (a, b):
        pending = await store.pending_rpcs(d.id)
        assert pending == [made[d.id, s] for s in PENDING]
        assert [r.request_id for r in pending] == [1, 2, 3]
    everything = await store.pending_rpcs()
    first, second = sorted([a.id, b.id])
    assert everything == [made[first, s] for s in PENDING] + [made[second, s] for s in PENDING]
    assert await store.pending_rpcs(new_id()) == []
    await store.set_rpc_status(made[a.id, "SENT"].id, "SUCCESSFUL")  # leaves the pending ones
    await store.set_rpc_status(made[a.id, "FAILED"].id, "QUEUED")  # and back in
    assert [r.request_id for r in await store.pending_rpcs(a.id)] == [1, 3, 7]

    page, total = await store.list_rpcs(a.id, 100, 0)
    assert total == 7 and [r.request_id for r in page] == [7, 6, 5, 4, 3, 2, 1]  # newest first
    page, total = await store.list_rpcs(a.id, 3, 2)
    assert total == 7 and [r.request_id for r in page] == [5, 4, 3]
    assert page[0] == made[a.id, RPC_STATUSES[4]]  # request id 5
    assert await store.list_rpcs(a.id, 3, 7) == ([], 7)
    assert await store.list_rpcs(a.id, 0, 0) == ([], 7)
    assert await store.list_rpcs(new_id(), 10, 0) == ([], 0)
    await raises(BadRequest, store.list_rpcs(a.id, -1, 0))
    await raises(BadRequest, store.list_rpcs(a.id, 10, -1))


@pytest_twisted.ensureDeferred
async def test_delete_device_removes_rpcs(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    gone = [await store.add_rpc(rpc(a, status=s)) for s in ("QUEUED", "SUCCESSFUL")]
    other = await store.add_rpc(rpc(b))
    assert await store.delete_device(a.id) is True
    for r in gone:
        assert await store.get_rpc(r.id) is None
        assert await store.rpc_by_request_id(a.id, r.request_id) is None
    assert await store.pending_rpcs(a.id) == []
    assert await store.list_rpcs(a.id, 10, 0) == ([], 0)
    assert await store.pending_rpcs() == [other]  # the other device keeps its own
    assert await store.get_rpc(other.id) == other
    await raises(NotFound, store.add_rpc(rpc(a)))


@pytest_twisted.ensureDeferred
async def test_add_rpc_checks_its_input(store):
    a = await store.add_device(dev("a"), "ta")
    await raises(NotFound, store.add_rpc(rpc(Device(id=new_id(), name="ghost"))))
    bad = [
        rpc(a, method=""),
        rpc(a, method=None),
        rpc(a, method=7),
        rpc(a, params_json={"a": 1}),
        rpc(a, params_json=None),
        rpc(a, response_json={"a": 1}),
        rpc(a, status="DONE"),
        rpc(a, status=None),
        rpc(a, expiration_time=1.5),
        rpc(a, expiration_time="1"),
        rpc(a, expiration_time=None),
        rpc(a, created_time=2**64),
        rpc(a, created_time=True),
    ]
    for r in bad:  # each fails its Deferred (raises() would not catch a synchronous raise)
        await raises(BadRequest, store.add_rpc(r))
    results = await settled([store.add_rpc(r) for r in bad] + [store.add_rpc(rpc(a))])
    assert [ok for ok, _ in results] == [False] * len(bad) + [True]
    assert results[-1][1].request_id == 1  # refused RPCs took no id
    assert await store.list_rpcs(a.id, 10, 0) == ([results[-1][1]], 1)


# -- customers ---------------------------------------------------------------------------------


def cust(title="c", **kw):
    return Customer(id=new_id(), title=title, **kw)


def digest(n):
    return f"{n:064x}"  # the shape of a SHA-256 hex digest


@pytest_twisted.ensureDeferred
async def test_customers(store):
    assert await store.list_customers(10, 0) == ([], 0)
    c = cust("Acme", created_time=1234)
    assert await store.add_customer(c, digest(1)) == c
    assert await store.get_customer(c.id) == c
    assert await store.customer_by_key_digest(digest(1)) == c
    assert await store.get_customer(new_id()) is None
    assert await store.customer_by_key_digest(digest(2)) is None
    assert await store.customer_by_key_digest("") is None
    assert await store.customer_by_key_digest(None) is None
    assert await store.list_customers(10, 0) == ([c], 1)


@pytest_twisted.ensureDeferred
async def test_add_customer_refusals(store):
    c = await store.add_customer(cust("Acme"), digest(1))
    await raises(BadRequest, store.add_customer(cust("Other"), digest(1)))  # the key is taken
    await raises(BadRequest, store.add_customer(cust(""), digest(2)))
    await raises(BadRequest, store.add_customer(cust(None), digest(3)))
    await raises(BadRequest, store.add_customer(cust(7), digest(4)))
    await raises(BadRequest, store.add_customer(cust("x"), ""))
    await raises(BadRequest, store.add_customer(cust("x"), None))
    await raises(BadRequest, store.add_customer(replace(c, title="Again"), digest(5)))  # its id is taken
    for n in (2, 3, 4, 5):
        assert await store.customer_by_key_digest(digest(n)) is None
    assert await store.list_customers(10, 0) == ([c], 1)
    assert await store.get_customer(c.id) == c
    # titles are unique, as in ThingsBoard
    await raises(DuplicateName, store.add_customer(cust("Acme"), digest(6)))
    assert await store.customer_by_key_digest(digest(6)) is None
    assert await store.customer_by_title("Acme") == c
    assert await store.customer_by_title("acme") is None and await store.customer_by_title("") is None
    assert (await store.list_customers(10, 0))[1] == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_add_customer_one_key_one_winner(store):
    results = await settled([store.add_customer(cust(f"c{i}"), digest(9)) for i in range(10)])
    assert [ok for ok, _ in results].count(True) == 1
    assert all(r.check(BadRequest) for ok, r in results if not ok)
    winner = next(r for ok, r in results if ok)
    assert await store.customer_by_key_digest(digest(9)) == winner
    assert (await store.list_customers(100, 0))[1] == 1


@pytest_twisted.ensureDeferred
async def test_list_customers_ordered_and_paged(store):
    a, b = sorted([new_id(), new_id()])
    made = [
        Customer(id=new_id(), title="late", created_time=300),
        Customer(id=b, title="tie-b", created_time=200),
        Customer(id=a, title="tie-a", created_time=200),
        Customer(id=new_id(), title="early", created_time=100),
    ]
    for i, c in enumerate(made):
        await store.add_customer(c, digest(i))
    titles = [c.title for c in (await store.list_customers(10, 0))[0]]
    assert titles == ["early", "tie-a", "tie-b", "late"]
    page, total = await store.list_customers(2, 1)
    assert [c.title for c in page] == ["tie-a", "tie-b"] and total == 4
    assert await store.list_customers(2, 10) == ([], 4)
    assert await store.list_customers(0, 0) == ([], 4)
    await raises(BadRequest, store.list_customers(-1, 0))
    await raises(BadRequest, store.list_customers(10, -1))


@pytest_twisted.ensureDeferred
async def test_set_device_customer_compare_and_set(store):
    d = await store.add_device(dev("a"), "ta")
    c1 = await store.add_customer(cust("one"), digest(1))
    c2 = await store.add_customer(cust("two"), digest(2))
    assert d.customer_id is None
    assert await store.set_device_customer(d.id, c1.id, None) is True
    owned = replace(d, customer_id=c1.id)
    assert await store.get_device(d.id) == owned
    assert await store.device_by_name("a") == owned
    assert await store.device_by_credentials(ACCESS_TOKEN, "ta") == owned
    assert await store.list_devices(10, 0) == ([owned], 1)
    # the owner is not what the caller expects: nothing changes
    assert await store.set_device_customer(d.id, c2.id, None) is False
    assert await store.set_device_customer(d.id, None, c2.id) is False
    assert await store.set_device_customer(d.id, None, None) is False
    assert (await store.get_device(d.id)).customer_id == c1.id
    # the expected owner: moved, then freed
    assert await store.set_device_customer(d.id, c2.id, c1.id) is True
    assert (await store.get_device(d.id)).customer_id == c2.id
    assert await store.set_device_customer(d.id, None, c2.id) is True
    assert await store.get_device(d.id) == d
    assert await store.set_device_customer(d.id, None, c2.id) is False


@pytest_twisted.ensureDeferred
async def test_set_device_customer_not_found(store):
    d = await store.add_device(dev("a"), "ta")
    c = await store.add_customer(cust(), digest(1))
    await raises(NotFound, store.set_device_customer(new_id(), c.id, None))
    await raises(NotFound, store.set_device_customer(new_id(), None, c.id))
    await raises(NotFound, store.set_device_customer(d.id, new_id(), None))  # no such customer
    assert (await store.get_device(d.id)).customer_id is None
    await store.set_device_customer(d.id, c.id, None)
    await raises(NotFound, store.set_device_customer(d.id, new_id(), c.id))
    assert (await store.get_device(d.id)).customer_id == c.id


@pytest_twisted.ensureDeferred
async def test_concurrent_claims_have_one_winner(store):
    d = await store.add_device(dev("a"), "ta")
    customers = [await store.add_customer(cust(f"c{i}"), digest(i)) for i in range(10)]
    results = await defer.gatherResults([store.set_device_customer(d.id, c.id, None) for c in customers])
    assert results.count(True) == 1
    winner = customers[results.index(True)]
    assert (await store.get_device(d.id)).customer_id == winner.id


@pytest_twisted.ensureDeferred
async def test_list_customer_devices(store):
    c1 = await store.add_customer(cust("one"), digest(1))
    c2 = await store.add_customer(cust("two"), digest(2))
    a, b = sorted([new_id(), new_id()])
    mine = [
        Device(id=new_id(), name="late", created_time=300),
        Device(id=b, name="tie-b", created_time=200),
        Device(id=a, name="tie-a", created_time=200),
        Device(id=new_id(), name="early", created_time=100),
    ]
    others = [Device(id=new_id(), name="theirs", created_time=150), Device(id=new_id(), name="free")]
    for i, d in enumerate(mine + others):
        await store.add_device(d, f"t{i}")
    for d in mine:
        assert await store.set_device_customer(d.id, c1.id, None) is True
    await store.set_device_customer(others[0].id, c2.id, None)
    devices, total = await store.list_customer_devices(c1.id, 10, 0)
    assert [d.name for d in devices] == ["early", "tie-a", "tie-b", "late"] and total == 4
    assert all(d.customer_id == c1.id for d in devices)
    page, total = await store.list_customer_devices(c1.id, 2, 1)
    assert [d.name for d in page] == ["tie-a", "tie-b"] and total == 4
    assert await store.list_customer_devices(c1.id, 2, 10) == ([], 4)
    assert await store.list_customer_devices(c2.id, 10, 0) == ([replace(others[0], customer_id=c2.id)], 1)
    assert await store.list_customer_devices(new_id(), 10, 0) == ([], 0)
    searched, total = await store.list_customer_devices(c1.id, 10, 0, text_search="TIE", sort_property="name",
                                                        descending=True)
    assert [d.name for d in searched] == ["tie-b", "tie-a"] and total == 2
    await store.set_device_customer(mine[0].id, None, c1.id)
    assert (await store.list_customer_devices(c1.id, 10, 0))[1] == 3
    await store.delete_device(mine[1].id)
    assert [d.name for d in (await store.list_customer_devices(c1.id, 10, 0))[0]] == ["early", "tie-a"]
    await raises(BadRequest, store.list_customer_devices(c1.id, -1, 0))
    await raises(BadRequest, store.list_customer_devices(c1.id, 10, -1))


# -- claim requests ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_claim_request_first_wins_until_it_expires(store):
    d = await store.add_device(dev("a"), "ta")
    assert await store.get_claim_request(d.id) is None
    first = ClaimRequest(device_id=d.id, secret="s1", expiration_time=1000)
    assert await store.put_claim_request(first, 500) is True
    assert await store.get_claim_request(d.id) == first
    # not expired yet: the first request stays
    second = ClaimRequest(device_id=d.id, secret="s2", expiration_time=5000)
    assert await store.put_claim_request(second, 600) is False
    assert await store.put_claim_request(second, 999) is False
    assert await store.get_claim_request(d.id) == first
    # expired (expiration_time is no longer after now): it is still there, the service decides
    assert await store.get_claim_request(d.id) == first
    assert await store.put_claim_request(second, 1000) is True
    assert await store.get_claim_request(d.id) == second
    third = ClaimRequest(device_id=d.id, secret="", expiration_time=9000)  # an empty secret is a secret
    assert await store.put_claim_request(third, 4999) is False
    assert await store.put_claim_request(third, 6000) is True
    assert await store.get_claim_request(d.id) == third


@pytest_twisted.ensureDeferred
async def test_claim_requests_are_per_device(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    ra = ClaimRequest(device_id=a.id, secret="sa", expiration_time=1000)
    rb = ClaimRequest(device_id=b.id, secret="sb", expiration_time=2000)
    assert await store.put_claim_request(ra, 0) is True
    assert await store.put_claim_request(rb, 0) is True
    assert await store.get_claim_request(a.id) == ra
    assert await store.get_claim_request(b.id) == rb
    assert await store.delete_claim_request(a.id) is True
    assert await store.delete_claim_request(a.id) is False
    assert await store.get_claim_request(a.id) is None
    assert await store.get_claim_request(b.id) == rb
    # once deleted, a new request is taken at once
    again = ClaimRequest(device_id=a.id, secret="new", expiration_time=3000)
    assert await store.put_claim_request(again, 0) is True
    assert await store.get_claim_request(a.id) == again


@pytest_twisted.ensureDeferred
async def test_claim_request_refusals(store):
    d = await store.add_device(dev("a"), "ta")
    ghost = new_id()
    await raises(NotFound, store.put_claim_request(ClaimRequest(device_id=ghost, secret="s", expiration_time=9), 0))
    assert await store.get_claim_request(ghost) is None
    assert await store.delete_claim_request(ghost) is False
    for bad, now in (
        (ClaimRequest(device_id=d.id, secret=None, expiration_time=9), 0),
        (ClaimRequest(device_id=d.id, secret=7, expiration_time=9), 0),
        (ClaimRequest(device_id=d.id, secret="s", expiration_time=None), 0),
        (ClaimRequest(device_id=d.id, secret="s", expiration_time=1.5), 0),
        (ClaimRequest(device_id=d.id, secret="s", expiration_time=9), None),
        ((d.id, "s", 9), 0),
    ):
        await raises(BadRequest, store.put_claim_request(bad, now))
    assert await store.get_claim_request(d.id) is None


@pytest_twisted.ensureDeferred
async def test_concurrent_claim_requests_have_one_winner(store):
    d = await store.add_device(dev("a"), "ta")
    requests = [ClaimRequest(device_id=d.id, secret=f"s{i}", expiration_time=10**6) for i in range(10)]
    results = await defer.gatherResults([store.put_claim_request(r, 0) for r in requests])
    assert results.count(True) == 1
    assert await store.get_claim_request(d.id) == requests[results.index(True)]


# -- provisioning ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_profile_by_provision_key(store):
    p = DeviceProfile(
        id=new_id(), name="prov", provision_type="CHECK_PRE_PROVISIONED_DEVICES",
        provision_key="key", provision_secret="secret",
    )
    await store.add_profile(p)
    await store.add_profile(DeviceProfile(id=new_id(), name="keyless"))
    assert await store.profile_by_provision_key("key") == p
    assert await store.profile_by_provision_key("KEY") is None
    assert await store.profile_by_provision_key("secret") is None
    assert await store.profile_by_provision_key("") is None
    assert await store.profile_by_provision_key(None) is None  # profiles without a key never match


@pytest_twisted.ensureDeferred
async def test_mark_provisioned(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    assert await store.mark_provisioned(a.id) is True
    assert await store.mark_provisioned(a.id) is False
    assert await store.mark_provisioned(b.id) is True
    await raises(NotFound, store.mark_provisioned(new_id()))
    # the mark is the SERVER_SCOPE attribute provisionState; deleting it allows provisioning again
    state = await store.get_attributes(a.id, "SERVER_SCOPE", ["provisionState"])
    assert state["provisionState"][0] == "provisioned"
    assert await store.delete_attributes(a.id, "SERVER_SCOPE", ["provisionState"]) == ["provisionState"]
    assert await store.mark_provisioned(a.id) is True
    await store.save_attributes(b.id, "SERVER_SCOPE", {"provisionState": "anything"}, 1)
    assert await store.delete_attributes(b.id, "SERVER_SCOPE", ["provisionState"]) == ["provisionState"]
    await store.save_attributes(b.id, "SERVER_SCOPE", {"provisionState": "any value"}, 1)
    assert await store.mark_provisioned(b.id) is False  # any value blocks it


@pytest_twisted.ensureDeferred
async def test_update_device(store):
    a = await store.add_device(dev("a", type="t1", label="L"), "ta")
    await store.add_device(dev("b"), "tb")
    changed = await store.update_device(replace(a, name="a2", type="t2", label=None,
                                                additional_info='{"gateway":true}'))
    assert changed == replace(a, name="a2", type="t2", label=None, additional_info='{"gateway":true}')
    assert await store.get_device(a.id) == changed and await store.device_by_name("a2") == changed
    assert await store.device_by_name("a") is None and await store.device_by_credentials(ACCESS_TOKEN, "ta") == changed
    assert [d.name for d in (await store.list_devices(10, 0, sort_property="name"))[0]] == ["a2", "b"]
    assert [d.name for d in (await store.list_devices(10, 0, text_search="A2"))[0]] == ["a2"]
    await raises(DuplicateName, store.update_device(replace(a, name="b")))
    await raises(NotFound, store.update_device(dev("ghost")))
    assert await store.update_device(replace(changed, label="same name again")) == replace(changed,
                                                                                           label="same name again")


@pytest_twisted.ensureDeferred
async def test_concurrent_mark_provisioned_has_one_winner(store):
    d = await store.add_device(dev("a"), "ta")
    results = await defer.gatherResults([store.mark_provisioned(d.id) for _ in range(10)])
    assert results.count(True) == 1


@pytest_twisted.ensureDeferred
async def test_delete_device_removes_claim_request_and_provisioned_mark(store):
    d = await store.add_device(dev("a"), "ta")
    other = await store.add_device(dev("b"), "tb")
    for x in (d, other):
        await store.put_claim_request(ClaimRequest(device_id=x.id, secret="s", expiration_time=10**6), 0)
        await store.mark_provisioned(x.id)
    assert await store.delete_device(d.id) is True
    assert await store.get_claim_request(d.id) is None
    assert await store.delete_claim_request(d.id) is False
    await raises(NotFound, store.mark_provisioned(d.id))
    await raises(NotFound, store.put_claim_request(ClaimRequest(device_id=d.id, secret="s", expiration_time=9), 0))
    # the same id again starts clean; the other device keeps its own
    await store.add_device(Device(id=d.id, name="a"), "ta")
    assert await store.get_claim_request(d.id) is None
    fresh = ClaimRequest(device_id=d.id, secret="new", expiration_time=10)
    assert await store.put_claim_request(fresh, 0) is True
    assert await store.mark_provisioned(d.id) is True
    assert (await store.get_claim_request(other.id)).secret == "s"
    assert await store.mark_provisioned(other.id) is False


@pytest_twisted.ensureDeferred
async def test_customers_claims_and_provisioning_persist(store, open_backend):
    c = await store.add_customer(cust("Acme", created_time=77), digest(1))
    owned = await store.add_device(dev("owned"), "to")
    waiting = await store.add_device(dev("waiting"), "tw")
    await store.set_device_customer(owned.id, c.id, None)
    request = ClaimRequest(device_id=waiting.id, secret="s", expiration_time=10**6)
    await store.put_claim_request(request, 0)
    await store.mark_provisioned(owned.id)
    p = DeviceProfile(id=new_id(), name="prov", provision_type="ALLOW_CREATE_NEW_DEVICES",
                      provision_key="pk", provision_secret="ps")
    await store.add_profile(p)
    await store.close()
    again = await open_backend()
    try:
        assert await again.get_customer(c.id) == c
        assert await again.customer_by_key_digest(digest(1)) == c
        assert await again.list_customers(10, 0) == ([c], 1)
        assert (await again.get_device(owned.id)).customer_id == c.id
        assert await again.list_customer_devices(c.id, 10, 0) == ([replace(owned, customer_id=c.id)], 1)
        assert await again.get_claim_request(waiting.id) == request
        assert await again.put_claim_request(replace(request, secret="late"), 1) is False
        assert await again.mark_provisioned(owned.id) is False
        assert await again.mark_provisioned(waiting.id) is True
        assert await again.profile_by_provision_key("pk") == p
        assert await again.set_device_customer(owned.id, None, c.id) is True
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_aggregation_in_buckets(store):
    d = await store.add_device(dev("a"), "ta")
    values = [1, 2, 3.5, "text", True, 10, 20, 30, -4, 100]  # ts 0..9; a string and a boolean among them
    await store.save_telemetry(d.id, [(ts, "t", v) for ts, v in enumerate(values)] + [(12, "t", 999)])
    await store.save_telemetry(d.id, [(1, "s", "x"), (5, "s", "y")])

    async def agg(kind, keys=("t",), limit=100, descending=False, interval=4, end=10):
        return await store.telemetry_aggregate(d.id, None if keys is None else list(keys), 0, end, interval, kind,
                                               limit, descending)

    # buckets [0,4) [4,8) [8,10): the last one cut at the end (10 and beyond excluded)
    assert await agg("COUNT") == {"t": [(2, 4), (6, 4), (9, 2)]}
    assert_typed((await agg("COUNT"))["t"][0][1], 4)
    assert await agg("SUM") == {"t": [(2, 6.5), (6, 60), (9, 96)]}
    assert_typed((await agg("SUM"))["t"][1][1], 60)       # only LONG values: an int
    assert_typed((await agg("SUM"))["t"][0][1], 6.5)      # a DOUBLE among them: a float
    assert await agg("AVG") == {"t": [(2, 6.5 / 3), (6, 20.0), (9, 48.0)]}
    assert_typed((await agg("AVG"))["t"][1][1], 20.0)
    assert await agg("MIN") == {"t": [(2, 1), (6, 10), (9, -4)]}
    assert await agg("MAX") == {"t": [(2, 3.5), (6, 30), (9, 100)]}
    assert_typed((await agg("MAX"))["t"][0][1], 3.5)
    assert await agg("MAX", limit=2) == {"t": [(2, 3.5), (6, 30)]}
    assert await agg("MAX", limit=2, descending=True) == {"t": [(9, 100), (6, 30)]}
    assert await agg("COUNT", keys=None) == {"t": [(2, 4), (6, 4), (9, 2)], "s": [(2, 1), (6, 1)]}
    assert await agg("SUM", keys=["s"]) == {}             # no numbers: no bucket
    assert await agg("COUNT", interval=1000, end=20) == {"t": [(10, 11)]}
    assert await agg("COUNT", keys=["nope"]) == {}
    for bad in (dict(interval=0), dict(kind="MEDIAN"), dict(limit=0)):
        args = {"kind": "SUM", **bad}
        kind = args.pop("kind")
        await raises(BadRequest, agg(kind, **args))


@pytest_twisted.ensureDeferred
async def test_delete_telemetry(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(ts, key, ts) for ts in range(10) for key in ("x", "y", "z")])

    async def history(key):
        return [ts for ts, _ in (await store.telemetry_history(d.id, [key], 0, 100, 100, False)).get(key, [])]

    await store.delete_telemetry(d.id, ["x"], 2, 5)  # [2, 5): the latest (9) is not in it
    assert await history("x") == [0, 1, 5, 6, 7, 8, 9]
    assert (await store.latest_telemetry(d.id, ["x"]))["x"] == (9, 9)
    await store.delete_telemetry(d.id, ["y"], 5, 10)  # the latest goes with its range
    assert await history("y") == [0, 1, 2, 3, 4] and await store.latest_telemetry(d.id, ["y"]) == {}
    await store.delete_telemetry(d.id, ["z"], 8, 10, rewrite_latest=True)  # the newest left becomes latest
    assert (await store.latest_telemetry(d.id, ["z"]))["z"] == (7, 7)
    await store.delete_telemetry(d.id, ["x"], 0, 2**62, delete_latest=False)
    assert await history("x") == [] and (await store.latest_telemetry(d.id, ["x"]))["x"] == (9, 9)
    await store.delete_telemetry(d.id, ["z"], -(2**63), 2**63 - 1)  # everything of the key
    assert await history("z") == [] and "z" not in await store.telemetry_keys(d.id)
    await raises(NotFound, store.delete_telemetry(new_id(), ["x"], 0, 10))
    await raises(BadRequest, store.delete_telemetry(d.id, None, 0, 10))


@pytest_twisted.ensureDeferred
async def test_telemetry_with_a_time_to_live_is_kept_like_any(store):
    d = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(d.id, [(1000, "k", 1)], ttl=60_000)
    await store.save_telemetry(d.id, [(2000, "k", 2)])
    history = await store.telemetry_history(d.id, ["k"], 0, 10**6, 10, False)
    assert history == {"k": [(1000, 1), (2000, 2)]}
    await raises(BadRequest, store.save_telemetry(d.id, [(3000, "k", 3)], ttl=-1))


@pytest_twisted.ensureDeferred
async def test_device_additional_info_is_kept(store):
    d = await store.add_device(dev("gw", additional_info='{"gateway":true}'), "tg")
    assert (await store.get_device(d.id)).additional_info == '{"gateway":true}'
    assert (await store.list_devices(10, 0))[0] == [d]


@pytest_twisted.ensureDeferred
async def test_device_transport_configuration_is_kept(store):
    power = '{"type":"COAP","powerMode":"PSM","psmActivityTimer":2000}'
    d = await store.add_device(dev("sleepy", transport_configuration=power), "tsleepy")
    assert (await store.get_device(d.id)).transport_configuration == power
    assert (await store.device_by_name("sleepy")) == d
    assert (await store.device_by_credentials(ACCESS_TOKEN, "tsleepy")) == d
    assert (await store.list_devices(10, 0))[0] == [d]
    edrx = '{"type":"COAP","powerMode":"E_DRX","edrxCycle":81000}'
    changed = await store.update_device(replace(d, transport_configuration=edrx))
    assert changed.transport_configuration == edrx and (await store.get_device(d.id)) == changed
    cleared = await store.update_device(replace(d, transport_configuration=None))
    assert cleared.transport_configuration is None and (await store.get_device(d.id)).transport_configuration is None
    plain = await store.add_device(dev("awake"), "tawake")
    assert (await store.get_device(plain.id)).transport_configuration is None


@pytest_twisted.ensureDeferred
async def test_update_profile_renames_its_devices_type(store):
    p = await store.add_profile(DeviceProfile(id=new_id(), name="sensors"))
    other = await store.add_profile(DeviceProfile(id=new_id(), name="other", provision_type="ALLOW_CREATE_NEW_DEVICES",
                                                  provision_key="k2", provision_secret="s2"))
    d = await store.add_device(dev("a", type="sensors"), "ta")
    e = await store.add_device(dev("b", type="other"), "tb")
    changed = replace(p, name="meters", provision_type="CHECK_PRE_PROVISIONED_DEVICES", provision_key="k1",
                      provision_secret="s1")
    assert await store.update_profile(changed) == changed
    assert await store.profile_by_name("meters") == changed and await store.profile_by_name("sensors") is None
    assert await store.profile_by_provision_key("k1") == changed
    assert (await store.get_device(d.id)).type == "meters" and (await store.get_device(e.id)).type == "other"
    assert [x.name for x in (await store.list_devices(10, 0, sort_property="type"))[0]] == ["a", "b"]
    await raises(DuplicateName, store.update_profile(replace(changed, name="other")))
    await raises(BadRequest, store.update_profile(replace(changed, provision_key="k2")))
    await raises(NotFound, store.update_profile(DeviceProfile(id=new_id(), name="ghost")))
    cleared = replace(changed, provision_type="DISABLED", provision_key=None, provision_secret=None)
    assert await store.update_profile(cleared) == cleared and await store.profile_by_provision_key("k1") is None
    assert await store.profile_by_name("other") == other


@pytest_twisted.ensureDeferred
async def test_expire_telemetry_by_age(store):
    a = await store.add_device(dev("a"), "ta")
    b = await store.add_device(dev("b"), "tb")
    for d in (a, b):
        await store.save_telemetry(d.id, [(ts, key, ts) for ts in range(1000, 6000, 1000) for key in ("x", "y")])

    async def history(d, key):
        return [ts for ts, _ in (await store.telemetry_history(d.id, [key], 0, 10**6, 100, False)).get(key, [])]

    assert await store.expire_telemetry(10**9, 3000, 100) == (8, False)  # ts 1000 and 2000 of four series
    assert await history(a, "x") == [3000, 4000, 5000] and await history(b, "y") == [3000, 4000, 5000]
    assert await store.expire_telemetry(10**9, 3000, 100) == (0, False)
    # a batch stops at its limit and says there is more; the rest goes with the next calls
    calls = [await store.expire_telemetry(10**9, 10**6, 3) for _ in range(5)]
    assert [count for count, _ in calls] == [3, 3, 3, 3, 0] and calls[3][1] and not calls[4][1]
    assert await history(a, "x") == [] and await history(b, "y") == []
    # latest values stay, and points written later (also older ones) are found again
    assert (await store.latest_telemetry(a.id, ["x"]))["x"] == (5000, 5000)
    await store.save_telemetry(a.id, [(7000, "x", 7), (100, "x", 1)])
    assert await store.expire_telemetry(10**9, 6000, 100) == (1, False)
    assert await history(a, "x") == [7000]
    # after an operator's delete, and across a device deleted and one kept, expiry finds what is left
    await store.save_telemetry(b.id, [(1000, "z", 1), (2000, "z", 2), (9000, "z", 9)])
    await store.delete_telemetry(b.id, ["z"], 0, 1500)
    await store.delete_device(a.id)
    assert (await store.expire_telemetry(10**9, 8000, 100))[0] == 1
    assert await history(b, "z") == [9000]
    await raises(BadRequest, store.expire_telemetry(10**9, None, 0))


@pytest_twisted.ensureDeferred
async def test_series_emptied_by_expiry_never_block_it(store):
    devices = [await store.add_device(dev(f"d{n}"), f"t{n}") for n in range(6)]
    for device in devices:  # each series keeps its latest value once its history is gone
        await store.save_telemetry(device.id, [(100, "k", 1)])
    total, more = 0, True
    for _ in range(10):
        if not more:
            break
        count, more = await store.expire_telemetry(10**9, 1000, 2)
        total += count
    assert total == 6 and not more
    # the emptied series no longer come first: a live one's old points are found in one call
    await store.save_telemetry(devices[0].id, [(150, "k", 2)])  # after the latest: its first point again
    await store.save_telemetry(devices[1].id, [(500, "j", 3), (600, "j", 4)])
    assert await store.expire_telemetry(10**9, 1000, 2) == (2, True)
    count, _ = await store.expire_telemetry(10**9, 1000, 2)
    assert count == 1
    for device, key in ((devices[0], "k"), (devices[1], "j")):
        assert await store.telemetry_history(device.id, [key], 0, 10**6, 100, False) == {}
    assert (await store.latest_telemetry(devices[0].id, ["k"]))["k"] == (150, 2)


@pytest_twisted.ensureDeferred
async def test_expire_telemetry_by_time_to_live(store):
    a = await store.add_device(dev("a"), "ta")
    await store.save_telemetry(a.id, [(10_000, "t", 1), (11_000, "t", 2)], ttl=5_000)
    await store.save_telemetry(a.id, [(12_000, "t", 3)])  # no time to live
    assert await store.expire_telemetry(15_500, None, 100) == (1, False)  # 10,000 + 5,000 has passed
    assert await store.expire_telemetry(15_500, None, 100) == (0, False)
    assert await store.expire_telemetry(16_000, None, 100) == (1, False)
    history = await store.telemetry_history(a.id, ["t"], 0, 10**6, 100, False)
    assert history == {"t": [(12_000, 3)]}
    assert await store.expire_telemetry(10**12, None, 100) == (0, False)  # without an age limit it stays
    assert (await store.latest_telemetry(a.id, ["t"]))["t"] == (12_000, 3)
    # a point written again without a time to live loses the old one
    await store.save_telemetry(a.id, [(20_000, "u", 1)], ttl=1_000)
    await store.save_telemetry(a.id, [(20_000, "u", 2)])
    assert await store.expire_telemetry(10**12, None, 100) == (0, False)
    assert await store.telemetry_history(a.id, ["u"], 0, 10**6, 100, False) == {"u": [(20_000, 2)]}


# -- a profile's transport configuration (payload type and Protobuf schemas) ---------------

TRANSPORT = ('{"type":"COAP","coapDeviceTypeConfiguration":{"coapDeviceType":"DEFAULT",'
             '"transportPayloadTypeConfiguration":{"transportPayloadType":"PROTOBUF",'
             '"deviceTelemetryProtoSchema":"syntax = \\"proto3\\";\\nmessage T { double t = 1; } // °C ✓"}},'
             '"clientSettings":{"powerMode":"PSM","psmActivityTimer":10000}}')


@pytest_twisted.ensureDeferred
async def test_profile_transport_configuration_is_kept_as_given(store, open_backend):
    """``DeviceProfile.transport_configuration`` is text the store keeps exactly (unicode, quotes,
    escapes, a few hundred KB) and gives back from every read; None is no configuration."""
    assert (await store.profile_by_name("default")).transport_configuration is None
    big = TRANSPORT.replace("// °C ✓", "//" + "x" * 200_000)
    p = DeviceProfile(id=new_id(), name="proto", provision_type="ALLOW_CREATE_NEW_DEVICES", provision_key="pk",
                      provision_secret="ps", created_time=4 * 10**12, transport_configuration=TRANSPORT)
    q = DeviceProfile(id=new_id(), name="big", created_time=5 * 10**12, transport_configuration=big)
    assert await store.add_profile(p) == p and await store.add_profile(q) == q
    assert await store.profile_by_name("proto") == p and await store.profile_by_name("big") == q
    assert await store.profile_by_provision_key("pk") == p
    assert (await store.list_profiles(10, 0))[0][1:] == [p, q]
    await store.close()
    again = await open_backend()
    try:
        assert await again.profile_by_name("proto") == p and await again.profile_by_name("big") == q
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_update_profile_replaces_or_clears_its_transport_configuration(store):
    p = await store.add_profile(DeviceProfile(id=new_id(), name="meters"))
    d = await store.add_device(dev("m1", type="meters"), "tm")
    with_one = replace(p, transport_configuration=TRANSPORT)
    assert await store.update_profile(with_one) == with_one
    assert await store.profile_by_name("meters") == with_one
    renamed = replace(with_one, name="gauges", transport_configuration=TRANSPORT.replace("PSM", "DRX"))
    assert await store.update_profile(renamed) == renamed
    assert await store.profile_by_name("gauges") == renamed and (await store.get_device(d.id)).type == "gauges"
    cleared = replace(renamed, transport_configuration=None)
    assert await store.update_profile(cleared) == cleared
    assert (await store.profile_by_name("gauges")).transport_configuration is None
    assert [x for x in (await store.list_profiles(10, 0))[0] if x.id == p.id] == [cleared]


# -- deleting customers and profiles, the default profile ------------------------------------


@pytest_twisted.ensureDeferred
async def test_delete_customer_frees_its_devices_and_refuses_its_key(store):
    gone = await store.add_customer(cust("gone"), digest(1))
    kept = await store.add_customer(cust("kept"), digest(2))
    owned = [await store.add_device(dev(f"o{i}"), f"to{i}") for i in range(3)]
    other = await store.add_device(dev("other"), "tx")
    for d in owned:
        await store.set_device_customer(d.id, gone.id, None)
    await store.set_device_customer(other.id, kept.id, None)
    assert await store.delete_customer(gone.id) is True
    assert await store.get_customer(gone.id) is None
    assert await store.customer_by_key_digest(digest(1)) is None
    assert await store.customer_by_title("gone") is None
    assert await store.list_customers(10, 0) == ([kept], 1)
    for d in owned:
        assert (await store.get_device(d.id)).customer_id is None
        assert (await store.device_by_credentials(ACCESS_TOKEN, f"to{owned.index(d)}")).customer_id is None
    assert (await store.get_device(other.id)).customer_id == kept.id
    assert await store.list_customer_devices(gone.id, 10, 0) == ([], 0)
    assert await store.delete_customer(gone.id) is False
    assert await store.delete_customer(new_id()) is False
    # the title and the key's digest may be used again
    again = await store.add_customer(cust("gone"), digest(1))
    assert await store.customer_by_key_digest(digest(1)) == again
    await raises(NotFound, store.set_device_customer(owned[0].id, gone.id, None))


@pytest_twisted.ensureDeferred
async def test_default_profile_can_be_chosen(store):
    first = await store.default_profile()
    assert first == await store.profile_by_name("default")
    assert await store.get_profile(first.id) == first
    assert await store.get_profile(new_id()) is None
    other = await store.add_profile(DeviceProfile(id=new_id(), name="other"))
    assert await store.set_default_profile(other.id) == other
    assert await store.default_profile() == other
    await raises(NotFound, store.set_default_profile(new_id()))
    assert await store.default_profile() == other
    assert await store.set_default_profile(first.id) == first
    assert await store.default_profile() == first


@pytest_twisted.ensureDeferred
async def test_delete_profile_refused_while_used_or_default(store):
    default = await store.default_profile()
    # (created after the default profile: made in its millisecond they would list in id order)
    used = await store.add_profile(DeviceProfile(id=new_id(), name="used", provision_type="ALLOW_CREATE_NEW_DEVICES",
                                                 provision_key="pk", provision_secret="ps",
                                                 created_time=default.created_time + 1))
    spare = await store.add_profile(DeviceProfile(id=new_id(), name="spare", provision_key="sk",
                                                  provision_type="ALLOW_CREATE_NEW_DEVICES", provision_secret="s",
                                                  created_time=default.created_time + 2))
    d = await store.add_device(dev("d", type="used"), "td")
    await raises(BadRequest, store.delete_profile(default.id))
    await raises(BadRequest, store.delete_profile(used.id))
    assert await store.get_profile(used.id) == used
    assert await store.delete_profile(spare.id) is True
    assert await store.get_profile(spare.id) is None
    assert await store.profile_by_name("spare") is None
    assert await store.profile_by_provision_key("sk") is None
    assert [p.name for p in (await store.list_profiles(10, 0))[0]] == ["default", "used"]
    assert await store.delete_profile(spare.id) is False
    # the name and the provision key are free again
    await store.add_profile(DeviceProfile(id=new_id(), name="spare", provision_key="sk",
                                          provision_type="ALLOW_CREATE_NEW_DEVICES", provision_secret="s"))
    # a profile no device names any more may go; so may the old default once another is chosen
    await store.delete_device(d.id)
    assert await store.delete_profile(used.id) is True
    spare_now = await store.profile_by_name("spare")
    await store.set_default_profile(spare_now.id)
    assert await store.delete_profile(default.id) is True
    assert await store.default_profile() == spare_now


@pytest_twisted.ensureDeferred
async def test_default_profile_and_deletions_persist(store, open_backend):
    first = await store.default_profile()
    other = await store.add_profile(DeviceProfile(id=new_id(), name="other"))
    await store.set_default_profile(other.id)
    await store.delete_profile(first.id)
    c = await store.add_customer(cust("gone"), digest(1))
    await store.delete_customer(c.id)
    await store.close()
    again = await open_backend()
    try:
        assert await again.default_profile() == other
        assert await again.profile_by_name("default") is None  # reopening makes no new 'default'
        assert (await again.list_profiles(10, 0))[1] == 1
        assert await again.get_customer(c.id) is None
        assert await again.customer_by_key_digest(digest(1)) is None
    finally:
        await again.close()


@pytest_twisted.ensureDeferred
async def test_count_keys(store):
    d = await store.add_device(dev("counted"), "tcounted")
    other = await store.add_device(dev("other"), "tother")
    assert await counted(store.count_telemetry_keys(d.id, ["a"])) == (0, [])
    await store.save_telemetry(d.id, [(ts, key, ts) for ts in range(3) for key in ("a", "b", "c")])
    await store.save_telemetry(other.id, [(1, "z", 1)])
    assert await counted(store.count_telemetry_keys(d.id, ["a", "c", "new"])) == (3, ["a", "c"])
    assert await counted(store.count_telemetry_keys(d.id, [])) == (3, [])
    await store.delete_telemetry(d.id, ["b"], -(2**63), 2**63 - 1)  # a key whose latest is gone is gone
    assert await counted(store.count_telemetry_keys(d.id, ["b"])) == (2, [])
    await store.save_attributes(d.id, "CLIENT_SCOPE", {"x": 1, "y": 2}, 1)
    await store.save_attributes(d.id, "SHARED_SCOPE", {"x": 1}, 1)
    assert await counted(store.count_attribute_keys(d.id, "CLIENT_SCOPE", ["y", "q"])) == (2, ["y"])
    assert await counted(store.count_attribute_keys(d.id, "SHARED_SCOPE", ["y", "x"])) == (1, ["x"])
    assert await counted(store.count_attribute_keys(d.id, "SERVER_SCOPE", ["x"])) == (0, [])
    await store.delete_attributes(d.id, "CLIENT_SCOPE", ["x"])
    assert await counted(store.count_attribute_keys(d.id, "CLIENT_SCOPE", ["x", "y"])) == (1, ["y"])
    assert await counted(store.count_telemetry_keys(new_id(), ["a"])) == (0, [])
    assert await counted(store.count_attribute_keys(new_id(), "CLIENT_SCOPE", ["x"])) == (0, [])
    await raises(BadRequest, store.count_attribute_keys(d.id, "NO_SCOPE", ["x"]))
    await store.delete_device(d.id)
    assert await counted(store.count_telemetry_keys(d.id, ["a"])) == (0, [])
    assert await counted(store.count_telemetry_keys(other.id, ["z"])) == (1, ["z"])


async def counted(d):
    count, present = await d
    return count, sorted(present)


@pytest_twisted.ensureDeferred
async def test_key_pages(store):
    d = await store.add_device(dev("paged"), "tpaged")
    keys = [f"k{n:03d}" for n in range(25)] + ["B", "a", "\u00e9"]
    await store.save_telemetry(d.id, [(1, key, 1) for key in reversed(keys)])
    ordered = sorted(keys)  # code point order: "B" < "a" < "k000" < ... < "\u00e9"
    assert await store.telemetry_key_page(d.id, 10, 0) == (ordered[:10], 28)
    assert await store.telemetry_key_page(d.id, 10, 20) == (ordered[20:], 28)
    assert await store.telemetry_key_page(d.id, 10, 30) == ([], 28)
    await store.save_attributes(d.id, "SHARED_SCOPE", {"z": 1, "y": 2, "x": 3}, 1)
    await store.save_attributes(d.id, "CLIENT_SCOPE", {"w": 1}, 1)
    assert await store.attribute_key_page(d.id, "SHARED_SCOPE", 2, 0) == (["x", "y"], 3)
    assert await store.attribute_key_page(d.id, "SHARED_SCOPE", 2, 2) == (["z"], 3)
    assert await store.attribute_key_page(d.id, "SERVER_SCOPE", 2, 0) == ([], 0)
    assert await store.telemetry_key_page(new_id(), 10, 0) == ([], 0)
    assert await store.attribute_key_page(new_id(), "CLIENT_SCOPE", 10, 0) == ([], 0)
    await raises(BadRequest, store.attribute_key_page(d.id, "NO_SCOPE", 10, 0))
    await raises(BadRequest, store.telemetry_key_page(d.id, 0, 0))
    await raises(BadRequest, store.telemetry_key_page(d.id, 10, -1))


from tbcoap.testing.ota_contract import *  # noqa: E402,F401,F403  the OTA part of the contract


# -- rollups: aggregations over rollups answer as the raw points do --------------------------------

_DAY = 86_400_000
_BASE = 1_700_000_000_000 - 1_700_000_000_000 % _DAY  # a day start


def raw_answer(points, start_ts, end_ts, interval, agg, limit, descending):
    """The aggregation of ``points`` (``[(ts, value)]``) computed point by point, as
    ``ITelemetryStore.telemetry_aggregate`` defines it: the oracle of the rollup tests."""
    buckets = {}
    for ts, v in points:
        if start_ts <= ts < end_ts:
            buckets.setdefault((ts - start_ts) // interval, []).append(v)
    out = []
    for k in sorted(buckets, reverse=descending):
        values = buckets[k]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if agg == "COUNT":
            value = len(values)
        elif not numbers:
            continue
        elif agg == "AVG":
            value = float(sum(numbers)) / len(numbers)
        elif agg == "SUM":
            value = float(sum(numbers)) if any(isinstance(v, float) for v in numbers) else sum(numbers)
        else:
            value = min(numbers) if agg == "MIN" else max(numbers)
        begin = start_ts + k * interval
        out.append((begin + (min(begin + interval, end_ts) - begin) // 2, value))
        if len(out) >= limit:
            break
    return out


def _rollup_cases():
    from hypothesis import strategies as st

    span = 4 * _DAY
    ts = st.one_of(st.integers(_BASE, _BASE + span),  # anywhere in four days ...
                   st.integers(0, 4 * 24 * 60).map(lambda m: _BASE + m * 60_000),  # ... on minute edges
                   st.integers(0, 96 * 6).map(lambda m: _BASE + m * 600_000 - 1))  # ... just before 10-minute edges
    value = st.one_of(st.integers(-1000, 1000),
                      st.integers(-4000, 4000).filter(lambda q: q % 4).map(lambda q: q / 4),  # exact in any order
                      st.sampled_from(["on", "off"]), st.booleans())
    batch = st.lists(st.tuples(ts, st.sampled_from(["t", "u"]), value), min_size=1, max_size=40)
    step = st.one_of(
        st.tuples(st.just("save"), batch, st.sampled_from([None, None, _DAY, 2 * _DAY])),
        st.tuples(st.just("roll"), st.integers(1, 6 * _DAY), st.sampled_from([1, 7, 10_000])),
        st.tuples(st.just("delete"), ts, st.integers(1, 2 * _DAY)),
        st.tuples(st.just("expire"), st.integers(0, 7 * _DAY), st.sampled_from([None, 0, _DAY, 2 * _DAY])),
    )
    interval = st.one_of(st.sampled_from([60_000, 600_000, 3_600_000, _DAY, 7 * _DAY]),
                         st.integers(60_000, 2 * _DAY), st.integers(1, 60_000))
    query = st.tuples(ts, st.integers(1, 5 * _DAY), interval, st.sampled_from(["AVG", "MIN", "MAX", "SUM", "COUNT"]),
                      st.sampled_from([1, 3, 100_000]), st.booleans())
    first = st.lists(st.tuples(st.just("save"), batch, st.sampled_from([None, _DAY])), min_size=1, max_size=3)
    roll = st.tuples(st.just("roll"), st.integers(4 * _DAY, 6 * _DAY), st.just(10_000))
    edits = st.lists(st.tuples(step, st.lists(roll, max_size=1)), max_size=8).map(
        lambda pairs: [s for edit, rolled in pairs for s in [edit, *rolled]])  # each edit maybe rolled after
    steps = st.tuples(first, roll, edits).map(lambda parts: parts[0] + [parts[1]] + parts[2])
    return st.tuples(steps, st.lists(query, min_size=1, max_size=8))


async def _rollup_case(store, case):
    steps, queries = case
    d = await store.add_device(dev(f"r-{new_id()}"), new_id())
    for step in steps:
        if step[0] == "save":
            await store.save_telemetry(d.id, step[1], ttl=step[2])
        elif step[0] == "roll":
            for _ in range(3 if hasattr(store, "rollup_telemetry") else 0):  # a store with rollups
                if not (await store.rollup_telemetry(_BASE + step[1], step[2]))[1]:
                    break
        elif step[0] == "delete":
            await store.delete_telemetry(d.id, ["t", "u"], step[1], step[1] + step[2])
        else:
            now = _BASE + step[1]
            older_than = None if step[2] is None else now - 4 * _DAY + step[2]
            while (await store.expire_telemetry(now, older_than, 50))[1]:
                pass
    points = await store.telemetry_history(d.id, ["t"], _BASE - _DAY, _BASE + 6 * _DAY, 100_000, False)
    points = points.get("t", [])
    for start, length, interval, agg, limit, descending in queries:
        expected = raw_answer(points, start, start + length, interval, agg, limit, descending)
        got = await store.telemetry_aggregate(d.id, ["t"], start, start + length, interval, agg, limit, descending)
        got = got.get("t", [])
        assert got == expected, (start, length, interval, agg, limit, descending)
        assert [type(v) for _, v in got] == [type(v) for _, v in expected]


def drawn_rollup_cases(count):
    """``count`` cases drawn by hypothesis (derandomized: every run checks the same ones)."""
    from hypothesis import HealthCheck, given, settings

    cases = []

    @settings(max_examples=count, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_rollup_cases())
    def collect(case):
        cases.append(case)

    collect()
    return cases


@pytest_twisted.ensureDeferred
async def test_rollups_answer_as_the_raw_points(store):
    """A property: after random saves (late points, times to live), rollup passes, deletes and
    expiry, every aggregation of random range, interval, agg, limit and order equals the one
    computed from the raw points.  (The cases are drawn first, then run on the store: the
    reactor's greenlet cannot run a hypothesis test itself.)"""
    for case in drawn_rollup_cases(80):
        try:
            await _rollup_case(store, case)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the case: {case!r}") from None


@pytest_twisted.ensureDeferred
async def test_rollups_of_a_dense_series(store):
    """Two days of points every 7 s, rolled, then edited: answers over rolled days, unaligned and
    aligned buckets, late points, a deleted range and expired points (by age and by their own time
    to live) equal the raw ones."""
    d = await store.add_device(dev("dense"), "td")
    points = [(_BASE + i * 7_000, "t", (i % 97) - 40 if i % 5 else (i % 89) / 8) for i in range(2 * _DAY // 7_000)]
    for first in range(0, len(points), 5000):  # the last 10 hours' points with a time to live of a day
        await store.save_telemetry(d.id, points[first:first + 5000], ttl=_DAY if first == 20_000 else None)

    async def check():
        raw = (await store.telemetry_history(d.id, ["t"], _BASE, _BASE + 3 * _DAY, 100_000, False)).get("t", [])
        for start, end, interval in ((_BASE, _BASE + 2 * _DAY, 3_600_000), (_BASE + 12_345, _BASE + 2 * _DAY - 999,
                                     3_600_000), (_BASE + 61_001, _BASE + _DAY + 7, 601_000),
                                     (_BASE - 5, _BASE + 3 * _DAY, _DAY)):
            for agg in ("AVG", "MIN", "MAX", "SUM", "COUNT"):
                got = await store.telemetry_aggregate(d.id, ["t"], start, end, interval, agg, 100_000, False)
                assert got.get("t", []) == raw_answer(raw, start, end, interval, agg, 100_000, False), (start, interval, agg)

    async def roll():  # (a store with rollups brings them up to date)
        while hasattr(store, "rollup_telemetry") and (await store.rollup_telemetry(_BASE + 3 * _DAY, 10_000))[1]:
            pass

    await roll()
    await check()
    await store.save_telemetry(d.id, [(_BASE + 3_600_000 + 5, "t", 10_000), (_BASE + 7_000, "t", -10_000)])  # late
    await check()
    await roll()
    await check()
    await store.delete_telemetry(d.id, ["t"], _BASE + 5 * 3_600_000 + 17, _BASE + 30 * 3_600_000 + 3)
    await check()
    await roll()
    await check()
    while (await store.expire_telemetry(_BASE + 3 * _DAY, _BASE + 2 * 3_600_000 + 1, 500))[1]:
        pass
    await check()
    await roll()
    await check()
