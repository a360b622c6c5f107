"""The cap on a device's distinct keys (--max-device-keys): 4.13 for a device, 400 for an operator,
nothing of a refused request stored, the store asked only about keys never seen, the known keys
bounded in bytes."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.python import usage

import tbcoap
from tbcoap.errors import TooManyKeys
from tbcoap.services.keycap import KEY_BYTES, TIMESERIES, KeyCap, parse_device_keys
from tests.coapclient import GET, POST, code_text, open_client
from tests.conftest import Rest

TELEMETRY = "/api/v1/TOKEN-1/telemetry"
ATTRIBUTES = "/api/v1/TOKEN-1/attributes"


@pytest_twisted.async_yield_fixture
async def capped(start_node):
    """A node capped at 5 telemetry keys and 3 attribute keys per scope, its REST and CoAP clients
    and device dev-1 (token TOKEN-1)."""
    node = await start_node("--max-device-keys", "5,3")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    status, device = await rest.post("/api/device?accessToken=TOKEN-1", {"name": "dev-1", "type": "default"})
    assert status == 200
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    yield node, rest, client, device["id"]["id"]
    await defer.maybeDeferred(client.port.stopListening)


async def latest(rest, device_id):
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/timeseries")
    assert status == 200
    return {key: points[0]["value"] for key, points in body.items()}


@pytest_twisted.ensureDeferred
async def test_a_new_telemetry_key_past_the_cap_is_413_and_nothing_of_the_request_is_stored(capped):
    node, rest, client, device_id = capped
    answer = await client.request(POST, TELEMETRY, b'{"a":1,"b":2,"c":3,"d":4,"e":5}')
    assert code_text(answer.code) == "2.01"
    answer = await client.request(POST, TELEMETRY, b'{"a":10,"f":6}')
    assert code_text(answer.code) == "4.13"
    assert b"more than 5 telemetry keys" in answer.payload, answer.payload
    assert await latest(rest, device_id) == {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}
    # the keys it has keep working, in any mix
    answer = await client.request(POST, TELEMETRY, b'[{"ts":1,"values":{"a":7}},{"e":8,"b":9}]')
    assert code_text(answer.code) == "2.01"
    # an operator's write of a new key is 400 with a JSON message, nothing stored either
    status, body = await rest.post(f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/ANY",
                                   {"b": 1, "g": 1})
    assert status == 400 and "more than 5 telemetry keys" in body["message"], body
    assert set(await latest(rest, device_id)) == {"a", "b", "c", "d", "e"}
    # once a key is deleted, there is room for one more
    status, _ = await rest.delete(f"/api/plugins/telemetry/DEVICE/{device_id}/timeseries/delete"
                                  "?keys=c&deleteAllDataForKeys=true")
    assert status == 200
    answer = await client.request(POST, TELEMETRY, b'{"f":6}')
    assert code_text(answer.code) == "2.01"
    answer = await client.request(POST, TELEMETRY, b'{"g":6}')
    assert code_text(answer.code) == "4.13"
    assert set(await latest(rest, device_id)) == {"a", "b", "d", "e", "f"}


@pytest_twisted.ensureDeferred
async def test_attribute_keys_are_capped_per_scope(capped):
    node, rest, client, device_id = capped
    answer = await client.request(POST, ATTRIBUTES, b'{"x":1,"y":2,"z":3}')
    assert code_text(answer.code) == "2.01"
    answer = await client.request(POST, ATTRIBUTES, b'{"x":5,"w":4}')
    assert code_text(answer.code) == "4.13" and b"CLIENT_SCOPE attribute keys" in answer.payload
    answer = await client.request(GET, ATTRIBUTES, query=["clientKeys=x,w"])
    assert answer.payload == b'{"client":{"x":1}}'
    # a device that filled its client attributes does not stop the operator's shared ones
    url = f"/api/plugins/telemetry/DEVICE/{device_id}/SHARED_SCOPE"
    status, _ = await rest.post(url, {"s1": 1, "s2": 2, "s3": 3})
    assert status == 200
    status, body = await rest.post(url, {"s1": 0, "s4": 4})
    assert status == 400 and "more than 3 SHARED_SCOPE attribute keys" in body["message"]
    status, body = await rest.get(f"/api/plugins/telemetry/DEVICE/{device_id}/values/attributes/SHARED_SCOPE")
    assert sorted((item["key"], item["value"]) for item in body) == [("s1", 1), ("s2", 2), ("s3", 3)]
    status, _ = await rest.delete(f"{url}?keys=s2")
    assert status == 200
    status, _ = await rest.post(url, {"s4": 4})
    assert status == 200


@pytest_twisted.ensureDeferred
async def test_known_keys_never_ask_the_store_and_a_cold_node_asks_once(capped):
    node, rest, client, device_id = capped
    keycap = node.core.keycap
    answer = await client.request(POST, TELEMETRY, b'{"a":1,"b":2,"c":3,"d":4,"e":5}')
    assert code_text(answer.code) == "2.01"
    asks = keycap.store_asks
    for n in range(30):
        answer = await client.request(POST, TELEMETRY, b'{"a":%d,"c":1}' % n)
        assert code_text(answer.code) == "2.01"
    assert keycap.store_asks == asks
    # forgotten (evicted, or a restarted node): the store says which keys the device has
    keycap.forget(device_id)
    answer = await client.request(POST, TELEMETRY, b'{"a":1,"b":2,"c":3,"d":4,"e":5}')
    assert code_text(answer.code) == "2.01" and keycap.store_asks == asks + 1
    answer = await client.request(POST, TELEMETRY, b'{"a":1,"new":2}')
    assert code_text(answer.code) == "4.13" and keycap.store_asks == asks + 2
    assert keycap.refused == 1
    status, stats = await rest.get("/api/admin/stats")
    assert status == 200 and stats["deviceKeys"]["refused"] == 1


@pytest_twisted.ensureDeferred
async def test_requests_with_new_keys_at_once_cannot_both_take_the_last_place(capped):
    node, rest, client, device_id = capped
    device = await node.core.devices.get(device_id)
    await node.core.telemetry.upload(device, b'{"a":1,"b":2,"c":3,"d":4}')
    node.core.keycap.forget(device_id)
    results = await defer.DeferredList([node.core.telemetry.upload(device, b'{"x":1}'),
                                        node.core.telemetry.upload(device, b'{"y":1}')], consumeErrors=True)
    assert sorted(success for success, _ in results) == [False, True], results
    assert [result for success, result in results if not success][0].check(TooManyKeys)
    keys = set(await latest(rest, device_id))
    assert len(keys) == 5 and keys >= {"a", "b", "c", "d"}


class CountingStore:
    """Answers ``count_telemetry_keys`` as a store with no keys would, and counts the calls."""

    def __init__(self):
        self.asked = 0

    def count_telemetry_keys(self, device_id, keys):
        self.asked += 1
        return defer.succeed((0, []))


def test_known_keys_are_bounded_in_bytes_least_recently_used_first():
    store = CountingStore()
    cap = KeyCap(store, 1000, 1000, max_bytes=64 * 1024)
    for n in range(2000):
        d = cap.admit(f"device-{n}", TIMESERIES, [f"key-{k}" for k in range(5)])
        new = []
        d.addCallback(new.append)
        cap.settle(f"device-{n}", TIMESERIES, new[0], True)
        assert cap.bytes <= 64 * 1024
    assert cap.evictions > 1000 and cap.stats()["devices"] < 200
    # the most recent devices are known, the oldest were dropped and would ask again
    assert cap.admit("device-1999", TIMESERIES, ["key-1"]) is None
    asked = store.asked
    cap.admit("device-0", TIMESERIES, ["key-1"])
    assert store.asked == asked + 1
    assert KEY_BYTES > 0


def test_the_option_takes_one_number_or_two():
    assert parse_device_keys("1000") == (1000, 1000)
    assert parse_device_keys(" 200 , 50 ") == (200, 50)
    for bad in ("0", "1,2,3", "-1", "a", "", "off"):
        with pytest.raises(ValueError):
            parse_device_keys(bad)
    with pytest.raises(usage.UsageError):
        tbcoap.make_service(["--max-device-keys", "0"])
    with pytest.raises(usage.UsageError):
        tbcoap.make_service(["--device-keys-cache", "0"])


class _AskedStore:
    """A store whose key counts are answered when the test says (``answer(n, found)``)."""

    def __init__(self):
        self.asks = []

    def count_telemetry_keys(self, device_id, keys):
        d = defer.Deferred()
        self.asks.append(d)
        return d


def test_a_key_committed_while_the_store_is_asked_counts_against_the_last_place():
    store = _AskedStore()
    keycap = KeyCap(store, max_telemetry=5)
    first, second = keycap.admit("d", TIMESERIES, {"x"}), keycap.admit("d", TIMESERIES, {"y"})
    store.asks[0].callback((4, []))  # a, b, c, d stored
    admitted = []
    first.addCallback(admitted.append)
    assert admitted == [{"x"}]
    keycap.settle("d", TIMESERIES, {"x"}, True)  # x committed: no longer pending
    store.asks[1].callback((4, []))  # but this answer was read before that commit
    refused = []
    second.addErrback(lambda failure: refused.append(failure.check(TooManyKeys)))
    assert refused == [TooManyKeys] and keycap.refused == 1
    entry = keycap._devices["d"]
    assert not entry.asking and not entry.settled  # nothing kept once no ask is under way
    # a cold node's ask counts from the store alone
    keycap.forget("d")
    third = keycap.admit("d", TIMESERIES, {"y"})
    store.asks[2].callback((5, []))
    third.addErrback(lambda failure: refused.append(failure.check(TooManyKeys)))
    assert refused == [TooManyKeys, TooManyKeys] and not keycap._devices["d"].settled
