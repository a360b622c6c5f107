"""ThingsBoard's WebSocket API against in-process nodes (two on one Redis for the shared cases),
with autobahn's client and a raw socket for the reader that stops reading: command and update
shapes, the current values first and then every change as stored, keys and roles, and the limits."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from tests.coapclient import POST, code_text, open_client
from tests.conftest import ADMIN_KEY
from tests.wsclient import connect

V3, V4 = "/api/ws/plugins/telemetry", "/api/ws"


def ws_url(node, path=V3, key=ADMIN_KEY):
    return f"ws://127.0.0.1:{node.http_address[1]}{path}" + (f"?token={key}" if key else "")


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


async def eventually(condition, seconds=10.0):
    """Wait until ``condition()`` holds (a bound for a loaded machine, not a delay)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await sleep(0.02)


def ts_cmd(device_id, cmd_id=1, **more):
    return {"entityType": "DEVICE", "entityId": device_id, "cmdId": cmd_id, **more}


async def post_coap(node, token, payload):
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    try:
        answer = await client.request(POST, f"/api/v1/{token}/telemetry", payload)
        return code_text(answer.code), time.monotonic()
    finally:
        await client.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_timeseries_current_values_first_then_each_post(node):
    device, _ = await node.core.devices.create("ws-1", token="WS-1")
    await node.core.telemetry.upload(device, b'{"temperature":20.5,"humidity":40}')
    ws = await connect(ws_url(node))
    ws.send({"tsSubCmds": [ts_cmd(device.id, 7, keys="temperature")], "historyCmds": [], "attrSubCmds": []})
    first = await ws.next()
    assert first["subscriptionId"] == 7 and first["errorCode"] == 0 and first["errorMsg"] is None
    [[ts, value]] = first["data"]["temperature"]
    assert value == "20.5" and set(first["data"]) == {"temperature"}
    assert first["latestValues"] == {"temperature": ts}

    code, sent = await post_coap(node, "WS-1", b'{"temperature":21.5,"humidity":41}')
    assert code == "2.01"
    update = await ws.next(timeout=1.0)  # within a second of the 2.01
    assert time.monotonic() - sent < 1.0
    assert [point[1] for point in update["data"]["temperature"]] == ["21.5"] and "humidity" not in update["data"]

    # every key, typed values as ThingsBoard's strings
    ws.send({"tsSubCmds": [ts_cmd(device.id, 8)]})
    assert set((await ws.until(lambda m: m["subscriptionId"] == 8))["data"]) == {"temperature", "humidity"}
    await post_coap(node, "WS-1", b'[{"ts":1700000000000,"values":{"on":true,"n":3,"j":{"a":1},"s":"x"}}]')
    update = await ws.until(lambda m: m["subscriptionId"] == 8)
    assert update["data"] == {"j": [[1700000000000, '{"a":1}']], "n": [[1700000000000, "3"]],
                              "on": [[1700000000000, "true"]], "s": [[1700000000000, "x"]]}

    # unsubscribing stops the updates of that cmdId only
    ws.send({"tsSubCmds": [ts_cmd(device.id, 8, unsubscribe=True)]})
    await eventually(lambda: node.core.live.count() == 1)
    await post_coap(node, "WS-1", b'{"temperature":22.5}')
    update = await ws.next()
    assert update["subscriptionId"] == 7
    with pytest.raises(defer.TimeoutError):
        await ws.next(timeout=0.3)
    await ws.close()
    await eventually(lambda: node.core.live.count() == 0)


@pytest_twisted.ensureDeferred
async def test_thingsboard_4_auth_cmd_attributes_and_history(node, rest):
    device, _ = await node.core.devices.create("ws-2", token="WS-2")
    await node.core.telemetry.save(device.id, b'[{"ts":1000,"values":{"t":1}},{"ts":2000,"values":{"t":2}}]')
    ws = await connect(ws_url(node, V4, key=None))
    ws.send({"authCmd": {"cmdId": 0, "token": ADMIN_KEY},
             "cmds": [{"type": "ATTRIBUTES", "cmdId": 1, "entityType": "DEVICE", "entityId": device.id,
                       "scope": "SHARED_SCOPE"},
                      {"type": "ATTRIBUTES", "cmdId": 2, "entityType": "DEVICE", "entityId": device.id,
                       "keys": "fw,target"},
                      {"type": "TIMESERIES_HISTORY", "cmdId": 3, "entityType": "DEVICE", "entityId": device.id,
                       "keys": "t", "startTs": 0, "endTs": 5000, "limit": 10}]})
    got = {m["subscriptionId"]: m for m in [await ws.next() for _ in range(3)]}
    assert got[1]["data"] == {} and got[2]["data"] == {}
    assert got[3]["data"] == {"t": [[2000, "2"], [1000, "1"]]}  # newest first, as ThingsBoard reads history
    status, _ = await rest.post(f"/api/plugins/telemetry/DEVICE/{device.id}/SHARED_SCOPE", {"target": 21.5})
    assert status == 200
    updates = {m["subscriptionId"]: m for m in [await ws.next(), await ws.next()]}
    assert updates[1]["data"]["target"][0][1] == "21.5" and updates[2]["data"]["target"][0][1] == "21.5"
    client = await open_client(("127.0.0.1", node.coap_address[1]))
    assert code_text((await client.request(POST, "/api/v1/WS-2/attributes", b'{"fw":"1.2"}')).code) == "2.01"
    await client.port.stopListening()
    update = await ws.next()  # only the subscription of every scope with that key
    assert update["subscriptionId"] == 2 and update["data"]["fw"][0][1] == "1.2"
    await rest.delete(f"/api/plugins/telemetry/DEVICE/{device.id}/SHARED_SCOPE?keys=target")
    deleted = {m["subscriptionId"]: m for m in [await ws.next(), await ws.next()]}
    assert deleted[1]["data"] == {"target": [[0, ""]]} and deleted[2]["data"] == {"target": [[0, ""]]}
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_time_window_and_latest_telemetry_scope(node):
    device, _ = await node.core.devices.create("ws-3", token="WS-3")
    await node.core.telemetry.save(device.id, b'[{"ts":1000,"values":{"t":1}},{"ts":2000,"values":{"t":2}},'
                                              b'{"ts":9000,"values":{"t":9}}]')
    ws = await connect(ws_url(node))
    ws.send({"tsSubCmds": [ts_cmd(device.id, 1, keys="t", startTs=0, timeWindow=5000, limit=10),
                           ts_cmd(device.id, 2, keys="t", scope="LATEST_TELEMETRY")]})
    got = {m["subscriptionId"]: m for m in [await ws.next(), await ws.next()]}
    assert got[1]["data"] == {"t": [[2000, "2"], [1000, "1"]]}
    assert got[2]["data"] == {"t": [[9000, "9"]]}
    await node.core.telemetry.save(device.id, b'[{"ts":3000,"values":{"t":3}}]')  # older than the latest
    assert (await ws.next())["subscriptionId"] == 1  # every stored point; not for LATEST_TELEMETRY
    with pytest.raises(defer.TimeoutError):
        await ws.next(timeout=0.3)
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_bad_commands_get_error_codes(node):
    device, _ = await node.core.devices.create("ws-4", token="WS-4")
    ws = await connect(ws_url(node))
    ws.protocol.sendMessage(b"not json")
    assert (await ws.next()) == {"subscriptionId": 1, "errorCode": 2, "errorMsg": "Failed to parse the payload",
                                 "data": None, "latestValues": {}}
    ws.send({"tsSubCmds": [{"cmdId": 5, "entityType": "DEVICE"}]})
    assert (await ws.next())["errorMsg"] == "Device id is empty!"
    ws.send({"tsSubCmds": [ts_cmd(str(uuid.uuid4()), 6)]})
    assert (await ws.next())["errorCode"] == 3
    ws.send({"historyCmds": [ts_cmd(device.id, 9, startTs=0, endTs=10)]})
    assert (await ws.next())["errorMsg"] == "Keys are empty!"
    ws.send({"cmds": [{"type": "ALARM_DATA", "cmdId": 10}]})
    assert (await ws.next())["errorCode"] == 2
    ws.send({"cmds": [{"type": "ENTITY_DATA", "cmdId": 11, "query": {"entityFilter": {"type": "relationsQuery"}}}]})
    answer = await ws.next()
    assert answer["cmdId"] == 11 and answer["errorCode"] == 2 and answer["cmdUpdateType"] == "ENTITY_DATA"
    assert ws.protocol.state == ws.protocol.STATE_OPEN
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_keys_are_checked(node):
    with pytest.raises(ConnectionError, match="401"):
        await connect(ws_url(node, key="wrong-key"))
    ws = await connect(ws_url(node, V4, key=None))
    ws.send({"cmds": [{"type": "TIMESERIES", "cmdId": 1, "entityId": str(uuid.uuid4())}]})
    assert (await ws.closed)[0] == 1008  # Auth cmd is missing
    ws = await connect(ws_url(node, V4, key=None))
    ws.send({"authCmd": {"cmdId": 0, "token": "wrong-key"}})
    assert (await ws.closed)[0] == 1007
    device, _ = await node.core.devices.create("ws-key", token="WS-KEY")
    ws = await connect(ws_url(node, V4, key=None))
    ws.send({"authCmd": {"cmdId": 0, "apiKey": ADMIN_KEY},  # ThingsBoard 4's apiKey form
             "cmds": [{"type": "TIMESERIES", "cmdId": 1, "entityId": device.id}]})
    assert (await ws.next())["errorCode"] == 0
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_customer_sees_only_its_devices_and_loses_them(node, rest):
    status, made = await rest.post("/api/customer", {"title": "ws-acme"})
    customer_id, key = made["id"]["id"], made["apiKey"]
    own, _ = await node.core.devices.create("ws-own", token="WS-OWN")
    other, _ = await node.core.devices.create("ws-other", token="WS-OTHER")
    await rest.post(f"/api/customer/{customer_id}/device/{own.id}")
    ws = await connect(ws_url(node, key=key))
    ws.send({"tsSubCmds": [ts_cmd(own.id, 1), ts_cmd(other.id, 2)]})
    got = {m["subscriptionId"]: m for m in [await ws.next(), await ws.next()]}
    assert got[1]["errorCode"] == 0 and got[2]["errorCode"] == 3 and got[2]["errorMsg"] == "Unauthorized"
    await rest.delete(f"/api/customer/device/{own.id}")  # freed: the subscription ends at once
    ended = await ws.next()
    assert ended["subscriptionId"] == 1 and ended["errorCode"] == 3
    await eventually(lambda: node.core.live.count() == 0)
    await rest.post(f"/api/customer/{customer_id}/device/{own.id}")
    ws.send({"tsSubCmds": [ts_cmd(own.id, 3)]})
    await ws.next()
    await rest.delete(f"/api/customer/{customer_id}")  # deleted: its connections close
    code, _ = await ws.closed
    assert code == 1008
    await eventually(lambda: node.core.live.count() == 0)


@pytest_twisted.ensureDeferred
async def test_limits_per_connection_and_key(start_node):
    node = await start_node("--ws-max-subscriptions-per-connection", "2", "--ws-max-connections-per-key", "2")
    device, _ = await node.core.devices.create("ws-5", token="WS-5")
    first = await connect(ws_url(node))
    first.send({"tsSubCmds": [ts_cmd(device.id, i) for i in (1, 2, 3)]})
    answers = {m["subscriptionId"]: m for m in [await first.next() for _ in range(3)]}
    assert [answers[i]["errorCode"] for i in (1, 2, 3)] == [0, 0, 2]
    assert "at most 2 subscriptions" in answers[3]["errorMsg"]
    second = await connect(ws_url(node, V4))
    with pytest.raises(ConnectionError, match="429"):
        await connect(ws_url(node))
    await second.close()
    third = await connect(ws_url(node))  # a closed connection frees its place
    await third.close()
    await first.close()


def _masked_frame(text):
    payload, mask = text.encode(), os.urandom(4)
    head = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                            else bytes([0x80 | 126]) + struct.pack(">H", len(payload)))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@pytest_twisted.ensureDeferred
async def test_a_reader_that_stops_reading_is_closed_not_queued_forever(start_node):
    node = await start_node("--ws-max-queue", "256KiB", "--max-value-size", "64KiB")
    device, _ = await node.core.devices.create("ws-6", token="WS-6")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", node.http_address[1]))
    sock.setblocking(False)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.send((f"GET {V3}?token={ADMIN_KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    hub = node.live_hub
    for _ in range(100):
        if hub.counters["opened"]:
            break
        await sleep(0.05)
    sock.send(_masked_frame('{"tsSubCmds":[{"entityType":"DEVICE","entityId":"%s","cmdId":1}]}' % device.id))
    for _ in range(100):
        if node.core.live.count():
            break
        await sleep(0.05)
    big = ("x" * 60000).encode()
    for i in range(400):  # ~24 MB of updates for a reader that reads nothing
        await node.core.telemetry.save(device.id, b'{"s":"%s","i":%d}' % (big, i))
        if hub.counters["overflowed"]:
            break
        await sleep(0)
    assert hub.counters["overflowed"] == 1, (node.core.live.count(), hub.stats(), i)
    for _ in range(100):
        if node.core.live.count() == 0:
            break
        await sleep(0.05)
    assert node.core.live.count() == 0 and hub.stats()["connections"] == 0
    sock.close()


@pytest_twisted.ensureDeferred
async def test_entity_data_latest_and_time_series(node):
    device, _ = await node.core.devices.create("ws-7", token="WS-7", label="Kitchen")
    await node.core.telemetry.save(device.id, b'[{"ts":1000,"values":{"t":1}}]')
    ws = await connect(ws_url(node, V4, key=None))
    query = {"entityFilter": {"type": "singleEntity", "singleEntity": {"entityType": "DEVICE", "id": device.id}},
             "pageLink": {"pageSize": 10, "page": 0},
             "entityFields": [{"type": "ENTITY_FIELD", "key": "name"}, {"type": "ENTITY_FIELD", "key": "label"}],
             "latestValues": [{"type": "TIME_SERIES", "key": "t"}]}
    ws.send({"authCmd": {"cmdId": 0, "token": ADMIN_KEY},
             "cmds": [{"type": "ENTITY_DATA", "cmdId": 1, "query": query,
                       "latestCmd": {"keys": [{"type": "TIME_SERIES", "key": "t"}]}}]})
    page = await ws.next()
    assert page["cmdUpdateType"] == "ENTITY_DATA" and page["update"] is None and page["data"]["totalElements"] == 1
    [row] = page["data"]["data"]
    assert row["entityId"] == {"entityType": "DEVICE", "id": device.id}
    assert row["latest"]["ENTITY_FIELD"]["label"]["value"] == "Kitchen"
    assert row["latest"]["TIME_SERIES"]["t"] == {"ts": 1000, "value": "1"}
    current = await ws.next()  # latestCmd: the current values first, then every newer one
    assert current["update"][0]["latest"] == {"TIME_SERIES": {"t": {"ts": 1000, "value": "1"}}}
    await node.core.telemetry.save(device.id, b'[{"ts":5000,"values":{"t":5}}]')
    update = await ws.next()
    assert update["data"] is None and update["update"][0]["latest"] == {"TIME_SERIES": {"t": {"ts": 5000, "value": "5"}}}
    ws.send({"cmds": [{"type": "ENTITY_DATA", "cmdId": 1,
                       "tsCmd": {"keys": ["t"], "startTs": 0, "timeWindow": 10000, "limit": 100}}]})
    window = await ws.next()
    assert window["data"]["data"][0]["timeseries"] == {"t": [{"ts": 1000, "value": "1"}, {"ts": 5000, "value": "5"}]}
    await node.core.telemetry.save(device.id, b'[{"ts":6000,"values":{"t":6}}]')
    seen = [await ws.next(), await ws.next()]
    assert {"t": [{"ts": 6000, "value": "6"}]} in [m["update"][0]["timeseries"] for m in seen]
    ws.send({"cmds": [{"type": "ENTITY_DATA_UNSUBSCRIBE", "cmdId": 1}]})
    await eventually(lambda: node.core.live.count() == 0)
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_a_post_to_one_node_reaches_a_subscriber_of_the_other(start_node, shared_store):
    a = await start_node("--store", shared_store)
    b = await start_node("--store", shared_store)
    device, _ = await a.core.devices.create("ws-shared", token="WS-SHARED")
    quiet, _ = await a.core.devices.create("ws-quiet", token="WS-QUIET")
    ws = await connect(ws_url(b))
    ws.send({"tsSubCmds": [ts_cmd(device.id, 1)]})
    assert (await ws.next())["data"] == {}
    for _ in range(100):  # a has heard that b watches the device
        if a.core.live.watched(device.id):
            break
        await sleep(0.02)
    code, sent = await post_coap(a, "WS-SHARED", b'{"t":1}')
    assert code == "2.01"
    update = await ws.next(timeout=1.0)
    assert time.monotonic() - sent < 1.0 and update["data"]["t"][0][1] == "1"
    # nobody watches the other device: its writes publish nothing
    published = a.core.live.counters["published"]
    await post_coap(a, "WS-QUIET", b'{"t":2}')
    assert a.core.live.counters["published"] == published and not a.core.live.watched(quiet.id)
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_a_change_made_before_the_other_node_heard_is_caught_up(start_node, shared_store):
    a = await start_node("--store", shared_store)
    b = await start_node("--store", shared_store)
    device, _ = await a.core.devices.create("ws-race", token="WS-RACE")
    ws = await connect(ws_url(b))
    ws.send({"tsSubCmds": [ts_cmd(device.id, 1)]})
    # written on a in the same turn the subscription starts on b: a has not heard of it yet
    await a.store.save_telemetry(device.id, [(int(time.time() * 1000), "t", 7)])
    messages = [await ws.next(timeout=3.0)]
    if "t" not in messages[0]["data"]:
        messages.append(await ws.next(timeout=3.0))  # the read again after the settle time
    assert messages[-1]["data"]["t"][0][1] == "7"
    await ws.close()


def test_watched_devices_expire_and_are_bounded(monkeypatch):
    from tbcoap.events import LocalBus, Watching
    from tbcoap.services import live as live_module

    now = [1000.0]
    monkeypatch.setattr(live_module.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(live_module, "MAX_WATCHED", 3)
    bus = LocalBus()
    live = live_module.LiveService(bus, None, None, None)
    seen = []
    bus.subscribe(seen.append)
    bus.publish(Watching("other-node", ("a", "b"), 60_000))
    assert live.watched("a") and live.watched("b") and not live.watched("c")
    live.telemetry_stored("c", [(1, "t", 1)])  # nobody watches c: nothing is published
    assert not [e for e in seen if type(e).__name__ == "TelemetryStored"]
    live.telemetry_stored("a", [(1, "t", 1)])
    assert [e.device_id for e in seen if type(e).__name__ == "TelemetryStored"] == ["a"]
    now[0] += 30
    bus.publish(Watching("other-node", ("b", "c", "d"), 60_000))  # renewed b; a is now the oldest
    assert list(live._interest) == ["b", "c", "d"] and live.counters["evicted"] == 1  # a made room
    now[0] += 61
    live.sweep()  # every renewal is over: all are forgotten, from the front
    assert not live.watched("b") and len(live._interest) == 0 and live.counters["expired"] == 3


def test_a_key_in_the_url_never_reaches_the_access_log(server):
    sock = socket.create_connection(("127.0.0.1", int(server.http_url.rsplit(":", 1)[1])), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {V3}?token={ADMIN_KEY} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(server.log_path, encoding="utf-8", errors="replace") as f:
            log = f.read()
        if f"{V3}?token=" in log:
            break
        time.sleep(0.1)
    assert f"{V3}?token={ADMIN_KEY[:4]}...#" in log and ADMIN_KEY not in log


@pytest_twisted.ensureDeferred
async def test_a_deleted_device_ends_its_subscriptions(node, rest):
    device, _ = await node.core.devices.create("ws-8", token="WS-8")
    other, _ = await node.core.devices.create("ws-9", token="WS-9")
    ws = await connect(ws_url(node, V4, key=None))
    query = {"entityFilter": {"type": "entityList", "entityType": "DEVICE", "entityList": [device.id, other.id]}}
    ws.send({"authCmd": {"cmdId": 0, "token": ADMIN_KEY},
             "cmds": [{"type": "TIMESERIES", "cmdId": 1, "entityType": "DEVICE", "entityId": device.id},
                      {"type": "ENTITY_DATA", "cmdId": 2, "query": query,
                       "latestCmd": {"keys": [{"type": "TIME_SERIES", "key": "t"}]}}]})
    await ws.until(lambda m: m.get("cmdId") == 2 and m["data"] is not None)
    await eventually(lambda: node.core.live.count() == 3)
    assert (await rest.delete(f"/api/device/{device.id}"))[0] == 200
    ending = {"subscriptionId": 1, "errorCode": 2, "errorMsg": "device deleted", "data": None, "latestValues": {}}
    received = []  # the two endings, in either order, among whatever updates came before them
    while not (ending in received and any(m.get("cmdId") == 2 and m.get("errorCode") == 2 for m in received)):
        received.append(await ws.next())
    await eventually(lambda: node.core.live.count() == 1)  # the query's other device goes on
    await node.core.telemetry.save(other.id, b'[{"ts":1000,"values":{"t":1}}]')
    update = await ws.until(lambda m: m.get("cmdId") == 2 and m["update"])
    assert update["update"][0]["entityId"]["id"] == other.id
    await ws.close()


@pytest_twisted.ensureDeferred
async def test_a_message_over_64_kib_closes_the_connection(node):
    ws = await connect(ws_url(node))
    ws.protocol.sendMessage(b'{"tsSubCmds":[],"x":"' + b"x" * 70000 + b'"}')
    code, _ = await ws.closed
    assert code == 1009


@pytest_twisted.ensureDeferred
async def test_after_a_resync_missed_changes_arrive_and_nodes_say_again_what_they_watch(node, monkeypatch):
    from tbcoap.events import Resync, WatchQuery, Watching
    from tbcoap.services import live as live_module

    monkeypatch.setattr(live_module, "SETTLE_S", 3600)  # only the Resync reads the values again here

    device, _ = await node.core.devices.create("ws-resync", token="WS-RESYNC")
    ws = await connect(ws_url(node))
    ws.send({"tsSubCmds": [ts_cmd(device.id, 1)]})
    assert (await ws.next())["data"] == {}
    seen = []
    node.core.bus.subscribe(seen.append)
    # a change this node never heard of (as if its bus had been down), then the bus is back
    await node.core.store.save_telemetry(device.id, [(int(time.time() * 1000), "t", 5)])
    node.core.bus.publish(Resync())
    update = await ws.next()
    assert update["data"]["t"][0][1] == "5"
    assert any(isinstance(e, WatchQuery) for e in seen)
    assert any(isinstance(e, Watching) and device.id in e.device_ids for e in seen)
    await ws.close()
