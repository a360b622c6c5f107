"""Pages of a device's latest values and attributes (what the console's device page reads): in key
order, the store asked for the page's keys only."""

from __future__ import annotations

import json

import pytest_twisted

BASE = "/api/plugins/telemetry/DEVICE/{id}"


@pytest_twisted.ensureDeferred
async def test_latest_values_page_by_page(start_node):
    from tests.conftest import Rest

    node = await start_node("--max-device-keys", "2000")
    rest = Rest(f"http://127.0.0.1:{node.http_address[1]}")
    status, device = await rest.post("/api/device", {"name": "many"})
    base = BASE.format(id=device["id"]["id"])
    keys = [f"key{n:04d}" for n in range(1500)]
    for start in range(0, 1500, 500):
        status, body = await rest.post(f"{base}/timeseries/ANY", {"ts": 1000, "values": {
            key: n for n, key in enumerate(keys[start:start + 500], start)}})
        assert status == 200, body
    store, asked = node.core.store, []
    latest = store.latest_telemetry

    def counting(device_id, wanted):
        asked.append(wanted)
        return latest(device_id, wanted)

    store.latest_telemetry = counting
    seen = []
    for page in range(30):
        status, body = await rest.get(f"{base}/values/timeseries?pageSize=50&page={page}")
        assert status == 200 and body["totalElements"] == 1500 and body["totalPages"] == 30
        assert body["hasNext"] == (page < 29)
        seen += [(item["key"], item["value"], item["ts"]) for item in body["data"]]
    assert seen == [(key, str(n), 1000) for n, key in enumerate(keys)]
    assert all(wanted is not None and len(wanted) == 50 for wanted in asked), "a page asked for more than its keys"
    status, body = await rest.get(f"{base}/values/timeseries?pageSize=2&page=3&useStrictDataTypes=true")
    assert body["data"] == [{"key": "key0006", "ts": 1000, "value": 6}, {"key": "key0007", "ts": 1000, "value": 7}]
    status, body = await rest.get(f"{base}/values/timeseries?pageSize=50&page=30")
    assert status == 200 and body["data"] == [] and body["hasNext"] is False
    status, body = await rest.get(f"{base}/values/timeseries?pageSize=1001")
    assert status == 400 and "at most 1000" in body["message"]
    status, body = await rest.get(f"{base}/values/timeseries?page=1")
    assert status == 400 and "pageSize" in body["message"]
    # without paging parameters the call is ThingsBoard's, every key
    status, body = await rest.get(f"{base}/values/timeseries?keys=key0001,key1499")
    assert status == 200 and sorted(body) == ["key0001", "key1499"]


@pytest_twisted.ensureDeferred
async def test_attributes_page_by_page_with_the_servers_own_first(node, rest):
    status, device = await rest.post("/api/device", {"name": "attrs"})
    base = BASE.format(id=device["id"]["id"])
    status, _ = await rest.post(f"{base}/SERVER_SCOPE", {f"s{n:02d}": n for n in range(12)})
    assert status == 200
    # a device never heard from: "active" (false) is the server's own and not stored; it comes first
    pages = []
    for page in range(3):
        status, body = await rest.get(f"{base}/values/attributes/SERVER_SCOPE?pageSize=5&page={page}")
        assert status == 200 and body["totalElements"] == 13 and body["totalPages"] == 3
        pages.append([(item["key"], item["value"]) for item in body["data"]])
    assert pages[0] == [("active", False), ("s00", 0), ("s01", 1), ("s02", 2), ("s03", 3)]
    assert pages[1] == [(f"s{n:02d}", n) for n in range(4, 9)]
    assert pages[2] == [(f"s{n:02d}", n) for n in range(9, 12)]
    status, body = await rest.get(f"{base}/values/attributes/SHARED_SCOPE?pageSize=5&page=0")
    assert status == 200 and body == {"data": [], "totalPages": 0, "totalElements": 0, "hasNext": False}
    status, body = await rest.get(f"{base}/values/attributes?pageSize=5&page=0")
    assert status == 400 and "of one scope" in body["message"]


@pytest_twisted.ensureDeferred
async def test_a_live_subscription_of_a_device_with_many_keys_gets_its_first_values(start_node):
    """The first update of 1,500 keys is over 64 KiB (the limit of what a client sends): it is sent."""
    from tests.conftest import ADMIN_KEY
    from tests.test_websocket import post_coap, ws_url
    from tests.wsclient import connect

    node = await start_node("--max-device-keys", "2000")
    device, _ = await node.core.devices.create("many-live", token="MANY-LIVE")
    for start in range(0, 1500, 500):
        body = {f"a-rather-long-key-name-{n:04d}": n for n in range(start, start + 500)}
        await node.core.telemetry.save(device.id, json.dumps(body).encode())
    ws = await connect(ws_url(node, "/api/ws"))
    ws.send({"authCmd": {"cmdId": 0, "token": ADMIN_KEY},
             "cmds": [{"type": "TIMESERIES", "entityType": "DEVICE", "entityId": device.id, "cmdId": 1}]})
    first = await ws.next()
    assert first["errorCode"] == 0 and len(first["data"]) == 1500
    assert len(json.dumps(first)) > 65536
    code, _ = await post_coap(node, "MANY-LIVE", b'{"a-rather-long-key-name-0007":-7}')
    assert code == "2.01"
    update = await ws.next()
    assert [point[1] for point in update["data"]["a-rather-long-key-name-0007"]] == ["-7"]
    await ws.close()
